//! The gate every route passes, parameterised by that route's entry in the policy table
//! (`policy.rs`): it works out who is calling, applies the rate limit, refuses what the caller
//! may not do, refuses cross-site writes made with a session cookie, and hands the caller to
//! the handler as an `Actor` request extension. Nothing here matches paths.

use super::api::error_response;
use super::http::AppState;
use crate::domain::access::{Access, Principal};
use crate::domain::error::ApiError;
use crate::server::config::AuthMode;
use crate::service::accounts::Actor;
use crate::service::sessions::signed_in_user;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tower_sessions::Session;

/// What kind of route an entry is: it decides how a refusal looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// JSON for external systems: 401/403 with the error body.
    Rest,
    /// A server function: 401/403 with the error body the pages decode.
    ServerFn,
    /// A page: anonymous visitors are sent to sign in (or to first-run setup).
    Page,
}

/// How a page behaves while no account exists yet (first run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstRun {
    /// Not a page: answered as usual.
    Unaffected,
    /// Leads to the setup page until the first admin exists.
    SendToSetup,
    /// The setup page itself: open only until the first admin exists, then sign-in instead.
    SetupPage,
}

/// One route's rule, as the gate needs it.
#[derive(Clone)]
pub struct Gate {
    pub state: AppState,
    pub access: Access,
    pub kind: Kind,
    pub first_run: FirstRun,
    /// Cheap public reads (health probes, "is setup needed", "who am I") are never limited.
    pub rate_limited: bool,
}

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Key,
    Cookie,
    Nothing,
}

/// The API key a request presents: `Authorization: Bearer <key>`, `X-API-Key: <key>`, or
/// HTTP Basic with the key as user name and an empty password (how tracking SDKs send their
/// write key).
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(key) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(key.trim().to_string());
        }
        if let Some(credentials) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) {
            return Some(basic_user(credentials.trim()).unwrap_or_default());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|k| k.trim().to_string())
}

/// The user name of HTTP Basic credentials (the password, if the user name is empty).
fn basic_user(credentials: &str) -> Option<String> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some(if user.is_empty() { password } else { user }.to_string())
}

/// The client's address: the connecting peer, or the last address a trusted proxy forwarded
/// for (the rightmost entry not itself a trusted proxy).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse().ok()).collect();
    Some(hops.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer))
}

/// A cross-site request cannot set `Content-Type: application/json` without a CORS preflight,
/// and browsers always say where a request comes from: `Origin` on writes, `Sec-Fetch-Site`.
pub fn same_site_write(headers: &HeaderMap, allowed_origins: &[String]) -> Result<(), &'static str> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" {
        return Err("a write made with a session cookie must be sent as application/json");
    }
    match origin_verdict(headers, allowed_origins) {
        Some(true) => Ok(()),
        Some(false) => Err("the request comes from another site"),
        None => Err("a write made with a session cookie must say where it comes from (Origin)"),
    }
}

/// `Some(true)` same origin or listed, `Some(false)` another site, `None` unknown.
fn origin_verdict(headers: &HeaderMap, allowed_origins: &[String]) -> Option<bool> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        let same = !host.is_empty() && origin_host.eq_ignore_ascii_case(host);
        return Some(same || allowed_origins.iter().any(|o| o == origin));
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") => Some(true),
        Some(_) => Some(false),
        None => None,
    }
}

/// Where first-run setup happens (its entry in the policy table is `FirstRun::SetupPage`).
pub const SETUP_PAGE: &str = "/setup";

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let state = &gate.state;
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = client_ip(peer, request.headers(), &state.config.trusted_proxies);
    let session = request.extensions().get::<Session>().cloned();

    let identified = identify(state, request.headers(), session.as_ref(), gate.access).await;

    if let Some(limiter) = state.rate_limiter.as_ref().filter(|_| gate.rate_limited) {
        // Only a valid key or session is its own client: invented keys share their address's budget.
        let client = match &identified {
            Ok((Principal::Key { id, .. }, _)) => format!("key:{id}"),
            Ok((Principal::User { username, .. }, _)) => format!("user:{username}"),
            _ => format!("ip:{}", ip.map_or("unknown".into(), |i| i.to_string())),
        };
        if let Err(retry_after) = limiter.check(&client, Instant::now()) {
            let problem = format!("limit is {} requests per second; retry in {retry_after} s", limiter.rate);
            return error_response(ApiError::too_many("rate", problem, retry_after));
        }
    }
    let (principal, via) = match identified {
        Ok(found) => found,
        Err(e) => return refuse(&gate, e, request.uri()),
    };

    if gate.first_run != FirstRun::Unaffected && state.config.auth == AuthMode::Required {
        let setup_needed = state.accounts.setup_needed().await.unwrap_or(false);
        match (setup_needed, gate.first_run) {
            (true, FirstRun::SendToSetup) => return Redirect::to(SETUP_PAGE).into_response(),
            (false, FirstRun::SetupPage) => return Redirect::to("/login").into_response(),
            _ => {}
        }
    }

    if !principal.may(gate.access) {
        let e = if principal.is_signed_in() {
            ApiError::forbidden(format!("needs {} access", access_name(gate.access)))
        } else {
            ApiError::unauthorized("sign in, or send an API key as `Authorization: Bearer <key>` or `X-API-Key`")
        };
        return refuse(&gate, e, request.uri());
    }

    if is_write(request.method()) {
        let verdict = match via {
            Via::Cookie => same_site_write(request.headers(), &state.config.client_origins),
            // Nobody's cookie is used, but a page on another site still may not sign people in.
            Via::Nothing => match origin_verdict(request.headers(), &state.config.client_origins) {
                Some(false) => Err("the request comes from another site"),
                _ => Ok(()),
            },
            Via::Key => Ok(()),
        };
        if let Err(problem) = verdict {
            return refuse(&gate, ApiError::field(403, "Cross-site request refused", "Origin", problem), request.uri());
        }
    }

    request.extensions_mut().insert(Actor::new(principal, ip.map(|i| i.to_string())));
    next.run(request).await
}

