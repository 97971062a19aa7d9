//! A page's WASM parts in one download (src/server/page_bundles.rs), on a site laid out the way
//! `cargo leptos build --split` lays it out: a split loader, its manifest, shared chunks and
//! each page's own part, all named by the MD5 of their content.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::TestServer;
use md5::{Digest, Md5};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

const FOR_A_YEAR: &str = "public, max-age=31536000, immutable";

fn hash(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Md5::digest(bytes))
}

/// Writes `bytes` as `pkg/<stem>.<md5>.<ext>` and returns that name.
fn put(pkg: &Path, stem: &str, ext: &str, bytes: &[u8]) -> String {
    let name = format!("{stem}.{}.{ext}", hash(bytes));
    std::fs::write(pkg.join(&name), bytes).unwrap();
    name
}

struct Site {
    dir: tempfile::TempDir,
    loader: String,
    /// The home page's parts in the manifest's order, then its own part.
    home: Vec<(String, Vec<u8>)>,
}

/// Two pages sharing one chunk; the loader in the shape cargo-leptos 0.3 generates.
fn split_site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let part = |seed: u8, len: usize| -> Vec<u8> { (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect() };
    let (shared, only_home) = (part(3, 40_000), part(7, 30_000));
    let (home_own, other_own) = (part(11, 50_000), part(13, 20_000));
    let shared_name = put(&pkg, "chunk_1", "wasm", &shared);
    let home_name = put(&pkg, "chunk_2", "wasm", &only_home);
    let home_own_name = put(&pkg, "split___home_route_view_1", "wasm", &home_own);
    put(&pkg, "split___other_route_view_1", "wasm", &other_own);
    let stem = |n: &str| n.trim_end_matches(".wasm").to_string();
    let manifest = serde_json::json!({
        // As cargo-leptos writes it, a page's own part among its shared ones (the other page's
        // is left out, to be found by its name).
        "__home_route_view_1": [stem(&shared_name), stem(&home_name), stem(&home_own_name)],
        "__other_route_view_1": [stem(&shared_name)],
    });
    put(&pkg, "__wasm_split_manifest", "json", manifest.to_string().as_bytes());
    let loader = format!(
        "import {{ initSync }} from \"./leadscore.AAAAAAAAAAAAAAAAAAAAAA.js\";\n\
         const __chunk_1 = makeLoad(() => {{\n    const src = fetch(new URL(\"./{shared_name}\", import.meta.url));\n\
         return async (imports) => (WebAssembly.instantiateStreaming(src, imports));\n}}\n, []);\n"
    );
    let loader = put(&pkg, "__wasm_split", "js", loader.as_bytes());
    Site {
        dir,
        loader: format!("/pkg/{loader}"),
        home: vec![(shared_name, shared), (home_name, only_home), (home_own_name, home_own)],
    }
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).unwrap();
    out
}

/// The bundle table the loader carries, `[[url, [[part, length], …]], …]`, as
/// `{url, files: {part: [start, end]}, size}` the way its JS reads it.
fn bundle_table(loader: &str) -> Vec<Value> {
    let start = loader.find("const __leadscoreTable = ").expect("a bundle table") + 25;
    let end = start + loader[start..].find(";\n").unwrap();
    let table: Value = serde_json::from_str(&loader[start..end]).unwrap();
    let bundle = |b: &Value| {
        let (mut files, mut at) = (serde_json::Map::new(), 0);
        for part in b[1].as_array().unwrap() {
            let length = part[1].as_u64().unwrap();
            files.insert(part[0].as_str().unwrap().to_string(), serde_json::json!([at, at + length]));
            at += length;
        }
        serde_json::json!({ "url": b[0], "files": files, "size": at })
    };
    table.as_array().unwrap().iter().map(bundle).collect()
}

/// The URL path of the home page's bundle, as the served loader names it.
async fn home_bundle(s: &TestServer, site: &Site) -> String {
    let loader = reqwest::get(s.url(&site.loader)).await.unwrap().text().await.unwrap();
    let home = bundle_table(&loader).into_iter().find(|b| b["url"].as_str().unwrap().contains("__home")).unwrap();
    format!("/pkg/{}", home["url"].as_str().unwrap().trim_start_matches("./"))
}

