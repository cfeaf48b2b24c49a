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

/// Bumps `counter` every `period` while the calling component lives (resources that track it
/// refetch).
pub fn every(period: std::time::Duration, counter: RwSignal<u32>) {
    let handle =
        leptos::prelude::set_interval_with_handle(move || counter.update(|n| *n += 1), period);
    on_cleanup(move || {
        if let Ok(h) = handle {
            h.clear();
        }
    });
}
