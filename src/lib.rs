//! Leadscore: real-time, event-driven lead scoring.
//!
//! - `domain`: the pure core (model, validation, scoring), shared with the browser;
//! - `service` (feature `ssr`): the service layer, the store behind it and the scoring worker;
//! - `server` (feature `ssr`): REST API, access policy, live stream and server assembly;
//! - `app`: the Leptos shell, router and pages, rendered on the server and hydrated here.

#![recursion_limit = "256"]

pub mod app;
pub mod domain;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod service;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Async: the page's part of the bundle, if it has one (see `app`'s lazy pages), loads
    // before it hydrates, and only then is the page marked hydrated (its buttons work from
    // that moment on).
    wasm_bindgen_futures::spawn_local(async {
        let mounted = leptos::mount::hydrate_from_async(leptos::tachys::dom::body(), app::App).await;
        mounted.forget();
        app::mark_hydrated();
    });
}
