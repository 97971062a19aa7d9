//! Starts a real server on an ephemeral port with a fresh database, for HTTP tests.
#![allow(dead_code)]

pub mod backdoor;
pub mod binary;
pub mod sse;

use leadscore::server::config::{Config, Database, FileConfig};
use leadscore::server::http::{launch, Running};
use leptos::prelude::LeptosOptions;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A key with every scope (as if from `API_KEYS`); `client` sends it on every request.
pub const ADMIN_KEY: &str = "test-admin-key-6f1d2c";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    running: Option<Running>,
    /// The MongoDB database to drop afterwards, when running on MongoDB.
    mongo_database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// A config on a fresh SQLite file in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::from_sources(FileConfig::default(), |_| None).unwrap();
    config.database = Database::Sqlite(dir.join("test.db"));
    config.port = 0;
    config.worker_idle_poll_ms = 50;
    config.api_keys = vec![ADMIN_KEY.to_string()];
    config
}

/// With `LEADSCORE_TEST_BACKEND=mongodb`, HTTP tests run on a fresh database at
/// `MONGODB_TEST_URI` (scripts/test.sh does this when the URI is set).
pub fn on_mongo() -> bool {
    std::env::var("LEADSCORE_TEST_BACKEND").is_ok_and(|b| b == "mongodb")
}

fn mongo_backend() -> Option<(String, String)> {
    if !on_mongo() {
        return None;
    }
    let uri = std::env::var("MONGODB_TEST_URI").expect("LEADSCORE_TEST_BACKEND=mongodb needs MONGODB_TEST_URI");
    Some(fresh_mongo_database(&uri, "http"))
}

/// A URI for a new database `leadscore_<purpose>_<pid>_<n>` on the server at `uri`, and its
/// name (to drop it afterwards).
pub fn fresh_mongo_database(uri: &str, purpose: &str) -> (String, String) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("leadscore_{purpose}_{}_{n}", std::process::id());
    // mongodb://host[:port][/db][?options] → same with /<name>
    let (base, query) = uri.split_once('?').map_or((uri, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let hosts_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    // Credentials authenticate against the URI's database (or admin): keep that source.
    let mut query = query.map(str::to_string).unwrap_or_default();
    if base.contains('@') && !query.contains("authSource") {
        let source = base[hosts_end..].trim_start_matches('/');
        let source = if source.is_empty() { "admin" } else { source };
        query = if query.is_empty() { format!("authSource={source}") } else { format!("{query}&authSource={source}") };
    }
    let with_db =
        format!("{}/{name}{}", &base[..hosts_end], if query.is_empty() { String::new() } else { format!("?{query}") });
    (with_db, name)
}

/// Drops a database `fresh_mongo_database` named.
pub async fn drop_mongo_database(uri: &str, name: &str) {
    let store = leadscore::service::store::mongo::MongoStore::connect_to(uri, Some(name)).await.unwrap();
    store.drop_database().await.unwrap();
}

/// A fresh database for one test: a SQLite file in `dir`, or a MongoDB database (dropped by
/// `TestDatabase::drop_now`).
pub struct TestDatabase {
    pub url: String,
    mongo: Option<(String, String)>,
}

impl TestDatabase {
    pub fn new(dir: &std::path::Path, purpose: &str) -> Self {
        if on_mongo() {
            let uri = std::env::var("MONGODB_TEST_URI").expect("LEADSCORE_TEST_BACKEND=mongodb needs MONGODB_TEST_URI");
            let (url, name) = fresh_mongo_database(&uri, purpose);
            return Self { url: url.clone(), mongo: Some((url, name)) };
        }
        Self { url: format!("sqlite://{}", dir.join(format!("{purpose}.db")).display()), mongo: None }
    }

    pub fn backend(&self) -> &'static str {
        if self.mongo.is_some() {
            "mongodb"
        } else {
            "sqlite"
        }
    }

    pub async fn drop_now(self) {
        if let Some((uri, name)) = self.mongo {
            drop_mongo_database(&uri, &name).await;
        }
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        let mongo_database = mongo_backend();
        if let Some((uri, _)) = &mongo_database {
            config.database = Database::Mongo(uri.clone());
        }
        adjust(&mut config);
        Self::launch(config, mongo_database, dir).await
    }

    /// A second instance on this one's MongoDB database (as behind a load balancer); `None`
    /// on SQLite, whose file one process holds. The database is dropped with the first.
    pub async fn start_beside(&self) -> Option<TestServer> {
        let (uri, _) = self.mongo_database.as_ref()?;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.database = Database::Mongo(uri.clone());
        Some(Self::launch(config, None, dir).await)
    }

    /// A server whose static files (site root) are those in `site_root`.
    pub async fn start_with_site(site_root: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let options = LeptosOptions::builder().output_name("leadscore").site_root(site_root).build();
        Self::launch_with(config, options, None, dir).await
    }

    /// Serves `config` on an ephemeral port; `mongo_database` is dropped when it stops.
    async fn launch(config: Config, mongo_database: Option<(String, String)>, dir: tempfile::TempDir) -> Self {
        // No static files: a built site (target/site) would be read at every start.
        let no_site = dir.path().join("site").to_string_lossy().to_string();
        let options = LeptosOptions::builder().output_name("leadscore").site_root(no_site).build();
        Self::launch_with(config, options, mongo_database, dir).await
    }

    async fn launch_with(
        config: Config,
        options: LeptosOptions,
        mongo_database: Option<(String, String)>,
        dir: tempfile::TempDir,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = launch(config, options, listener).await.unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: keyed_client(ADMIN_KEY),
            running: Some(running),
            mongo_database,
            _dir: dir,
        }
    }

    /// The backend this server runs on: `sqlite`, or `mongodb` with LEADSCORE_TEST_BACKEND.
    pub fn backend(&self) -> &'static str {
        if self.mongo_database.is_some() {
            "mongodb"
        } else {
            "sqlite"
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self.client.post(self.url(path)).header("content-type", content_type).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the worker has scored everything accepted so far (bounded: 120 s, for a
    /// slow MongoDB stand-in on a busy machine).
    pub async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, h) = self.get("/api/health").await;
            if h["queue"]["depth"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "queue did not drain: {h}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        if let Some((uri, name)) = self.mongo_database.take() {
            drop_mongo_database(&uri, &name).await;
        }
    }
}

