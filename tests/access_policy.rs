//! The access policy, walked as a table: every route of `server::policy::table()` — REST,
//! server functions, pages — called as every kind of principal. A refused call answers
//! 401/403 (pages: a redirect to sign in, or 403) and changes nothing; an allowed one gets past
//! the gate. The expected grants are written out here, independently of the server's code.

mod common;

use common::{event, TestServer};
use leadscore::domain::access::Access;
use leadscore::server::gate::Kind;
use leadscore::server::policy::table;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "a long enough password";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    Viewer,
    Editor,
    Admin,
    IngestKey,
    ReadKey,
    RevokedKey,
    InventedKey,
}

/// Public, Read, Ingest, Edit, Admin — as the README's roles table promises.
fn expected_grants(who: Who) -> [bool; 5] {
    match who {
        Who::Anonymous | Who::RevokedKey | Who::InventedKey => [true, false, false, false, false],
        Who::Viewer => [true, true, false, false, false],
        Who::Editor => [true, true, true, true, false],
        Who::Admin => [true, true, true, true, true],
        Who::IngestKey => [true, false, true, false, false],
        Who::ReadKey => [true, true, false, false, false],
    }
}

fn index(access: Access) -> usize {
    match access {
        Access::Public => 0,
        Access::Read => 1,
        Access::Ingest => 2,
        Access::Edit => 3,
        Access::Admin => 4,
    }
}

/// Whether a refusal is "who are you" (401) rather than "not you" (403).
fn unauthenticated(who: Who) -> bool {
    matches!(who, Who::Anonymous | Who::RevokedKey | Who::InventedKey)
}

struct Principals {
    clients: Vec<(Who, reqwest::Client)>,
}

async fn key(s: &TestServer, name: &str, scopes: Value) -> (String, String) {
    let (status, body) = s.post("/api/keys", &json!({"name": name, "scopes": scopes})).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["key"].as_str().unwrap().starts_with("lsk_"));
    (body["id"].as_str().unwrap().to_string(), body["key"].as_str().unwrap().to_string())
}

