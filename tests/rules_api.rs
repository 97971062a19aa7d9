//! The rules API of scoring model v2: several rules per event type with conditions and
//! limits, created, changed and deleted by id; the old upsert keeps its meaning; every scored
//! event explains its points. Runs on SQLite, and on MongoDB when scripts/test.sh says so.

mod common;

use common::TestServer;
use serde_json::{json, Value};

fn fields(body: &Value) -> Vec<String> {
    body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_string()).collect()
}

fn view(id: &str, lead: &str, page: &str) -> Value {
    json!({"eventId": id, "leadId": lead, "eventType": "Page View", "timestamp": "2024-05-01T12:00:00Z",
           "metadata": {"page": page, "utm": {"source": "Newsletter"}}})
}

async fn send(s: &TestServer, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = s.client.request(method, s.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rules_with_conditions_and_limits_are_created_changed_deleted_and_explained() {
    let s = TestServer::start().await;
    // A new rule: 201 with its id, listed with every field.
    let pricing = json!({
        "name": "Pricing page", "eventType": "Page View", "points": 20,
        "conditions": [{"field": "page", "op": "startsWith", "value": "/pricing"},
                       {"field": "utm.source", "op": "in", "value": ["newsletter", "ads"]}],
        "limit": {"count": 1, "per": "day"},
    });
    let (status, created) = s.post("/api/rules", &pricing).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!((created["name"].as_str(), created["points"].as_i64()), (Some("Pricing page"), Some(20)));
    assert_eq!(created["conditions"], pricing["conditions"]);
    assert_eq!(created["limit"], json!({"count": 1, "per": "day"}));
    let (_, rules) = s.get("/api/rules").await;
    let listed = rules.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(listed, &created);
    let base =
        rules.as_array().unwrap().iter().find(|r| r["eventType"] == "Page View" && r["id"] != id.as_str()).unwrap();
    assert_eq!((base["conditions"].clone(), base["limit"].clone()), (json!([]), Value::Null), "every field, always");

    // Events: base 5 + pricing 20 once a day; a blog view only the base.
    for (i, page) in ["/pricing", "/pricing/teams", "/blog"].iter().enumerate() {
        assert_eq!(s.post("/api/events", &view(&format!("v{i}"), "ann", page)).await.0, 202);
    }
    s.drained().await;
    let (_, detail) = s.get("/api/leads/ann").await;
    assert_eq!(detail["lead"]["score"], 25 + 5 + 5);
    let events = detail["events"].as_array().unwrap();
    let by_id = |eid: &str| events.iter().find(|e| e["eventId"] == eid).unwrap().clone();
    assert_eq!(
        by_id("v0")["matches"],
        json!([{"ruleId": base["id"], "name": "Page View", "points": 5}, {"ruleId": id, "name": "Pricing page", "points": 20}])
    );
    assert_eq!(by_id("v1")["matches"][1], json!({"ruleId": id, "name": "Pricing page", "points": 0, "limited": true}));
    assert_eq!(by_id("v2")["matches"].as_array().unwrap().len(), 1);

    // PUT replaces the whole rule; the next event uses it.
    let (status, changed) = send(
        &s,
        reqwest::Method::PUT,
        &format!("/api/rules/{id}"),
        Some(&json!({"name": "Any pricing", "eventType": "Page View", "points": 7,
            "conditions": [{"field": "page", "op": "contains", "value": "PRICING"}]})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["id"].as_str(), changed["limit"].clone(), changed["points"].as_i64()),
        (Some(id.as_str()), Value::Null, Some(7))
    );
    assert_eq!(s.post("/api/events", &view("v3", "ann", "/pricing")).await.0, 202);
    s.drained().await;
    assert_eq!(s.get("/api/leads/ann").await.1["lead"]["score"], 35 + 12);

    // DELETE answers the rule as it was; then it is gone, and its id is unknown.
    let (status, removed) = send(&s, reqwest::Method::DELETE, &format!("/api/rules/{id}"), None).await;
    assert_eq!((status, removed["name"].as_str()), (200, Some("Any pricing")));
    let (status, body) = send(&s, reqwest::Method::DELETE, &format!("/api/rules/{id}"), None).await;
    assert_eq!((status, fields(&body)), (404, vec!["id".to_string()]));
    let (status, _) = send(&s, reqwest::Method::PUT, "/api/rules/nope", Some(&pricing)).await;
    assert_eq!(status, 404);
    assert!(s.get("/api/rules").await.1.as_array().unwrap().iter().all(|r| r["id"] != id.as_str()));

    // Every change is in the audit log.
    let (_, audit) = s.get("/api/audit?limit=3").await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["rule.delete", "rule.update", "rule.create"]);
    s.stop().await;
}

#[tokio::test]
async fn the_old_upsert_keeps_its_meaning_next_to_new_rules() {
    let s = TestServer::start().await;
    let (status, added) = s.post("/api/rules", &json!({"name": "Docs", "eventType": "Page View", "points": 2})).await;
    assert_eq!(status, 201);
    // Old clients send {eventType, points, isActive}: the type's base rule changes, 200.
    let (status, base) = s.post("/api/rules", &json!({"eventType": "Page View", "points": 8, "isActive": true})).await;
    assert_eq!((status, base["points"].as_i64(), base["base"].as_bool()), (200, Some(8), Some(true)));
    let (status, again) = s.post("/api/rules", &json!({"eventType": "Page View", "points": 9})).await;
    assert_eq!((status, again["id"].clone()), (200, base["id"].clone()), "the same rule, upserted");
    let (_, rules) = s.get("/api/rules").await;
    let views: Vec<(&str, i64)> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["eventType"] == "Page View")
        .map(|r| (r["name"].as_str().unwrap(), r["points"].as_i64().unwrap()))
        .collect();
    assert_eq!(views, [("Page View", 9), ("Docs", 2)], "the added rule is untouched");
    assert_eq!(added["points"], 2);
    // Both rules match: an event is worth the sum, and an unknown type scores 0, still logged.
    assert_eq!(s.post("/api/events", &view("p", "bob", "/")).await.0, 202);
    let unknown = json!({"eventId": "u", "leadId": "bob", "eventType": "Webinar", "timestamp": "2024-05-01T12:00:00Z"});
    assert_eq!(s.post("/api/events", &unknown).await.0, 202);
    s.drained().await;
    let (_, detail) = s.get("/api/leads/bob").await;
    assert_eq!(detail["lead"]["score"], 11);
    let u = detail["events"].as_array().unwrap().iter().find(|e| e["eventId"] == "u").unwrap();
    assert_eq!((u["points"].as_i64(), u.get("matches")), (Some(0), None), "no rule matched: 0, no explanation");

    // A client that GETs rules, changes points and POSTs each back: the same rules change,
    // no copies appear (a base rule read back still reads as the old upsert).
    let (_, rules) = s.get("/api/rules").await;
    for rule in rules.as_array().unwrap().iter().filter(|r| r["eventType"] == "Page View") {
        let mut back = rule.clone();
        back["points"] = json!(rule["points"].as_i64().unwrap() + 100);
        let (status, saved) = s.post("/api/rules", &back).await;
        assert_eq!((status, saved["id"].clone()), (200, rule["id"].clone()), "{saved}");
    }
    let (_, after) = s.get("/api/rules").await;
    assert_eq!(after.as_array().unwrap().len(), rules.as_array().unwrap().len(), "no copies");
    let points: Vec<i64> = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["eventType"] == "Page View")
        .map(|r| r["points"].as_i64().unwrap())
        .collect();
    assert_eq!(points, [109, 102]);
    s.stop().await;
}

