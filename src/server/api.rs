//! The REST API external systems use. Request and response shapes are the old app's; every
//! extension is an added field. Handlers only translate HTTP to service calls and back.

use super::http::AppState;
use super::service::{IngestOutcome, ServiceError};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::FieldError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", post(post_event))
        .route("/api/events/batch", post(post_batch))
        .route("/api/leads", get(list_leads))
        .route("/api/leads/{id}", get(lead_detail))
        .route("/api/rules", get(list_rules).post(upsert_rule))
        .route("/api/health", get(health))
        .route("/api/stream", get(super::stream::stream_handler))
        .route("/api/{*rest}", any(unknown_route))
}

/// An error answer: `{error, details: [{field, problem}]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    details: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, details: Vec<FieldError>) -> Self {
        Self { status, error: error.into(), details }
    }

    fn bad_request(error: &str, field: &str, problem: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, vec![FieldError::new(field, problem)])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.error, "details": self.details}))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(details) => ApiError::new(StatusCode::BAD_REQUEST, "Validation failed", details),
            ServiceError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "Not found", vec![]),
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Store unavailable, retry later", vec![])
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", vec![])
            }
        }
    }
}

/// Reads a JSON body: 415 for another content type, 413 past `limit` bytes, 400 with the
/// parser's line and column for malformed JSON.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !(mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))) {
        let got = if content_type.is_empty() { "none".to_string() } else { format!("{content_type:?}") };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported content type",
            vec![FieldError::new("Content-Type", format!("must be application/json, got {got}"))],
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            vec![FieldError::new("body", format!("must be at most {limit} bytes"))],
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("Unreadable body", "body", e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("Malformed JSON", "body", e.to_string()))
}

async fn post_event(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
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

async fn post_batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let value = read_json(&headers, body, state.config.max_batch_bytes).await?;
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request("Validation failed", "body", "must be a JSON array of events"));
    };
    let limit = state.service.batch_limits().max_events;
    if items.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            vec![FieldError::new("body", format!("must contain at most {limit} events, got {}", items.len()))],
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

async fn list_leads(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = LeadQuery::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(StatusCode::BAD_REQUEST, "Invalid query parameters", d))?;
    Ok(Json(state.service.leaderboard(&query).await?).into_response())
}

async fn lead_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let page = DetailPage::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(StatusCode::BAD_REQUEST, "Invalid query parameters", d))?;
    match state.service.lead_detail(&id, &page).await {
        Err(ServiceError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Lead not found",
            vec![FieldError::new("id", format!("no lead with id {id:?}"))],
        )),
        other => Ok(Json(other?).into_response()),
    }
}

async fn list_rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.rules().await?).into_response())
}

async fn upsert_rule(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let value = read_json(&headers, body, state.config.max_body_bytes).await?;
    Ok(Json(state.service.upsert_rule(&value).await?).into_response())
}

async fn health(State(state): State<AppState>) -> Response {
    let health = state.service.health().await;
    let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health)).into_response()
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "No such API route", vec![])
}
