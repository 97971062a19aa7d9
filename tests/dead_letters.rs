//! Poison events: an event the worker cannot read or apply is retried on its own and then
//! set aside in the dead-letter list, while every other event is scored; an admin retries it
//! once repaired (scored exactly once) or discards it. Runs on SQLite, and on MongoDB with
//! LEADSCORE_TEST_BACKEND=mongodb.

mod common;

use common::{event, segment, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ATTEMPTS: u32 = 3;

async fn server() -> TestServer {
    TestServer::start_with(|c| c.dead_letter_after = ATTEMPTS).await
}

/// Waits (at most 30 s) until the dead-letter list holds `n` entries; returns it.
async fn dead_letters(s: &TestServer, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = s.get("/api/dead-letters").await;
        assert_eq!(status, 200, "{list}");
        if list["total"] == n {
            return list;
        }
        assert!(Instant::now() < deadline, "expected {n} dead letters, have {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lead(s: &TestServer, id: &str) -> Value {
    let (status, lead) = s.get(&format!("/api/leads/{}", segment(id))).await;
    assert_eq!(status, 200, "{lead}");
    lead["lead"].clone()
}

fn batch(prefix: &str, leads: &[&str], each: usize) -> Value {
    let items: Vec<Value> = (0..each)
        .flat_map(|i| leads.iter().map(move |l| event(&format!("{prefix}-{l}-{i}"), l, "Email Open")))
        .collect();
    Value::Array(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_set_aside_while_the_rest_is_scored_and_scored_once_after_repair() {
    let s = server().await;
    // At the head of the queue, a stored event whose timestamp no longer reads.
    s.insert_unreadable_event(0, "poison-1", "lead-p", "Purchase").await;
    let (status, report) = s.post("/api/events/batch", &batch("ok", &["a", "b"], 10)).await;
    assert_eq!(status, 202, "{report}");

    let list = dead_letters(&s, 1).await;
    let letter = &list["deadLetters"][0];
    assert_eq!((letter["id"].as_i64(), letter["eventId"].as_str()), (Some(0), Some("poison-1")), "{letter}");
    assert_eq!(letter["leadId"], "lead-p");
    assert_eq!(letter["attempts"], ATTEMPTS);
    let error = letter["error"].as_str().unwrap();
    assert!(error.contains("timestamp"), "the error names what does not read: {error}");
    assert!(letter["raw"].as_str().unwrap().contains("not a time"), "the stored event is shown: {letter}");
    assert!(letter["deadLetteredAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{letter}");

    // Sent again while it does not read: still a duplicate, alone or in a batch.
    let (status, body) = s.post("/api/events", &event("poison-1", "lead-p", "Purchase")).await;
    assert_eq!((status, &body["event"]), (409, &Value::Null), "{body}");
    let (status, body) = s.post("/api/events/batch", &json!([event("poison-1", "lead-p", "Purchase")])).await;
    assert_eq!((status, body["duplicates"].as_u64()), (409, Some(1)), "{body}");

    // Everything else was scored, and health says where the bad one is.
    s.drained().await;
    for l in ["a", "b"] {
        assert_eq!(lead(&s, l).await["score"], 100, "10 email opens of 10 points");
    }
    let (status, health) = s.get("/api/health").await;
    assert_eq!(status, 200, "one bad event does not make the server unhealthy: {health}");
    assert_eq!(
        (health["queue"]["deadLetters"].as_u64(), health["worker"]["failingEvents"].as_u64()),
        (Some(1), Some(0))
    );

    // Retried before the repair: it fails again and comes back to the list.
    let (status, body) = s.post("/api/dead-letters/0/retry", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dead_letters(&s, 0).await["deadLetters"], json!([]));
    dead_letters(&s, 1).await;

    // Repaired, then retried: scored once.
    s.repair_event(0).await;
    let (status, body) = s.post("/api/dead-letters/0/retry", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    s.drained().await;
    let p = lead(&s, "lead-p").await;
    assert_eq!((p["score"].as_i64(), p["eventCount"].as_i64()), (Some(100), Some(1)), "{p}");
    assert_eq!(dead_letters(&s, 0).await["total"], 0);
    let (status, body) = s.post("/api/dead-letters/0/retry", &json!({})).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (404, Some("id")), "{body}");
    let (status, again) = s.post("/api/events", &event("poison-1", "lead-p", "Purchase")).await;
    assert_eq!(
        (status, again["message"].as_str()),
        (409, Some("Duplicate event")),
        "its eventId still dedupes: {again}"
    );
    assert_eq!(lead(&s, "lead-p").await["score"], 100);

    let (_, audit) = s.get("/api/audit?limit=10").await;
    let retries = audit.as_array().unwrap().iter().filter(|e| e["action"] == "deadLetter.retry").count();
    assert_eq!(retries, 2, "retries are audited: {audit}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_lead_the_store_cannot_update_are_singled_out_and_set_aside() {
    let s = server().await;
    s.insert_broken_lead("broken").await;
    // Interleaved, in one batch: the broken lead's events fail every batch they are in.
    let (status, report) = s.post("/api/events/batch", &batch("mixed", &["c", "broken", "d", "e"], 5)).await;
    assert_eq!(status, 202, "{report}");

    let list = dead_letters(&s, 5).await;
    let letters = list["deadLetters"].as_array().unwrap();
    assert!(letters.iter().all(|l| l["leadId"] == "broken" && l["attempts"] == ATTEMPTS), "{list}");
    assert!(letters.iter().all(|l| l["error"].as_str().unwrap().contains("score")), "{list}");
    s.drained().await;
    for l in ["c", "d", "e"] {
        let lead = lead(&s, l).await;
        assert_eq!((lead["score"].as_i64(), lead["eventCount"].as_i64()), (Some(50), Some(5)), "{lead}");
    }

    // Discarded: gone from the list for good, and its eventId still dedupes.
    let id = letters[0]["id"].as_i64().unwrap();
    let r = s.client.delete(s.url(&format!("/api/dead-letters/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(dead_letters(&s, 4).await["deadLetters"].as_array().unwrap().len(), 4);
    let r = s.client.delete(s.url(&format!("/api/dead-letters/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) =
        s.post("/api/events", &event(letters[0]["eventId"].as_str().unwrap(), "broken", "Email Open")).await;
    assert_eq!(status, 409);

    // Pages continue after an id.
    let (_, page) = s.get(&format!("/api/dead-letters?limit=2&after={}", letters[1]["id"])).await;
    let ids: Vec<&Value> = page["deadLetters"].as_array().unwrap().iter().map(|l| &l["id"]).collect();
    assert_eq!(ids, [&letters[2]["id"], &letters[3]["id"]], "{page}");
    assert_eq!(page["total"], 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let s = server().await;
    for (path, field) in [
        ("/api/dead-letters?limit=0", "limit"),
        ("/api/dead-letters?limit=5000", "limit"),
        ("/api/dead-letters?limit=ten", "limit"),
        ("/api/dead-letters?after=first", "after"),
        ("/api/dead-letters?sort=id", "sort"),
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some(field)), "{path}: {body}");
    }
    let (status, body) = s.post("/api/dead-letters/abc/retry", &json!({})).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("id")), "{body}");
    let (status, body) = s.post("/api/dead-letters/42/retry", &json!({})).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (404, Some("id")), "{body}");
    s.stop().await;
}
