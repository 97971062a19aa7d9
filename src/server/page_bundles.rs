//! A page's WASM parts in one download. Built with `--split`, each page (but the leaderboard,
//! which is in the main WASM: `app/mod.rs`) is a WASM part of its own, and the code pages
//! share is cut into further parts, one per set of pages sharing it: opening the leaderboard,
//! when it was such a page, took 71 files. Fetched one by one, each costs a response's headers
//! and is compressed alone: its parts came to 196 KB of brotli, against 154 KB for the same
//! bytes compressed together (2026-11-30).
//!
//! So for each page the server offers a *bundle*, all its parts end to end, named by the MD5 of
//! its content like the files it holds (kept a year). It serves the split loader cargo-leptos
//! generated with its fetches routed through a few lines of JS: the parts a page asks for at
//! once come from its bundle when they are most of it (a first visit), and one by one
//! otherwise (the next pages share most of their parts with the first). A page's HTML
//! preloads its bundle instead of each part (`crate::app::PagePreloads`). Done by the server
//! rather than as a build step so that every way of building the site (`cargo leptos serve`,
//! `watch`, `end-to-end`) gets it; after a rebuild under a running server it is off until
//! the next start.

use super::assets::content_hash;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::OnceCell;

/// The split loader's fetches, as cargo-leptos 0.3 writes them (`fetch(new URL("./x.wasm",
/// import.meta.url))`): each becomes a call of the function below with the same URL.
const FETCH: &str = "fetch(new URL(";
const FETCH_PART: &str = "__leadscoreFetchPart(new URL(";

/// Added to the split loader. A page's loader asks for all its parts in one go (synchronously,
/// before its first `await`), so one microtask later the whole set is known.
const FETCH_PART_JS: &str = r#"
// Added by the Leadscore server (src/server/page_bundles.rs): the parts a page asks for at
// once come from its bundle when they are most of it (a first visit), else one by one.
const __leadscoreBundles = __leadscoreTable.map(([url, parts]) => {
  const files = new Map();
  let at = 0;
  for (const [name, length] of parts) files.set(name, [at, (at += length)]);
  return { url, files, size: at };
});
let __leadscoreBurst;
function __leadscoreFetchPart(url) {
  // A part by its name up to the first dot (`chunk_12`): the hash after it is this build's.
  const file = url.pathname.slice(url.pathname.lastIndexOf("/") + 1);
  const name = file.split(".")[0];
  if (!__leadscoreBurst) {
    const burst = (__leadscoreBurst = new Map());
    queueMicrotask(() => { __leadscoreBurst = undefined; __leadscoreSend(burst); });
  }
  if (__leadscoreBurst.has(name)) return fetch(url);
  const part = { url };
  part.response = new Promise((resolve) => (part.resolve = resolve));
  __leadscoreBurst.set(name, part);
  return part.response;
}
function __leadscoreSend(burst) {
  const names = [...burst.keys()];
  const bundle = __leadscoreBundles.find((b) =>
    names.every((n) => b.files.has(n)) &&
    names.reduce((sum, n) => sum + b.files.get(n)[1] - b.files.get(n)[0], 0) * 4 >= b.size * 3);
  if (!bundle) {
    for (const part of burst.values()) part.resolve(fetch(part.url));
    return;
  }
  const bytes = fetch(new URL(bundle.url, import.meta.url)).then((r) =>
    r.ok ? r.arrayBuffer() : Promise.reject(new Error(`${bundle.url}: ${r.status}`)));
  for (const [name, part] of burst) {
    const [start, end] = bundle.files.get(name);
    // Without the bundle (a failed download), each part is fetched on its own.
    part.resolve(bytes.then(
      (all) => new Response(all.slice(start, end), { headers: { "Content-Type": "application/wasm" } }),
      () => fetch(part.url)));
  }
}
"#;

/// Brotli quality of a bundle's first copy (milliseconds for a release bundle), sent while its
/// best copy (quality 11: about a second per bundle) is made in the background.
const QUICK_QUALITY: u32 = 5;
const BEST_QUALITY: u32 = 11;

