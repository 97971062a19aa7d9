//! Static files (the WASM bundle and its JS glue, the CSS, the favicon) as the browser gets
//! them: compressed (a precompressed `.br`/`.gz` beside the file if the build made one, else
//! brotli or gzip on the fly) for clients that accept it. A file whose name is the hash of
//! its content (cargo-leptos `hash-files`: `leadscore.<md5>.css`, checked at start) never
//! changes, so the browser keeps it for a year without asking; anything else is revalidated
//! on each use (`Last-Modified` → `304 Not Modified`). Anything that is not a file gets the
//! app's 404 page.

use super::http::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use leptos::prelude::LeptosOptions;
use md5::{Digest, Md5};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
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
    let mut immutable = content_named(Path::new(&root));
    let serve = ServeDir::new(root)
        .precompressed_br()
        .precompressed_gzip()
        .call_fallback_on_method_not_allowed(true)
        .fallback(not_found.with_state(state.clone()));
    let mut files = Router::new().fallback_service(serve);
    if let Some(bundles) = &state.page_bundles {
        // Served rewritten to take a page's parts from its bundle: not what its name says.
        immutable.remove(bundles.loader_path());
        // Named by the MD5 of their bytes, like the files they hold.
        immutable.extend(bundles.bundle_paths());
        files = files.layer(axum::middleware::from_fn_with_state(bundles.clone(), super::page_bundles::serve));
    }
    files.layer(axum::middleware::from_fn_with_state(Arc::new(immutable), cache_headers)).layer(compression())
}

/// Brotli or gzip, as the client accepts, for what is not precompressed: files, pages and
/// server functions' answers. Quality 4: most of the gain of 11 at a small part of its time.
/// (Pages carry no secret the same for every response, like a CSRF token, for a BREACH-style
/// attack to guess: the session lives in a cookie, and the script nonce changes every time.)
pub fn compression() -> CompressionLayer {
    CompressionLayer::new().br(true).gzip(true).quality(CompressionLevel::Precise(4))
}

const FOR_A_YEAR: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const ASK_EACH_TIME: HeaderValue = HeaderValue::from_static("no-cache");

async fn cache_headers(State(immutable): State<Arc<HashSet<String>>>, request: Request, next: Next) -> Response {
    let for_a_year = immutable.contains(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() {
        let headers = response.headers_mut();
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, if for_a_year { FOR_A_YEAR } else { ASK_EACH_TIME });
        }
        // A precompressed file is picked by Accept-Encoding: caches on the way must know.
        let varies =
            headers.get_all(header::VARY).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"accept-encoding"));
        if !varies {
            headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
    response
}

/// The URL paths of the site's files whose name carries the MD5 of their content, checked at
/// start rather than assumed from the name: cargo-leptos names some files by their hash and
/// then rewrites them (the JS glue and the WASM parts, to point at the split loader's final
/// name), so those names do not tell their content, and a browser keeping them for a year
/// would pair them with another build's files. Those are revalidated on each use instead.
fn content_named(root: &Path) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // A `.br`/`.gz` copy is sent under its original's path, never its own.
            if name.ends_with(".br") || name.ends_with(".gz") {
                continue;
            }
            let Some(claimed) = hash_part(name) else { continue };
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if content_hash(&bytes) != claimed {
                continue;
            }
            if let Ok(relative) = path.strip_prefix(root) {
                found.insert(format!("/{}", relative.to_string_lossy()));
            }
        }
    }
    found
}

/// What a name carries of content it is named by: its MD5 in unpadded base64url.
pub(super) fn content_hash(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Md5::digest(bytes))
}

/// The content hash a file name claims: a dot-separated part between the stem and the
/// extension that is an MD5 in unpadded base64url (22 characters, not the placeholder's
/// underscores), as in `leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.wasm` or `__wasm_split.<hash>.js`.
fn hash_part(name: &str) -> Option<&str> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 3 {
        return None;
    }
    parts[1..parts.len() - 1].iter().copied().find(|part| {
        part.len() == 22
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && part.bytes().any(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_part_is_22_characters_of_base64url() {
        assert_eq!(hash_part("leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.wasm"), Some("9Bq0y5pnDkZ1Vg3zJ4sRtA"));
        assert_eq!(hash_part("leadscore.Ab-_0123456789abcdefgh.css"), Some("Ab-_0123456789abcdefgh"));
        assert_eq!(hash_part("__wasm_split.9Bq0y5pnDkZ1Vg3zJ4sRtA.js"), Some("9Bq0y5pnDkZ1Vg3zJ4sRtA"));
        assert_eq!(hash_part("__wasm_split.______________________.js"), None, "the placeholder");
        assert_eq!(hash_part("leadscore.wasm"), None);
        assert_eq!(hash_part("9Bq0y5pnDkZ1Vg3zJ4sRtA.js"), None, "the stem is not a hash part");
        assert_eq!(hash_part("leadscore.9Bq0y5pnDkZ1Vg3zJ4sRt.wasm"), None, "21 characters");
        assert_eq!(hash_part("leadscore.9Bq0y5pnDkZ1Vg3zJ4s+tA.wasm"), None, "not base64url");
    }

    #[test]
    fn only_names_that_match_their_content_are_kept_for_a_year() {
        let site = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(site.path().join("pkg")).unwrap();
        let named = content_hash;
        let css = format!("pkg/leadscore.{}.css", named(b"body{}"));
        std::fs::write(site.path().join(&css), b"body{}").unwrap();
        // Named by its content before a rewrite, as cargo-leptos does with the JS glue.
        let js = format!("pkg/leadscore.{}.js", named(b"import './__wasm_split.______________________.js'"));
        std::fs::write(site.path().join(&js), b"import './__wasm_split.AAAAAAAAAAAAAAAAAAAAAA.js'").unwrap();
        std::fs::write(site.path().join("pkg/leadscore.css"), b"body{}").unwrap();
        let found = content_named(site.path());
        assert_eq!(found, HashSet::from([format!("/{css}")]));
    }
}
