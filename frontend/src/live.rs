//! Server-Sent Events: a browser `EventSource` whose named events feed callbacks while the
//! calling component lives. The browser reconnects by itself after an error; the server then
//! starts again with a snapshot, so handlers replace state on `snapshot` and append otherwise.

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

type Handler = Box<dyn FnMut(String)>;

/// Opens `url` and calls each handler with the data of its named event; `connected` follows
/// the connection. Closed when the current reactive owner is cleaned up.
pub fn subscribe(url: &str, handlers: Vec<(&'static str, Handler)>, connected: RwSignal<bool>) {
    let Ok(source) = EventSource::new(url) else {
        connected.set(false);
        return;
    };
    let mut closures: Vec<Closure<dyn FnMut(MessageEvent)>> = Vec::new();
    for (name, mut handler) in handlers {
        let closure = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let Some(data) = event.data().as_string() {
                handler(data);
            }
        });
        let _ = source.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        closures.push(closure);
    }
    let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| connected.set(true));
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| connected.set(false));
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let held = SendWrapper::new((source, closures, on_open, on_error));
    on_cleanup(move || {
        let (source, closures, on_open, on_error) = held.take();
        source.close();
        drop((closures, on_open, on_error));
    });
}