/// The site's page bundles, described at start (their names carry the MD5 of their content, so
/// each is read once then) and compressed on first request.
#[derive(Clone)]
pub struct PageBundles(Arc<Inner>);

struct Inner {
    /// The split loader as built, and its length and time when read: a rebuild under a running
    /// server (`cargo leptos watch` restarts it only when the server changes) turns this off.
    loader_file: PathBuf,
    loader_stamp: (u64, std::time::SystemTime),
    /// The split loader's URL path: served rewritten, so its name no longer tells its content.
    loader_path: String,
    loader: Bytes,
    loader_br: OnceCell<Bytes>,
    loader_etag: HeaderValue,
    bundles: HashMap<String, Arc<Bundle>>,
    /// Page (split point) → what its HTML preloads: its bundle (a name without `.wasm`).
    preloads: Arc<HashMap<String, Vec<String>>>,
}

struct Bundle {
    files: Vec<PathBuf>,
    /// Bytes end to end.
    size: usize,
    /// The MD5 its name claims; checked again whenever the files are read.
    hash: String,
    quick: OnceCell<Bytes>,
    best: OnceLock<Bytes>,
    best_started: AtomicBool,
    gzip: OnceCell<Bytes>,
}

impl PageBundles {
    /// `None` when the site was not built with `--split` (no split loader and manifest in its
    /// `pkg`), or its loader fetches in a way this does not know (then it is served as built).
    pub fn load(site_root: &Path, pkg_dir: &str) -> Option<Self> {
        let dir = site_root.join(pkg_dir);
        let names = names_in(&dir);
        let only = |prefix: &str, ext: &str| {
            let found: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix) && n.ends_with(ext)).collect();
            if found.len() > 1 {
                // Two builds' files side by side (cargo leptos watch writes unhashed names next
                // to the hashed ones): better none than a guess.
                tracing::warn!("{} files named {prefix}*{ext} in {}: page bundles off", found.len(), dir.display());
            }
            found.first().copied().filter(|_| found.len() == 1)
        };
        let loader_name = only("__wasm_split.", ".js")?;
        let manifest_name = only("__wasm_split_manifest.", ".json")?;
        let loader_stamp = stamp(&dir.join(loader_name))?;
        let manifest: BTreeMap<String, Vec<String>> =
            serde_json::from_slice(&std::fs::read(dir.join(manifest_name)).ok()?).ok()?;
        let original = std::fs::read_to_string(dir.join(loader_name)).ok()?;
        let pkg_url = format!("/{}", pkg_dir.trim_matches('/'));
        if !original.contains(FETCH) {
            tracing::warn!(
                "{pkg_url}/{loader_name} fetches its parts in a way this server does not know; served as built"
            );
            return None;
        }
        let (mut bundles, mut preloads, mut table) = (HashMap::new(), HashMap::new(), Vec::new());
        for (page, chunks) in manifest {
            // The manifest lists the page's own part among the shared ones; should it not, add it.
            let mut members: Vec<String> = chunks.iter().map(|c| format!("{c}.wasm")).collect();
            let own = names.iter().find(|n| n.starts_with(&format!("split_{page}.")) && n.ends_with(".wasm"));
            if let Some(own) = own.filter(|own| !members.contains(own)) {
                members.push(own.clone());
            }
            // Only files of this directory (a manifest naming `../x` reads nothing), and one
            // part per name before the hash (the loader finds parts by that name).
            let stems: HashSet<&str> = members.iter().map(|m| stem_of(m)).collect();
            if stems.len() != members.len() || !members.iter().all(|m| names.contains(m)) {
                tracing::warn!("the split manifest's parts of {page} are not this build's files: no bundle for it");
                continue;
            }
            let files: Vec<PathBuf> = members.iter().map(|m| dir.join(m)).collect();
            let Some((all, lengths)) = read_end_to_end(&files) else { continue };
            let (hash, size) = (content_hash(&all), all.len());
            // `.wasm`, as Leptos's preload links add that to the names they are given.
            let stem = format!("page{page}.{hash}");
            // Each part by its name before the hash, with its length (the loader works out where
            // each starts): this table goes to every browser, so it is kept short.
            let parts: Vec<_> =
                members.iter().zip(lengths).map(|(m, len)| serde_json::json!([stem_of(m), len])).collect();
            table.push(serde_json::json!([format!("./{stem}.wasm"), parts]));
            let bundle = Bundle {
                files,
                size,
                hash,
                quick: OnceCell::new(),
                best: OnceLock::new(),
                best_started: AtomicBool::new(false),
                gzip: OnceCell::new(),
            };
            bundles.insert(format!("{pkg_url}/{stem}.wasm"), Arc::new(bundle));
            preloads.insert(page, vec![stem]);
        }
        let helper = format!("\nconst __leadscoreTable = {};{FETCH_PART_JS}", serde_json::Value::Array(table));
        let rewritten = original.replace(FETCH, FETCH_PART);
        // After the module's imports (its first line), which must come first.
        let loader = match rewritten.split_once('\n') {
            Some((first, rest)) if first.starts_with("import ") => format!("{first}{helper}{rest}"),
            _ => format!("{helper}\n{rewritten}"),
        };
        let loader_etag = HeaderValue::from_str(&format!("\"{}\"", content_hash(loader.as_bytes()))).ok()?;
        Some(Self(Arc::new(Inner {
            loader_file: dir.join(loader_name),
            loader_stamp,
            loader_path: format!("{pkg_url}/{loader_name}"),
            loader: Bytes::from(loader),
            loader_br: OnceCell::new(),
            loader_etag,
            bundles,
            preloads: Arc::new(preloads),
        })))
    }

    /// The URL path of the split loader, served rewritten.
    pub fn loader_path(&self) -> &str {
        &self.0.loader_path
    }

    /// The URL paths of the bundles.
    pub fn bundle_paths(&self) -> impl Iterator<Item = String> + '_ {
        self.0.bundles.keys().cloned()
    }

    /// Page (split point) → the names its HTML preloads (`crate::app::PagePreloads`); `None`
    /// once the site was rebuilt, when its pages preload their parts as Leptos names them.
    pub fn preloads(&self) -> Option<Arc<HashMap<String, Vec<String>>>> {
        self.current().then(|| self.0.preloads.clone())
    }

    /// Whether the split loader is still the one read at start.
    fn current(&self) -> bool {
        stamp(&self.0.loader_file) == Some(self.0.loader_stamp)
    }
}

