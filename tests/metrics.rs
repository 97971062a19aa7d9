//! `GET /metrics`: after known traffic, the Prometheus counters say exactly what happened.
//! One test in this binary: the metrics recorder is the process's, so a second server here
//! would add its own traffic to the counts.

mod common;

use common::sse::SseClient;
use common::{event, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};

/// The value of the sample `name{labels}` (labels in any order), if the text has it.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        if series_name != name {
            return None;
        }
        let have: Vec<&str> = rest.trim_end_matches('}').split(',').filter(|s| !s.is_empty()).collect();
        let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        (have.len() == want.len() && want.iter().all(|w| have.contains(&w.as_str()))).then(|| value.parse().ok())?
    })
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn counters_match_known_traffic_and_the_metrics_port_needs_no_key() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let s = TestServer::start_with(|c| c.metrics_addr = Some(metrics_addr)).await;

    // Known traffic: 2 accepted, 1 duplicate and 1 refused single events; a batch of one
    // new, one bad and one repeated; one Segment track.
    for (id, expected) in [("m1", 202), ("m2", 202), ("m1", 409)] {
        assert_eq!(s.post("/api/events", &event(id, "lead-m", "Page View")).await.0, expected);
    }
    assert_eq!(s.post("/api/events", &json!({"eventId": "bad"})).await.0, 400);
    let batch = json!([event("m3", "lead-m", "Email Open"), {"eventId": "m4"}, event("m3", "lead-m", "Email Open")]);
    assert_eq!(s.post("/api/events/batch", &batch).await.0, 202);
    assert_eq!(s.post("/v1/track", &json!({"userId": "lead-m", "event": "Purchase", "messageId": "m5"})).await.0, 200);
    s.drained().await;

    let (status, _) = {
        let r = reqwest::Client::new().get(s.url("/metrics")).send().await.unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 401, "the main port's /metrics needs the read scope");
    let text = scrape(&s.client, &s.url("/metrics")).await;
    let events = |endpoint: &str, outcome: &str| {
        sample(&text, "leadscore_events_total", &[("endpoint", endpoint), ("outcome", outcome)]).unwrap_or(0.0)
    };
    assert_eq!(
        [events("/api/events", "accepted"), events("/api/events", "duplicate"), events("/api/events", "rejected")],
        [2.0, 1.0, 1.0],
        "{text}"
    );
    assert_eq!(
        [
            events("/api/events/batch", "accepted"),
            events("/api/events/batch", "duplicate"),
            events("/api/events/batch", "rejected")
        ],
        [1.0, 1.0, 1.0]
    );
    assert_eq!(events("/v1/track", "accepted"), 1.0);
    assert_eq!(sample(&text, "leadscore_events_scored_total", &[]), Some(4.0), "{text}");
    assert_eq!(sample(&text, "leadscore_queue_depth", &[]), Some(0.0));
    assert_eq!(sample(&text, "leadscore_queue_oldest_unscored_age_seconds", &[]), Some(0.0));
    assert_eq!(sample(&text, "leadscore_worker_alive", &[]), Some(1.0));
    assert_eq!(sample(&text, "leadscore_dead_letters", &[]), Some(0.0));
    let timed = |status: &str| {
        let labels = [("route", "/api/events"), ("method", "POST"), ("status", status)];
        sample(&text, "leadscore_http_request_duration_seconds_count", &labels)
    };
    assert_eq!([timed("202"), timed("409"), timed("400")], [Some(2.0), Some(1.0), Some(1.0)]);
    let batches = sample(&text, "leadscore_worker_batch_events_count", &[]).unwrap();
    let batched = sample(&text, "leadscore_worker_batch_events_sum", &[]).unwrap();
    assert!(batches >= 1.0 && batched == 4.0, "every scored event was in a worker batch: {batches} / {batched}");
    assert!(text.contains("leadscore_http_request_duration_seconds_bucket{"), "histograms, not summaries");
    if s.backend() == "sqlite" {
        // At least the accepted events' commit and the scoring's.
        let commits = sample(&text, "leadscore_sqlite_commit_duration_seconds_count", &[]).unwrap_or(0.0);
        assert!(commits >= 2.0, "the embedded store's commits are timed: {commits}");
    }

    // Stream clients are counted while connected.
    let stream = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    let text = scrape(&s.client, &s.url("/metrics")).await;
    assert_eq!(sample(&text, "leadscore_stream_clients", &[]), Some(1.0));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&s.client, &s.url("/metrics")).await;
        if sample(&text, "leadscore_stream_clients", &[]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "a closed stream is no longer counted: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The separate metrics address: the same metrics, no credentials, nothing else.
    let anonymous = reqwest::Client::new();
    let text = scrape(&anonymous, &format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(sample(&text, "leadscore_events_scored_total", &[]), Some(4.0));
    let r = anonymous.get(format!("http://{metrics_addr}/api/leads")).send().await.unwrap();
    assert_eq!(r.status(), 404, "only /metrics is served there");
    s.stop().await;
}
