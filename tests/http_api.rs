//! The REST contract, over real HTTP against a real server with a temporary database.

mod common;

use common::{event, segment, TestServer};
use serde_json::{json, Value};

fn fields(body: &Value) -> Vec<String> {
    body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn accepted_event_is_scored_by_the_default_rules() {
    let s = TestServer::start().await;
    let (status, body) = s.post("/api/events", &event("e1", "lead-1", "Demo Request")).await;
    assert_eq!(status, 202);
    assert_eq!(body, json!({"message": "Event received", "eventId": "e1"}));
    s.drained().await;
    let (status, leads) = s.get("/api/leads").await;
    assert_eq!(status, 200);
    assert_eq!(leads[0]["_id"], "lead-1");
    assert_eq!(leads[0]["score"], 50);
    assert_eq!(leads[0]["lastEventId"], "e1");
    assert!(leads[0]["updatedAt"].as_str().unwrap().ends_with('Z'));
    s.stop().await;
}

#[tokio::test]
async fn duplicate_event_is_409_with_the_stored_event() {
    let s = TestServer::start().await;
    let mut first = event("dup", "lead", "Page View");
    first["metadata"] = json!({"page": "/pricing"});
    assert_eq!(s.post("/api/events", &first).await.0, 202);
    let (status, body) = s.post("/api/events", &event("dup", "other", "Purchase")).await;
    assert_eq!(status, 409);
    assert_eq!(body["message"], "Duplicate event");
    assert_eq!(body["event"]["eventId"], "dup");
    assert_eq!(body["event"]["leadId"], "lead");
    assert_eq!(body["event"]["metadata"]["page"], "/pricing");
    s.drained().await;
    let (_, leads) = s.get("/api/leads").await;
    assert_eq!(leads.as_array().unwrap().len(), 1);
    assert_eq!(leads[0]["score"], 5, "the duplicate scored nothing");
    s.stop().await;
}

#[tokio::test]
async fn invalid_events_get_400_naming_each_field() {
    let s = TestServer::start().await;
    let (status, body) = s.post("/api/events", &json!({"eventId": 7, "leadId": "", "metadata": []})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Validation failed");
    assert_eq!(fields(&body), ["eventId", "leadId", "eventType", "timestamp", "metadata"]);
    assert_eq!(body["details"][0]["problem"], "must be a string, got a number");

    let mut bad_time = event("t", "l", "Page View");
    bad_time["timestamp"] = json!("last tuesday");
    let (status, body) = s.post("/api/events", &bad_time).await;
    assert_eq!((status, fields(&body)), (400, vec!["timestamp".to_string()]));

    let mut long = event(&"x".repeat(257), "l", "Page View");
    long["metadata"] = json!({"blob": "y".repeat(17 * 1024)});
    let (status, body) = s.post("/api/events", &long).await;
    assert_eq!((status, fields(&body)), (400, vec!["eventId".to_string(), "metadata".to_string()]));

    let (status, body) = s.post("/api/events", &json!([1])).await;
    assert_eq!((status, fields(&body)), (400, vec!["body".to_string()]));
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_wrong_type_and_oversized_bodies() {
    let s = TestServer::start().await;
    let (status, body) = s.post_raw("/api/events", "application/json", b"{\"eventId\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Malformed JSON");
    assert!(body["details"][0]["problem"].as_str().unwrap().contains("line 1 column"), "{body}");

    let (status, body) = s.post_raw("/api/events", "text/plain", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert_eq!(body["details"][0]["field"], "Content-Type");

    let r = s.client.post(s.url("/api/events")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "a missing content type is not JSON either");

    let (status, _) = s.post_raw("/api/events", "application/json; charset=utf-8", b"{}".to_vec()).await;
    assert_eq!(status, 400, "charset parameter is fine; the empty object is invalid");

    let huge = format!("{{\"pad\": \"{}\"}}", "z".repeat(1024 * 1024 + 1));
    let (status, body) = s.post_raw("/api/events", "application/json", huge.into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "Payload too large");
    s.stop().await;
}

#[tokio::test]
async fn batch_accepts_valid_items_and_reports_every_other_one() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/api/events", &event("old", "a", "Page View")).await.0, 202);
    let batch = json!([
        event("b1", "a", "Purchase"),
        {"eventId": "bad", "leadId": "a", "eventType": "Page View", "timestamp": "nope"},
        event("old", "a", "Purchase"),
        event("b1", "a", "Purchase"),
        {"leadId": 5},
        event("b2", "b", "Email Open"),
    ]);
    let (status, report) = s.post("/api/events/batch", &batch).await;
    assert_eq!(status, 202);
    assert_eq!(
        (report["accepted"].as_u64(), report["duplicates"].as_u64(), report["rejected"].as_u64()),
        (Some(2), Some(2), Some(2))
    );
    assert!(report["message"].as_str().unwrap().contains("2 accepted"));
    let errors: Vec<(u64, Value, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["eventId"].clone(), e["field"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, json!("bad"), "timestamp".to_string()),
            (4, Value::Null, "eventId".to_string()),
            (4, Value::Null, "leadId".to_string()),
            (4, Value::Null, "eventType".to_string()),
            (4, Value::Null, "timestamp".to_string()),
        ]
    );
    let dup_indexes: Vec<_> =
        report["duplicateItems"].as_array().unwrap().iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(dup_indexes, [2, 3]);
    s.drained().await;
    let (_, a) = s.get("/api/leads/a").await;
    assert_eq!(a["lead"]["score"], 105, "5 from the single event + 100 once from b1");
    s.stop().await;
}

#[tokio::test]
async fn hostile_bodies_are_refused_early_and_unknown_fields_never_parsed() {
    let s = TestServer::start().await;
    // Two million tiny values (4 MB): refused one item past the limit.
    let mut tiny = b"[".to_vec();
    tiny.extend("0,".repeat(2_000_000).as_bytes());
    tiny.extend(b"0]");
    let (status, body) = s.post_raw("/api/events/batch", "application/json", tiny).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["details"][0]["problem"], "must contain at most 5000 events");
    // Deep nesting: each such item is just not an object (skipped as text, never recursed).
    let deep = format!("[{}{}, {}]", "[".repeat(100_000), "]".repeat(100_000), event("ok", "l", "Page View"));
    let (status, report) = s.post_raw("/api/events/batch", "application/json", deep.into_bytes()).await;
    assert_eq!((status, report["accepted"].as_u64(), report["rejected"].as_u64()), (202, Some(1), Some(1)));
    assert_eq!(report["errors"][0]["problem"], "must be a JSON object, got an array");
    // A large unknown field is skipped unparsed; the event is fine.
    let mut padded = event("padded", "l", "Page View");
    padded["junk"] = Value::Array(vec![Value::from(0); 300_000]);
    assert_eq!(s.post("/api/events", &padded).await.0, 202);
    // The upload server function reads its chunk the same way, and caps it.
    use leptos::server_fn::ServerFn;
    let upload = leadscore::app::server_fns::UploadEvents::PATH;
    let call = json!({"events": [event("up", "l", "Page View"), [[[0]]]]});
    let (status, report) = s.post(upload, &call).await;
    assert_eq!(status, 200, "{report}");
    let report = if report.get("Ok").is_some() { report["Ok"].clone() } else { report };
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(1), Some(1)), "{report}");
    let mut huge_call = b"{\"events\":[".to_vec();
    huge_call.extend("0,".repeat(1_000_000).as_bytes());
    huge_call.extend(b"0]}");
    let (status, _) = s.post_raw(upload, "application/json", huge_call).await;
    assert!((400..500).contains(&status), "a million-item call is refused: {status}");
    // A known field past its text bound is named, and not also reported missing.
    let mut long = event("long", "l", "Page View");
    long["leadId"] = Value::String("x".repeat(10_000));
    let (status, body) = s.post("/api/events", &long).await;
    assert_eq!((status, fields(&body)), (400, vec!["leadId".to_string()]));
    s.stop().await;
}