fn stamp(file: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// A file's name up to its first dot (`chunk_12` of `chunk_12.<hash>.wasm`).
fn stem_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Middleware in front of the site's files: the rewritten loader and the bundles.
pub async fn serve(State(bundles): State<PageBundles>, request: Request, next: Next) -> Response {
    let inner = &bundles.0;
    let path = request.uri().path();
    let ours = path == inner.loader_path || inner.bundles.contains_key(path);
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    // Rebuilt since: the files as they are now, loader included.
    if !ours || !reads || !bundles.current() {
        return next.run(request).await;
    }
    if path == inner.loader_path {
        return loader_response(inner, request.headers()).await;
    }
    let bundle = inner.bundles[path].clone();
    bundle_response(bundle, request.headers()).await.unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// The rewritten loader, revalidated by its ETag; in brotli at quality 11 (made once) for
/// browsers that take it, as the build's own copy was, else compressed on the way out.
async fn loader_response(inner: &Inner, headers: &HeaderMap) -> Response {
    let br = if accepted_encodings(headers).contains("br") {
        let loader = inner.loader.clone();
        inner.loader_br.get_or_try_init(|| blocking(move || Some(brotli(&loader, BEST_QUALITY)))).await.ok()
    } else {
        None
    };
    // One tag per representation: the brotli copy's differs from the plain one's.
    let etag = match br {
        Some(_) => {
            HeaderValue::from_str(&format!("{}-br\"", inner.loader_etag.to_str().unwrap_or("\"").trim_end_matches('"')))
                .unwrap_or_else(|_| inner.loader_etag.clone())
        }
        None => inner.loader_etag.clone(),
    };
    let common = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript")),
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    match br {
        Some(br) => {
            let mut response = (common, br.clone()).into_response();
            response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            response
        }
        None => (common, inner.loader.clone()).into_response(),
    }
}

async fn bundle_response(bundle: Arc<Bundle>, headers: &HeaderMap) -> Option<Response> {
    let accepted = accepted_encodings(headers);
    let b = bundle.clone();
    let (encoding, body) = if accepted.contains("br") {
        let body = match bundle.best.get() {
            Some(best) => best.clone(),
            None => {
                start_best(&bundle);
                bundle
                    .quick
                    .get_or_try_init(|| blocking(move || b.read().map(|raw| brotli(&raw, QUICK_QUALITY))))
                    .await
                    .ok()?
                    .clone()
            }
        };
        (Some("br"), body)
    } else if accepted.contains("gzip") {
        (
            Some("gzip"),
            bundle.gzip.get_or_try_init(|| blocking(move || b.read().map(|raw| gzip(&raw)))).await.ok()?.clone(),
        )
    } else {
        (None, blocking(move || b.read().map(Bytes::from)).await.ok()?)
    };
    // Kept a year (`assets::files` counts the bundles among the content-named files).
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], body).into_response();
    if let Some(encoding) = encoding {
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    Some(response)
}

/// Bundles above this (debug builds: megabytes) keep their quick copy: quality 11 would take
/// a core for minutes.
const BEST_MAX_BYTES: usize = 4 << 20;
/// One quality-11 compression at a time, whatever the number of bundles asked for at once.
static BEST_AT_ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start_best(bundle: &Arc<Bundle>) {
    if bundle.size > BEST_MAX_BYTES || bundle.best_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let b = bundle.clone();
    tokio::task::spawn_blocking(move || {
        let _one = BEST_AT_ONCE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match b.read() {
            Some(raw) => drop(b.best.set(brotli(&raw, BEST_QUALITY))),
            None => b.best_started.store(false, Ordering::Release),
        }
    });
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Option<T> + Send + 'static) -> Result<T, ()> {
    tokio::task::spawn_blocking(work).await.ok().flatten().ok_or(())
}

impl Bundle {
    /// Its files end to end, if they are still what its name says (a rebuild under a running
    /// server changes them; the loader then fetches the parts one by one).
    fn read(&self) -> Option<Vec<u8>> {
        let (all, _) = read_end_to_end(&self.files)?;
        (content_hash(&all) == self.hash).then_some(all)
    }
}

/// `files` end to end, and the length of each.
fn read_end_to_end(files: &[PathBuf]) -> Option<(Vec<u8>, Vec<usize>)> {
    let (mut all, mut lengths) = (Vec::new(), Vec::new());
    for file in files {
        let bytes = std::fs::read(file).ok()?;
        lengths.push(bytes.len());
        all.extend(bytes);
    }
    Some((all, lengths))
}

fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// The encodings the client takes (`br`, `gzip`), leaving out any it refuses with `q=0`.
fn accepted_encodings(headers: &HeaderMap) -> HashSet<String> {
    let accept = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or_default();
    accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next()?.to_ascii_lowercase();
            let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
            (!coding.is_empty() && !refused).then_some(coding)
        })
        .collect()
}

fn brotli(raw: &[u8], quality: u32) -> Bytes {
    let mut out = Vec::with_capacity(raw.len() / 3);
    {
        let mut writer = ::brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, 22);
        writer.write_all(raw).expect("writing to memory");
    }
    Bytes::from(out)
}

fn gzip(raw: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), flate2::Compression::best());
    encoder.write_all(raw).expect("writing to memory");
    Bytes::from(encoder.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_refused_with_q_zero_are_left_out() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br;q=0"));
        let accepted = accepted_encodings(&headers);
        assert!(accepted.contains("gzip") && !accepted.contains("br"), "{accepted:?}");
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("BR;q=0.5"));
        assert!(accepted_encodings(&headers).contains("br"));
        assert!(accepted_encodings(&HeaderMap::new()).is_empty());
    }
}
