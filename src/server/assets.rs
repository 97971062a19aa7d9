//! Static files (the WASM bundle and its JS glue, the CSS, the favicon) as the browser gets
//! them: compressed (a precompressed `.br`/`.gz` beside the file if the build made one, else
//! brotli or gzip on the fly) for clients that accept it. A file whose name carries its
//! content hash (cargo-leptos `hash-files`: `leadscore.<md5>.wasm`) never changes, so the
//! browser keeps it for a year without asking; anything else is revalidated on each use
//! (`Last-Modified` → `304 Not Modified`). Anything that is not a file gets the app's 404 page.

use super::http::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use leptos::prelude::LeptosOptions;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::services::ServeDir;

/// Leptos's options with `hash_files` on when the build named its files by content.
/// cargo-leptos writes the names to `hash.txt` beside the server binary but says so (in
/// `LEPTOS_HASH_FILES`) only to the servers it starts itself; a binary started directly, as a
/// deployment or a test does, finds the file there and links the same names.
pub fn with_built_names(mut options: LeptosOptions) -> LeptosOptions {
    if std::env::var_os("LEPTOS_HASH_FILES").is_none() {
        let beside_binary =
            std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join(options.hash_file.as_ref())));
        options.hash_files = beside_binary.is_some_and(|file| file.is_file());
    }
    options
}

/// The router's fallback: files from the site root, else `not_found`. On the fly, brotli at
/// quality 4: fast enough for a debug bundle of tens of megabytes on every fresh browser (a
/// release build made with `--precompress` ships `.br` files made at quality 11, sent as they are).
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
        .layer(axum::middleware::from_fn(cache_headers))
        .layer(CompressionLayer::new().br(true).gzip(true).quality(CompressionLevel::Precise(4)))
}

const FOR_A_YEAR: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const ASK_EACH_TIME: HeaderValue = HeaderValue::from_static("no-cache");

async fn cache_headers(request: Request, next: Next) -> Response {
    let immutable = is_content_named(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() && !response.headers().contains_key(header::CACHE_CONTROL) {
        let policy = if immutable { FOR_A_YEAR } else { ASK_EACH_TIME };
        response.headers_mut().insert(header::CACHE_CONTROL, policy);
    }
    response
}

/// Whether a file name carries a cargo-leptos content hash: a dot-separated part between the
/// stem and the extension that is an MD5 in unpadded base64url (22 characters),
/// as in `leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.wasm` or `__wasm_split.<hash>.js`.
fn is_content_named(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 3
        && parts[1..parts.len() - 1]
            .iter()
            .any(|part| part.len() == 22 && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::is_content_named;

    #[test]
    fn only_names_with_a_content_hash_are_immutable() {
        assert!(is_content_named("/pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.wasm"));
        assert!(is_content_named("/pkg/leadscore.Ab-_0123456789abcdefgh.css"));
        assert!(is_content_named("/pkg/__wasm_split.9Bq0y5pnDkZ1Vg3zJ4sRtA.js"));
        assert!(!is_content_named("/pkg/leadscore.wasm"), "no hash");
        assert!(!is_content_named("/pkg/leadscore_bg.wasm"));
        assert!(!is_content_named("/favicon.svg"));
        assert!(!is_content_named("/pkg/9Bq0y5pnDkZ1Vg3zJ4sRtA.js"), "the stem is not a hash part");
        assert!(!is_content_named("/pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4sRt.wasm"), "21 characters");
        assert!(!is_content_named("/pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4s+tA.wasm"), "not base64url");
        assert!(!is_content_named("/pkg/a.9Bq0y5pnDkZ1Vg3zJ4sRtA/leadscore.js"), "a directory's name");
    }
}