async fn principals(s: &TestServer) -> Principals {
    for (name, role) in [("vera", "viewer"), ("eddie", "editor"), ("ada", "admin")] {
        s.create_user(name, role, PASSWORD).await;
    }
    let (_, ingest) = key(s, "website", json!(["ingest"])).await;
    let (_, read) = key(s, "bi tool", json!(["read"])).await;
    let (revoked_id, revoked) = key(s, "old", json!(["admin"])).await;
    let r = s.client.delete(s.url(&format!("/api/keys/{revoked_id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let keyed = |k: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-api-key", k.parse().unwrap());
        reqwest::Client::builder().default_headers(headers).redirect(reqwest::redirect::Policy::none()).build().unwrap()
    };
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Principals {
        clients: vec![
            (Who::Anonymous, bare),
            (Who::Viewer, signed_in(s, "vera").await),
            (Who::Editor, signed_in(s, "eddie").await),
            (Who::Admin, signed_in(s, "ada").await),
            (Who::IngestKey, keyed(&ingest)),
            (Who::ReadKey, keyed(&read)),
            (Who::RevokedKey, keyed(&revoked)),
            (Who::InventedKey, keyed("lsk_invented0000000000000000000000000000000")),
        ],
    }
}

async fn signed_in(s: &TestServer, username: &str) -> reqwest::Client {
    s.signed_in(username, PASSWORD).await
}

/// Everything a refused call could have changed, read with the admin key.
async fn snapshot(s: &TestServer) -> Value {
    // Events accepted by earlier, allowed calls are scored first, so only this call can differ.
    s.drained().await;
    let (_, rules) = s.get("/api/rules").await;
    let (_, stages) = s.get("/api/stages").await;
    let (_, users) = s.get("/api/users").await;
    let (_, keys) = s.get("/api/keys").await;
    let keys: Vec<Value> = keys.as_array().unwrap().iter().map(|k| json!([k["id"], k["revokedAt"]])).collect();
    let (_, health) = s.get("/api/health").await;
    let (_, leads) = s.get("/api/leads?limit=500").await;
    // Every change of a setting is audited (decay's body changes nothing else: see body_for).
    let (_, decay) = s.get("/api/settings/decay").await;
    let (_, audit) = s.get("/api/audit").await;
    let (_, webhooks) = s.get("/api/webhooks").await;
    json!({"rules": rules, "stages": stages, "users": users, "keys": keys, "queued": health["queue"]["depth"],
           "leads": leads, "decay": decay, "audit": audit, "webhooks": webhooks})
}

/// Waits (at most 30 s) until the latest rescore job is done and its events are scored.
async fn rescore_finished(s: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, audit) = s.get("/api/audit").await;
        let id = audit.as_array().and_then(|a| {
            a.iter().find(|e| e["action"] == "rescore.start").and_then(|e| e["target"].as_str().map(str::to_string))
        });
        let Some(id) = id.and_then(|t| t.strip_prefix("rescore ").map(str::to_string)) else { return };
        let (_, job) = s.get(&format!("/api/rescore/{id}")).await;
        if job["state"] != "running" {
            s.drained().await;
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the rescore did not finish: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A body that would change something if the call got through.
fn body_for(path: &str, n: usize, rule: &str) -> Value {
    match path {
        "/api/events" => event(&format!("policy-{n}"), "policy-lead", "Purchase"),
        "/api/events/batch" => json!([event(&format!("policy-b{n}"), "policy-lead", "Purchase")]),
        "/api/rules" => json!({"eventType": format!("Policy {n}"), "points": 7, "isActive": true}),
        "/api/rules/{id}" => json!({"name": format!("Policy {n}"), "eventType": "Purchase", "points": 1000}),
        "/api/stages" => json!([{"name": format!("Policy {n}"), "minScore": 0}]),
        // Decay stays off (a half-life would move scores while other calls are checked); a
        // call that got through still shows, as an audit entry.
        "/api/settings/decay" => json!({"halfLifeDays": null}),
        "/api/webhooks" => json!({"url": format!("http://127.0.0.1:9/policy-{n}"), "events": ["stageChanged"]}),
        "/api/users" => json!({"username": format!("new{n}"), "role": "admin", "password": PASSWORD}),
        "/api/users/{username}" => json!({"role": "admin"}),
        "/api/keys" => json!({"name": format!("k{n}"), "scopes": ["admin"]}),
        "/api/setup" => json!({"token": "guess", "username": "mallory", "password": PASSWORD}),
        "/api/auth/login" => json!({}),
        p if p.contains("save_rule") || p.contains("update_rule") => json!({
            "id": rule,
            "form": {"name": "", "event_type": format!("Rpc {n}"), "points": "9", "is_active": true,
                     "conditions": [], "limit_count": "", "limit_per": "day"},
        }),
        p if p.contains("delete_rule") => json!({"id": rule}),
        p if p.contains("save_stages") => json!({"stages": [[format!("Rpc {n}"), "0"]]}),
        p if p.contains("save_decay") => json!({"half_life": ""}),
        p if p.contains("send_test_event") => {
            json!({"lead_id": "policy-lead", "event_type": "Purchase", "metadata": ""})
        }
        p if p.contains("upload_events") => {
            json!({"events": [event(&format!("policy-u{n}"), "policy-lead", "Purchase")]})
        }
        p if p.contains("save_user") => {
            json!({"username": format!("rpc{n}"), "role": "admin", "password": PASSWORD, "create": true})
        }
        p if p.contains("remove_user") => json!({"username": "victim"}),
        p if p.contains("create_key") => json!({"name": format!("rk{n}"), "scopes": ["admin"]}),
        p if p.contains("revoke_key") => json!({"id": "victim-key"}),
        p if p.contains("fetch_lead") => json!({"id": "policy-lead", "page": {}}),
        p if p.contains("fetch_leaderboard") => json!({"query": {}}),
        p if p.contains("fetch_audit") => json!({"offset": 0}),
        p if p.contains("login") || p.contains("setup") => json!({"username": "", "password": "", "token": ""}),
        _ => json!({}),
    }
}

/// The rule the rule routes name, made on `s`: the store gives rules their ids, so each test
/// learns its own.
async fn victim_rule(s: &TestServer) -> String {
    let (_, rule) = s.post("/api/rules", &json!({"name": "Victim", "eventType": "Purchase", "points": 1})).await;
    rule["id"].as_str().expect("the victim rule's id").to_string()
}

fn concrete(path: &str, rule: &str) -> String {
    let id = if path.starts_with("/api/rules/") { rule } else { "victim-key" };
    path.replace("{id}", id).replace("{username}", "victim").replace("{delivery}", "1")
}

#[tokio::test]
async fn every_route_as_every_principal() {
    let s = TestServer::start_with(|c| c.rate_limit_per_second = 0.0).await;
    s.create_user("victim", "viewer", PASSWORD).await;
    let rule = victim_rule(&s).await;
    let mut p = principals(&s).await;
    let mut checked = 0;
    for entry in table() {
        for i in 0..p.clients.len() {
            let (who, client) = p.clients[i].clone();
            let allowed = expected_grants(who)[index(entry.access)];
            let path = concrete(entry.path, &rule);
            let before = if allowed { Value::Null } else { snapshot(&s).await };
            let method = Method::from_bytes(entry.method.as_str().as_bytes()).unwrap();
            let mut request = client.request(method.clone(), s.url(&path));
            if method != Method::GET {
                request = request.json(&body_for(entry.path, checked, &rule));
            }
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
            // The live stream never ends: its body is not read.
            let body = if entry.path == "/api/stream" { String::new() } else { r.text().await.unwrap_or_default() };
            let what =
                format!("{who:?} {} {} ({})", entry.method, entry.path, body.chars().take(200).collect::<String>());
            if allowed {
                let handler_says_who = entry.path == "/api/auth/me" && unauthenticated(who);
                assert!(handler_says_who || !matches!(status, 401 | 403), "{what}: allowed, got {status}");
                // Setup is over once an account exists: its page sends people to sign in.
                let setup_done = entry.path == "/setup" && status == 303;
                assert!(
                    entry.kind() != Kind::Page || status == 200 || setup_done,
                    "{what}: page renders, got {status}"
                );
                // A rescore goes on in the background: let it finish, or the next refused
                // call's snapshot would see its changes.
                if entry.path == "/api/rescore" || entry.path.contains("start_rescore") {
                    rescore_finished(&s).await;
                }
            } else {
                match (entry.kind(), unauthenticated(who)) {
                    (Kind::Page, true) => {
                        assert_eq!(status, 303, "{what}");
                        assert!(location.unwrap_or_default().starts_with("/login?next="), "{what}");
                    }
                    (_, true) => assert_eq!(status, 401, "{what}"),
                    (_, false) => assert_eq!(status, 403, "{what}"),
                }
                assert_eq!(snapshot(&s).await, before, "{what}: refused, yet something changed");
            }
            // Signing out ends that principal's session: sign it in again for the next routes.
            if entry.path.contains("logout") && matches!(who, Who::Viewer | Who::Editor | Who::Admin) {
                let name = match who {
                    Who::Viewer => "vera",
                    Who::Editor => "eddie",
                    _ => "ada",
                };
                p.clients[i].1 = signed_in(&s, name).await;
            }
            checked += 1;
        }
    }
    assert!(checked >= 8 * 40, "walked {checked} route × principal pairs");
    s.stop().await;
}

#[tokio::test]
async fn the_table_covers_every_server_function_and_page() {
    let entries = table();
    let has = |kind: Kind, path: &str| entries.iter().any(|e| e.kind() == kind && e.path == path);
    for (path, _) in server_fn::axum::server_fn_paths() {
        assert!(has(Kind::ServerFn, path), "server function {path} has no policy entry, so it is not served");
    }
    for listing in leptos_axum::generate_route_list(leadscore::app::App) {
        assert!(has(Kind::Page, listing.path()), "page {} has no policy entry", listing.path());
    }
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        assert!(seen.insert((e.method.clone(), e.path)), "{} {} is listed twice", e.method, e.path);
    }
}

/// Cross-site writes with a session cookie: a `text/plain` or form POST needs no CORS
/// preflight, so a page on another site could send one. Every mutating server function and
/// REST route refuses them and nothing changes.
#[tokio::test]
async fn cross_site_writes_with_a_session_cookie_are_refused() {
    let s = TestServer::start_with(|c| c.rate_limit_per_second = 0.0).await;
    s.create_user("victim", "viewer", PASSWORD).await;
    s.create_user("root", "admin", PASSWORD).await;
    let admin = s.signed_in("root", PASSWORD).await;
    let rule = victim_rule(&s).await;
    let writes: Vec<_> =
        table().into_iter().filter(|e| e.method != reqwest::Method::GET && e.access != Access::Public).collect();
    assert!(writes.len() >= 12, "{} writes", writes.len());
    for (n, entry) in writes.iter().enumerate() {
        let method = Method::from_bytes(entry.method.as_str().as_bytes()).unwrap();
        let url = s.url(&concrete(entry.path, &rule));
        let body = body_for(entry.path, n, &rule).to_string();
        let attempts = [
            ("text/plain", Some("http://evil.test")),
            ("application/x-www-form-urlencoded", Some("http://evil.test")),
            ("text/plain", None),
            ("application/json", Some("http://evil.test")),
            ("application/json", Some("null")),
        ];
        for (content_type, origin) in attempts {
            let before = snapshot(&s).await;
            let mut r = admin.request(method.clone(), &url).header("content-type", content_type).body(body.clone());
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            let r = r.header("sec-fetch-site", "cross-site").send().await.unwrap();
            assert_eq!(r.status(), 403, "{} {} as {content_type} from {origin:?}", entry.method, entry.path);
            assert_eq!(snapshot(&s).await, before, "{} {}: refused, yet something changed", entry.method, entry.path);
        }
    }
    // The same session, same site, as JSON: allowed.
    let save_rule = table().into_iter().find(|e| e.path.contains("save_rule")).unwrap().path;
    let r = admin
        .post(s.url(save_rule))
        .json(&json!({"form": {"name": "", "event_type": "Same Site", "points": "3", "is_active": true,
                                "conditions": [], "limit_count": "", "limit_per": "day"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a same-site JSON write is allowed");
    let (_, rules) = s.get("/api/rules").await;
    assert!(rules.as_array().unwrap().iter().any(|r| r["eventType"] == "Same Site"));
    s.stop().await;
}
