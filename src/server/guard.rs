//! Who may call the REST API and how often: optional API keys and a per-client rate limit.
//! The old app had neither. `/api/health` is exempt from both, so probes always work, and the
//! dashboard's `/api/stream` from keys (browsers' EventSource cannot send headers).

use super::api::ApiError;
use super::http::AppState;
use crate::domain::FieldError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets per client: `rate` requests per second on average, bursts up to `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Beyond this many tracked clients, idle (full) buckets are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `client` at time `now`; `Err(seconds)` says when to retry.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(client.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// The API key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(key) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(key.trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Compares without an early exit, so response time does not leak how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for `/api/*` REST routes.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/api/health" {
        return next.run(request).await;
    }
    // The dashboard's live stream is opened by browsers, which cannot send API keys.
    let keys: &[String] = if path == "/api/stream" { &[] } else { &state.config.api_keys };
    let key = presented_key(request.headers()).map(str::to_string);
    if !keys.is_empty() {
        let ok =
            key.as_deref().is_some_and(|k| keys.iter().any(|valid| constant_time_eq(valid.as_bytes(), k.as_bytes())));
        if !ok {
            let problem = if key.is_some() {
                "API key is not valid"
            } else {
                "send an API key as `Authorization: Bearer <key>` or `X-API-Key`"
            };
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                vec![FieldError::new("Authorization", problem)],
            )
            .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if let Some(limiter) = &state.rate_limiter {
        let client = match key {
            Some(k) => format!("key:{k}"),
            None => request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| format!("ip:{}", c.0.ip()))
                .unwrap_or_else(|| "unknown".into()),
        };
        if let Err(retry_after) = limiter.check(&client, Instant::now()) {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                vec![FieldError::new(
                    "rate",
                    format!("limit is {} requests per second; retry in {retry_after} s", limiter.rate),
                )],
            )
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return r;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.check("a", t0).is_ok()));
        assert_eq!(limiter.check("a", t0), Err(1));
        assert!(limiter.check("b", t0).is_ok(), "clients are limited separately");
        assert!(limiter.check("a", t0 + Duration::from_millis(100)).is_ok(), "one token per 100 ms");
        assert!(limiter.check("a", t0 + Duration::from_millis(150)).is_err());
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.check("a", later).is_ok()), "refill is capped at the burst");
        assert!(limiter.check("a", later).is_err());
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let limiter = RateLimiter::new(0.1, 1.0);
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert_eq!(limiter.check("a", t0), Err(10));
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static(" k1 "));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k2"));
        assert_eq!(presented_key(&h), Some("k2"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
