//! `leadscore backup` while the server ingests, then `leadscore restore` into a new place:
//! every event acknowledged before the backup began is there, and scores equal a replay.
//! Embedded store only (for MongoDB the README points to mongodump / Atlas backups).

mod common;

use common::binary::Binary;
use common::{event, keyed_client, wait_drained};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "backup-key-0c4f";
/// Enough leads that each one's events fit one page (500) however far ingest gets.
const LEADS: usize = 97;

fn cli(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("LEPTOS_OUTPUT_NAME", "leadscore")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the leadscore binary")
}

fn batch(b: usize) -> Value {
    Value::Array(
        (0..100)
            .map(|i| event(&format!("k{b}-{i}"), &format!("lead-{}", (b * 100 + i) % LEADS), "Page View"))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_ingest_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let server = Binary::start(&live, &[("API_KEYS", KEY), ("RATE_LIMIT_PER_SECOND", "0")]);
    let client = keyed_client(KEY);

    // Ingest goes on in the background for the whole test.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poster = tokio::spawn({
        let (client, base, acked, stop) = (client.clone(), server.base.clone(), acked.clone(), stop.clone());
        async move {
            for b in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = client.post(format!("{base}/api/events/batch")).json(&batch(b)).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202);
                acked.lock().unwrap().push(b);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "ingest too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 1. The backup, while events keep arriving.
    let before: Vec<usize> = acked.lock().unwrap().clone();
    let copy = dir.path().join("copy.db");
    let out = cli(&live, &["backup", "--to", copy.to_str().unwrap()]);
    assert!(out.status.success(), "backup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("events"), "says what it copied");
    let during = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();
    assert!(during > before.len() || acked.lock().unwrap().len() > before.len(), "ingest went on meanwhile");

    // 2. A running server's store is never overwritten.
    let out = cli(&live, &["restore", "--from", copy.to_str().unwrap(), "--force"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running Leadscore server"));

    // 3. Restored elsewhere and served: everything acknowledged before the backup is there.
    let restored = dir.path().join("restored").join("leadscore.db");
    let out = cli(&restored, &["restore", "--from", copy.to_str().unwrap()]);
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    drop(server);
    let server = Binary::start(&restored, &[("API_KEYS", KEY)]);
    wait_drained(&client, &server.base, Duration::from_secs(60)).await;
    let mut counted = 0;
    for l in 0..LEADS {
        let url = format!("{}/api/leads/lead-{l}?historyLimit=500&eventsLimit=500", server.base);
        let detail: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let events: Vec<&str> =
            detail["events"].as_array().unwrap().iter().map(|e| e["eventId"].as_str().unwrap()).collect();
        for b in &before {
            for e in batch(*b).as_array().unwrap().iter().filter(|e| e["leadId"] == format!("lead-{l}").as_str()) {
                assert!(events.contains(&e["eventId"].as_str().unwrap()), "lead-{l}: {} lost", e["eventId"]);
            }
        }
        // Scores equal a replay of what the copy holds: 5 points per event, history adds up.
        let count = detail["lead"]["eventCount"].as_i64().unwrap();
        assert_eq!(detail["lead"]["score"].as_i64().unwrap(), 5 * count, "lead-{l}");
        let history: i64 = detail["history"].as_array().unwrap().iter().map(|h| h["delta"].as_i64().unwrap()).sum();
        assert_eq!(history, 5 * count, "lead-{l}: history adds up");
        counted += count;
    }
    assert!(counted >= 100 * before.len() as i64, "{counted} events for {} batches", before.len());
}
