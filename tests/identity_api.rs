//! Identity merge over HTTP: an `identify` carrying both ids (or an `alias`) merges the
//! anonymous lead into the known one once — its events, history and score — with a 308 from
//! the old id, a `leadMerged` stream event, later events for the old id credited to the new
//! one; under concurrent merges and events (on MongoDB, across two instances). SQLite, and
//! MongoDB when scripts/test.sh says so.

mod common;

use common::sse::SseClient;
use common::TestServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn history_of(s: &TestServer, lead: &str) -> Vec<Value> {
    let (status, detail) = s.get(&format!("/api/leads/{lead}?historyLimit=500&eventsLimit=500")).await;
    assert_eq!(status, 200, "{detail}");
    detail["history"].as_array().unwrap().clone()
}

/// The score is the sum of the history, and the history one chain (newest first).
fn assert_chained(history: &[Value], score: i64) {
    let sum: i64 = history.iter().map(|h| h["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, score, "{history:?}");
    for pair in history.windows(2) {
        assert_eq!(pair[1]["newScore"], pair[0]["oldScore"], "chained: {history:?}");
    }
}

#[tokio::test]
async fn identify_merges_the_anonymous_lead_with_a_redirect_and_a_stream_event() {
    let s = TestServer::start().await;
    for (path, body) in [
        ("/v1/page", json!({"messageId": "m1", "anonymousId": "anon-7", "name": "Pricing"})),
        ("/v1/track", json!({"messageId": "m2", "anonymousId": "anon-7", "event": "Email Open"})),
        ("/v1/track", json!({"messageId": "m3", "userId": "ada@example.com", "event": "Demo Request"})),
    ] {
        assert_eq!(s.post(path, &body).await.0, 200);
    }
    s.drained().await;
    let mut stream = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    let identify = json!({"messageId": "m4", "userId": "ada@example.com", "anonymousId": "anon-7",
                          "traits": {"email": "ada@example.com"}});
    assert_eq!(s.post("/v1/identify", &identify).await.0, 200);
    s.drained().await;

    let (_, detail) = s.get("/api/leads/ada%40example.com").await;
    assert_eq!(detail["lead"]["score"], 65, "{detail}");
    assert_eq!(detail["lead"]["eventCount"], 4);
    let history = history_of(&s, "ada%40example.com").await;
    assert_chained(&history, 65);
    assert_eq!(history[0]["mergedFrom"], "anon-7", "the merge is the newest entry");

    // The old id answers 308 to the new lead, its query kept; clients that follow land there.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(std::iter::once(("x-api-key".parse().unwrap(), common::ADMIN_KEY.parse().unwrap())).collect())
        .build()
        .unwrap();
    let r = plain.get(s.url("/api/leads/anon-7?historyLimit=5")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/api/leads/ada%40example.com?historyLimit=5");
    assert_eq!(r.json::<Value>().await.unwrap()["mergedInto"], "ada@example.com");
    let (status, followed) = s.get("/api/leads/anon-7").await;
    assert_eq!((status, &followed["lead"]["_id"]), (200, &json!("ada@example.com")));
    let r = plain.get(s.url("/api/export/leads/anon-7/history.csv")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    let (_, leads) = s.get("/api/leads?limit=10").await;
    let ids: Vec<&str> = leads.as_array().unwrap().iter().map(|l| l["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ada@example.com"], "the anonymous lead left the leaderboard");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = stream.next().await;
        if e.event == "leadMerged" {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(data, json!({"from": "anon-7", "to": "ada@example.com", "score": 65}));
            break;
        }
        assert!(Instant::now() < deadline, "no leadMerged event");
    }

    // Later events for the old id count for the new lead; a repeated merge changes nothing.
    assert_eq!(
        s.post("/v1/track", &json!({"messageId": "m5", "anonymousId": "anon-7", "event": "Page View"})).await.0,
        200
    );
    assert_eq!(
        s.post("/v1/alias", &json!({"messageId": "m6", "userId": "ada@example.com", "previousId": "anon-7"})).await.0,
        200
    );
    s.drained().await;
    let (_, detail) = s.get("/api/leads/ada%40example.com").await;
    assert_eq!(detail["lead"]["score"], 70);
    assert_chained(&history_of(&s, "ada%40example.com").await, 70);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merges_and_events_count_everything_once() {
    const USERS: usize = 8;
    const ANONS_PER_USER: usize = 3;
    let s = TestServer::start().await;
    // On MongoDB a second instance scores too: merges race across processes.
    let beside = s.start_beside().await;
    let bases: Vec<String> = std::iter::once(s.url("")).chain(beside.iter().map(|b| b.url(""))).collect();
    let anon = |u: usize, a: usize| format!("anon-{u}-{a}");
    let mut before = Vec::new();
    for u in 0..USERS {
        for a in 0..ANONS_PER_USER {
            for i in 0..3 {
                before.push(json!({"type": "page", "messageId": format!("p-{u}-{a}-{i}"), "anonymousId": anon(u, a)}));
            }
        }
        before.push(json!({"type": "track", "messageId": format!("d-{u}"), "userId": format!("user-{u}"), "event": "Demo Request"}));
    }
    assert_eq!(s.post("/v1/batch", &json!({"batch": before})).await.0, 200);

    // Aliases and more events for the anonymous ids, all at once, over both instances.
    let mut tasks = Vec::new();
    for u in 0..USERS {
        for a in 0..ANONS_PER_USER {
            let (client, base) = (s.client.clone(), bases[(u + a) % bases.len()].clone());
            let (id, user) = (anon(u, a), format!("user-{u}"));
            tasks.push(tokio::spawn(async move {
                let alias = json!({"messageId": format!("alias-{id}"), "userId": user, "previousId": id});
                let more = json!({"batch": [
                    {"type": "track", "messageId": format!("o1-{id}"), "anonymousId": id, "event": "Email Open"},
                    {"type": "track", "messageId": format!("o2-{id}"), "anonymousId": id, "event": "Email Open"},
                ]});
                let (first, second) = tokio::join!(
                    client.post(format!("{base}/v1/alias")).json(&alias).send(),
                    client.post(format!("{base}/v1/batch")).json(&more).send()
                );
                assert_eq!(first.unwrap().status(), 200);
                assert_eq!(second.unwrap().status(), 200);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    s.drained().await;
    if let Some(b) = &beside {
        b.drained().await;
    }
    for u in 0..USERS {
        let lead = format!("user-{u}");
        let (_, detail) = s.get(&format!("/api/leads/{lead}")).await;
        // 50 + 3 anonymous leads × (3 page views + 2 email opens) = 50 + 3 × 35
        assert_eq!(detail["lead"]["score"], 155, "{lead}: {detail}");
        assert_eq!(detail["lead"]["eventCount"], 1 + 3 * (3 + 2 + 1), "{lead}");
        assert_chained(&history_of(&s, &lead).await, 155);
    }
    let (_, leads) = s.get("/api/leads?limit=500").await;
    assert_eq!(leads.as_array().unwrap().len(), USERS, "only the known leads are left: {leads}");
    if let Some(b) = beside {
        b.stop().await;
    }
    s.stop().await;
}
