//! Segment's official Python SDK (segment-analytics-python, installed by scripts/setup.sh)
//! pointed at our host: what it sends — single calls, batches flushed plain and gzipped,
//! Basic-auth write key, `sentAt` — ends up scored, the anonymous visitor merged into the user
//! it identified as. SQLite, and MongoDB when scripts/test.sh says so.

mod common;

use common::{segment, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn the_official_python_sdk_tracks_identifies_aliases_and_flushes_batches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/sdk-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let s = TestServer::start().await;
    let (status, created) = s.post("/api/keys", &json!({"name": "sdk", "scopes": ["ingest"]})).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_string();

    let script = root.join("tests/sdk/segment_sdk.py");
    let base = s.url("");
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args([&base, &key, "sdk"]).output())
            .await
            .unwrap()
            .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK reported errors:\n{stderr}");
    s.drained().await;

    for variant in ["plain", "gz"] {
        let (status, user) = s.get(&format!("/api/leads/{}?limit=1", segment(&format!("sdk-user-{variant}")))).await;
        assert_eq!(status, 200, "{user}");
        // The page view before identifying (5), merged in by identify; Demo Request 50;
        // 250 × Email Open 10; identify, alias and screen score nothing.
        assert_eq!(user["lead"]["score"], 2555, "{variant}: {user}");
        assert_eq!(user["lead"]["eventCount"], 255, "{variant}: every message is one event");
        assert_eq!(user["lead"]["profile"], json!({"email": "ada@example.com", "name": "Ada"}), "identify's traits");
        // The anonymous id now leads to the user (the client follows the 308).
        let (_, anonymous) = s.get(&format!("/api/leads/sdk-anon-{variant}?eventsLimit=500")).await;
        assert_eq!(anonymous["lead"]["_id"], format!("sdk-user-{variant}"), "{anonymous}");
        let events = anonymous["events"].as_array().unwrap();
        let page: &Value = events.iter().find(|e| e["eventType"] == "Page View").unwrap();
        assert_eq!((&page["eventType"], &page["metadata"]["path"]), (&json!("Page View"), &json!("/pricing")));
        assert_eq!(page["metadata"]["context"]["library"]["name"], "analytics-python");
    }
    s.stop().await;
}
