//! Webhooks: subscriptions and their 400s, signed deliveries of score and stage changes to a
//! receiver that checks the signature, retries of a failing receiver, redeliver, delete, and
//! a server SIGKILLed between scoring and delivery delivering after its restart. SQLite, and
//! MongoDB when scripts/test.sh says so.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::binary::Binary;
use common::{event, keyed_client, wait_drained, TestDatabase, TestServer, ADMIN_KEY};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: its path, signature header and body, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    signature: String,
    body: String,
    answered: u16,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers `status`.
struct Receiver {
    base: String,
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let status = Arc::new(AtomicU16::new(200));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (status.clone(), got.clone());
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (s, g) = (s.clone(), g.clone());
                async move {
                    let answered = s.load(Ordering::SeqCst);
                    let signature =
                        headers.get("leadscore-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let body = String::from_utf8_lossy(&body).to_string();
                    g.lock().unwrap().push(Received { path: uri.path().to_string(), signature, body, answered });
                    StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, status, got }
    }

    /// Waits (at most 30 s) until it got `n` requests on `path`; returns them.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Received> = self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{path}: {} of {n} requests: {got:?}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks `t=<unix>,v1=<hex>` against the secret, independently of the server's code.
fn assert_signed(r: &Received, secret: &str) {
    let (t, v1) = r.signature.split_once(",v1=").expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let unix: i64 = t.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - unix).abs() < 300, "a current timestamp: {t}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, want, "signature of {}", r.body);
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test]
async fn deliveries_are_signed_retried_redelivered_and_stop_with_the_subscription() {
    let s = TestServer::start().await;
    let receiver = Receiver::start().await;
    for (bad, field) in [
        (json!({"url": "ftp://x", "events": ["scoreChanged"]}), "url"),
        (json!({"url": "http://x.test"}), "events"),
        (json!({"url": "http://x.test", "events": ["leadMerged"]}), "events[0]"),
    ] {
        let (status, answer) = s.post("/api/webhooks", &bad).await;
        assert_eq!((status, answer["details"][0]["field"].as_str()), (400, Some(field)), "{bad}: {answer}");
    }
    let hook = json!({"url": format!("{}/a", receiver.base), "events": ["stageChanged", "scoreChanged"]});
    let (status, created) = s.post("/api/webhooks", &hook).await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (created["id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string());
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{secret}");
    let (_, listed) = s.get("/api/webhooks").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "the secret is shown once: {listed}");
    assert_eq!(listed[0]["events"], json!(["stageChanged", "scoreChanged"]));

    // A purchase: 0 → 100, Cold → MQL. One delivery of each kind.
    assert_eq!(s.post("/api/events", &event("w-1", "crm-lead", "Purchase")).await.0, 202);
    let got = receiver.wait_for("/a", 2).await;
    for r in &got {
        assert_signed(r, &secret);
    }
    let mut kinds: Vec<Value> = got.iter().map(body).collect();
    kinds.sort_by_key(|b| b["type"].as_str().unwrap().to_string());
    assert_eq!(kinds[0]["id"], "scoreChanged:w-1");
    assert_eq!((&kinds[0]["from"], &kinds[0]["to"]), (&json!(0), &json!(100)));
    assert_eq!(kinds[1]["type"], "stageChanged");
    assert_eq!((&kinds[1]["from"], &kinds[1]["to"]), (&json!("Cold"), &json!("MQL")));
    assert_eq!(kinds[1]["lead"], json!({"id": "crm-lead", "score": 100, "stage": "MQL"}));
    assert!(kinds[1]["occurredAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", kinds[1]);

    // The receiver fails: the delivery is retried, and listed with why.
    receiver.status.store(503, Ordering::SeqCst);
    assert_eq!(s.post("/api/events", &event("w-2", "crm-lead", "Demo Request")).await.0, 202);
    let failed = receiver.wait_for("/a", 3).await;
    assert_eq!(body(&failed[2])["id"], "scoreChanged:w-2", "same stage: score only");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let (status, list) = s.get(&format!("/api/webhooks/{id}/deliveries")).await;
        assert_eq!(status, 200);
        let newest = list[0].clone();
        if newest["attempts"].as_u64() >= Some(1) {
            break newest;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((pending["state"].as_str(), pending["lastStatus"].as_u64()), (Some("pending"), Some(503)), "{pending}");
    assert!(pending["nextAttemptAt"].is_string() && pending["lastError"].is_string(), "{pending}");
    // Fixed; redeliver now rather than wait for the backoff.
    receiver.status.store(200, Ordering::SeqCst);
    let redeliver = format!("/api/webhooks/{id}/deliveries/{}/redeliver", pending["id"]);
    assert_eq!(s.post(&redeliver, &json!({})).await.0, 202);
    let again = receiver.wait_for("/a", 4).await;
    assert_eq!(body(&again[3])["id"], "scoreChanged:w-2", "the same id: the receiver dedupes by it");
    assert_signed(&again[3], &secret);
    let (status, answer) = s.post(&format!("/api/webhooks/{id}/deliveries/999999/redeliver"), &json!({})).await;
    assert_eq!((status, answer["details"][0]["field"].as_str()), (404, Some("delivery")));

    // Deleted: it hears nothing more; a second subscription still does.
    let (_, other) =
        s.post("/api/webhooks", &json!({"url": format!("{}/b", receiver.base), "events": ["scoreChanged"]})).await;
    let r = s.client.delete(s.url(&format!("/api/webhooks/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(s.get(&format!("/api/webhooks/{id}/deliveries")).await.0, 404);
    assert_eq!(s.post("/api/events", &event("w-3", "crm-lead", "Page View")).await.0, 202);
    let b = receiver.wait_for("/b", 1).await;
    assert_signed(&b[0], other["secret"].as_str().unwrap());
    assert_eq!(receiver.wait_for("/a", 0).await.len(), 4, "the deleted subscription got nothing more");
    s.stop().await;
}

/// The delivery is in the outbox with the score change: a server killed before the receiver
/// took it delivers it after the restart.
#[tokio::test]
async fn a_server_killed_between_scoring_and_delivery_delivers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "webhook_kill");
    let receiver = Receiver::start().await;
    receiver.status.store(503, Ordering::SeqCst);
    let env = [("API_KEYS", ADMIN_KEY), ("WEBHOOK_RETRY_MS", "200")];
    let client = keyed_client(ADMIN_KEY);
    let secret;
    {
        let mut server = Binary::start_on(&db.url, &env);
        let hook = json!({"url": format!("{}/crm", receiver.base), "events": ["stageChanged"]});
        let created: Value = client
            .post(format!("{}/api/webhooks", server.base))
            .json(&hook)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        secret = created["secret"].as_str().unwrap().to_string();
        let r = client.post(format!("{}/api/events", server.base)).json(&event("k-1", "kill-lead", "Purchase")).send();
        assert_eq!(r.await.unwrap().status().as_u16(), 202);
        // Scored, and the receiver refused it: the delivery waits in the outbox.
        receiver.wait_for("/crm", 1).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
    }
    receiver.status.store(200, Ordering::SeqCst);
    let server = Binary::start_on(&db.url, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let got = receiver.got.lock().unwrap().clone();
        if let Some(ok) = got.iter().find(|r| r.answered == 200) {
            break ok.clone();
        }
        assert!(Instant::now() < deadline, "never delivered after the restart: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_signed(&delivered, &secret);
    assert_eq!(body(&delivered)["id"], "stageChanged:k-1");
    assert_eq!(body(&delivered)["to"], "MQL");
    wait_drained(&client, &server.base, Duration::from_secs(30)).await;
    drop(server);
    db.drop_now().await;
}
