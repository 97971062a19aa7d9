//! Data shapes shared by the store, the REST API, server functions and the browser.
//! JSON field names are the old app's (camelCase, a lead's id is `_id`); new fields are additive.

use super::conditions::Condition;
use super::engine::RuleMatch;
use super::limits::Limit;
use super::time::{iso, iso_opt, Millis};
use serde::{Deserialize, Serialize};

/// An event the worker could not read or score, set aside after repeated attempts so the
/// rest of the queue goes on. Its id is the event's place in the ingest log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    /// What could be read of the stored event; `None` where even that failed.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub event_id: Option<String>,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub lead_id: Option<String>,
    /// The last attempt's error.
    pub error: String,
    pub attempts: u32,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub dead_lettered_at: Millis,
    /// The stored event as it was read, for inspection (cut at `DeadLetter::MAX_RAW` bytes).
    pub raw: String,
}

impl DeadLetter {
    pub const MAX_RAW: usize = 4096;

    /// `raw` cut to `MAX_RAW` bytes on a character boundary.
    pub fn clip(raw: String) -> String {
        if raw.len() <= Self::MAX_RAW {
            return raw;
        }
        let mut end = Self::MAX_RAW;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &raw[..end])
    }
}

/// A page of the dead-letter list, oldest first, with how many there are in all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
    pub total: u64,
}

/// A validated event, as accepted from a client and before it is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    pub event_id: String,
    pub lead_id: String,
    pub event_type: String,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub timestamp: Millis,
    /// A JSON object, kept as text: the server never needs to look inside it.
    pub metadata: Option<String>,
}

/// An event as stored, with its place in the durable queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// Position in the ingest log; the worker scores events in this order.
    #[serde(skip)]
    pub seq: i64,
    pub event_id: String,
    pub lead_id: String,
    pub event_type: String,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub timestamp: Millis,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(with = "metadata_json")]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<Object>))]
    pub metadata: Option<String>,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub received_at: Millis,
    pub processed: bool,
    /// Points the event was worth when scored; `None` until then.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub points: Option<i64>,
    /// Additive: once scored, which rules matched and what each added (none matched: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<RuleMatch>>,
}

/// One applied score change: what the worker broadcasts and the live stream sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScoreChange {
    pub lead_id: String,
    pub event_id: String,
    pub event_type: String,
    pub delta: i64,
    pub score: i64,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
    /// Additive: the lead this change merged into `lead_id` (`identity.rs`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    #[serde(rename = "_id")]
    pub id: String,
    pub score: i64,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub last_event_id: Option<String>,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
    /// Additive: the newest event timestamp seen for this lead.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub last_event_at: Option<Millis>,
    /// Additive: how many events have been scored for this lead.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub event_count: i64,
    /// Additive: the lifecycle stage its score is in (`stages.rs`), as the ladder is now.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub stage: String,
    /// Additive: the traits its `Identify` events carried (`profile.rs`), once it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<Object>))]
    pub profile: Option<super::profile::Profile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub lead_id: String,
    pub event_id: String,
    pub event_type: String,
    pub old_score: i64,
    pub new_score: i64,
    pub delta: i64,
    /// When the change was applied.
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub timestamp: Millis,
    /// Additive: the stage this change moved the lead from and to, if it crossed a threshold
    /// of the ladder as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_change: Option<super::stages::StageChange>,
    /// Additive: the lead this change merged in (`identity.rs`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

/// A scoring rule: every active rule of an event's type whose conditions all hold adds its
/// points, within its limit. The old app's fields keep their names; the rest are additive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Opaque and stable: `PUT` and `DELETE /api/rules/:id` name a rule by it.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub id: String,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub name: String,
    pub event_type: String,
    pub points: i64,
    pub is_active: bool,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub limit: Option<Limit>,
    /// The type's base rule: the one `POST /api/rules` with only `{eventType, points,
    /// isActive}` upserts (what old clients and the seed write). It stops being the base once
    /// an edit gives it conditions, a limit or another event type.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub base: bool,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
}

impl Rule {
    /// A rule a draft describes (id and base flag are the store's to give).
    pub fn from_draft(id: String, draft: RuleDraft, base: bool, now: Millis) -> Rule {
        Rule {
            id,
            name: draft.name.unwrap_or_else(|| draft.event_type.clone()),
            event_type: draft.event_type,
            points: draft.points,
            is_active: draft.is_active,
            conditions: draft.conditions,
            limit: draft.limit,
            base,
            updated_at: now,
        }
    }

    /// Whether a base rule stays the base after this edit.
    pub fn stays_base(&self, draft: &RuleDraft) -> bool {
        self.base && draft.event_type == self.event_type && draft.conditions.is_empty() && draft.limit.is_none()
    }
}

pub use super::engine::RuleDraft;

/// A validated rule edit: upserted by `event_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleInput {
    pub event_type: String,
    pub points: i64,
    pub is_active: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LeadDetail {
    pub lead: Lead,
    pub history: Vec<HistoryEntry>,
    pub events: Vec<StoredEvent>,
}

/// One problem with one field of a request, named so a client can fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

/// A rejected item of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BatchItemError {
    pub index: usize,
    pub event_id: Option<String>,
    pub field: String,
    pub problem: String,
}

/// A batch item that was valid but already known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BatchDuplicate {
    pub index: usize,
    pub event_id: String,
}

/// What happened to every item of a batch: nothing is dropped without a line here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub message: String,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub errors: Vec<BatchItemError>,
    /// Additive: which items were duplicates (of stored events or of an earlier item).
    pub duplicate_items: Vec<BatchDuplicate>,
}

impl BatchReport {
    /// Counts the duplicates listed and writes the summary message from the counts.
    pub fn summarize(&mut self) {
        self.duplicates = self.duplicate_items.len();
        self.message = format!(
            "Batch processed: {} accepted, {} duplicates, {} rejected",
            self.accepted, self.duplicates, self.rejected
        );
    }
}

/// Metadata is stored as JSON text but travels as a JSON object.
mod metadata_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(m: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match m.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()).map(|v| v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_keeps_the_old_field_names() {
        let lead = Lead {
            id: "lead-1".into(),
            score: 15,
            last_event_id: Some("e2".into()),
            updated_at: 0,
            last_event_at: None,
            event_count: 2,
            stage: "Cold".into(),
            profile: None,
        };
        let v = serde_json::to_value(&lead).unwrap();
        assert!(v.get("profile").is_none(), "a lead without traits has no profile field");
        assert_eq!(v["_id"], "lead-1");
        assert_eq!(v["score"], 15);
        assert_eq!(v["lastEventId"], "e2");
        assert_eq!(v["updatedAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["eventCount"], 2);
    }

    #[test]
    fn stored_event_metadata_travels_as_an_object() {
        let e = StoredEvent {
            seq: 7,
            event_id: "e".into(),
            lead_id: "l".into(),
            event_type: "Page View".into(),
            timestamp: 1000,
            metadata: Some(r#"{"page":"/pricing"}"#.into()),
            received_at: 2000,
            processed: false,
            points: None,
            matches: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["metadata"]["page"], "/pricing");
        assert!(v.get("seq").is_none(), "queue position is internal");
        let back: StoredEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back.metadata, e.metadata);
    }
}