/// Who is calling: a valid API key wins; then a signed-in session; else anonymous. A key that
/// is not valid is refused outright (except on public routes), never treated as anonymous.
async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    session: Option<&Session>,
    access: Access,
) -> Result<(Principal, Via), ApiError> {
    if state.config.auth == AuthMode::Off {
        return Ok((Principal::Open, Via::Nothing));
    }
    let unavailable = |e: crate::service::ServiceError| {
        tracing::warn!(error = %e, "cannot check credentials");
        ApiError::new(503, "Store unavailable, retry later", vec![])
    };
    if let Some(key) = presented_key(headers).filter(|k| !k.is_empty()) {
        return match state.accounts.authenticate_key(&key).await.map_err(unavailable)? {
            Some(principal) => Ok((principal, Via::Key)),
            None if access == Access::Public => Ok((Principal::Anonymous, Via::Nothing)),
            None => Err(ApiError::unauthorized("API key is not valid (unknown or revoked)")),
        };
    }
    if let Some(session) = session {
        let max_age = state.config.session_max_seconds as i64 * 1000;
        if let Some(user) = signed_in_user(session, &state.accounts, max_age).await.map_err(unavailable)? {
            return Ok((Principal::User { username: user.username, role: user.role }, Via::Cookie));
        }
    }
    Ok((Principal::Anonymous, Via::Nothing))
}

fn refuse(gate: &Gate, e: ApiError, uri: &axum::http::Uri) -> Response {
    if gate.kind != Kind::Page {
        let unauthorized = e.status == 401;
        let mut r = error_response(e);
        if unauthorized && gate.kind == Kind::Rest {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    match e.status {
        401 => {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            Redirect::to(&format!("/login?next={}", encode_component(next))).into_response()
        }
        status => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let body = format!(
                "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} · Leadscore</title></head>\
                 <body><h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the leaderboard</a></p></body></html>",
                status.canonical_reason().unwrap_or("Refused"),
                if status == StatusCode::FORBIDDEN { "Your role may not open this page." } else { "Try again shortly." }
            );
            (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "no",
        Access::Read => "read (a signed-in user or a read key)",
        Access::Ingest => "ingest (an editor or an ingest key)",
        Access::Edit => "editor (an editor, an admin or an admin key)",
        Access::Admin => "admin (an admin or an admin key)",
    }
}

/// Percent-encodes a value for a query string.
fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_are_read_from_either_header() {
        assert_eq!(presented_key(&headers(&[])), None);
        assert_eq!(presented_key(&headers(&[("x-api-key", " k1 ")])).as_deref(), Some("k1"));
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "k1"), ("authorization", "Bearer k2")])).as_deref(),
            Some("k2")
        );
        // "k3:" and ":k4" in base64, as Segment's SDKs send a write key.
        assert_eq!(presented_key(&headers(&[("authorization", "Basic azM6")])).as_deref(), Some("k3"));
        assert_eq!(presented_key(&headers(&[("authorization", "Basic Oms0")])).as_deref(), Some("k4"));
        assert_eq!(presented_key(&headers(&[("authorization", "Basic !!")])).as_deref(), Some(""), "unreadable");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]);
        assert_eq!(client_ip(Some(proxy), &h, &[]), Some(proxy), "untrusted peers cannot claim an address");
        assert_eq!(client_ip(Some(proxy), &h, &[proxy]), Some(client), "the rightmost hop the proxy saw");
        assert_eq!(client_ip(Some(client), &h, &[proxy]), Some(client));
    }

    #[test]
    fn cookie_writes_must_be_json_from_this_site() {
        let ok =
            headers(&[("content-type", "application/json"), ("host", "a.test:5001"), ("origin", "http://a.test:5001")]);
        assert!(same_site_write(&ok, &[]).is_ok());
        let fetch_meta = headers(&[("content-type", "application/json"), ("sec-fetch-site", "same-origin")]);
        assert!(same_site_write(&fetch_meta, &[]).is_ok());
        let plain = headers(&[("content-type", "text/plain"), ("host", "a.test"), ("origin", "http://a.test")]);
        assert!(same_site_write(&plain, &[]).is_err(), "text/plain needs no preflight: refused");
        let form = headers(&[("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-origin")]);
        assert!(same_site_write(&form, &[]).is_err());
        let other =
            headers(&[("content-type", "application/json"), ("host", "a.test"), ("origin", "http://evil.test")]);
        assert!(same_site_write(&other, &[]).is_err());
        assert!(same_site_write(&other, &["http://evil.test".to_string()]).is_ok(), "listed in CLIENT_URL");
        let unknown = headers(&[("content-type", "application/json")]);
        assert!(same_site_write(&unknown, &[]).is_err(), "no Origin, no Sec-Fetch-Site: refused");
        let cross = headers(&[("content-type", "application/json"), ("sec-fetch-site", "cross-site")]);
        assert!(same_site_write(&cross, &[]).is_err());
    }

    #[test]
    fn next_parameter_is_encoded() {
        assert_eq!(encode_component("/leads/a%2Fb?x=1&y"), "/leads/a%252Fb%3Fx%3D1%26y");
    }
}
