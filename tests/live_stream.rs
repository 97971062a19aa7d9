//! `/api/stream` over real HTTP: frames, coalescing, Last-Event-ID replay and reload.

mod common;

use common::sse::SseClient;
use common::{event, TestServer};
use serde_json::Value;
use std::time::Duration;

/// Reads `leadUpdated` frames until `lead` reaches `score`; returns the frames read.
async fn until_score(sse: &mut SseClient, lead: &str, score: i64) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let e = sse.next_of("leadUpdated").await;
        assert!(e.id.is_some(), "every frame has an id");
        let updates: Value = serde_json::from_str(&e.data).unwrap();
        let done = updates.as_array().unwrap().iter().any(|u| u["leadId"] == lead && u["score"] == score);
        frames.push(updates);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn score_changes_arrive_coalesced_per_lead() {
    let s = TestServer::start().await;
    let mut sse = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    let ready = sse.next_of("ready").await;
    assert!(ready.id.as_deref().unwrap().ends_with("-0"));

    let batch: Vec<Value> =
        (0..200).map(|i| event(&format!("e{i}"), if i % 2 == 0 { "even" } else { "odd" }, "Page View")).collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(batch)).await.0, 202);
    let frames = until_score(&mut sse, "even", 500).await;
    // 200 changes arrive folded: at most one entry per lead per frame, so far fewer entries
    // than changes (however many frames a slow machine needs).
    let entries: usize = frames.iter().map(|f| f.as_array().unwrap().len()).sum();
    assert!(entries < 200, "coalesced: {entries} entries for 200 changes");
    for f in &frames {
        let leads: Vec<_> = f.as_array().unwrap().iter().map(|u| u["leadId"].as_str().unwrap()).collect();
        let unique: std::collections::HashSet<_> = leads.iter().collect();
        assert_eq!(leads.len(), unique.len(), "one entry per lead per frame");
        for u in f.as_array().unwrap() {
            for key in ["leadId", "score", "delta", "eventType", "updatedAt"] {
                assert!(u.get(key).is_some(), "{key} in {u}");
            }
        }
    }
    let total_delta: i64 = frames
        .iter()
        .flat_map(|f| f.as_array().unwrap().iter())
        .filter(|u| u["leadId"] == "even")
        .map(|u| u["delta"].as_i64().unwrap())
        .sum();
    assert_eq!(total_delta, 500, "coalesced deltas add up");
    s.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_resumes_from_last_event_id() {
    let s = TestServer::start().await;
    let mut first = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    assert_eq!(s.post("/api/events", &event("r1", "lead", "Email Open")).await.0, 202);
    let seen = first.next_of("leadUpdated").await;
    drop(first); // the browser loses its connection

    // Another client stays connected: once it has the next frame, that frame is published.
    let mut witness = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    assert_eq!(s.post("/api/events", &event("r2", "lead", "Purchase")).await.0, 202);
    until_score(&mut witness, "lead", 110).await;

    let mut again = SseClient::connect(&s.client, &s.url("/api/stream"), seen.id.as_deref()).await;
    let replayed = again.next().await;
    assert_eq!(replayed.event, "leadUpdated", "the missed frame comes first");
    let updates: Value = serde_json::from_str(&replayed.data).unwrap();
    assert_eq!(updates[0]["score"], 110);
    assert_eq!(updates[0]["eventType"], "Purchase");
    assert_eq!(updates[0]["stage"], "MQL");
    let moved = again.next().await;
    assert_eq!(moved.event, "stageChanged", "the frame's stage move is replayed with it");
    assert!(moved.data.contains(r#""from":"Cold","to":"MQL""#), "{}", moved.data);
    assert_eq!(again.next().await.event, "ready");

    // An id from another server run cannot be resumed: the client must reload its data.
    let mut stale = SseClient::connect(&s.client, &s.url("/api/stream"), Some("oldrun-12")).await;
    assert_eq!(stale.next().await.event, "reload");
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_open_streams() {
    let s = TestServer::start().await;
    let mut sse = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    sse.next_of("ready").await;
    tokio::time::timeout(Duration::from_secs(10), s.stop()).await.expect("shutdown does not wait for SSE clients");
}