/// Clients that send the whole body before reading the answer (Python's `http.client` and
/// `requests`) must be able to read the 413, not die on a broken pipe.
#[tokio::test]
async fn an_oversized_body_is_read_before_its_413_so_any_client_sees_the_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let body = vec![b' '; 8 * 1024 * 1024];
    for path in ["/api/events/batch", "/api/events"] {
        let mut stream = raw_post(&s, path, body.len()).await;
        stream.write_all(&body).await.expect("the server reads the whole body");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {}", &answer[..answer.len().min(200)]);
        assert!(answer.contains("Payload too large"), "{path}");
    }
    s.stop().await;
}

/// Bodies in flight have a budget: when slow bodies hold it, a new request waits a moment
/// and is told to come back (503, Retry-After) instead of memory growing; room returns as
/// soon as the holders are gone.
#[tokio::test]
async fn when_bodies_in_flight_fill_the_budget_requests_get_503_with_retry_after() {
    let s = TestServer::start_with(|c| c.max_inflight_bytes = 3 << 20).await;
    // A client that says it sends a 1 MB event and sends half of it, then stalls.
    let slow = stalled_upload(&s).await;
    // Once the server holds that body, nobody else fits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let r = s.client.post(s.url("/api/events")).json(&event("waiting", "l", "Page View")).send().await.unwrap();
        if r.status().as_u16() == 503 {
            break r;
        }
        let status = r.status().as_u16();
        assert!(
            matches!(status, 202 | 409),
            "accepted before the slow body took the room (then a duplicate): {status}"
        );
        assert!(std::time::Instant::now() < deadline, "the budget never filled");
    };
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Server busy");
    // The stalled client goes away: its room comes back.
    drop(slow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = s.post("/api/events", &event("after", "l", "Page View")).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "the room never came back");
    }
    s.stop().await;
}

