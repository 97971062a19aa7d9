//! A server process SIGKILLed in the middle of a large batch ingest, then restarted on the
//! same database: every event that got a 202 is scored exactly once, and retried batches
//! never count twice. On SQLite, or on MongoDB with `LEADSCORE_TEST_BACKEND=mongodb`.

mod common;

use common::binary::Binary;
use common::{event, wait_drained, TestDatabase};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCHES: usize = 60;
const PER_BATCH: usize = 500;
const LEADS: usize = 97;

/// The server runs with access control on; this test's clients use an all-scopes key.
const KEY: &str = "crash-test-key-4e9a";

fn key_header() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", KEY.parse().unwrap());
    headers
}

fn spawn_server(database_url: &str) -> Binary {
    Binary::start_on(database_url, &[("API_KEYS", KEY)])
}

/// The events of batch `b`: ids are unique across batches, leads cycle through `LEADS`.
fn batch(b: usize) -> Vec<Value> {
    (0..PER_BATCH)
        .map(|i| event(&format!("b{b}-{i}"), &format!("lead-{}", (b * PER_BATCH + i) % LEADS), "Page View"))
        .collect()
}

/// Posts all batches with 4 concurrent clients; returns which batches got a 202.
async fn post_all(base: &str, acknowledged: Arc<Mutex<Vec<usize>>>, stop_after: Option<usize>) {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(key_header()).build().unwrap();
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, next, acknowledged, url) =
            (client.clone(), next.clone(), acknowledged.clone(), format!("{base}/api/events/batch"));
        tasks.push(tokio::spawn(async move {
            loop {
                let b = {
                    let mut n = next.lock().unwrap();
                    if *n >= BATCHES || stop_after.is_some_and(|s| acknowledged.lock().unwrap().len() >= s) {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                match client.post(&url).json(&batch(b)).send().await {
                    Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 409 => {
                        acknowledged.lock().unwrap().push(b)
                    }
                    Ok(r) => panic!("batch {b}: unexpected status {}", r.status()),
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_ingest_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "crash");

    // 1. Ingest until a dozen batches were acknowledged, then kill -9 while more are in flight
    //    and the worker is busy scoring.
    let mut server = spawn_server(&db.url);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let poster = tokio::spawn({
        let (base, acked) = (server.base.clone(), acked.clone());
        async move { post_all(&base, acked, None).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "ingest too slow to reach the kill point");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let _ = poster.await;
    let before_crash: Vec<usize> = acked.lock().unwrap().clone();
    assert!(
        before_crash.len() >= 12 && before_crash.len() < BATCHES,
        "killed mid-ingest: {} batches",
        before_crash.len()
    );

    // 2. Restart on the same database: everything acknowledged before the crash gets scored once.
    let mut server = spawn_server(&db.url);
    let client = reqwest::Client::builder().default_headers(key_header()).build().unwrap();
    wait_drained(&client, &server.base, Duration::from_secs(120)).await;
    let expected: HashMap<String, i64> = expected_scores(&before_crash);
    for (lead, min_score) in &expected {
        let detail = lead_detail(&client, &server.base, lead).await;
        let history = detail["history"].as_array().unwrap();
        let ids: std::collections::HashSet<&str> = history.iter().map(|h| h["eventId"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), history.len(), "{lead}: an event was scored twice");
        for b in &before_crash {
            for e in batch(*b).iter().filter(|e| e["leadId"] == lead.as_str()) {
                assert!(
                    ids.contains(e["eventId"].as_str().unwrap()),
                    "{lead}: acknowledged event {} lost",
                    e["eventId"]
                );
            }
        }
        let score = detail["lead"]["score"].as_i64().unwrap();
        assert!(score >= *min_score, "{lead}: {score} < {min_score}");
        assert_eq!(score, 5 * history.len() as i64, "{lead}: score is not the sum of its history");
    }

    // 3. Clients retry everything (as they would after connection errors): totals become
    //    exactly one scoring per event, whatever the crash left half-done.
    let all = Arc::new(Mutex::new(Vec::new()));
    post_all(&server.base, all.clone(), None).await;
    assert_eq!(all.lock().unwrap().len(), BATCHES);
    wait_drained(&client, &server.base, Duration::from_secs(120)).await;
    let every: Vec<usize> = (0..BATCHES).collect();
    for (lead, score) in expected_scores(&every) {
        let detail = lead_detail(&client, &server.base, &lead).await;
        assert_eq!(detail["lead"]["score"].as_i64().unwrap(), score, "{lead}");
        assert_eq!(detail["lead"]["eventCount"].as_i64().unwrap(), score / 5, "{lead}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    db.drop_now().await;
}

fn expected_scores(batches: &[usize]) -> HashMap<String, i64> {
    let mut scores = HashMap::new();
    for b in batches {
        for e in batch(*b) {
            *scores.entry(e["leadId"].as_str().unwrap().to_string()).or_insert(0) += 5;
        }
    }
    scores
}

async fn lead_detail(client: &reqwest::Client, base: &str, lead: &str) -> Value {
    let r = client.get(format!("{base}/api/leads/{lead}?historyLimit=500")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{lead}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_the_rest_is_scored_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "term");
    let mut server = spawn_server(&db.url);
    {
        let log = server.log.lock().unwrap();
        assert!(
            log.iter().any(|l| l.contains("opened store") && l.contains(db.backend())),
            "startup names the store: {log:?}"
        );
    }
    let client = reqwest::Client::builder().default_headers(key_header()).build().unwrap();
    let events: Vec<Value> =
        (0..5000).map(|i| event(&format!("t{i}"), &format!("lead-{}", i % 10), "Page View")).collect();
    let r = client.post(format!("{}/api/events/batch", server.base)).json(&events).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    // The worker finished its batch and stopped (the reader takes the last lines after the exit).
    server.wait_for_line("worker stopped", Duration::from_secs(10));

    let mut server = spawn_server(&db.url);
    wait_drained(&client, &server.base, Duration::from_secs(120)).await;
    for lead in 0..10 {
        let detail = lead_detail(&client, &server.base, &format!("lead-{lead}")).await;
        assert_eq!(detail["lead"]["score"], 2500, "lead-{lead}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    db.drop_now().await;
}
