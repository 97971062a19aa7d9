//! Starts a real server on an ephemeral port with a fresh database, for HTTP tests.
#![allow(dead_code)]

use leadscore::server::config::{Config, Database, FileConfig};
use leadscore::server::http::{launch, Running};
use leptos::prelude::LeptosOptions;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::from_sources(FileConfig::default(), |_| None).unwrap();
    config.database = Database::Sqlite(dir.join("test.db"));
    config.port = 0;
    config.worker_idle_poll_ms = 50;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = LeptosOptions::builder().output_name("leadscore").build();
        let running = launch(config, options, listener).await.unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            running: Some(running),
            _dir: dir,
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

    /// Waits until the worker has scored everything accepted so far (bounded: 30 s).
    pub async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
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