/// A client that announces a 1 MB body, sends half of it and stalls: its request is being
/// handled until it finishes or is cut off.
async fn stalled_upload(s: &TestServer) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut slow = raw_post(s, "/api/events", 1 << 20).await;
    slow.write_all(&vec![b' '; 1 << 19]).await.unwrap();
    slow
}

/// A connection with the head of a JSON POST to `path` written, announcing `length` bytes of
/// body (the caller writes as much of it as the test needs), with the admin key.
async fn raw_post(s: &TestServer, path: &str, length: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\
         x-api-key: {}\r\nConnection: close\r\n\r\n",
        common::ADMIN_KEY
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_or_the_deadline_get_503() {
    // One request at a time: while the stalled one is handled, the next is turned away.
    let s = TestServer::start_with(|c| c.max_concurrent_requests = 1).await;
    let slow = stalled_upload(&s).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let busy = loop {
        let r = s.client.get(s.url("/api/leads")).send().await.unwrap();
        if r.status().as_u16() == 503 {
            break r;
        }
        assert_eq!(r.status().as_u16(), 200, "before the stalled request holds the slot");
        assert!(std::time::Instant::now() < deadline, "the limit never applied");
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    drop(slow);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.get("/api/leads").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the slot never came back");
    }
    s.stop().await;

    // A handler that takes longer than the deadline answers 503 instead of hanging.
    let s = TestServer::start_with(|c| c.request_timeout_seconds = 1).await;
    let mut slow = stalled_upload(&s).await;
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Request took too long"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn batch_status_codes_and_limits() {
    let s = TestServer::start().await;
    let (status, report) = s.post("/api/events/batch", &json!([{"eventId": "x"}])).await;
    assert_eq!((status, report["accepted"].as_u64(), report["rejected"].as_u64()), (400, Some(0), Some(1)));

    assert_eq!(s.post("/api/events/batch", &json!([event("k", "l", "Page View")])).await.0, 202);
    let (status, report) = s.post("/api/events/batch", &json!([event("k", "l", "Page View")])).await;
    assert_eq!((status, report["duplicates"].as_u64()), (409, Some(1)), "a pure retry is a duplicate, not invalid");

    let (status, body) = s.post("/api/events/batch", &json!([])).await;
    assert_eq!((status, fields(&body)), (400, vec!["body".to_string()]));
    let (status, body) = s.post("/api/events/batch", &json!({"events": []})).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["problem"], "must be a JSON array of events, got an object");

    let many: Vec<Value> = (0..5001).map(|i| event(&format!("m{i}"), "l", "Page View")).collect();
    let (status, body) = s.post("/api/events/batch", &Value::Array(many)).await;
    assert_eq!(status, 413);
    assert!(body["details"][0]["problem"].as_str().unwrap().contains("at most 5000 events"));

    let exactly: Vec<Value> =
        (0..5000).map(|i| event(&format!("n{i}"), &format!("lead{}", i % 7), "Page View")).collect();
    let (status, report) = s.post("/api/events/batch", &Value::Array(exactly)).await;
    assert_eq!((status, report["accepted"].as_u64()), (202, Some(5000)));

    let fat: Vec<Value> = (0..400)
        .map(|i| {
            let mut e = event(&format!("f{i}"), "l", "Page View");
            e["metadata"] = json!({"pad": "p".repeat(15_000)});
            e
        })
        .collect();
    let (status, _) = s.post("/api/events/batch", &Value::Array(fat)).await;
    assert_eq!(status, 413, "over 5 MB");
    s.stop().await;
}

