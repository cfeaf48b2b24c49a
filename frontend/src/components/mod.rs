//! Reusable view pieces.

pub mod chart;
pub mod histogram;
pub mod math_text;

use leptos::prelude::*;

use crate::api::ApiError;

/// An error message box.
#[component]
pub fn ErrorBox(error: ApiError) -> impl IntoView {
    view! { <div class="error" data-test="error">{error.to_string()}</div> }
}
