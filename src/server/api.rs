//! The REST API external systems use. Request and response shapes are the old app's; every
//! extension is an added field. Handlers only translate HTTP to service calls and back.

use super::admission::BodyBudget;
use super::http::AppState;
pub use crate::domain::error::ApiError;
use crate::domain::intake::{batch_items, check_item, single_item, BodyError};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::service::{metrics, now_ms, IngestOutcome, ServiceError};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

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

/// Body limit of the JSON requests that are not ingest (rules, accounts, sign-in).
pub const MAX_CONTROL_BODY: usize = 64 * 1024;
/// How much of a refused body is read and thrown away before answering, and for how long:
/// clients that send the whole body before reading the answer (Python's `http.client` and
/// `requests`, which tracking SDKs use) then get the 413 instead of a broken pipe, and learn
/// to split their batch rather than retry it forever.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a body may take to arrive (5 MB at 2 Mbit/s takes 20 s).
const BODY_READ_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a JSON body as bytes: 415 for another content type, 413 past `limit` bytes, 503
/// when the server holds too many bodies already. The permit keeps the body's room in the
/// budget: hold it until the request is answered.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let mut stream = body.into_data_stream();
    if !(mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))) {
        drain(&mut stream).await;
        let got = if content_type.is_empty() { "none".to_string() } else { format!("{content_type:?}") };
        return Err(ApiError::field(
            415,
            "Unsupported content type",
            "Content-Type",
            format!("must be application/json, got {got}"),
        ));
    }
    collect(headers, stream, limit, budget).await
}

/// Reads any body up to `limit` bytes (413 past it, after draining the rest), like `read_body`.
pub async fn read_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    collect(headers, body.into_data_stream(), limit, budget).await
}

async fn collect(
    headers: &HeaderMap,
    mut stream: axum::body::BodyDataStream,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let too_large = || ApiError::field(413, "Payload too large", "body", format!("must be at most {limit} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain(&mut stream).await;
        return Err(too_large());
    }
    // Room for what it says it is, or for the most it may be.
    let permit = match budget.reserve(declared.unwrap_or(limit)).await {
        Ok(permit) => permit,
        Err(busy) => {
            drain(&mut stream).await;
            return Err(busy);
        }
    };
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    // A body that trickles in holds its room: it gets a deadline, so a few slow (or
    // malicious) clients cannot keep everyone else waiting.
    let deadline = tokio::time::Instant::now() + BODY_READ_TIME;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                let seconds = BODY_READ_TIME.as_secs();
                return Err(ApiError::field(408, "Request timeout", "body", format!("must arrive within {seconds} s")));
            }
        };
        let chunk = chunk.map_err(|e| ApiError::field(400, "Unreadable body", "body", e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            drain(&mut stream).await;
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(bytes), permit))
}

/// Reads and discards what is left of a refused body, within `DRAIN_BYTES` and `DRAIN_TIME`.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut read = 0;
    while read < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            _ => break,
        }
    }
}

/// Reads a small JSON body into a `Value` (never an event body: see `domain::intake`), with
/// the parser's line and column for malformed JSON.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize, budget: &BodyBudget) -> Result<Value, ApiError> {
    let (bytes, _room) = read_body(headers, body, limit, budget).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::field(400, "Malformed JSON", "body", e.to_string()))
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::TooMany(limit) => {
            ApiError::field(413, "Payload too large", "body", format!("must contain at most {limit} events"))
        }
        BodyError::NotAnArray(kind) => {
            ApiError::field(400, "Validation failed", "body", format!("must be a JSON array of events, got {kind}"))
        }
        BodyError::Malformed(m) => ApiError::field(400, "Malformed JSON", "body", m),
    }
}

