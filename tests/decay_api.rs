//! Score decay: the setting, the pass that moves every lead to its decayed total (by each
//! event's own time) as `$decay` events in its history, turning it off again, and two
//! instances passing at once on one MongoDB database. SQLite, and MongoDB when
//! scripts/test.sh says so.

mod common;

use common::TestServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

fn at(days_ago: i64) -> String {
    let ms = chrono::Utc::now().timestamp_millis() - days_ago * DAY_MS;
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn event(id: &str, lead: &str, ty: &str, days_ago: i64) -> Value {
    json!({"eventId": id, "leadId": lead, "eventType": ty, "timestamp": at(days_ago)})
}

async fn put(s: &TestServer, body: &Value) -> (u16, Value) {
    let r = s.client.put(s.url("/api/settings/decay")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn score(s: &TestServer, lead: &str) -> i64 {
    s.get(&format!("/api/leads/{lead}")).await.1["lead"]["score"].as_i64().unwrap()
}

/// Waits (at most 30 s) until every lead has the score wanted and nothing is queued.
async fn wait_for_scores(s: &TestServer, want: &[(&str, i64)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        s.drained().await;
        let mut now = Vec::new();
        for (lead, _) in want {
            now.push((*lead, score(s, lead).await));
        }
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "scores stayed {now:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lead's history, newest first, and its score: they must agree.
async fn history(s: &TestServer, lead: &str) -> Vec<Value> {
    let (_, detail) = s.get(&format!("/api/leads/{lead}?historyLimit=100")).await;
    let history = detail["history"].as_array().unwrap().clone();
    let sum: i64 = history.iter().map(|h| h["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, detail["lead"]["score"].as_i64().unwrap(), "score = sum of history: {detail}");
    history
}

fn decay_entries(history: &[Value]) -> Vec<i64> {
    history.iter().filter(|h| h["eventType"] == "$decay").map(|h| h["delta"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn the_setting_is_validated_and_names_its_field() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/api/settings/decay").await;
    assert_eq!((status, body), (200, json!({"halfLifeDays": null, "lastPass": null})));
    for bad in [json!({"halfLifeDays": 0}), json!({"halfLifeDays": "30"}), json!({}), json!([30])] {
        let (status, body) = put(&s, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let field = &body["details"][0]["field"];
        assert!(field == "halfLifeDays" || field == "body", "{bad}: {body}");
    }
    let (status, body) = put(&s, &json!({"halfLifeDays": 45.5})).await;
    assert_eq!((status, &body["halfLifeDays"]), (200, &json!(45.5)), "{body}");
    assert_eq!(s.get("/api/settings/decay").await.1["halfLifeDays"].as_f64(), Some(45.5));
    // `$` names are the server's own: a client cannot send a decay event, or pre-empt one's id.
    let (status, body) = s.post("/api/events", &event("e1", "lead", "$decay", 0)).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("eventType")), "{body}");
    let (status, body) = s.post("/api/events", &event("$decay:lead:0", "lead", "Page View", 0)).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("eventId")), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_pass_decays_by_event_time_and_turning_it_off_gives_the_points_back() {
    let s = TestServer::start().await;
    // Purchase 100, Demo Request 50 (the default rules).
    for (id, lead, ty, days_ago) in [
        ("e1", "month-old", "Purchase", 30),
        ("e2", "fresh", "Purchase", 0),
        ("e3", "mixed", "Purchase", 60),
        ("e4", "mixed", "Demo Request", 30),
    ] {
        assert_eq!(s.post("/api/events", &event(id, lead, ty, days_ago)).await.0, 202);
    }
    wait_for_scores(&s, &[("month-old", 100), ("fresh", 100), ("mixed", 150)]).await;

    // Half-life 30 days: 100 → 50; 100 stays; 100/4 + 50/2 = 50.
    let (status, body) = put(&s, &json!({"halfLifeDays": 30})).await;
    assert_eq!(status, 200, "{body}");
    wait_for_scores(&s, &[("month-old", 50), ("fresh", 100), ("mixed", 50)]).await;
    let old = history(&s, "month-old").await;
    assert_eq!(decay_entries(&old), [-50]);
    assert_eq!(old[0]["stageChange"], json!({"from": "MQL", "to": "Warm"}), "{:?}", old[0]);
    assert_eq!(decay_entries(&history(&s, "mixed").await), [-100]);
    assert_eq!(decay_entries(&history(&s, "fresh").await), Vec::<i64>::new(), "nothing to take: no entry");
    // The event log explains it.
    let (_, detail) = s.get("/api/leads/month-old").await;
    let decay = detail["events"].as_array().unwrap().iter().find(|e| e["eventType"] == "$decay").expect("listed");
    assert_eq!(decay["matches"], json!([{"ruleId": "$decay", "name": "Decay (half-life 30 days)", "points": -50}]));
    let (_, settings) = s.get("/api/settings/decay").await;
    assert_eq!(settings["lastPass"]["halfLifeDays"].as_f64(), Some(30.0), "{settings}");
    // 2, or 1 if a lead was still being scored and got a pass of its own right after.
    assert!(settings["lastPass"]["adjusted"].as_u64().is_some_and(|n| (1..=2).contains(&n)), "{settings}");

    // A new event counts in full; the next pass (at start, or the interval) decays it later.
    assert_eq!(s.post("/api/events", &event("e5", "month-old", "Demo Request", 0)).await.0, 202);
    wait_for_scores(&s, &[("month-old", 100)]).await;

    // Off: the scores go back to the plain sum of their events' points, once.
    let (status, _) = put(&s, &json!({"halfLifeDays": null})).await;
    assert_eq!(status, 200);
    wait_for_scores(&s, &[("month-old", 150), ("fresh", 100), ("mixed", 150)]).await;
    assert_eq!(decay_entries(&history(&s, "month-old").await), [50, -50], "newest first");
    assert_eq!(decay_entries(&history(&s, "mixed").await), [100, -100]);
    s.stop().await;
}

/// Two instances on one MongoDB database pass at once: each lead is adjusted once.
#[tokio::test]
async fn two_instances_passing_at_once_adjust_each_lead_once() {
    let a = TestServer::start().await;
    let Some(b) = a.start_beside().await else {
        println!("SQLite: one process holds the file; this case runs on MongoDB");
        return a.stop().await;
    };
    let leads: Vec<String> = (0..40).map(|i| format!("lead-{i}")).collect();
    let batch: Vec<Value> = leads.iter().enumerate().map(|(i, l)| event(&format!("e{i}"), l, "Purchase", 30)).collect();
    assert_eq!(a.post("/api/events/batch", &json!(batch)).await.0, 202);
    let want: Vec<(&str, i64)> = leads.iter().map(|l| (l.as_str(), 100)).collect();
    wait_for_scores(&a, &want).await;
    // Both wake at once: one saves the setting, the other is told the same.
    let setting = json!({"halfLifeDays": 30});
    let (ra, rb) = tokio::join!(put(&a, &setting), put(&b, &setting));
    assert_eq!((ra.0, rb.0), (200, 200));
    let want: Vec<(&str, i64)> = leads.iter().map(|l| (l.as_str(), 50)).collect();
    wait_for_scores(&a, &want).await;
    for lead in &leads {
        assert_eq!(decay_entries(&history(&a, lead).await), [-50], "{lead}");
    }
    b.stop().await;
    a.stop().await;
}
