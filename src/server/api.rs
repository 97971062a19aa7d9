//! The REST API external systems use. Request and response shapes are the old app's; every
//! extension is an added field. Handlers only translate HTTP to service calls and back.

use super::http::AppState;
pub use crate::domain::error::ApiError;
use crate::domain::query::{DetailPage, LeadQuery};
use crate::service::accounts::Actor;
use crate::service::{IngestOutcome, ServiceError};
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

/// Any error as a response: its status, `Retry-After` when it says when, and the body.
pub fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = e.retry_after;
    let mut response = (status, Json(e)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self)
    }
}

/// Reads a JSON body: 415 for another content type, 413 past `limit` bytes, 400 with the
/// parser's line and column for malformed JSON.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !(mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))) {
        let got = if content_type.is_empty() { "none".to_string() } else { format!("{content_type:?}") };
        return Err(ApiError::field(
            415,
            "Unsupported content type",
            "Content-Type",
            format!("must be application/json, got {got}"),
        ));
    }
    let too_large = || ApiError::field(413, "Payload too large", "body", format!("must be at most {limit} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::field(400, "Unreadable body", "body", e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::field(400, "Malformed JSON", "body", e.to_string()))
}

pub async fn post_event(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let value = read_json(&headers, body, state.config.max_body_bytes).await?;
    Ok(match state.service.ingest_one(&value).await? {
        IngestOutcome::Accepted { event_id } => {
            (StatusCode::ACCEPTED, Json(json!({"message": "Event received", "eventId": event_id}))).into_response()
        }
        IngestOutcome::Duplicate(event) => {
            (StatusCode::CONFLICT, Json(json!({"message": "Duplicate event", "event": event}))).into_response()
        }
    })
}

pub async fn post_batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let value = read_json(&headers, body, state.config.max_batch_bytes).await?;
    let Value::Array(items) = value else {
        return Err(ApiError::field(400, "Validation failed", "body", "must be a JSON array of events"));
    };
    let limit = state.service.batch_limits().max_events;
    if items.len() > limit {
        return Err(ApiError::field(
            413,
            "Payload too large",
            "body",
            format!("must contain at most {limit} events, got {}", items.len()),
        ));
    }
    let report = state.service.ingest_batch(&items).await?;
    // 202 when anything was accepted; a batch of nothing but known events is a 409 like a
    // single duplicate (a safe retry); nothing valid at all is a 400.
    let status = if report.accepted > 0 {
        StatusCode::ACCEPTED
    } else if report.rejected == 0 {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(report)).into_response())
}

pub async fn list_leads(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = LeadQuery::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(400, "Invalid query parameters", d))?;
    Ok(Json(state.service.leaderboard(&query).await?).into_response())
}

pub async fn lead_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let page = DetailPage::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(400, "Invalid query parameters", d))?;
    match state.service.lead_detail(&id, &page).await {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Lead not found", "id", format!("no lead with id {id:?}")))
        }
        other => Ok(Json(other?).into_response()),
    }
}

pub async fn list_rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.rules().await?).into_response())
}

pub async fn upsert_rule(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = read_json(&headers, body, state.config.max_body_bytes).await?;
    Ok(Json(state.service.upsert_rule(&value, &actor).await?).into_response())
}

pub async fn health(State(state): State<AppState>) -> Response {
    let health = state.service.health().await;
    let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health)).into_response()
}

pub async fn unknown_route() -> ApiError {
    ApiError::new(404, "No such API route", vec![])
}
