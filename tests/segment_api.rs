//! Segment's tracking API (`/v1/*`): each call lands as the event `domain::segment` maps it
//! to, with Segment's answers, its auth, its limits and its clock correction; a batch keeps
//! its valid messages and names each bad one. SQLite, and MongoDB when scripts/test.sh says so.

mod common;

use common::{segment, TestServer};
use serde_json::{json, Value};
use std::io::Write;

/// `Authorization: Basic base64("<key>:")`, as Segment's SDKs send a write key.
fn write_key_client(key: &str) -> reqwest::Client {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Basic {credentials}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

async fn send(client: &reqwest::Client, s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let r = client.post(s.url(path)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ingest_key(s: &TestServer) -> String {
    let (status, created) = s.post("/api/keys", &json!({"name": "website", "scopes": ["ingest"]})).await;
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().unwrap().to_string()
}

async fn lead(s: &TestServer, id: &str) -> Value {
    let (status, lead) = s.get(&format!("/api/leads/{}", segment(id))).await;
    assert_eq!(status, 200, "{id}: {lead}");
    lead
}

fn fields(body: &Value) -> Vec<&str> {
    body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn every_call_lands_as_its_event_with_segments_answer() {
    let s = TestServer::start().await;
    let sdk = write_key_client(&ingest_key(&s).await);
    let calls = [
        (
            "/v1/track",
            json!({"messageId": "t-1", "userId": "u-1", "event": "Demo Request", "properties": {"plan": "pro"}}),
        ),
        (
            "/v1/page",
            json!({"messageId": "p-1", "userId": "u-1", "name": "Pricing", "properties": {"path": "/pricing"}}),
        ),
        ("/v1/screen", json!({"messageId": "s-1", "userId": "u-1", "name": "Home"})),
        ("/v1/identify", json!({"messageId": "i-1", "userId": "u-1", "traits": {"email": "ada@example.com"}})),
        ("/v1/group", json!({"messageId": "g-1", "userId": "u-1", "groupId": "acme"})),
        ("/v1/alias", json!({"messageId": "a-1", "userId": "u-1", "previousId": "anon-1"})),
    ];
    for (path, body) in &calls {
        let (status, answer) = send(&sdk, &s, path, body).await;
        assert_eq!((status, &answer["success"]), (200, &json!(true)), "{path}: {answer}");
    }
    s.drained().await;
    let detail = lead(&s, "u-1").await;
    assert_eq!(detail["lead"]["score"], 55, "Demo Request 50 + Page View 5: {detail}");
    let mut types: Vec<(String, String)> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["eventId"].as_str().unwrap().to_string(), e["eventType"].as_str().unwrap().to_string()))
        .collect();
    types.sort();
    let expected = [
        ("a-1", "Alias"),
        ("g-1", "Group"),
        ("i-1", "Identify"),
        ("p-1", "Page View"),
        ("s-1", "Screen View"),
        ("t-1", "Demo Request"),
    ];
    assert_eq!(types, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    let page = detail["events"].as_array().unwrap().iter().find(|e| e["eventId"] == "p-1").unwrap();
    assert_eq!(page["metadata"], json!({"path": "/pricing", "name": "Pricing"}));

    // A retried message is recognised forever, answered as a success, scored once.
    let (status, again) = send(&sdk, &s, calls[0].0, &calls[0].1).await;
    assert_eq!((status, &again["success"], &again["duplicate"]), (200, &json!(true), &json!(true)));
    s.drained().await;
    assert_eq!(lead(&s, "u-1").await["lead"]["score"], 55);
    s.stop().await;
}

#[tokio::test]
async fn bad_messages_get_a_400_naming_the_field_in_segments_and_our_error_shape() {
    let s = TestServer::start().await;
    let (status, body) = s.post("/v1/track", &json!({"event": "Signed Up"})).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&body), ["userId"]);
    assert_eq!((&body["success"], &body["code"]), (&json!(false), &json!("invalid_request")));
    assert!(body["message"].as_str().unwrap().contains("userId"), "{body}");

    let (status, body) = s.post("/v1/track", &json!({"userId": "u", "event": "$decay"})).await;
    assert_eq!((status, fields(&body)), (400, vec!["event"]));
    let (status, body) = s.post("/v1/alias", &json!({"userId": "u"})).await;
    assert_eq!((status, fields(&body)), (400, vec!["previousId"]));
    let (status, body) = s.post_raw("/v1/track", "application/json", b"{\"userId\":".to_vec()).await;
    assert_eq!((status, fields(&body)), (400, vec!["body"]));

    // Segment's limits: 32 KB per message, 500 KB per batch.
    let big = json!({"userId": "u", "event": "x", "properties": {"blob": "x".repeat(33 * 1024)}});
    let (status, body) = s.post("/v1/track", &big).await;
    assert_eq!((status, &body["code"]), (413, &json!("payload_too_large")), "{body}");
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            json!({"type": "track", "userId": "u", "event": "x", "messageId": format!("big-{i}"),
                        "properties": {"blob": "x".repeat(30 * 1024)}})
        })
        .collect();
    let (status, _) = s.post("/v1/batch", &json!({"batch": messages})).await;
    assert_eq!(status, 413);
    let (status, body) = s.post("/v1/batch", &json!({"batch": []})).await;
    assert_eq!((status, fields(&body)), (400, vec!["batch"]));
    s.drained().await;
    assert_eq!(s.get("/api/leads/u").await.0, 404, "nothing refused was recorded");
    s.stop().await;
}