/// Waits (at most `within`) until the server at `base` has scored everything it accepted and
/// its worker is alive; a server still starting up (no answer yet) is waited for too.
pub async fn wait_drained(client: &reqwest::Client, base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut last = Value::Null;
        if let Ok(r) = client.get(format!("{base}/api/health")).send().await {
            last = r.json().await.unwrap_or(Value::Null);
            if last["queue"]["depth"] == 0 && last["worker"]["alive"] == true {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that no event was set aside as a dead letter: an outage is the store's fault,
/// never an event's.
pub async fn assert_no_dead_letters(client: &reqwest::Client, base: &str) {
    let h: Value = client.get(format!("{base}/api/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["queue"]["deadLetters"], 0, "an outage set events aside: {h}");
}

/// The first 500 leads of the leaderboard.
pub async fn leaderboard(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let r = client.get(format!("{base}/api/leads?limit=500")).send().await.unwrap();
    r.json::<Value>().await.unwrap().as_array().cloned().expect("a list of leads")
}

/// A client with no credentials that keeps cookies and, like a browser on the dashboard,
/// says it comes from `base`. It does not follow redirects, so tests see them.
pub fn browser_at(base: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("origin", base.parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client that sends `key` as `X-API-Key` on every request.
pub fn keyed_client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

impl TestServer {
    /// A client with no credentials that keeps cookies and, like a browser on the dashboard,
    /// says it comes from this server. It does not follow redirects, so tests see them.
    pub fn browser(&self) -> reqwest::Client {
        browser_at(&self.base)
    }

    /// Creates an account with the admin key.
    pub async fn create_user(&self, username: &str, role: &str, password: &str) {
        let (status, body) =
            self.post("/api/users", &json!({"username": username, "role": role, "password": password})).await;
        assert_eq!(status, 201, "{body}");
    }

    /// A browser client signed in as `username`.
    pub async fn signed_in(&self, username: &str, password: &str) -> reqwest::Client {
        let client = self.browser();
        let r = client
            .post(self.url("/api/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login as {username}: {}", r.text().await.unwrap_or_default());
        client
    }
}

pub fn event(id: &str, lead: &str, ty: &str) -> Value {
    json!({"eventId": id, "leadId": lead, "eventType": ty, "timestamp": "2024-05-01T12:00:00.000Z"})
}

/// Encodes a lead id as one path segment.
pub fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
