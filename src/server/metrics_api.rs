//! `GET /metrics` in Prometheus's text format, and the per-route timing of HTTP requests.
//! What is measured, and under which names, is `service::metrics`.

use super::http::AppState;
use crate::service::metrics;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// Renders every metric, after reading the store's gauges (queue, dead letters, rescoring).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String)))]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let (health, rescore) = tokio::join!(state.service.health(), state.service.latest_rescore());
    metrics::store_gauges(&health, rescore.ok().flatten().as_ref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::handle().render()).into_response()
}

/// Times one route's requests, labelled with the route's path as the policy table names it
/// (`/api/leads/{id}`, never the id itself, so the label set stays bounded).
pub async fn timed(State(route): State<&'static str>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics::http_request(route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}
