//! The pure core of Leadscore: the data model, input validation and scoring rules.
//!
//! Nothing in here performs IO or reads the clock; callers pass `now` in. That keeps every
//! rule about what is valid and how many points an event is worth unit-testable, and lets the
//! same types travel to the WASM client through server functions.

pub mod access;
pub mod conditions;
pub mod decay;
pub mod engine;
pub mod error;
pub mod event_types;
pub mod explanation;
pub mod export;
pub mod identity;
pub mod intake;
pub mod limits;
pub mod live;
pub mod model;
pub mod overview;
pub mod profile;
pub mod query;
pub mod rescore;
pub mod rescore_scan;
pub mod rule_form;
pub mod scoring;
pub mod segment;
pub mod stages;
pub mod time;
pub mod upload;
pub mod validation;
pub mod webhooks;
pub mod wire;

pub use model::*;

/// A queued event of `event_type` for `lead` with `metadata`, for unit tests.
#[cfg(test)]
pub(crate) fn queued_event(event_type: &str, lead: &str, metadata: serde_json::Value) -> StoredEvent {
    StoredEvent {
        seq: 1,
        event_id: "e".into(),
        lead_id: lead.into(),
        event_type: event_type.into(),
        timestamp: 0,
        metadata: Some(metadata.to_string()),
        received_at: 0,
        processed: false,
        points: None,
        matches: None,
    }
}

/// An active rule for unit tests, named as its id.
#[cfg(test)]
pub(crate) fn test_rule(
    id: &str,
    event_type: &str,
    points: i64,
    conditions: serde_json::Value,
    limit: Option<limits::Limit>,
) -> Rule {
    Rule {
        id: id.into(),
        name: id.into(),
        event_type: event_type.into(),
        points,
        is_active: true,
        conditions: conditions::parse_conditions(Some(&conditions)).unwrap(),
        limit,
        base: false,
        updated_at: 0,
    }
}

/// `event` as stored in the queue at `seq`, for unit tests.
#[cfg(test)]
pub(crate) fn queued_as(event: NewEvent, seq: i64, received_at: time::Millis) -> StoredEvent {
    StoredEvent {
        seq,
        event_id: event.event_id,
        lead_id: event.lead_id,
        event_type: event.event_type,
        timestamp: event.timestamp,
        metadata: event.metadata,
        received_at,
        processed: false,
        points: None,
        matches: None,
    }
}

/// Generators for property tests of the input parsers.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON up to a few levels deep, its objects keyed mostly by the names events and
    /// rules use. `floats` adds non-integer numbers (their text form may not parse back to
    /// the identical bits, so a round-trip property leaves them out).
    pub fn json(floats: bool) -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            Just(Value::String("2024-05-01T12:00:00Z".into())),
        ];
        let leaf = if floats {
            let float =
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null));
            prop_oneof![5 => scalar, 1 => float].boxed()
        } else {
            scalar.boxed()
        };
        let key = prop_oneof!["eventId|leadId|eventType|timestamp|metadata|points|isActive", ".{0,8}"];
        leaf.prop_recursive(3, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