#[tokio::test]
async fn leaderboard_sorts_filters_and_searches_literally() {
    let s = TestServer::start().await;
    let batch: Vec<Value> =
        [("acme.io", "Purchase"), ("acmexio", "Demo Request"), ("Beta", "Purchase"), ("gamma", "Page View")]
            .iter()
            .enumerate()
            .map(|(i, (lead, ty))| event(&format!("e{i}"), lead, ty))
            .collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(batch)).await.0, 202);
    s.drained().await;
    let ids =
        |v: &Value| v.as_array().unwrap().iter().map(|l| l["_id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (_, all) = s.get("/api/leads").await;
    assert_eq!(ids(&all), ["Beta", "acme.io", "acmexio", "gamma"], "score desc, ties by id");
    assert_eq!(ids(&s.get("/api/leads?limit=1&offset=1").await.1), ["acme.io"]);
    assert_eq!(ids(&s.get("/api/leads?search=ACME.IO").await.1), ["acme.io"], "dot is literal");
    assert_eq!(ids(&s.get("/api/leads?search=.*").await.1), Vec::<String>::new());
    assert_eq!(ids(&s.get("/api/leads?search=%5B").await.1), Vec::<String>::new(), "'[' is not a regex error");
    assert_eq!(ids(&s.get("/api/leads?minScore=10&maxScore=60").await.1), ["acmexio"]);
    assert_eq!(ids(&s.get("/api/leads?limit=&search=").await.1).len(), 4);

    let (status, body) = s.get("/api/leads?limit=0").await;
    assert_eq!((status, fields(&body)), (400, vec!["limit".to_string()]));
    let (status, body) = s.get("/api/leads?limit=501&minScore=abc").await;
    assert_eq!((status, fields(&body)), (400, vec!["limit".to_string(), "minScore".to_string()]));
    s.stop().await;
}

#[tokio::test]
async fn lead_detail_round_trips_awkward_ids_and_pages() {
    let s = TestServer::start().await;
    let awkward = ["with space", "ünïcødé ✓", "slash/inside", "percent%25", "q?x=1#frag"];
    let batch: Vec<Value> =
        awkward.iter().enumerate().map(|(i, id)| event(&format!("a{i}"), id, "Email Open")).collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(batch)).await.0, 202);
    let more: Vec<Value> = (0..60).map(|i| event(&format!("p{i}"), "with space", "Page View")).collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(more)).await.0, 202);
    s.drained().await;
    for id in awkward {
        let (status, body) = s.get(&format!("/api/leads/{}", segment(id))).await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(body["lead"]["_id"], id);
    }
    let (_, detail) = s.get(&format!("/api/leads/{}", segment("with space"))).await;
    assert_eq!(detail["history"].as_array().unwrap().len(), 50, "newest 50 by default");
    assert_eq!(detail["events"].as_array().unwrap().len(), 50);
    assert_eq!(detail["lead"]["score"], 10 + 60 * 5);
    assert_eq!(detail["history"][0]["newScore"], 310);
    let (_, page) =
        s.get(&format!("/api/leads/{}?historyLimit=5&historyOffset=58&eventsLimit=2", segment("with space"))).await;
    let history = page["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["eventId"], "a0", "oldest entry last");
    assert_eq!(history[2]["oldScore"], 0);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);

    let (status, body) = s.get("/api/leads/nobody").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("Lead not found")));
    let (status, body) = s.get("/api/leads/x?eventsLimit=-1").await;
    assert_eq!((status, fields(&body)), (400, vec!["eventsLimit".to_string()]));
    s.stop().await;
}