#[tokio::test]
async fn a_batch_keeps_its_valid_messages_and_reports_each_bad_one() {
    let s = TestServer::start().await;
    let body = json!({"sentAt": "2030-01-01T00:00:00Z", "batch": [
        {"type": "track", "messageId": "b-1", "userId": "u-2", "event": "Purchase", "timestamp": "2030-01-01T00:00:00Z"},
        {"type": "track", "messageId": "b-2", "userId": "u-2"},
        {"type": "identify", "messageId": "b-3", "anonymousId": "anon-2", "traits": {"name": "Ada"}},
        {"type": "visit", "messageId": "b-4", "userId": "u-2"},
        {"type": "page", "messageId": "b-1", "userId": "u-2"},
    ]});
    let (status, report) = s.post("/v1/batch", &body).await;
    assert_eq!(status, 400, "{report}");
    assert_eq!((&report["accepted"], &report["duplicates"], &report["rejected"]), (&json!(2), &json!(1), &json!(2)));
    assert_eq!(fields(&report), ["batch[1].event", "batch[3].type"]);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!((&errors[0]["index"], &errors[0]["eventId"]), (&json!(1), &json!("b-2")));
    assert!(report["message"].as_str().unwrap().contains("2 of 5"), "{report}");
    s.drained().await;

    // Sent "in 2030" by a client whose clock is that far ahead: corrected to about now.
    let detail = lead(&s, "u-2").await;
    assert_eq!(detail["lead"]["score"], 100);
    let stamped = detail["events"][0]["timestamp"].as_str().unwrap();
    let age = chrono::Utc::now() - chrono::DateTime::parse_from_rfc3339(stamped).unwrap().with_timezone(&chrono::Utc);
    assert!(age.num_seconds().abs() < 3600, "clock skew corrected: {stamped}");
    assert_eq!(lead(&s, "anon-2").await["events"][0]["metadata"]["traits"], json!({"name": "Ada"}));

    let (status, ok) = s.post("/v1/batch", &json!({"batch": [{"type": "track", "userId": "u-3", "event": "x"}]})).await;
    assert_eq!((status, &ok["success"], &ok["accepted"]), (200, &json!(true), &json!(1)), "{ok}");
    s.stop().await;
}

#[tokio::test]
async fn the_write_key_must_be_an_ingest_key_and_gzip_bodies_are_read() {
    let s = TestServer::start().await;
    let message = json!({"userId": "u-4", "event": "Page View", "messageId": "k-1"});
    let (status, _) = send(&reqwest::Client::new(), &s, "/v1/track", &message).await;
    assert_eq!(status, 401);
    let (status, _) = send(&write_key_client("not-a-key"), &s, "/v1/track", &message).await;
    assert_eq!(status, 401);
    let (status, created) = s.post("/api/keys", &json!({"name": "reader", "scopes": ["read"]})).await;
    assert_eq!(status, 201);
    let reader = write_key_client(created["key"].as_str().unwrap());
    assert_eq!(send(&reader, &s, "/v1/track", &message).await.0, 403, "a read key may not write");
    let sdk = write_key_client(&ingest_key(&s).await);
    assert_eq!(send(&sdk, &s, "/v1/track", &message).await.0, 200);

    let batch = json!({"batch": [{"type": "track", "userId": "u-4", "event": "Email Open", "messageId": "k-2"}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(batch.to_string().as_bytes()).unwrap();
    let r = sdk
        .post(s.url("/v1/batch"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    s.drained().await;
    assert_eq!(lead(&s, "u-4").await["lead"]["score"], 15);
    s.stop().await;
}
