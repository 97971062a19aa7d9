//! Shapes of request bodies and of the answers handlers build in place (`json!`), for the
//! description only. Bodies are read as JSON and validated by the domain, which names each
//! bad field; these say what a valid one looks like.

use crate::domain::access::{Role, Scope};
use crate::domain::model::StoredEvent;
use serde::Serialize;
use utoipa::ToSchema;

/// An event as posted (`/api/events`, an item of `/api/events/batch`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventInput {
    /// Unique per event, kept forever: a repeat is a duplicate (409), never scored twice.
    #[schema(min_length = 1, max_length = 256)]
    pub event_id: String,
    #[schema(min_length = 1, max_length = 256)]
    pub lead_id: String,
    /// Names starting with `$` are reserved.
    #[schema(min_length = 1, max_length = 128)]
    pub event_type: String,
    /// ISO 8601; without a zone, UTC.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// Any JSON object (16 KB at most); rules' conditions look into it.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// `202`: the event is on disk and will be scored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventAccepted {
    pub message: String,
    pub event_id: String,
}

/// `409`: an event with this `eventId` was accepted before; this is it.
#[derive(Serialize, ToSchema)]
pub struct DuplicateEvent {
    pub message: String,
    pub event: StoredEvent,
}

/// `308`: the lead was merged into another (an alias or identify call); `Location` names it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergedLead {
    pub error: String,
    pub details: Vec<crate::domain::FieldError>,
    pub status: u16,
    pub merged_into: String,
}

/// A rule as `POST /api/rules` and `PUT /api/rules/{id}` take it. Only `{eventType, points,
/// isActive}` is the old app's upsert of the type's base rule.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleBody {
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub event_type: String,
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub points: i64,
    pub is_active: bool,
    pub conditions: Option<Vec<crate::domain::conditions::Condition>>,
    pub limit: Option<crate::domain::limits::Limit>,
}

/// `PUT /api/settings/decay`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecayBody {
    /// Days after which an event's points count half; `null`: no decay.
    #[schema(minimum = 1, maximum = 3650)]
    pub half_life_days: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookBody {
    /// `http(s)://` where deliveries are posted.
    pub url: String,
    /// `stageChanged`, `scoreChanged`.
    pub events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SetupStatus {
    /// No account exists yet and sign-in is required: the first admin is made at `/setup`.
    pub needed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SetupBody {
    /// The one-time token the server printed in its log.
    pub token: String,
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

/// Who is signed in.
#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    pub username: String,
    pub role: Role,
}

/// `GET /api/auth/me`: the signed-in user, the key used, or (with `AUTH=off`) everyone.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub username: Option<String>,
    pub role: Option<Role>,
    pub key: Option<KeyCaller>,
    pub auth_off: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCaller {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
}

#[derive(Serialize, ToSchema)]
pub struct UserBody {
    pub username: String,
    pub role: Role,
    /// 10 characters at least.
    #[schema(min_length = 10)]
    pub password: String,
}

/// `PATCH /api/users/{username}`: what changes.
#[derive(Serialize, ToSchema)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyBody {
    pub name: String,
    pub scopes: Vec<Scope>,
}

/// A short answer: what was done.
#[derive(Serialize, ToSchema)]
pub struct Done {
    pub message: String,
}

/// A short answer naming what it was done to.
#[derive(Serialize, ToSchema)]
pub struct DoneWith {
    pub message: String,
    pub id: i64,
}

/// Segment's answer to a call (`duplicate`: the `messageId` was seen before).
#[derive(Serialize, ToSchema)]
pub struct SegmentAnswer {
    pub success: bool,
    pub duplicate: Option<bool>,
    pub accepted: Option<u64>,
    pub duplicates: Option<u64>,
    pub rejected: Option<u64>,
    /// With `success: false`: Segment's error code and message, and our error body.
    pub code: Option<String>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub details: Option<Vec<crate::domain::FieldError>>,
    pub errors: Option<Vec<crate::domain::BatchItemError>>,
    pub status: Option<u16>,
}

/// A Segment call (`track`, `identify`, `page`, `screen`, `group`, `alias`); see Segment's
/// HTTP Tracking API. 32 KB at most.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMessage {
    /// In a batch: `track`, `identify`, `page`, `screen`, `group` or `alias`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Becomes the `eventId`: a retry with the same id is answered, not scored again.
    pub message_id: Option<String>,
    /// The lead; else `anonymousId`.
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `track`: the event type.
    pub event: Option<String>,
    /// `page` / `screen`: the page's name.
    pub name: Option<String>,
    /// `alias`: the id merged into `userId`.
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub traits: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
}

/// `/v1/batch`: 500 KB at most.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentBatch {
    /// Each with its `type`.
    pub batch: Vec<SegmentMessage>,
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
}

/// `400` of a batch: the report, when the body was an array but nothing in it was valid; the
/// error body, when it was not an array at all.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchRefused {
    Report(crate::domain::BatchReport),
    Error(crate::domain::error::ApiError),
}