#[tokio::test]
async fn rules_are_seeded_listed_upserted_and_used_for_the_next_event() {
    let s = TestServer::start().await;
    let (status, rules) = s.get("/api/rules").await;
    assert_eq!(status, 200);
    let mut pairs: Vec<(String, i64)> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["eventType"].as_str().unwrap().into(), r["points"].as_i64().unwrap()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("Demo Request".into(), 50),
            ("Email Open".into(), 10),
            ("Form Submission".into(), 20),
            ("Page View".into(), 5),
            ("Purchase".into(), 100)
        ]
    );
    assert!(rules[0]["isActive"].as_bool().unwrap());

    assert_eq!(s.post("/api/events", &event("before", "l", "Page View")).await.0, 202);
    s.drained().await;
    let (status, rule) = s.post("/api/rules", &json!({"eventType": "Page View", "points": 8})).await;
    assert_eq!((status, rule["points"].as_i64(), rule["isActive"].as_bool()), (200, Some(8), Some(true)));
    let (_, rule) = s.post("/api/rules", &json!({"eventType": "Webinar", "points": -4, "isActive": false})).await;
    assert_eq!(rule["isActive"], false);
    assert_eq!(s.get("/api/rules").await.1.as_array().unwrap().len(), 6);

    assert_eq!(s.post("/api/events", &event("after", "l", "Page View")).await.0, 202);
    assert_eq!(s.post("/api/events", &event("off", "l", "Webinar")).await.0, 202);
    s.drained().await;
    let (_, detail) = s.get("/api/leads/l").await;
    let deltas: Vec<_> = detail["history"].as_array().unwrap().iter().map(|h| h["delta"].as_i64().unwrap()).collect();
    assert_eq!(deltas, [0, 8, 5], "inactive rule scores 0 but is logged; old event keeps its points");
    assert_eq!(detail["lead"]["score"], 13);

    let (status, body) = s.post("/api/rules", &json!({"eventType": "", "points": "ten"})).await;
    assert_eq!((status, fields(&body)), (400, vec!["eventType".to_string(), "points".to_string()]));
    s.stop().await;
}

#[tokio::test]
async fn health_reports_store_worker_and_queue() {
    let s = TestServer::start().await;
    // Alive once its first step has succeeded (a few milliseconds after the start).
    common::wait_drained(&s.client, &s.base, std::time::Duration::from_secs(60)).await;
    let (status, h) = s.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"]["backend"], s.backend());
    assert_eq!(h["store"]["reachable"], true);
    assert_eq!(h["worker"]["alive"], true);
    assert_eq!(h["queue"]["depth"], 0);
    assert_eq!(h["queue"]["oldestUnprocessedAgeMs"], Value::Null);
    let (status, body) = s.get("/api/nothing-here").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("No such API route")));
    s.stop().await;
}

