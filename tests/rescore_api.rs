//! Rescoring: `POST /api/rescore` replays every stored event with the current rules and
//! limits; each lead whose score changes gets one `$rescore` history entry for the
//! difference, its events carry their new points and explanations, and its limit counts are
//! those of the replay. A job interrupted by a restart resumes where it stopped. SQLite, and
//! MongoDB when scripts/test.sh says so.

mod common;

use common::binary::Binary;
use common::{event, TestDatabase, TestServer};
use leadscore::service::store::Store;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn page_view(id: &str, lead: &str, page: &str) -> Value {
    let mut e = event(id, lead, "Page View");
    e["metadata"] = json!({"page": page});
    e
}

/// Polls the job until it is no longer running (at most 60 s); returns it.
async fn finished(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get(format!("{base}/api/rescore/{id}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let job: Value = r.json().await.unwrap();
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "the job is still running: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lead's score, its history's deltas (newest first) and its events, checking that the
/// score is the sum of the history.
async fn lead(client: &reqwest::Client, base: &str, id: &str) -> (i64, Vec<Value>, Vec<Value>) {
    let detail: Value = client
        .get(format!("{base}/api/leads/{id}?historyLimit=100&eventsLimit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history = detail["history"].as_array().unwrap().clone();
    let score = detail["lead"]["score"].as_i64().unwrap();
    assert_eq!(score, history.iter().map(|h| h["delta"].as_i64().unwrap()).sum::<i64>(), "{detail}");
    (score, history, detail["events"].as_array().unwrap().clone())
}

fn rescore_entries(history: &[Value]) -> Vec<i64> {
    history.iter().filter(|h| h["eventType"] == "$rescore").map(|h| h["delta"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn a_rescore_replays_every_lead_with_the_current_rules_and_limits() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/api/rescore/no-such-job").await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (404, Some("id")), "{body}");
    // Default rules: Page View 5, Demo Request 50, Purchase 100.
    let events = json!([
        page_view("a1", "alice", "/pricing"),
        page_view("a2", "alice", "/blog"),
        page_view("a3", "alice", "/pricing"),
        event("a4", "alice", "Purchase"),
        page_view("b1", "bob", "/docs"),
        event("c1", "carol", "Demo Request"),
    ]);
    assert_eq!(s.post("/api/events/batch", &events).await.0, 202);
    s.drained().await;
    assert_eq!(lead(&s.client, &s.base, "alice").await.0, 115);

    // New rules: the pricing page is worth 20 more, once per lead; a purchase 10.
    let rule = json!({
        "name": "Pricing page", "eventType": "Page View", "points": 20,
        "conditions": [{"field": "page", "op": "equals", "value": "/pricing"}],
        "limit": {"count": 1, "per": "lead"},
    });
    let (status, created) = s.post("/api/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(s.post("/api/rules", &json!({"eventType": "Purchase", "points": 10, "isActive": true})).await.0, 200);
    assert_eq!(lead(&s.client, &s.base, "alice").await.0, 115, "an edit alone changes no score");

    let r = s.client.post(s.url("/api/rescore")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_str().expect("an id").to_string();
    assert_eq!(location, format!("/api/rescore/{id}"));
    let job = finished(&s.client, &s.base, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!((job["processed"].as_u64(), job["leads"].as_u64()), (Some(6), Some(3)), "{job}");
    assert_eq!(job["adjusted"].as_u64(), Some(1), "only alice's replay changes anything: {job}");
    assert!(job["finishedAt"].is_string() && job["startedAt"].is_string(), "{job}");

    // alice: 3 views (15) + the pricing page once (20) + a purchase (10) = 45.
    let (score, history, events) = lead(&s.client, &s.base, "alice").await;
    assert_eq!(score, 45);
    assert_eq!(rescore_entries(&history), [45 - 115], "one entry for the difference");
    let points = |id: &str| {
        let e = events.iter().find(|e| e["eventId"] == id).unwrap_or_else(|| panic!("{id} in {events:?}"));
        (e["points"].as_i64().unwrap(), e["matches"].clone())
    };
    assert_eq!(points("a4").0, 10);
    let (first, matches) = points("a1");
    assert_eq!(first, 25, "{matches}");
    let (second, matches) = points("a3");
    assert_eq!(second, 5, "{matches}");
    assert_eq!(matches[1]["limited"], true, "the limit held the second pricing view back: {matches}");
    // bob's view is not of the pricing page, carol's demo request unchanged: no entries.
    for (name, want) in [("bob", 5), ("carol", 50)] {
        let (score, history, _) = lead(&s.client, &s.base, name).await;
        assert_eq!((score, rescore_entries(&history)), (want, vec![]), "{name}: nothing to change, no entry");
    }

    // The replay's limit counts stand: a third pricing view is limited too.
    assert_eq!(s.post("/api/events", &page_view("a5", "alice", "/pricing")).await.0, 202);
    s.drained().await;
    assert_eq!(lead(&s.client, &s.base, "alice").await.0, 50);
    // Rescoring again changes nothing.
    let (_, again) = s.post("/api/rescore", &json!({})).await;
    let job = finished(&s.client, &s.base, again["id"].as_str().unwrap()).await;
    assert_eq!((job["state"].as_str(), job["adjusted"].as_u64()), (Some("done"), Some(0)), "{job}");
    let (score, history, _) = lead(&s.client, &s.base, "alice").await;
    assert_eq!((score, rescore_entries(&history).len()), (50, 1));
    s.stop().await;
}

/// A job left running by a process that stopped resumes when the next process starts. Lead
/// by lead (MongoDB) it goes on from its saved cursor: the leads before it are not read
/// again. As one pass (SQLite) it reads everything again and adjusts every lead that still
/// needs it (the cursor's leads included, which this job's first run never adjusted): a
/// lead the first run adjusted would need nothing.
#[tokio::test]
async fn an_interrupted_job_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "rescore_resume");
    let leads: Vec<String> = (0..10).map(|i| format!("lead-{i:02}")).collect();
    {
        let server = Binary::start_on(&db.url, &[("API_KEYS", common::ADMIN_KEY)]);
        let client = common::keyed_client(common::ADMIN_KEY);
        let batch: Vec<Value> = leads.iter().map(|l| event(&format!("{l}-buy"), l, "Purchase")).collect();
        let r = client.post(format!("{}/api/events/batch", server.base)).json(&batch).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        common::wait_drained(&client, &server.base, Duration::from_secs(30)).await;
        let price = json!({"eventType": "Purchase", "points": 7, "isActive": true});
        let r = client.post(format!("{}/api/rules", server.base)).json(&price).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // As a process stopped after its job's first page (lead-00 to lead-04) would leave it.
    let job = json!({
        "id": "resume1", "state": "running", "processed": 5, "total": 10, "leads": 5, "adjusted": 0,
        "startedAt": "2026-01-01T00:00:00.000Z", "halfLifeDays": null, "cursor": "lead-04",
    });
    let store: Box<dyn Store> = match db.url.strip_prefix("sqlite://") {
        Some(path) => Box::new(leadscore::service::store::sqlite::SqliteStore::open(path).unwrap()),
        None => {
            let mongo = leadscore::service::store::mongo::MongoStore::connect(&db.url).await.unwrap();
            mongo.prepare().await.unwrap();
            Box::new(mongo)
        }
    };
    store.put_setting("rescore.job.resume1", job, 0).await.unwrap();
    store.put_setting("rescore.latest", json!("resume1"), 0).await.unwrap();
    drop(store);

    let server = Binary::start_on(&db.url, &[("API_KEYS", common::ADMIN_KEY)]);
    let client = common::keyed_client(common::ADMIN_KEY);
    let job = finished(&client, &server.base, "resume1").await;
    assert_eq!(job["state"], "done", "{job}");
    let by_leads = !db.url.starts_with("sqlite://");
    let adjusted = if by_leads { 5 } else { 10 };
    assert_eq!((job["leads"].as_u64(), job["adjusted"].as_u64()), (Some(10), Some(adjusted)), "{job}");
    common::wait_drained(&client, &server.base, Duration::from_secs(30)).await;
    for (i, l) in leads.iter().enumerate() {
        let (score, history, _) = lead(&client, &server.base, l).await;
        if by_leads && i < 5 {
            assert_eq!((score, rescore_entries(&history)), (100, vec![]), "{l}: before the cursor, not read again");
        } else {
            assert_eq!((score, rescore_entries(&history)), (7, vec![-93]), "{l}: rescored once");
        }
    }
    drop(server);
    db.drop_now().await;
}

/// Events keep arriving while a rescore runs: each is scored once, with the new rules, and
/// when the job is done every lead's score is what its events are worth now, whether the
/// job's adjustment found the lead as it had read it or the lead had scored meanwhile.
#[tokio::test]
async fn events_posted_during_a_rescore_are_scored_once_with_the_new_rules() {
    let s = TestServer::start().await;
    let leads: Vec<String> = (0..400).map(|i| format!("busy-{i:03}")).collect();
    let kinds = ["Page View", "Purchase", "Page View", "Demo Request", "Page View"];
    let batch: Vec<Value> = leads
        .iter()
        .flat_map(|l| kinds.iter().enumerate().map(move |(k, ty)| event(&format!("{l}-{k}"), l, ty)))
        .collect();
    assert_eq!(s.post("/api/events/batch", &json!(batch)).await.0, 202);
    s.drained().await;
    for (ty, points) in [("Page View", 7), ("Purchase", 10), ("Demo Request", 40)] {
        let rule = json!({"eventType": ty, "points": points, "isActive": true});
        assert_eq!(s.post("/api/rules", &rule).await.0, 200);
    }
    let worth = |ty: &str| match ty {
        "Page View" => 7,
        "Purchase" => 10,
        "Demo Request" => 40,
        other => panic!("unexpected event type {other}"),
    };

    let (status, job) = s.post("/api/rescore", &json!({})).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // Bounded: at most 40 batches, and no more once the job is done.
    for round in 0..40 {
        let more: Vec<Value> = (0..25)
            .map(|i| {
                let l = &leads[(round * 37 + i * 16) % leads.len()];
                event(&format!("{l}-late-{round}-{i}"), l, kinds[(round + i) % kinds.len()])
            })
            .collect();
        assert_eq!(s.post("/api/events/batch", &json!(more)).await.0, 202);
        let (_, now) = s.get(&format!("/api/rescore/{id}")).await;
        if now["state"] != "running" {
            break;
        }
    }
    let job = finished(&s.client, &s.base, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    s.drained().await;
    for l in &leads {
        let (score, history, events) = lead(&s.client, &s.base, l).await;
        let activity: Vec<&Value> =
            events.iter().filter(|e| !e["eventType"].as_str().unwrap().starts_with('$')).collect();
        for e in &activity {
            assert_eq!(e["points"].as_i64(), Some(worth(e["eventType"].as_str().unwrap())), "{l}: {e}");
        }
        let want: i64 = activity.iter().map(|e| worth(e["eventType"].as_str().unwrap())).sum();
        assert_eq!(score, want, "{l}: {history:?}");
        assert!(rescore_entries(&history).len() <= 1, "{l}: one rescore entry at most: {history:?}");
    }
    s.stop().await;
}

/// A rescore killed (SIGKILL) again and again at different moments, then left to finish:
/// every lead ends at what its events are worth now, with exactly one `$rescore` entry.
#[tokio::test]
async fn a_rescore_killed_at_any_moment_finishes_once_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "rescore_killed");
    let env = [("API_KEYS", common::ADMIN_KEY)];
    let client = common::keyed_client(common::ADMIN_KEY);
    // Enough that the job takes a while (two pages of adjustments on SQLite, two pages of
    // leads on MongoDB, which is slower here), so the kills land in it.
    let n = if db.url.starts_with("sqlite://") { 12_000 } else { 4_000 };
    let leads: Vec<String> = (0..n).map(|i| format!("k-{i:05}")).collect();
    let kinds = ["Page View", "Purchase", "Demo Request"];
    let (want, was) = (7 + 10 + 40, 5 + 100 + 50);
    let id = {
        let server = Binary::start_on(&db.url, &env);
        for part in leads.chunks(1_000) {
            let batch: Vec<Value> = part
                .iter()
                .flat_map(|l| kinds.iter().enumerate().map(move |(k, ty)| event(&format!("{l}-{k}"), l, ty)))
                .collect();
            let r = client.post(format!("{}/api/events/batch", server.base)).json(&batch).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
        }
        common::wait_drained(&client, &server.base, Duration::from_secs(120)).await;
        for (ty, points) in [("Page View", 7), ("Purchase", 10), ("Demo Request", 40)] {
            let rule = json!({"eventType": ty, "points": points, "isActive": true});
            let r = client.post(format!("{}/api/rules", server.base)).json(&rule).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        let r = client.post(format!("{}/api/rescore", server.base)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let job: Value = r.json().await.unwrap();
        job["id"].as_str().unwrap().to_string()
    };
    // Each process resumes the running job at its start and is killed a moment later.
    let mut states = Vec::new();
    for delay in [50, 200, 500, 900, 1400] {
        let server = Binary::start_on(&db.url, &env);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let r = client.get(format!("{}/api/rescore/{id}", server.base)).send().await.unwrap();
        let job: Value = r.json().await.unwrap();
        states.push((job["state"].as_str().unwrap_or("?").to_string(), job["adjusted"].as_u64()));
    }
    eprintln!("job when each process was killed: {states:?}");
    let server = Binary::start_on(&db.url, &env);
    let job = finished(&client, &server.base, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    common::wait_drained(&client, &server.base, Duration::from_secs(120)).await;
    let csv = |query: &'static str| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let r = client.get(format!("{base}/api/export/leads.csv{query}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap().lines().skip(1).count()
        }
    };
    assert_eq!(csv("").await, leads.len());
    assert_eq!(csv("?minScore=57&maxScore=57").await, leads.len(), "every lead at {want}");
    for l in leads.iter().step_by(97) {
        let (score, history, _) = lead(&client, &server.base, l).await;
        assert_eq!((score, rescore_entries(&history)), (want, vec![want - was]), "{l}: {history:?}");
    }
    drop(server);
    db.drop_now().await;
}
