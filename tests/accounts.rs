//! Accounts and sessions: first-run setup with the token from the log, the `leadscore user`
//! command, cookies, sign-in throttling, session expiry, security headers, `AUTH=off` and the
//! audit log.

mod common;

use common::binary::Binary;
use common::{browser_at as browser, event, TestDatabase, TestServer};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn first_run_needs_the_token_from_the_log_and_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "first");
    let server = Binary::start_on(&db.url, &[("RUST_LOG", "debug")]);
    let line = server.wait_for_line("setup?token=", Duration::from_secs(30));
    let token = line.split("setup?token=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let base = server.base.clone();
    let client = browser(&base);

    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["location"].to_str().unwrap()),
        (303, "/setup"),
        "every page leads to setup"
    );
    let r = client.get(format!("{base}/rules")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/setup");
    let status: Value = client.get(format!("{base}/api/setup")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status, json!({"needed": true}));

    let setup = |token: &str, username: &str, password: &str| {
        client
            .post(format!("{base}/api/setup"))
            .json(&json!({"token": token, "username": username, "password": password}))
            .send()
    };
    let r = setup("wrong-token", "mallory", PASSWORD).await.unwrap();
    assert_eq!(r.status(), 401, "a stranger without the token cannot claim the instance");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["details"][0]["field"], "token");
    let r = setup(&token, "ann", "short").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["details"][0]["field"], "password");

    let r = setup(&token, "ann", PASSWORD).await.unwrap();
    assert_eq!(r.status(), 201);
    let me: Value = client.get(format!("{base}/api/auth/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me, json!({"username": "ann", "role": "admin"}), "setup signs the admin in");
    assert_eq!(setup(&token, "eve", PASSWORD).await.unwrap().status(), 409, "only while no account exists");
    let status: Value = client.get(format!("{base}/api/setup")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status, json!({"needed": false}));
    assert_eq!(client.get(format!("{base}/")).send().await.unwrap().status(), 200);

    // The headless way: `leadscore user create`, password from the environment or stdin.
    let cli = |username: &str, role: &str, password: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
        cmd.args(["user", "create", "--username", username, "--role", role])
            .env("DATABASE_URL", &db.url)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match password {
            Some(p) => cmd.env("LEADSCORE_PASSWORD", p),
            None => cmd.env_remove("LEADSCORE_PASSWORD"),
        };
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{PASSWORD}-stdin\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = cli("ed", "editor", Some(PASSWORD));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli("vi", "viewer", None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli("bad", "root", Some(PASSWORD));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("role"), "the error names the field");

    let ed = browser(&base);
    let r = ed
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "ed", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let vi = browser(&base);
    let login = json!({"username": "vi", "password": format!("{PASSWORD}-stdin")});
    assert_eq!(vi.post(format!("{base}/api/auth/login")).json(&login).send().await.unwrap().status(), 200);
    let r = vi
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "vi", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Passwords never reach the log, even at debug level.
    let log = server.log.lock().unwrap().join("\n");
    for secret in [PASSWORD, "not-the-password"] {
        assert!(!log.contains(secret), "the log contains a password");
    }
    assert!(log.contains("setup?token="));
    drop(server);
    db.drop_now().await;
}

#[tokio::test]
async fn session_cookies_are_http_only_lax_cycled_on_login_and_ended_by_logout() {
    let s = TestServer::start().await;
    s.create_user("ann", "editor", PASSWORD).await;
    let login = |client: reqwest::Client, url: String| async move {
        client.post(url).json(&json!({"username": "ann", "password": PASSWORD})).send().await.unwrap()
    };
    let bare = reqwest::Client::new();
    let r = login(bare.clone(), s.url("/api/auth/login")).await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("leadscore_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http by default: {cookie}");
    let first = cookie.split(';').next().unwrap().to_string();

    let me_url = s.url("/api/auth/me");
    let me = |c: String| {
        let url = me_url.clone();
        async move { reqwest::Client::new().get(url).header("cookie", c).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(first.clone()).await, 200);
    // Signing in again on the same browser gives a new id; the old one stops working.
    let r = bare
        .post(s.url("/api/auth/login"))
        .header("cookie", &first)
        .header("origin", &s.base)
        .json(&json!({"username": "ann", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let second = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert_ne!(first, second, "a new session id on login");
    assert_eq!(me(first).await, 401);
    assert_eq!(me(second.clone()).await, 200);

    let r = bare
        .post(s.url("/api/auth/logout"))
        .header("cookie", &second)
        .header("origin", &s.base)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(me(second).await, 401, "logout really ends the session");
    s.stop().await;

    let s = TestServer::start_with(|c| c.cookie_secure = true).await;
    s.create_user("ann", "editor", PASSWORD).await;
    let r = login(reqwest::Client::new(), s.url("/api/auth/login")).await;
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
    s.stop().await;
}

#[tokio::test]
async fn five_failed_logins_lock_the_account_for_a_while() {
    let s = TestServer::start().await;
    s.create_user("ann", "viewer", PASSWORD).await;
    let client = s.browser();
    let attempt = |password: &'static str| {
        let (client, url) = (client.clone(), s.url("/api/auth/login"));
        async move { client.post(url).json(&json!({"username": "ann", "password": password})).send().await.unwrap() }
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong password!").await.status(), 401);
    }
    let r = attempt(PASSWORD).await;
    assert_eq!(r.status(), 429, "even the right password waits");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    let (_, audit) = s.get("/api/audit?limit=10").await;
    let failed = audit.as_array().unwrap().iter().filter(|e| e["action"] == "login.failed").count();
    assert_eq!(failed, 5, "failed logins are audited");
    s.stop().await;
}

#[tokio::test]
async fn idle_sessions_end_and_the_pages_send_you_to_sign_in() {
    let s = TestServer::start_with(|c| c.session_idle_seconds = 1).await;
    s.create_user("ann", "viewer", PASSWORD).await;
    let client = s.signed_in("ann", PASSWORD).await;
    assert_eq!(client.get(s.url("/api/auth/me")).send().await.unwrap().status(), 200);
    // Waits for the condition (the session has expired), bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(s.url("/api/leads")).send().await.unwrap().status() != 401 {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = page.get(s.url("/rules")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/rules");
    s.stop().await;
}

#[tokio::test]
async fn pages_carry_a_nonce_csp_and_every_response_the_security_headers() {
    let s = TestServer::start().await;
    s.create_user("ann", "viewer", PASSWORD).await;
    let client = s.signed_in("ann", PASSWORD).await;
    let r = client.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
    assert!(!script_src.contains("unsafe-inline"), "no inline scripts without the nonce: {csp}");
    let nonce = script_src.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap().to_string();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("referrer-policy"));
    let html = r.text().await.unwrap();
    let scripts = html.matches("<script").count();
    assert!(scripts > 0);
    assert_eq!(html.matches(&format!("nonce=\"{nonce}\"")).count(), scripts, "every script carries the nonce");

    let again = client.get(s.url("/")).send().await.unwrap();
    assert_ne!(again.headers()["content-security-policy"].to_str().unwrap(), csp, "a new nonce per response");

    let r = s.client.get(s.url("/api/leads")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    s.stop().await;
}

#[tokio::test]
async fn auth_off_opens_everything_like_the_old_app() {
    let s = TestServer::start_with(|c| {
        c.auth = leadscore::server::config::AuthMode::Off;
        c.api_keys.clear();
    })
    .await;
    let bare = reqwest::Client::new();
    let r = bare.post(s.url("/api/events")).json(&event("open-1", "l", "Purchase")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = bare.post(s.url("/api/rules")).json(&json!({"eventType": "X", "points": 1})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = bare.get(s.url("/api/auth/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["authOff"], true);
    assert_eq!(bare.get(s.url("/api/users")).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_revocable_and_record_their_use() {
    let s = TestServer::start().await;
    let (status, created) = s.post("/api/keys", &json!({"name": "website", "scopes": ["ingest"]})).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let (_, list) = s.get("/api/keys").await;
    let listed = list.as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    assert!(listed.get("key").is_none(), "the key is shown only once");
    assert!(key.starts_with(listed["prefix"].as_str().unwrap()));
    assert_eq!(listed["lastUsedAt"], Value::Null);

    let ingest = common::keyed_client(&key);
    let r = ingest.post(s.url("/api/events")).json(&event("k1", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(ingest.get(s.url("/api/leads")).send().await.unwrap().status(), 403, "ingest only");
    let (_, list) = s.get("/api/keys").await;
    assert!(list.as_array().unwrap().iter().any(|k| k["id"] == id.as_str() && k["lastUsedAt"].is_string()));

    let (status, _) = s.post("/api/keys", &json!({"name": "", "scopes": ["write"]})).await;
    assert_eq!(status, 400);
    let r = s.client.delete(s.url(&format!("/api/keys/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = ingest.post(s.url("/api/events")).json(&event("k2", "l", "Page View")).send().await.unwrap();
    assert_eq!(r.status(), 401, "a revoked key stops working at once");

    let (_, audit) = s.get("/api/audit").await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions[..2], ["key.revoke", "key.create"], "newest first");
    s.stop().await;
}

#[tokio::test]
async fn rule_changes_are_audited_with_who_and_before_and_after() {
    let s = TestServer::start().await;
    s.create_user("eddie", "editor", PASSWORD).await;
    let editor = s.signed_in("eddie", PASSWORD).await;
    let r =
        editor.post(s.url("/api/rules")).json(&json!({"eventType": "Purchase", "points": 150})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, audit) = s.get("/api/audit?limit=1").await;
    let entry = &audit[0];
    assert_eq!((entry["action"].as_str(), entry["actor"].as_str()), (Some("rule.update"), Some("eddie")));
    assert!(entry["target"].as_str().unwrap().starts_with("Purchase ("), "the rule's name and id: {entry}");
    assert_eq!(entry["before"]["points"], 100);
    assert_eq!(entry["after"]["points"], 150);
    assert_eq!(s.get("/api/audit?limit=abc").await.0, 400);
    let (status, body) = s.get("/api/audit?limit=0&offset=-1").await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["limit", "offset"]);

    // The last admin can neither be removed nor demoted.
    s.create_user("root", "admin", PASSWORD).await;
    let r = s.client.delete(s.url("/api/users/root")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = s.client.patch(s.url("/api/users/root")).json(&json!({"role": "viewer"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let (_, users) = s.get("/api/users").await;
    assert!(users.as_array().unwrap().iter().all(|u| u.get("passwordHash").is_none() && u.get("password").is_none()));
    s.stop().await;
}

#[tokio::test]
async fn a_new_password_or_a_deleted_account_ends_the_sessions_at_once() {
    let s = TestServer::start().await;
    s.create_user("ann", "editor", PASSWORD).await;
    s.create_user("bob", "viewer", PASSWORD).await;
    let ann = s.signed_in("ann", PASSWORD).await;
    let bob = s.signed_in("bob", PASSWORD).await;
    assert_eq!(ann.get(s.url("/api/leads")).send().await.unwrap().status(), 200);

    let r = s
        .client
        .patch(s.url("/api/users/ann"))
        .json(&json!({"password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ann.get(s.url("/api/leads")).send().await.unwrap().status(), 401, "signed in with the old password");
    assert_eq!(
        s.signed_in("ann", "a brand new password").await.get(s.url("/api/leads")).send().await.unwrap().status(),
        200
    );

    let r = s.client.patch(s.url("/api/users/bob")).json(&json!({"role": "editor"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = bob.get(s.url("/api/auth/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "editor", "a role change applies to the open session");

    assert_eq!(s.client.delete(s.url("/api/users/bob")).send().await.unwrap().status(), 204);
    assert_eq!(bob.get(s.url("/api/leads")).send().await.unwrap().status(), 401, "a deleted account's session ends");
    s.stop().await;
}

#[tokio::test]
async fn server_functions_share_the_rate_limit_and_failed_logins_count_per_address() {
    let s = TestServer::start_with(|c| {
        c.rate_limit_per_second = 0.001;
        c.rate_limit_burst = 3.0;
    })
    .await;
    s.create_user("ann", "viewer", PASSWORD).await;
    let ann = s.signed_in("ann", PASSWORD).await;
    let rules = leadscore::server::policy::table().into_iter().find(|e| e.path.contains("fetch_rules")).unwrap().path;
    let statuses: Vec<u16> = futures_statuses(&ann, &s.url(rules), 4).await;
    assert_eq!(statuses, [200, 200, 200, 429], "the session's budget is shared with every other route");
    s.stop().await;

    // Failed logins from one address, spread over several accounts, lock that address out.
    let s = TestServer::start_with(|c| c.rate_limit_per_second = 0.0).await;
    s.create_user("zed", "viewer", PASSWORD).await;
    let client = s.browser();
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        let r = client
            .post(s.url("/api/auth/login"))
            .json(&json!({"username": name, "password": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = client
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "zed", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    s.stop().await;
}

/// POSTs `{}` to a server function `n` times in a row; the statuses in order.
async fn futures_statuses(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.post(url).json(&json!({})).send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_even_while_in_use() {
    let s = TestServer::start_with(|c| c.session_max_seconds = 2).await;
    s.create_user("ann", "viewer", PASSWORD).await;
    let client = s.signed_in("ann", PASSWORD).await;
    // Kept busy (never idle), yet it ends: waits for that, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(s.url("/api/auth/me")).send().await.unwrap().status() == 200 {
        assert!(Instant::now() < deadline, "the session outlived its absolute lifetime");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get(s.url("/api/leads")).send().await.unwrap().status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn auth_off_is_announced_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(dir.path(), "open");
    let server = Binary::start_on(&db.url, &[("AUTH", "off")]);
    let line = server.wait_for_line("AUTH=off", Duration::from_secs(30));
    assert!(line.contains("WARN"), "a warning: {line}");
    assert!(!server.log.lock().unwrap().iter().any(|l| l.contains("setup?token=")), "no setup when open");
    let r = reqwest::get(format!("{}/api/leads", server.base)).await.unwrap();
    assert_eq!(r.status(), 200, "open to anyone");
    drop(server);
    db.drop_now().await;
}
