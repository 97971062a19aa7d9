//! Segment's tracking API (`/v1/track`, `/v1/batch`, …): what tracking SDKs post, turned
//! into events by `domain::segment` and recorded like any other. Answers are Segment's
//! (`200 {"success": true}`); an error also carries our error body, and a batch's report says
//! what happened to each message, so no message is dropped without a word.

use super::api::{error_response, read_bytes};
use super::http::AppState;
use super::openapi::SegmentAnswer;
use super::openapi::SegmentMessage;
use crate::domain::error::ApiError;
use crate::domain::intake::{CheckedItem, ItemProblems};
use crate::domain::segment::{message_id, to_event, Call, Envelope, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use crate::domain::{BatchReport, FieldError};
use crate::service::{metrics, now_ms, IngestOutcome};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tower_http::decompression::RequestDecompressionLayer;

/// The route of one call (`/v1/track`, …). SDKs may gzip their bodies.
pub fn single(call: Call) -> MethodRouter<AppState> {
    post(move |State(state): State<AppState>, headers: HeaderMap, body: Body| async move {
        one_message(call, state, headers, body).await.unwrap_or_else(segment_error)
    })
    .layer(RequestDecompressionLayer::new())
}

/// `/v1/batch`.
pub fn batch() -> MethodRouter<AppState> {
    post(|State(state): State<AppState>, headers: HeaderMap, body: Body| async move {
        messages(state, headers, body).await.unwrap_or_else(segment_error)
    })
    .layer(RequestDecompressionLayer::new())
}

// What `single` and `batch` serve, for the description (`server::openapi`): the routes
// themselves are closures over the call.

/// A `track` call: `event` is the event type.
#[utoipa::path(post, path = "/v1/track", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn track_doc() {}

/// An `identify` call: `traits` go to the lead's profile; with both `anonymousId` and `userId` the anonymous lead is merged in.
#[utoipa::path(post, path = "/v1/identify", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn identify_doc() {}

/// A `page` call: a `Page View` event.
#[utoipa::path(post, path = "/v1/page", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn page_doc() {}

/// A `screen` call: a `Screen View` event.
#[utoipa::path(post, path = "/v1/screen", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn screen_doc() {}

/// A `group` call: a `Group` event.
#[utoipa::path(post, path = "/v1/group", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn group_doc() {}

/// An `alias` call: the lead `previousId` is merged into `userId`.
#[utoipa::path(post, path = "/v1/alias", tag = "segment", request_body = SegmentMessage,
    responses((status = 200, description = "Recorded (or, `duplicate`, recorded before).", body = SegmentAnswer),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn alias_doc() {}

/// A batch of calls, each with its `type`: valid ones are recorded even when others are not.
#[utoipa::path(post, path = "/v1/batch", tag = "segment", request_body = crate::server::openapi::SegmentBatch,
    responses((status = 200, description = "Every message recorded (or recorded before); the counts say which.", body = SegmentAnswer),
        (status = 400, description = "Some messages were not valid: `errors` names each (by index); the others were recorded.", body = SegmentAnswer),
        (status = 413, description = "Larger than Segment's limit.", body = SegmentAnswer)))]
pub fn batch_doc() {}

async fn one_message(call: Call, state: AppState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (bytes, _room) = read_bytes(&headers, body, MAX_MESSAGE_BYTES, &state.bodies).await?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::field(400, "Malformed JSON", "body", "must be UTF-8"))?;
    let envelope = Envelope { received_at: now_ms(), ..Envelope::default() };
    let endpoint = endpoint(call);
    let event = to_event(Some(call), text, &envelope, &mut fallback_id).map_err(|problems| {
        metrics::ingested(endpoint, 0, 0, 1);
        ApiError::invalid(problems)
    })?;
    let duplicate = matches!(state.service.ingest_checked(Ok(event)).await?, IngestOutcome::Duplicate(_));
    metrics::ingested(endpoint, usize::from(!duplicate), usize::from(duplicate), 0);
    Ok(Json(json!({"success": true, "duplicate": duplicate})).into_response())
}