#[tokio::test]
async fn an_event_type_holds_at_most_fifty_rules() {
    let s = TestServer::start().await;
    // The seeded base rule is the first of Purchase's fifty.
    for i in 1..50 {
        let (status, body) =
            s.post("/api/rules", &json!({"name": format!("r{i}"), "eventType": "Purchase", "points": 1})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) =
        s.post("/api/rules", &json!({"name": "one too many", "eventType": "Purchase", "points": 1})).await;
    assert_eq!((status, fields(&body)), (400, vec!["eventType".to_string()]));
    assert!(body["details"][0]["problem"].as_str().unwrap().contains("at most 50"), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn invalid_rules_get_400_naming_every_field() {
    let s = TestServer::start().await;
    let bad = json!({
        "name": "", "eventType": "Page View", "points": 1.5,
        "conditions": [{"field": "page", "op": "near", "value": 1}, {"field": "n", "op": "gt", "value": "ten"}],
        "limit": {"count": 0, "per": "year"},
    });
    let (status, body) = s.post("/api/rules", &bad).await;
    assert_eq!(status, 400, "{body}");
    let got = fields(&body);
    for field in ["name", "points", "conditions[0].op", "conditions[1].value", "limit.count", "limit.per"] {
        assert!(got.iter().any(|f| f == field), "{field} missing from {got:?}");
    }
    let (status, body) = send(&s, reqwest::Method::PUT, "/api/rules/x", Some(&json!({"points": 3}))).await;
    assert_eq!((status, fields(&body)), (400, vec!["eventType".to_string()]), "validated before looking the rule up");
    assert_eq!(s.get("/api/rules").await.1.as_array().unwrap().len(), 5, "nothing was saved");
    s.stop().await;
}