#[tokio::test]
async fn a_page_gets_its_parts_in_one_bundle_named_by_its_content() {
    let site = split_site();
    let s = TestServer::start_with_site(site.dir.path().to_str().unwrap()).await;
    let plain = reqwest::Client::new();

    // The loader is served with its fetches routed through the bundle picker, after its imports.
    let r = plain.get(s.url(&site.loader)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache", "its content is no longer what its name says");
    let etag = r.headers()["etag"].clone();
    let r = plain.get(s.url(&site.loader)).header("if-none-match", etag.clone()).send().await.unwrap();
    assert_eq!(r.status(), 304, "revalidated without a transfer");
    let r = plain.get(s.url(&site.loader)).send().await.unwrap();
    let loader = r.text().await.unwrap();
    assert!(loader.starts_with("import { initSync }"), "imports stay first: {loader}");
    assert!(loader.contains("__leadscoreFetchPart(new URL(\"./chunk_1."), "{loader}");
    assert!(!loader.contains(" fetch(new URL(\"./chunk_1."), "no part fetched past the picker");
    let r = plain.get(s.url(&site.loader)).header("accept-encoding", "br").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "br");
    assert_ne!(r.headers()["etag"], etag, "each representation its own tag");
    assert!(r.headers()["vary"].to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"));
    assert_eq!(unbrotli(&r.bytes().await.unwrap()), loader.as_bytes(), "the same loader, compressed");

    let table = bundle_table(&loader);
    assert_eq!(table.len(), 2, "one bundle per page: {table:?}");
    let other = table.iter().find(|b| b["url"].as_str().unwrap().contains("__other_route_view_1")).unwrap();
    assert_eq!(other["files"].as_object().unwrap().len(), 2, "the shared part and its own: {other}");
    let home = table.iter().find(|b| b["url"].as_str().unwrap().contains("__home_route_view_1")).unwrap();
    let expected: Vec<u8> = site.home.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
    assert_eq!(home["size"], expected.len());
    let url = format!("/pkg/{}", home["url"].as_str().unwrap().trim_start_matches("./"));
    assert!(url.ends_with(&format!(".{}.wasm", hash(&expected))), "named by the MD5 of its content: {url}");
    for (name, bytes) in &site.home {
        let span = &home["files"][name.split('.').next().unwrap()];
        let (start, end) = (span[0].as_u64().unwrap() as usize, span[1].as_u64().unwrap() as usize);
        assert_eq!(&expected[start..end], bytes.as_slice(), "{name} where the table says");
    }

    for _ in 0..2 {
        // The same bytes whichever copy is sent (a quick one first, the best once made).
        let r = plain.get(s.url(&url)).header("accept-encoding", "gzip, br").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-encoding"], "br");
        assert_eq!(r.headers()["cache-control"], FOR_A_YEAR);
        let sent = r.bytes().await.unwrap();
        assert!(sent.len() < expected.len(), "compressed: {} of {}", sent.len(), expected.len());
        assert_eq!(unbrotli(&sent), expected);
    }
    let r = plain.get(s.url(&url)).header("accept-encoding", "gzip, br;q=0").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(r.bytes().await.unwrap().as_ref()).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, expected);
    let r = plain.get(s.url(&url)).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap().as_ref(), expected.as_slice());

    // The parts stay where they were, for pages that need only some of them.
    let (first, bytes) = &site.home[0];
    let r = plain.get(s.url(&format!("/pkg/{first}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    s.stop().await;
}

/// A rebuild under a running server changes the parts: the bundle that no longer matches its
/// name is not sent (the loader then fetches the parts one by one).
#[tokio::test]
async fn a_bundle_whose_parts_changed_is_not_sent() {
    let site = split_site();
    let s = TestServer::start_with_site(site.dir.path().to_str().unwrap()).await;
    let url = home_bundle(&s, &site).await;
    std::fs::write(site.dir.path().join("pkg").join(&site.home[1].0), b"rebuilt").unwrap();
    let r = reqwest::get(s.url(&url)).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("cache-control").is_none(), "nothing kept");
    s.stop().await;
}

/// Without `--split` there is no loader: nothing is rewritten and no bundle answers.
#[tokio::test]
async fn a_site_built_without_split_is_served_as_it_is() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let js = put(&pkg, "leadscore", "js", b"fetch(new URL(\"./leadscore.wasm\", import.meta.url));");
    let s = TestServer::start_with_site(site.path().to_str().unwrap()).await;
    let r = reqwest::get(s.url(&format!("/pkg/{js}"))).await.unwrap();
    assert_eq!(r.headers()["cache-control"], FOR_A_YEAR);
    assert!(!r.text().await.unwrap().contains("__leadscore"));
    assert_eq!(
        reqwest::get(s.url("/pkg/page__home_route_view_1.AAAAAAAAAAAAAAAAAAAAAA.wasm")).await.unwrap().status(),
        404
    );
    s.stop().await;
}

/// Rebuilt under a running server (`cargo leptos watch` restarts it only when the server
/// changes): the loader goes out as built and pages preload their parts again.
#[tokio::test]
async fn a_site_rebuilt_under_the_server_is_served_as_built() {
    let site = split_site();
    let s = TestServer::start_with_site(site.dir.path().to_str().unwrap()).await;
    let url = home_bundle(&s, &site).await;
    assert_eq!(reqwest::get(s.url(&url)).await.unwrap().status(), 200);

    let rebuilt = "import { initSync } from \"./leadscore.BBBBBBBBBBBBBBBBBBBBBB.js\";\n// rebuilt, longer\n";
    std::fs::write(site.dir.path().join(&site.loader[1..]), rebuilt).unwrap();
    let r = reqwest::get(s.url(&site.loader)).await.unwrap();
    assert_eq!(r.text().await.unwrap(), rebuilt, "as built");
    assert_eq!(reqwest::get(s.url(&url)).await.unwrap().status(), 404, "no bundle of the old build");
    s.stop().await;
}

/// A manifest naming anything but this build's files (here a path out of `pkg`) gets that
/// page no bundle; the others keep theirs.
#[tokio::test]
async fn a_page_whose_manifest_names_other_files_gets_no_bundle() {
    let site = split_site();
    let pkg = site.dir.path().join("pkg");
    std::fs::write(site.dir.path().join("secret.wasm"), b"not a part").unwrap();
    let manifest = std::fs::read_dir(&pkg)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("__wasm_split_manifest."))
        .unwrap()
        .path();
    let mut parsed: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    parsed["__other_route_view_1"].as_array_mut().unwrap().push(Value::from("../secret"));
    std::fs::write(&manifest, parsed.to_string()).unwrap();
    let s = TestServer::start_with_site(site.dir.path().to_str().unwrap()).await;
    let loader = reqwest::get(s.url(&site.loader)).await.unwrap().text().await.unwrap();
    let urls: Vec<String> = bundle_table(&loader).iter().map(|b| b["url"].as_str().unwrap().to_string()).collect();
    assert_eq!(urls.len(), 1, "{urls:?}");
    assert!(urls[0].contains("__home_route_view_1"), "{urls:?}");
    s.stop().await;
}
