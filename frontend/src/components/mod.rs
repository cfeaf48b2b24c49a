//! Reusable view pieces.

pub mod chart;
pub mod histogram;
pub mod math_text;
pub mod overlay;

use leptos::prelude::*;

use crate::api::ApiError;

/// An error message box.
#[component]
pub fn ErrorBox(error: ApiError) -> impl IntoView {
    view! { <div class="error" data-test="error">{error.to_string()}</div> }
}

/// A labelled text input bound to `value`; `test` is its `data-test` name.
pub fn text_field(
    label: &'static str,
    test: &'static str,
    value: RwSignal<String>,
) -> impl IntoView {
    input_field(label, test, value, None)
}

/// [`text_field`] sized for a short value (a number of tokens, a temperature).
pub fn short_field(
    label: &'static str,
    test: &'static str,
    value: RwSignal<String>,
) -> impl IntoView {
    input_field(label, test, value, Some("6"))
}

fn input_field(
    label: &'static str,
    test: &'static str,
    value: RwSignal<String>,
    size: Option<&'static str>,
) -> impl IntoView {
    view! {
        <label>{label}
            <input type="text" data-test=test size=size prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))/>
        </label>
    }
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

/// Loads a summary into `state` now and every 2 s while it is unloaded, failed, or `active`
/// says it is still going (an eval or a generation that has not ended), while the calling
/// component lives. Returns the loader, for a reload after an action.
pub fn poll_summary<T, F, Fut>(
    state: RwSignal<Option<Result<T, ApiError>>>,
    fetch: F,
    active: fn(&T) -> bool,
) -> impl Fn() + Copy + 'static
where
    T: Send + Sync + 'static,
    F: Fn() -> Fut + Copy + 'static,
    Fut: std::future::Future<Output = Result<T, ApiError>> + 'static,
{
    let load = move || {
        let future = fetch();
        leptos::task::spawn_local(async move { state.set(Some(future.await)) });
    };
    load();
    let handle = leptos::prelude::set_interval_with_handle(
        move || {
            let going = state.with_untracked(|s| match s {
                Some(Ok(t)) => active(t),
                _ => true,
            });
            if going {
                load();
            }
        },
        std::time::Duration::from_secs(2),
    );
    on_cleanup(move || {
        if let Ok(h) = handle {
            h.clear();
        }
    });
    load
}

/// Offers `text` as a file download named `file_name` (a Blob of type `mime`, clicked through a
/// link) and returns the Blob's URL, for a visible "download again" link.
pub fn save_file(file_name: &str, mime: &str, text: &str) -> Option<String> {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).ok()?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).ok()?;
    let document = web_sys::window()?.document()?;
    let link = document.create_element("a").ok()?;
    link.set_attribute("href", &url).ok()?;
    link.set_attribute("download", file_name).ok()?;
    link.dyn_into::<web_sys::HtmlElement>().ok()?.click();
    Some(url)
}

/// A `performance.mark` (the page benchmarks time navigation and drawing with these).
pub fn mark(name: &str) {
    if let Some(p) = web_sys::window().and_then(|w| w.performance()) {
        let _ = p.mark(name);
    }
}
