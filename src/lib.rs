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
    leptos::mount::hydrate_body(app::App);
}
