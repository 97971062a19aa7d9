//! Validation of client input, reporting every problem with the field it belongs to.
//!
//! Input arrives as untyped JSON so a wrong type is reported as `{field, problem}` rather than
//! as a deserializer error message. Limits follow the field's common practice (see README):
//! generous enough for any real id, small enough that one client cannot bloat the store.

use super::conditions::parse_conditions;
use super::engine::RuleDraft;
use super::limits::parse_limit;
use super::model::{FieldError, NewEvent, RuleInput};
use super::time::{parse_iso, Millis};
use serde_json::{Map, Value};

pub const MAX_ID_CHARS: usize = 256;
pub const MAX_EVENT_TYPE_CHARS: usize = 128;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Points per rule are bounded so no sum of realistic event counts can overflow an i64.
pub const MAX_ABS_POINTS: i64 = 1_000_000;
/// Clock skew we tolerate for timestamps in the future.
pub const MAX_FUTURE_SKEW_MS: Millis = 24 * 60 * 60 * 1000;
/// Earliest plausible event time (1971-01-01), as Mixpanel does: catches seconds-vs-ms bugs.
pub const MIN_TIMESTAMP_MS: Millis = 31_536_000_000;

/// Validates one event object. `now` bounds how far in the future a timestamp may be.
pub fn validate_event(value: &Value, now: Millis) -> Result<NewEvent, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("body", format!("must be a JSON object, got {}", kind(value)))]);
    };
    let mut errors = Vec::new();
    let event_id = not_reserved("eventId", text_field(obj, "eventId", MAX_ID_CHARS, &mut errors), &mut errors);
    let lead_id = text_field(obj, "leadId", MAX_ID_CHARS, &mut errors);
    let event_type =
        not_reserved("eventType", text_field(obj, "eventType", MAX_EVENT_TYPE_CHARS, &mut errors), &mut errors);
    let timestamp = timestamp_field(obj, now, &mut errors);
    let metadata = metadata_field(obj, &mut errors);
    match (event_id, lead_id, event_type, timestamp, metadata) {
        (Some(event_id), Some(lead_id), Some(event_type), Some(timestamp), Some(metadata)) if errors.is_empty() => {
            Ok(NewEvent { event_id, lead_id, event_type, timestamp, metadata })
        }
        _ => Err(errors),
    }
}

/// Validates a rule upsert: `{eventType, points, isActive?}`.
pub fn validate_rule(value: &Value) -> Result<RuleInput, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("body", format!("must be a JSON object, got {}", kind(value)))]);
    };
    let mut errors = Vec::new();
    let event_type =
        not_reserved("eventType", text_field(obj, "eventType", MAX_EVENT_TYPE_CHARS, &mut errors), &mut errors);
    let points = match obj.get("points") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("points", "is required"));
            None
        }
        Some(v) => match v.as_i64() {
            Some(p) if (-MAX_ABS_POINTS..=MAX_ABS_POINTS).contains(&p) => Some(p),
            Some(_) => {
                errors
                    .push(FieldError::new("points", format!("must be between -{MAX_ABS_POINTS} and {MAX_ABS_POINTS}")));
                None
            }
            None => {
                errors.push(FieldError::new("points", format!("must be an integer, got {}", describe(v))));
                None
            }
        },
    };
    let is_active = match obj.get("isActive") {
        None | Some(Value::Null) => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => {
            errors.push(FieldError::new("isActive", format!("must be true or false, got {}", kind(v))));
            None
        }
    };
    match (event_type, points, is_active) {
        (Some(event_type), Some(points), Some(is_active)) if errors.is_empty() => {
            Ok(RuleInput { event_type, points, is_active })
        }
        _ => Err(errors),
    }
}

pub const MAX_RULE_NAME_CHARS: usize = 120;