#[tokio::test]
async fn health_is_503_with_the_reason_while_every_scoring_step_fails() {
    let s = TestServer::start().await;
    s.drained().await;
    // A rule the store cannot read stops every scoring step (the rules price each batch).
    s.overwrite_rule_points("Page View", "lots").await;
    assert_eq!(s.post("/api/events", &event("stuck", "l", "Page View")).await.0, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let h = loop {
        let (status, h) = s.get("/api/health").await;
        if status == 503 {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "health kept saying ok: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["worker"]["alive"], false);
    assert_eq!(h["store"]["reachable"], true, "reads work; scoring does not");
    assert!(h["worker"]["consecutiveFailures"].as_u64().unwrap() >= 3, "{h}");
    assert!(!h["worker"]["lastError"].as_str().unwrap_or("").is_empty(), "says why: {h}");
    assert_eq!(h["queue"]["depth"], 1);

    // Repaired, scoring resumes by itself and health is ok again.
    s.overwrite_rule_points("Page View", "7").await;
    s.drained().await;
    let (_, lead) = s.get("/api/leads/l").await;
    assert_eq!(lead["lead"]["score"], 7);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.get("/api/health").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "health did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn health_is_503_while_no_worker_is_running() {
    use leadscore::server::http::{router, AppState};
    use leadscore::service::store::sqlite::SqliteStore;
    use leadscore::service::{BatchLimits, Service};
    use std::sync::Arc;

    // A server whose worker never started: accepted events pile up and health says so.
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let store = Arc::new(SqliteStore::open(dir.path().join("test.db")).unwrap());
    let service = Arc::new(Service::new(store.clone(), BatchLimits { max_events: 5000 }));
    let accounts = Arc::new(leadscore::service::accounts::Accounts::new(store, &config.api_keys));
    let options = leptos::prelude::LeptosOptions::builder().output_name("leadscore").build();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let hub = leadscore::server::stream::StreamHub::new(stopped);
    let state = AppState::new(options, service, accounts, config, hub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = common::keyed_client(common::ADMIN_KEY);
    let r = client.post(format!("{base}/api/events")).json(&event("q", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = client.get(format!("{base}/api/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["worker"]["alive"], false);
    assert_eq!(h["store"]["reachable"], true);
    assert_eq!(h["queue"]["depth"], 1);
    assert!(h["queue"]["oldestUnprocessedAgeMs"].as_i64().unwrap() >= 0);
}

#[tokio::test]
async fn thirty_two_concurrent_clients_on_one_lead_give_the_exact_score() {
    let s = TestServer::start().await;
    // 32 clients, 40 posts each, drawn from 400 distinct ids: every id is posted ~3 times.
    let mut tasks = Vec::new();
    for c in 0..32u64 {
        let (client, url) = (s.client.clone(), s.url("/api/events"));
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for k in 0..40u64 {
                let id = (c * 13 + k * 7) % 400;
                let r =
                    client.post(&url).json(&event(&format!("c{id}"), "hot-lead", "Email Open")).send().await.unwrap();
                codes.push(r.status().as_u16());
            }
            codes
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for t in tasks {
        for code in t.await.unwrap() {
            match code {
                202 => accepted += 1,
                409 => duplicates += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let distinct: std::collections::HashSet<u64> =
        (0..32u64).flat_map(|c| (0..40u64).map(move |k| (c * 13 + k * 7) % 400)).collect();
    assert_eq!(accepted, distinct.len(), "each distinct id accepted exactly once");
    assert_eq!(accepted + duplicates, 32 * 40);
    s.drained().await;
    let (_, detail) = s.get("/api/leads/hot-lead?historyLimit=500").await;
    assert_eq!(detail["lead"]["score"].as_i64().unwrap(), 10 * distinct.len() as i64);
    let sum: i64 = detail["history"].as_array().unwrap().iter().map(|h| h["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, detail["lead"]["score"].as_i64().unwrap(), "score equals the sum of history deltas");
    s.stop().await;
}

#[tokio::test]
async fn api_keys_when_configured() {
    let s = TestServer::start_with(|c| c.api_keys = vec!["secret-1".into(), "secret-2".into()]).await;
    let url = s.url("/api/events");
    let r = s.client.post(&url).json(&event("a1", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["details"][0]["field"], "Authorization");
    let r = s.client.post(&url).bearer_auth("wrong").json(&event("a1", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s.client.post(&url).bearer_auth("secret-2").json(&event("a1", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = s.client.get(s.url("/api/leads")).header("x-api-key", "secret-1").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.get("/api/leads").await.0, 401, "reads need a key too");
    assert_eq!(s.get("/api/health").await.0, 200, "probes never need a key");
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    // One token per 100 s: however slow the machine, none comes back during the test.
    let s = TestServer::start_with(|c| {
        c.rate_limit_per_second = 0.01;
        c.rate_limit_burst = 3.0;
        c.api_keys.push("other-key".into());
    })
    .await;
    for i in 0..3 {
        assert_eq!(s.post("/api/events", &event(&format!("r{i}"), "l", "Page View")).await.0, 202);
    }
    let r = s.client.post(s.url("/api/events")).json(&event("r3", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((90..=100).contains(&retry_after), "when the next token comes: {retry_after}");
    let r = s
        .client
        .post(s.url("/api/events"))
        .header("x-api-key", "other-key")
        .json(&event("r4", "l", "Page View"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "another client has its own budget");
    assert_eq!(s.get("/api/health").await.0, 200, "health is never limited");
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_mongodb_means_503_never_202() {
    use leadscore::server::config::Database;
    // Nothing listens on port 1: the real driver fails to select a server.
    let s = TestServer::start_with(|c| {
        c.database = Database::Mongo("mongodb://127.0.0.1:1/leadscore?serverSelectionTimeoutMS=300".into());
        c.store_startup_attempts = 1;
    })
    .await;
    let (status, body) = s.post("/api/events", &event("m1", "l", "Page View")).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("Store unavailable, retry later")));
    let (status, report) = s.post("/api/events/batch", &json!([event("m2", "l", "Page View")])).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(s.get("/api/leads").await.0, 503);
    let (status, h) = s.get("/api/health").await;
    assert_eq!(status, 503);
    assert_eq!(h["store"]["backend"], "mongodb");
    assert_eq!(h["store"]["reachable"], false);
    assert!(h["store"]["error"].as_str().unwrap().contains("MongoDB unreachable"), "{h}");
    s.stop().await;
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let s = TestServer::start_with(|c| c.client_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/api/events"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let denied = preflight("https://evil.example.net").await.unwrap();
    assert!(denied.headers().get("access-control-allow-origin").is_none(), "not every origin is allowed");
    let r = s.client.get(s.url("/api/rules")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    s.stop().await;
}

/// The bundle goes out compressed to browsers that take it (brotli first), plain to those
/// that do not, and a repeat visit revalidates it for a 304 with no body.
#[tokio::test]
async fn static_files_are_compressed_and_revalidated() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    // Something shaped like a WASM bundle: repetitive, as code is.
    let bundle: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    std::fs::write(site.path().join("pkg/leadscore.wasm"), &bundle).unwrap();
    let s = TestServer::start_with_site(site.path().to_str().unwrap()).await;
    let client = reqwest::Client::new(); // no automatic decompression: see what is sent
    let url = s.url("/pkg/leadscore.wasm");

    let r = client.get(&url).header("accept-encoding", "br, gzip").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "br");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let modified = r.headers()["last-modified"].clone();
    let sent = r.bytes().await.unwrap();
    assert!(sent.len() * 5 < bundle.len(), "compressed: {} of {} bytes", sent.len(), bundle.len());
    let mut unpacked = Vec::new();
    brotli_decompress(&sent, &mut unpacked);
    assert_eq!(unpacked, bundle, "the same bytes once unpacked");

    let r = client.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let r = client.get(&url).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap().len(), bundle.len());

    let r = client.get(&url).header("if-modified-since", modified).send().await.unwrap();
    assert_eq!(r.status(), 304, "unchanged: revalidated without a transfer");
    assert!(r.bytes().await.unwrap().is_empty());

    s.stop().await;
}

/// A file named by the MD5 of its content (cargo-leptos hash-files) is kept a year; one whose
/// name claims a hash its content does not have (cargo-leptos rewrites some files after naming
/// them) is revalidated like any other, and a missing one is not cached at all.
#[tokio::test]
async fn only_files_named_by_their_content_are_cached_for_a_year() {
    use base64::Engine;
    use md5::{Digest, Md5};
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    let css = b"body { color: #eee }".as_slice();
    let true_name =
        format!("/pkg/leadscore.{}.css", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(css)));
    std::fs::write(site.path().join(&true_name[1..]), css).unwrap();
    std::fs::write(site.path().join("pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.js"), b"rewritten after naming").unwrap();
    let s = TestServer::start_with_site(site.path().to_str().unwrap()).await;
    let client = reqwest::Client::new();

    let r = client.get(s.url(&true_name)).header("accept-encoding", "br").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(
        r.headers().get_all("vary").iter().any(|v| v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")),
        "caches on the way keep the brotli and plain copies apart"
    );
    let r = client.get(s.url("/pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtA.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-cache", "its name does not describe its content");
    let r = client.get(s.url("/pkg/leadscore.9Bq0y5pnDkZ1Vg3zJ4sRtB.wasm")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("cache-control").is_none(), "a missing file is not cached");
    s.stop().await;
}

/// Pages and server functions' answers go out compressed to clients that take it (the
/// leaderboard's HTML is ~30 KB plain), and plain to the others.
#[tokio::test]
async fn pages_and_server_function_answers_are_compressed() {
    let s = TestServer::start().await;
    let plain = reqwest::Client::new(); // no automatic decompression: see what is sent
    let r = plain.get(s.url("/login")).header("accept-encoding", "br, gzip").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "br");
    let mut html = Vec::new();
    brotli_decompress(&r.bytes().await.unwrap(), &mut html);
    let html = String::from_utf8(html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("</html>"), "the whole page: {html}");
    let r = plain.get(s.url("/login")).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));

    let rules = leadscore::server::policy::table().into_iter().find(|e| e.path.contains("fetch_rules")).unwrap().path;
    let r = s.client.post(s.url(rules)).header("accept-encoding", "br").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "br");
    let mut json = Vec::new();
    brotli_decompress(&r.bytes().await.unwrap(), &mut json);
    let rules: Value = serde_json::from_slice(&json).unwrap();
    assert!(rules.as_array().is_some_and(|r| !r.is_empty()), "the rules: {rules}");
    s.stop().await;
}

/// The test-event form's choices: one per event type an active rule scores, in the rules'
/// order, each labelled with its event type first.
#[tokio::test]
async fn the_test_event_form_offers_each_active_event_type_once() {
    let s = TestServer::start().await;
    for rule in [
        json!({"eventType": "Trial Started", "points": 30, "isActive": true}),
        json!({"eventType": "Trial Started", "name": "Big trial", "points": 10, "isActive": true,
               "conditions": [{"field": "seats", "op": "gte", "value": 10}]}),
        json!({"eventType": "Retired Thing", "points": 5, "isActive": false}),
    ] {
        let r = s.client.post(s.url("/api/rules")).json(&rule).send().await.unwrap();
        assert!(r.status().is_success(), "{rule}: {}", r.status());
    }
    let rules: Vec<Value> = s.client.get(s.url("/api/rules")).send().await.unwrap().json().await.unwrap();
    let mut active: Vec<String> = Vec::new();
    for rule in rules.iter().filter(|r| r["isActive"] == true) {
        let t = rule["eventType"].as_str().unwrap().to_string();
        if !active.contains(&t) {
            active.push(t);
        }
    }

    let path =
        leadscore::server::policy::table().into_iter().find(|e| e.path.contains("fetch_event_types")).unwrap().path;
    let r = s.client.post(s.url(path)).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let choices: Vec<Value> = r.json().await.unwrap();
    let types: Vec<&str> = choices.iter().map(|c| c["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, active.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!types.contains(&"Retired Thing"), "inactive rules offer nothing");
    for c in &choices {
        assert!(c["label"].as_str().unwrap().starts_with(c["eventType"].as_str().unwrap()), "{c}");
    }
    let trial = choices.iter().find(|c| c["eventType"] == "Trial Started").unwrap();
    assert_eq!(trial["label"], "Trial Started (2 rules)");
    s.stop().await;
}

fn brotli_decompress(compressed: &[u8], out: &mut Vec<u8>) {
    use std::io::Read;
    brotli::Decompressor::new(compressed, 4096).read_to_end(out).unwrap();
}
