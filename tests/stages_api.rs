//! Lifecycle stages: the ladder API, each lead's stage on every read, the stage filter, the
//! counts, stage moves in the history and on the live stream. SQLite, and MongoDB when
//! scripts/test.sh says so.

mod common;

use common::sse::SseClient;
use common::{event, TestServer};
use serde_json::{json, Value};

fn fields(body: &Value) -> Vec<String> {
    body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_string()).collect()
}

async fn put(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let r = s.client.put(s.url(path)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(leads: &Value) -> Vec<&str> {
    leads.as_array().unwrap().iter().map(|l| l["_id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn leads_carry_their_stage_and_filter_and_count_by_it() {
    let s = TestServer::start().await;
    let (status, ladder) = s.get("/api/stages").await;
    assert_eq!(status, 200);
    assert_eq!(
        ladder,
        json!([{"name": "Cold", "minScore": 0}, {"name": "Warm", "minScore": 50},
               {"name": "MQL", "minScore": 100}, {"name": "SQL", "minScore": 200}])
    );
    // cold: 5; warm: 50; mql: 150; sql: 200
    let posts = [
        ("cold", "Page View", 1),
        ("warm", "Demo Request", 1),
        ("mql", "Purchase", 1),
        ("mql", "Demo Request", 1),
        ("sql", "Purchase", 2),
    ];
    let mut n = 0;
    for (lead, kind, times) in posts {
        for _ in 0..times {
            n += 1;
            assert_eq!(s.post("/api/events", &event(&format!("e{n}"), lead, kind)).await.0, 202);
        }
    }
    s.drained().await;
    let (_, leads) = s.get("/api/leads?limit=10").await;
    let staged: Vec<(&str, &str)> =
        leads.as_array().unwrap().iter().map(|l| (l["_id"].as_str().unwrap(), l["stage"].as_str().unwrap())).collect();
    assert_eq!(staged, [("sql", "SQL"), ("mql", "MQL"), ("warm", "Warm"), ("cold", "Cold")]);
    assert_eq!(ids(&s.get("/api/leads?stage=mql").await.1), ["mql"], "names ignore case");
    assert_eq!(
        ids(&s.get("/api/leads?stage=Warm&minScore=60").await.1),
        Vec::<&str>::new(),
        "within the score filters"
    );
    let (status, body) = s.get("/api/leads?stage=Hot").await;
    assert_eq!((status, fields(&body)), (400, vec!["stage".to_string()]));
    assert!(body["details"][0]["problem"].as_str().unwrap().contains("Cold, Warm, MQL, SQL"), "{body}");
    let (_, counts) = s.get("/api/stages/counts").await;
    let counted: Vec<(&str, u64)> = counts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["leads"].as_u64().unwrap()))
        .collect();
    assert_eq!(counted, [("Cold", 1), ("Warm", 1), ("MQL", 1), ("SQL", 1)]);

    // The lead's history marks the changes that moved it.
    let (_, detail) = s.get("/api/leads/mql").await;
    assert_eq!(detail["lead"]["stage"], "MQL");
    let moves: Vec<Value> = detail["history"].as_array().unwrap().iter().map(|h| h["stageChange"].clone()).collect();
    assert_eq!(
        moves,
        [Value::Null, json!({"from": "Cold", "to": "MQL"})],
        "newest first; only the change that moved it"
    );

    // A new ladder re-stages every lead at once.
    let new = json!([{"name": "Lead", "minScore": 0}, {"name": "Hot", "minScore": 120}]);
    let (status, saved) = put(&s, "/api/stages", &new).await;
    assert_eq!((status, saved.clone()), (200, new.clone()));
    assert_eq!(s.get("/api/stages").await.1, new);
    assert_eq!(ids(&s.get("/api/leads?stage=hot").await.1), ["sql", "mql"]);
    let (_, audit) = s.get("/api/audit?limit=1").await;
    assert_eq!(audit[0]["action"], "stages.update");
    s.stop().await;
}

#[tokio::test]
async fn a_bad_ladder_gets_400_naming_each_place_and_changes_nothing() {
    let s = TestServer::start().await;
    let bad = json!([{"name": "A", "minScore": 10}, {"name": "a", "minScore": 5}, {"name": "", "minScore": "x"}]);
    let (status, body) = put(&s, "/api/stages", &bad).await;
    assert_eq!(status, 400);
    assert_eq!(fields(&body), ["stages[1].name", "stages[1].minScore", "stages[2].name", "stages[2].minScore"]);
    assert_eq!(put(&s, "/api/stages", &json!([])).await.0, 400);
    assert_eq!(s.get("/api/stages").await.1.as_array().unwrap().len(), 4, "the default ladder stands");
    s.stop().await;
}

#[tokio::test]
async fn the_stream_says_when_a_lead_changes_stage() {
    let s = TestServer::start().await;
    let mut sse = SseClient::connect(&s.client, &s.url("/api/stream"), None).await;
    sse.next_of("ready").await;
    assert_eq!(s.post("/api/events", &event("s1", "climber", "Page View")).await.0, 202);
    let first = sse.next_of("leadUpdated").await;
    let updates: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!((updates[0]["score"].as_i64(), updates[0]["stage"].as_str()), (Some(5), Some("Cold")));
    assert_eq!(s.post("/api/events", &event("s2", "climber", "Purchase")).await.0, 202);
    let moved = sse.next_of("stageChanged").await;
    let moved: Value = serde_json::from_str(&moved.data).unwrap();
    assert_eq!(moved, json!({"leadId": "climber", "from": "Cold", "to": "MQL", "score": 105}));
    s.stop().await;
}