/// Validates a rule of the scoring model: `{eventType, points, isActive?, name?, conditions?,
/// limit?}`. Other keys are ignored, as `validate_rule` does (old clients send rules back
/// with `updatedAt`).
pub fn validate_scoring_rule(value: &Value) -> Result<RuleDraft, Vec<FieldError>> {
    let base = validate_rule(value);
    let Some(obj) = value.as_object() else { return Err(base.err().unwrap_or_default()) };
    let mut errors = base.as_ref().err().cloned().unwrap_or_default();
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(FieldError::new(
                "name",
                "must not be empty (leave it out for a rule named after its event type)",
            ));
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_RULE_NAME_CHARS || s.chars().any(char::is_control) => {
            errors.push(FieldError::new(
                "name",
                format!("must be at most {MAX_RULE_NAME_CHARS} characters, without control characters"),
            ));
            None
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(v) => {
            errors.push(FieldError::new("name", format!("must be a string, got {}", kind(v))));
            None
        }
    };
    let conditions = parse_conditions(obj.get("conditions")).map_err(|mut e| errors.append(&mut e)).ok();
    let limit = parse_limit(obj.get("limit")).map_err(|mut e| errors.append(&mut e)).ok();
    match (base, conditions, limit) {
        (Ok(RuleInput { event_type, points, is_active }), Some(conditions), Some(limit)) if errors.is_empty() => {
            // What the old upsert means: no conditions, no limit, no name but the type's own.
            // A base rule read from `GET /api/rules` and posted back (name = type,
            // `conditions: []`, `limit: null`) still reads so, as old clients do.
            let legacy = conditions.is_empty() && limit.is_none() && name.as_ref().is_none_or(|n| *n == event_type);
            Ok(RuleDraft { name, event_type, points, is_active, conditions, limit, legacy })
        }
        _ => Err(errors),
    }
}

/// A required, non-blank string of bounded length without control characters.
/// The value is kept exactly as sent (ids with spaces must round-trip).
pub(crate) fn text_field(
    obj: &Map<String, Value>,
    field: &str,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let problem = match obj.get(field) {
        None | Some(Value::Null) => "is required".to_string(),
        Some(Value::String(s)) if s.trim().is_empty() => "must not be empty".to_string(),
        Some(Value::String(s)) if s.chars().count() > max_chars => {
            format!("must be at most {max_chars} characters, got {}", s.chars().count())
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => "must not contain control characters".to_string(),
        Some(Value::String(s)) => return Some(s.clone()),
        Some(v) => format!("must be a string, got {}", kind(v)),
    };
    errors.push(FieldError::new(field, problem));
    None
}

/// Names starting with `$` are kept for events Leadscore writes itself (decay adjustments),
/// as Mixpanel keeps its `$` events: a client can neither send one nor pre-empt its id.
pub const RESERVED_PREFIX: char = '$';

pub(crate) fn not_reserved(field: &str, value: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        Some(v) if v.starts_with(RESERVED_PREFIX) => {
            errors.push(FieldError::new(
                field,
                format!("must not start with {RESERVED_PREFIX:?}: those names are reserved"),
            ));
            None
        }
        other => other,
    }
}

fn timestamp_field(obj: &Map<String, Value>, now: Millis, errors: &mut Vec<FieldError>) -> Option<Millis> {
    let problem = match obj.get("timestamp") {
        None | Some(Value::Null) => "is required".to_string(),
        Some(Value::String(s)) => match parse_iso(s) {
            None => {
                format!("must be an ISO-8601 date-time such as 2024-05-01T12:00:00Z, got {s:?}")
            }
            Some(ms) if ms < MIN_TIMESTAMP_MS => "must not be before 1971-01-01".to_string(),
            Some(ms) if ms > now + MAX_FUTURE_SKEW_MS => "must not be more than 24 hours in the future".to_string(),
            Some(ms) => return Some(ms),
        },
        Some(v) => format!("must be an ISO-8601 string, got {}", kind(v)),
    };
    errors.push(FieldError::new("timestamp", problem));
    None
}

