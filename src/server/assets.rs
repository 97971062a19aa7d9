//! Static files (the WASM bundle and its JS glue, the CSS, the favicon) as the browser gets
//! them: compressed (a precompressed `.br`/`.gz` beside the file if the build made one, else
//! brotli or gzip on the fly) for clients that accept it, and revalidated on each use
//! (`Last-Modified` → `304 Not Modified`), so a new build is picked up at once and an
//! unchanged one costs no transfer. Anything that is not a file gets the app's 404 page.

use super::http::AppState;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::services::ServeDir;

/// The router's fallback: files from the site root, else `not_found`. On the fly, brotli at
/// quality 4: fast enough for a debug bundle of tens of megabytes on every fresh browser (a
/// release build may ship `.br` files made at the highest quality, served as they are).
pub fn files<H, T>(state: &AppState, not_found: H) -> Router
where
    H: axum::handler::Handler<T, AppState> + Clone,
    T: 'static,
{
    let root = state.leptos_options.site_root.to_string();
    let serve = ServeDir::new(root)
        .precompressed_br()
        .precompressed_gzip()
        .call_fallback_on_method_not_allowed(true)
        .fallback(not_found.with_state(state.clone()));
    Router::new()
        .fallback_service(serve)
        .layer(axum::middleware::map_response(cache_headers))
        .layer(CompressionLayer::new().br(true).gzip(true).quality(CompressionLevel::Precise(4)))
}

async fn cache_headers(mut response: Response) -> Response {
    if response.status().is_success() && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}
