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

/// The server binary SIGKILLed while merges are being scored, restarted, every message
/// retried: each merge happens once and every event counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merges_survive_a_sigkill_and_retries() {
    use common::binary::Binary;
    use common::{wait_drained, TestDatabase};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const USERS: usize = 40;
    const KEY: &str = "merge-kill-key-51c";
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "merge_kill");
    // Per user, two anonymous visitors: 3 page views each, then an alias each, then 2 email
    // opens each under the old id, and a demo request as the user.
    let mut messages = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        for a in 0..2 {
            let anon = format!("anon-{u}-{a}");
            for i in 0..3 {
                messages.push(json!({"type": "page", "messageId": format!("p-{anon}-{i}"), "anonymousId": anon}));
            }
            messages
                .push(json!({"type": "alias", "messageId": format!("a-{anon}"), "userId": user, "previousId": anon}));
            for i in 0..2 {
                messages.push(json!({"type": "track", "messageId": format!("o-{anon}-{i}"), "anonymousId": anon, "event": "Email Open"}));
            }
        }
        messages
            .push(json!({"type": "track", "messageId": format!("d-{user}"), "userId": user, "event": "Demo Request"}));
    }
    let batches: Arc<Vec<Value>> = Arc::new(messages.chunks(20).map(|c| json!({"batch": c})).collect());
    let post_all = |base: String, acked: Arc<AtomicUsize>| {
        let batches = batches.clone();
        async move {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("x-api-key", KEY.parse().unwrap());
            let client = reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build();
            let client = client.unwrap();
            for batch in batches.iter() {
                match client.post(format!("{base}/v1/batch")).json(batch).send().await {
                    Ok(r) if r.status() == 200 => drop(acked.fetch_add(1, Ordering::SeqCst)),
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => return, // the server died under us
                }
            }
        }
    };

    let mut server = Binary::start_on(&db.url, &[("API_KEYS", KEY)]);
    let acked = Arc::new(AtomicUsize::new(0));
    let poster = tokio::spawn(post_all(server.base.clone(), acked.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < batches.len() / 3 {
        assert!(Instant::now() < deadline, "ingest too slow to reach the kill point");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap(); // SIGKILL, with merges queued and being scored
    server.child.wait().unwrap();
    let _ = poster.await;
    assert!(acked.load(Ordering::SeqCst) < batches.len(), "killed before the end");

    let mut server = Binary::start_on(&db.url, &[("API_KEYS", KEY)]);
    post_all(server.base.clone(), Arc::new(AtomicUsize::new(0))).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", KEY.parse().unwrap());
    let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    wait_drained(&client, &server.base, Duration::from_secs(120)).await;
    for u in 0..USERS {
        let url = format!("{}/api/leads/user-{u}?historyLimit=500", server.base);
        let detail: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        // 50 + 2 × (3 × 5 + 2 × 10)
        assert_eq!(detail["lead"]["score"], 120, "user-{u}: {detail}");
        assert_eq!(detail["lead"]["eventCount"], 13, "user-{u}");
        assert_chained(detail["history"].as_array().unwrap(), 120);
        let merges = detail["history"].as_array().unwrap().iter().filter(|h| h["mergedFrom"].is_string()).count();
        assert_eq!(merges, 2, "user-{u}: each anonymous visitor merged once");
    }
    let leads: Value =
        client.get(format!("{}/api/leads?limit=500", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(leads.as_array().unwrap().len(), USERS, "no anonymous lead is left");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    db.drop_now().await;
}