/// `Some(None)` for absent metadata, `Some(Some(json))` for a valid object, `None` on error.
fn metadata_field(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Option<String>> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Some(None),
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                errors.push(FieldError::new(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes as JSON, got {}", text.len()),
                ));
                None
            } else if let Some(path) = nul_key(v, "metadata") {
                // Stored documents (MongoDB's BSON) cannot hold such a key, whatever the store.
                let problem = format!("keys may not contain the NUL character (U+0000), as {path} does");
                errors.push(FieldError::new("metadata", problem));
                None
            } else {
                Some(Some(text))
            }
        }
        Some(v) => {
            errors.push(FieldError::new("metadata", format!("must be a JSON object, got {}", kind(v))));
            None
        }
    }
}

/// The path (from `path`) of the first object key holding a NUL character, if any. Nothing is
/// allocated unless one is found: the path is built on the way back up.
pub(crate) fn nul_key(v: &Value, path: &str) -> Option<String> {
    fn steps(v: &Value) -> Option<Vec<String>> {
        match v {
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let step = || format!(".{}", k.replace('\0', "\\u0000"));
                if k.contains('\0') {
                    Some(vec![step()])
                } else {
                    steps(v).map(|mut below| {
                        below.push(step());
                        below
                    })
                }
            }),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                steps(v).map(|mut below| {
                    below.push(format!("[{i}]"));
                    below
                })
            }),
            _ => None,
        }
    }
    steps(v).map(|below| below.iter().rev().fold(path.to_string(), |p, step| p + step))
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_700_000_000_000;

    fn good() -> Value {
        json!({"eventId": "e-1", "leadId": "lead 1/ü", "eventType": "Page View",
               "timestamp": "2023-11-14T22:00:00Z", "metadata": {"page": "/pricing"}})
    }

    fn problems(v: Value) -> Vec<(String, String)> {
        validate_event(&v, NOW).unwrap_err().into_iter().map(|e| (e.field, e.problem)).collect()
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = good();
        v[field] = value;
        v
    }

    #[test]
    fn names_starting_with_a_dollar_are_reserved() {
        let now = NOW;
        let errors = validate_event(&with("eventType", json!("$decay")), now).unwrap_err();
        assert_eq!(errors[0].field, "eventType");
        assert!(errors[0].problem.contains("reserved"), "{}", errors[0].problem);
        assert_eq!(validate_event(&with("eventId", json!("$decay:lead:1")), now).unwrap_err()[0].field, "eventId");
        assert!(validate_event(&with("eventType", json!("Paid $5")), now).is_ok(), "only a leading $");
        let rule = validate_scoring_rule(&json!({"eventType": "$decay", "points": 5})).unwrap_err();
        assert_eq!(rule[0].field, "eventType");
    }

    #[test]
    fn scoring_rules_keep_the_old_upsert_and_add_name_conditions_and_limit() {
        let old = validate_scoring_rule(&json!({"eventType": "Page View", "points": 5, "updatedAt": "x"})).unwrap();
        assert!(old.legacy && old.is_active && old.name.is_none() && old.conditions.is_empty() && old.limit.is_none());
        let new = validate_scoring_rule(&json!({
            "name": " Pricing page ", "eventType": "Page View", "points": 20,
            "conditions": [{"field": "page", "op": "equals", "value": "/pricing"}],
            "limit": {"count": 1, "per": "day"}
        }))
        .unwrap();
        assert!(!new.legacy);
        assert_eq!(
            (new.name.as_deref(), new.conditions.len(), new.limit.map(|l| l.count)),
            (Some("Pricing page"), 1, Some(1))
        );
        let named_only = validate_scoring_rule(&json!({"name": "x", "eventType": "A", "points": 1})).unwrap();
        assert!(!named_only.legacy, "a name alone makes a new rule");
        // A base rule as GET /api/rules lists it, posted back by an old client: still the upsert.
        let posted_back = validate_scoring_rule(&json!({
            "id": "6b0c", "name": "Page View", "eventType": "Page View", "points": 8, "isActive": true,
            "conditions": [], "limit": null, "base": true, "updatedAt": "2024-05-01T00:00:00.000Z"
        }))
        .unwrap();
        assert!(posted_back.legacy, "read back and posted again, a base rule stays the upsert");
        let errors = validate_scoring_rule(&json!({
            "name": "", "eventType": "", "points": "many",
            "conditions": [{"field": "page", "op": "gt", "value": "x"}], "limit": {"count": 0, "per": "day"}
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["eventType", "points", "name", "conditions[0].value", "limit.count"]);
        assert_eq!(validate_scoring_rule(&json!([1])).unwrap_err()[0].field, "body");
    }

    #[test]
    fn accepts_a_complete_event_and_keeps_ids_verbatim() {
        let e = validate_event(&good(), NOW).unwrap();
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.lead_id, "lead 1/ü");
        assert_eq!(e.timestamp, 1_699_999_200_000);
        assert_eq!(e.metadata.as_deref(), Some(r#"{"page":"/pricing"}"#));
    }

    #[test]
    fn metadata_is_optional_and_null_means_absent() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("metadata");
        assert_eq!(validate_event(&v, NOW).unwrap().metadata, None);
        assert_eq!(validate_event(&with("metadata", Value::Null), NOW).unwrap().metadata, None);
    }

    #[test]
    fn reports_every_missing_field_by_name() {
        let p = problems(json!({}));
        let fields: Vec<_> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["eventId", "leadId", "eventType", "timestamp"]);
        assert!(p.iter().all(|(_, problem)| problem == "is required"));
    }

    #[test]
    fn rejects_wrong_types_with_what_was_sent() {
        assert_eq!(problems(with("eventId", json!(42))), [("eventId".into(), "must be a string, got a number".into())]);
        assert_eq!(
            problems(with("leadId", json!(["a"]))),
            [("leadId".into(), "must be a string, got an array".into())]
        );
        assert_eq!(
            problems(with("timestamp", json!(1700000000))),
            [("timestamp".into(), "must be an ISO-8601 string, got a number".into())]
        );
        assert_eq!(
            problems(with("metadata", json!("x"))),
            [("metadata".into(), "must be a JSON object, got a string".into())]
        );
    }

    #[test]
    fn rejects_blank_long_and_control_character_ids() {
        assert_eq!(problems(with("eventId", json!("   "))), [("eventId".into(), "must not be empty".into())]);
        let long = "x".repeat(MAX_ID_CHARS + 1);
        assert_eq!(problems(with("leadId", json!(long)))[0].1, "must be at most 256 characters, got 257");
        assert!(validate_event(&with("leadId", json!("x".repeat(MAX_ID_CHARS))), NOW).is_ok());
        let long_type = "t".repeat(MAX_EVENT_TYPE_CHARS + 1);
        assert_eq!(problems(with("eventType", json!(long_type)))[0].0, "eventType");
        assert_eq!(problems(with("eventId", json!("a\nb")))[0].1, "must not contain control characters");
    }

    #[test]
    fn rejects_unparseable_ancient_and_future_timestamps() {
        assert!(problems(with("timestamp", json!("not a date")))[0].1.starts_with("must be an ISO-8601 date-time"));
        assert_eq!(problems(with("timestamp", json!("1970-01-01T00:00:00Z")))[0].1, "must not be before 1971-01-01");
        assert_eq!(
            problems(with("timestamp", json!("2023-11-16T22:13:20Z")))[0].1,
            "must not be more than 24 hours in the future"
        );
        assert!(validate_event(&with("timestamp", json!("2023-11-15T20:00:00Z")), NOW).is_ok());
    }

    #[test]
    fn metadata_keys_with_a_nul_character_are_refused_by_their_path() {
        let p = problems(with("metadata", json!({"ok": {"list": [1, {"a\u{0}b": 2}]}})));
        let problem = "keys may not contain the NUL character (U+0000), as metadata.ok.list[1].a\\u0000b does";
        assert_eq!(p, [("metadata".into(), problem.into())]);
        assert!(validate_event(&with("metadata", json!({"value": "a\u{0}b"})), NOW).is_ok(), "values may hold it");
    }

    #[test]
    fn bounds_metadata_size() {
        let big = json!({"blob": "y".repeat(MAX_METADATA_BYTES)});
        assert_eq!(problems(with("metadata", big))[0].0, "metadata");
        let fits = json!({"b": "y".repeat(MAX_METADATA_BYTES - 10)});
        assert!(validate_event(&with("metadata", fits), NOW).is_ok());
    }

    #[test]
    fn non_objects_are_rejected_as_a_whole() {
        assert_eq!(problems(json!([1, 2])), [("body".into(), "must be a JSON object, got an array".into())]);
        assert_eq!(problems(json!(null))[0].1, "must be a JSON object, got null");
    }

    #[test]
    fn rule_defaults_to_active_and_allows_negative_points() {
        let r = validate_rule(&json!({"eventType": "Unsubscribe", "points": -15})).unwrap();
        assert_eq!(r, RuleInput { event_type: "Unsubscribe".into(), points: -15, is_active: true });
        let r = validate_rule(&json!({"eventType": "X", "points": 0, "isActive": false})).unwrap();
        assert!(!r.is_active);
    }

    #[test]
    fn points_past_the_bound_are_refused_at_both_ends_even_the_lowest_integer() {
        for points in [i64::MIN, i64::MIN + 1, -MAX_ABS_POINTS - 1, MAX_ABS_POINTS + 1, i64::MAX] {
            let problems = validate_rule(&json!({"eventType": "X", "points": points})).unwrap_err();
            assert_eq!(problems[0].field, "points", "{points}");
        }
        for points in [-MAX_ABS_POINTS, MAX_ABS_POINTS] {
            assert_eq!(validate_rule(&json!({"eventType": "X", "points": points})).unwrap().points, points);
        }
    }

    #[test]
    fn rule_problems_are_named() {
        let p: Vec<_> = validate_rule(&json!({"points": 1.5, "isActive": "yes"}))
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.problem))
            .collect();
        assert_eq!(
            p,
            [
                ("eventType".into(), "is required".into()),
                ("points".into(), "must be an integer, got 1.5".into()),
                ("isActive".into(), "must be true or false, got a string".into()),
            ]
        );
        let p = validate_rule(&json!({"eventType": "X", "points": 2_000_000})).unwrap_err();
        assert_eq!(p[0].field, "points");
        assert!(validate_rule(&json!({"eventType": "X"})).unwrap_err()[0].problem == "is required");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const KNOWN: [&str; 8] =
            ["body", "eventId", "leadId", "eventType", "timestamp", "metadata", "points", "isActive"];

        proptest! {
            /// Any JSON at all: an answer, never a panic, and every problem names a known field.
            #[test]
            fn every_rejection_names_a_field(v in crate::domain::arbitrary::json(true)) {
                if let Err(problems) = validate_event(&v, 1_700_000_000_000) {
                    prop_assert!(!problems.is_empty());
                    for p in problems {
                        prop_assert!(KNOWN.contains(&p.field.as_str()), "{:?}", p);
                        prop_assert!(!p.problem.is_empty());
                    }
                }
                if let Err(problems) = validate_rule(&v) {
                    prop_assert!(!problems.is_empty());
                    prop_assert!(problems.iter().all(|p| KNOWN.contains(&p.field.as_str()) && !p.problem.is_empty()));
                }
            }
        }
    }
}