/// The metrics label of a call's route.
fn endpoint(call: Call) -> &'static str {
    match call {
        Call::Track => "/v1/track",
        Call::Identify => "/v1/identify",
        Call::Page => "/v1/page",
        Call::Screen => "/v1/screen",
        Call::Group => "/v1/group",
        Call::Alias => "/v1/alias",
    }
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
}

async fn messages(state: AppState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (bytes, _room) = read_bytes(&headers, body, MAX_BATCH_BYTES, &state.bodies).await?;
    // The messages stay raw text here: each is read on its own, within its 32 KB.
    let body: BatchBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::field(400, "Malformed JSON", "body", e.to_string()))?;
    let Some(batch) = body.batch.filter(|b| !b.is_empty()) else {
        return Err(ApiError::field(400, "Validation failed", "batch", "must be a non-empty array of messages"));
    };
    let mut outer = Map::new();
    for (field, raw) in [("sentAt", body.sent_at), ("context", body.context)] {
        if let Some(raw) = raw {
            let value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            outer.insert(field.to_string(), value);
        }
    }
    let envelope = Envelope::of_batch(&outer, now_ms()).map_err(|e| ApiError::invalid(vec![e]))?;
    let items: Vec<CheckedItem> = batch
        .iter()
        .map(|raw| {
            to_event(None, raw.get(), &envelope, &mut fallback_id)
                .map_err(|errors| ItemProblems { event_id: message_id(raw.get()), errors })
        })
        .collect();
    let report = state.service.ingest_checked_chunks(items).await?;
    metrics::ingested_batch("/v1/batch", &report);
    Ok(batch_response(report))
}

/// 200 when every message was taken (or already known); 400 when any was refused — the rest
/// are kept, and the report names each refused message's field.
fn batch_response(report: BatchReport) -> Response {
    let counts = json!({"accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected});
    if report.rejected == 0 {
        let mut body = json!({"success": true});
        merge(&mut body, counts);
        return Json(body).into_response();
    }
    let details: Vec<FieldError> =
        report.errors.iter().map(|e| FieldError::new(format!("batch[{}].{}", e.index, e.field), &e.problem)).collect();
    let message = format!(
        "{} of {} messages refused (see errors); the other {} were kept",
        report.rejected,
        report.accepted + report.duplicates + report.rejected,
        report.accepted + report.duplicates
    );
    let mut body = serde_json::to_value(ApiError::invalid(details)).unwrap_or_default();
    merge(&mut body, json!({"success": false, "code": "invalid_request", "message": message, "errors": report.errors}));
    merge(&mut body, counts);
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Our error body plus Segment's `success`, `code` and `message`, which its SDKs log.
fn segment_error(e: ApiError) -> Response {
    let code = match e.status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        408 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "error",
    };
    let message = e.describe();
    let mut response = error_response(e.clone());
    let mut body = serde_json::to_value(&e).unwrap_or_default();
    merge(&mut body, json!({"success": false, "code": code, "message": message}));
    *response.body_mut() = Body::from(body.to_string());
    response
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// An id for a message without `messageId`: a digest of its text when it names its own time
/// (a retry of it is then recognised), else of its text and a random salt (two identical
/// untimed messages are two events).
fn fallback_id(text: &str, timestamped: bool) -> String {
    let mut digest = Sha256::new();
    digest.update(text.as_bytes());
    if !timestamped {
        digest.update(rand::random::<[u8; 16]>());
    }
    let hex: String = digest.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("auto-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamped_message_without_an_id_gets_the_same_id_on_every_retry() {
        let text = r#"{"userId":"u","event":"x","timestamp":"2024-01-01T00:00:00Z"}"#;
        assert_eq!(fallback_id(text, true), fallback_id(text, true));
        assert_ne!(fallback_id(text, false), fallback_id(text, false));
        assert!(fallback_id(text, true).starts_with("auto-"));
    }
}
