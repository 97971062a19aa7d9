//! CSV exports: every lead the leaderboard's filters match, in its order, across several
//! store pages with ties split between them; a lead's history; formula escaping; errors
//! before anything is streamed. SQLite, and MongoDB when scripts/test.sh says so.

mod common;

use common::{event, segment, TestServer};
use serde_json::{json, Value};

async fn csv(s: &TestServer, path: &str) -> (reqwest::header::HeaderMap, Vec<Vec<String>>) {
    let r = s.client.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    (headers, rows)
}

#[tokio::test]
async fn the_leaderboard_exports_every_matching_lead_in_order() {
    let s = TestServer::start().await;
    // 4,500 leads over three export pages (2,000 each): most score 5, every tenth 55, so the
    // band of 5s spans a page boundary and must be cut by id, not by offset.
    let day = |t: chrono::DateTime<chrono::Utc>| t.date_naive();
    let started = chrono::Utc::now();
    let events: Vec<Value> =
        (0..4_500).map(|i| event(&format!("p{i}"), &format!("lead-{i:05}"), "Page View")).collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(events)).await.0, 202);
    let demos: Vec<Value> =
        (0..4_500).step_by(10).map(|i| event(&format!("d{i}"), &format!("lead-{i:05}"), "Demo Request")).collect();
    assert_eq!(s.post("/api/events/batch", &Value::Array(demos)).await.0, 202);
    s.drained().await;

    let (headers, rows) = csv(&s, "/api/export/leads.csv").await;
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(headers["content-disposition"], "attachment; filename=\"leads.csv\"");
    assert!(headers.get("content-length").is_none(), "streamed, not built whole");
    assert_eq!(rows[0], ["id", "score", "stage", "eventCount", "lastEventId", "lastEventAt", "updatedAt"]);
    let mut expected: Vec<(i64, String)> =
        (0..4_500).map(|i| (if i % 10 == 0 { 55 } else { 5 }, format!("lead-{i:05}"))).collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let got: Vec<(i64, String)> = rows[1..].iter().map(|r| (r[1].parse().unwrap(), r[0].clone())).collect();
    assert_eq!(got.len(), 4_500, "every lead once");
    assert_eq!(got, expected, "in leaderboard order");
    assert_eq!(rows[1][2], "Warm");
    assert_eq!(rows[4_500][2], "Cold");
    assert_eq!((rows[1][3].as_str(), rows[1][4].as_str()), ("2", "d0"));

    // The overview: leads, today's events, the spread of scores.
    let (status, overview) = s.get("/api/overview").await;
    assert_eq!(status, 200);
    assert_eq!((&overview["leads"], &overview["queueDepth"]), (&json!(4_500), &json!(0)), "{overview}");
    if day(started) == day(chrono::Utc::now()) {
        assert_eq!(overview["eventsToday"], 4_950);
    }
    let buckets = overview["histogram"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["leads"].as_u64().unwrap()).sum();
    assert_eq!(counted, 4_500, "{overview}");
    assert!(buckets[0]["from"].as_i64().unwrap() <= 5 && buckets.last().unwrap()["to"].as_i64().unwrap() >= 55);
    let at_55: u64 = buckets
        .iter()
        .filter(|b| b["from"].as_i64().unwrap() <= 55 && b["to"].as_i64().unwrap() >= 55)
        .map(|b| b["leads"].as_u64().unwrap())
        .sum();
    assert_eq!(at_55, 450);

    // GET /api/leads says how many match in all, whatever its page size.
    for (query, total) in
        [("", 4_500), ("?stage=warm", 450), ("?search=LEAD-0449&limit=3", 10), ("?minScore=6&limit=1", 450)]
    {
        let r = s.client.get(s.url(&format!("/api/leads{query}"))).send().await.unwrap();
        assert_eq!(r.headers()["x-total-count"], total.to_string().as_str(), "{query}");
    }

    // The leaderboard's filters, and their errors before anything is sent.
    let (_, warm) = csv(&s, "/api/export/leads.csv?stage=warm&limit=3").await;
    assert_eq!(warm.len() - 1, 450, "the stage filter; limit does not cut an export");
    let (_, found) = csv(&s, "/api/export/leads.csv?search=LEAD-0449&minScore=5").await;
    let ids: Vec<&str> = found[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        ids,
        [
            "lead-04490",
            "lead-04491",
            "lead-04492",
            "lead-04493",
            "lead-04494",
            "lead-04495",
            "lead-04496",
            "lead-04497",
            "lead-04498",
            "lead-04499"
        ]
    );
    let (status, body) = s.get("/api/export/leads.csv?stage=Lukewarm").await;
    assert_eq!((status, &body["details"][0]["field"]), (400, &json!("stage")));
    let (status, body) = s.get("/api/export/leads.csv?minScore=x").await;
    assert_eq!((status, &body["details"][0]["field"]), (400, &json!("minScore")));
    let r = reqwest::Client::new().get(s.url("/api/export/leads.csv")).send().await.unwrap();
    assert_eq!(r.status(), 401, "exports need the read scope");
    s.stop().await;
}

#[tokio::test]
async fn a_leads_history_exports_newest_first_with_formulas_escaped() {
    let s = TestServer::start().await;
    let lead = "=HYPERLINK(\"http://evil.test\")";
    for (id, kind) in [("h1", "Page View"), ("-h2", "Demo Request"), ("h3", "Purchase")] {
        assert_eq!(s.post("/api/events", &event(id, lead, kind)).await.0, 202);
    }
    s.drained().await;
    let (headers, rows) = csv(&s, &format!("/api/export/leads/{}/history.csv", segment(lead))).await;
    assert_eq!(headers["content-disposition"], "attachment; filename=\"history-_HYPERLINK__http___evil.test__.csv\"");
    assert_eq!(rows[0], ["timestamp", "eventId", "eventType", "delta", "oldScore", "newScore", "stageFrom", "stageTo"]);
    let body: Vec<Vec<&str>> = rows[1..].iter().map(|r| r[1..].iter().map(String::as_str).collect()).collect();
    assert_eq!(
        body,
        [
            vec!["h3", "Purchase", "100", "55", "155", "Warm", "MQL"],
            vec!["'-h2", "Demo Request", "50", "5", "55", "Cold", "Warm"],
            vec!["h1", "Page View", "5", "0", "5", "", ""],
        ],
        "newest first; a cell a spreadsheet would run starts with '"
    );
    let (_, leads) = csv(&s, "/api/export/leads.csv").await;
    assert_eq!(leads[1][0], format!("'{lead}"));

    let (status, body) = s.get("/api/export/leads/nobody/history.csv").await;
    assert_eq!((status, &body["details"][0]["field"]), (404, &json!("id")));
    s.stop().await;
}