/// Events are read in bounded memory (`domain::intake`): only their fields are parsed.
#[utoipa::path(post, path = "/api/events", tag = "events",
    request_body = crate::server::openapi::EventInput,
    responses((status = 202, description = "On disk; it will be scored.", body = crate::server::openapi::EventAccepted),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError),
        (status = 409, description = "This `eventId` was accepted before (a safe retry).", body = crate::server::openapi::DuplicateEvent),
        (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn post_event(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (bytes, _room) = read_body(&headers, body, state.config.max_body_bytes, &state.bodies).await?;
    let item = check_item(single_item(&bytes).map_err(body_error)?, now_ms());
    if item.is_err() {
        metrics::ingested("/api/events", 0, 0, 1);
    }
    Ok(match state.service.ingest_checked(item).await? {
        IngestOutcome::Accepted { event_id } => {
            metrics::ingested("/api/events", 1, 0, 0);
            (StatusCode::ACCEPTED, Json(json!({"message": "Event received", "eventId": event_id}))).into_response()
        }
        IngestOutcome::Duplicate(event) => {
            metrics::ingested("/api/events", 0, 1, 0);
            (StatusCode::CONFLICT, Json(json!({"message": "Duplicate event", "event": event}))).into_response()
        }
    })
}

#[utoipa::path(post, path = "/api/events/batch", tag = "events",
    request_body = Vec<crate::server::openapi::EventInput>,
    responses((status = 202, description = "Some were accepted; the report says what happened to each item.", body = crate::domain::BatchReport),
        (status = 400, description = "None was valid (the report names each problem), or the body is not an array (the error body).", body = crate::server::openapi::BatchRefused),
        (status = 409, description = "Every item was accepted before.", body = crate::domain::BatchReport),
        (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn post_batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (bytes, _room) = read_body(&headers, body, state.config.max_batch_bytes, &state.bodies).await?;
    // One item past the limit is enough to refuse: a million-item body is never split up.
    let items = batch_items(&bytes, state.service.batch_limits().max_events).map_err(body_error)?;
    let now = now_ms();
    let report =
        state.service.ingest_checked_batch(items.into_iter().map(|raw| check_item(raw, now)).collect()).await?;
    metrics::ingested_batch("/api/events/batch", &report);
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

/// The leaderboard's query parameters, or a 400 naming each bad one.
pub fn lead_query(params: &[(String, String)]) -> Result<LeadQuery, ApiError> {
    LeadQuery::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(400, "Invalid query parameters", d))
}

#[utoipa::path(get, path = "/api/leads", tag = "leads",
    params(("search" = Option<String>, Query, description = "Literal, case-insensitive: part of the id, email, name or company."),
        ("minScore" = Option<i64>, Query), ("maxScore" = Option<i64>, Query),
        ("stage" = Option<String>, Query, description = "A stage of the ladder."),
        ("limit" = Option<u32>, Query, description = "1–500, default 50."), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "Highest score first; `X-Total-Count` says how many match in all.", body = [crate::domain::model::Lead],
            headers(("X-Total-Count" = u64, description = "Leads matching the filters."))),
        (status = 400, description = "A query parameter is not valid.", body = crate::domain::error::ApiError)))]
pub async fn list_leads(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = lead_query(&params)?;
    // The body stays the old app's array; how many match in all travels as a header.
    let (leads, total) = tokio::try_join!(state.service.leaderboard(&query), state.service.leaderboard_total(&query))?;
    let mut response = Json(leads).into_response();
    response.headers_mut().insert("x-total-count", total.into());
    Ok(response)
}

#[utoipa::path(get, path = "/api/overview", tag = "leads",
    responses((status = 200, description = "Leads, events today, queue and scoring lag, score histogram, stage counts.", body = crate::domain::overview::Overview)))]
pub async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.service.overview().await?).into_response())
}

#[utoipa::path(get, path = "/api/leads/{id}", tag = "leads",
    params(("id" = String, Path), ("historyLimit" = Option<u32>, Query), ("historyOffset" = Option<u32>, Query),
        ("eventsLimit" = Option<u32>, Query), ("eventsOffset" = Option<u32>, Query)),
    responses((status = 200, description = "The lead, its score history and its events, newest first.", body = crate::domain::model::LeadDetail),
        (status = 308, description = "Merged into another lead: `Location` names it.", body = crate::server::openapi::MergedLead),
        (status = 400, description = "A query parameter is not valid.", body = crate::domain::error::ApiError),
        (status = 404, description = "No such lead.", body = crate::domain::error::ApiError)))]
pub async fn lead_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let page = DetailPage::parse(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|d| ApiError::new(400, "Invalid query parameters", d))?;
    match state.service.lead_detail(&id, &page).await {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Lead not found", "id", format!("no lead with id {id:?}")))
        }
        Err(ServiceError::Merged(into)) => Ok(merged_into(
            &id,
            &into,
            &format!("/api/leads/{}", crate::app::encode_component(&into)),
            query.as_deref(),
        )),
        other => Ok(Json(other?).into_response()),
    }
}

/// A 308 to where a merged lead now lives, with the request's query kept.
pub fn merged_into(id: &str, into: &str, path: &str, query: Option<&str>) -> Response {
    let location = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let e = ApiError::field(308, "Lead merged", "id", format!("{id:?} was merged into {into:?}"));
    let body = json!({"error": e.error, "details": e.details, "status": e.status, "mergedInto": into});
    let mut response = (StatusCode::PERMANENT_REDIRECT, Json(body)).into_response();
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, description = "Store reachable and the worker scoring.", body = crate::service::Health),
        (status = 503, description = "Something is wrong; `store.error` or `worker.lastError` says what.", body = crate::service::Health)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let health = state.service.health().await;
    let status = if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health)).into_response()
}

pub async fn unknown_route() -> ApiError {
    ApiError::new(404, "No such API route", vec![])
}
