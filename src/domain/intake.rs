//! Reading event bodies in bounded memory. A hostile body — millions of tiny values, deep
//! nesting, a huge unknown field — costs about its own size to read, never a `Value` tree
//! many times larger (`[0,0,…]` is ~16 bytes of tree per byte of text).
//!
//! A batch is split into its items as raw JSON text (syntax checked, no tree), stopping one
//! item past the limit. Each item is then read field by field: only the fields an event has
//! are parsed, each within a size bound, and everything else is skipped unparsed. What comes
//! out is exactly what `validate_event` checks, so errors name the field as always.

use super::model::{FieldError, NewEvent};
use super::time::Millis;
use super::validation::{validate_event, MAX_METADATA_BYTES};
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// JSON text allowed for `eventId`, `leadId`, `eventType` or `timestamp` (their limits are in
/// characters; this only stops a megabyte string from being decoded to be told it is long).
pub const MAX_FIELD_TEXT_BYTES: usize = 4 * 1024;
/// JSON text allowed for `metadata` as sent; its 16 KB limit applies to it re-serialized.
pub const MAX_METADATA_TEXT_BYTES: usize = 4 * MAX_METADATA_BYTES;
const FIELDS: [&str; 5] = ["eventId", "leadId", "eventType", "timestamp", "metadata"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit of items (the limit is carried).
    TooMany(usize),
    /// Not an array: what it is instead.
    NotAnArray(&'static str),
    /// Not JSON (or nested deeper than the parser allows), with the parser's message.
    Malformed(String),
}

/// One item of a batch, checked: the event, or its id (if it had a readable one) and problems.
pub type CheckedItem = Result<NewEvent, ItemProblems>;

#[derive(Clone, Debug, PartialEq)]
pub struct ItemProblems {
    pub event_id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// Most items one server-function call may carry (the service's configured batch limit,
/// usually smaller, applies on top).
pub const MAX_CALL_ITEMS: usize = 10_000;

/// Batch items as a server function's argument: each item's raw JSON text, at most
/// [`MAX_CALL_ITEMS`], so deserializing a call never builds a tree of an item's contents.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(transparent)]
pub struct RawItems(pub Vec<Box<RawValue>>);

impl RawItems {
    pub fn from_values(values: &[Value]) -> Self {
        Self(values.iter().filter_map(|v| serde_json::value::to_raw_value(v).ok()).collect())
    }

    pub fn check(&self, now: Millis) -> Vec<CheckedItem> {
        self.0.iter().map(|raw| check_item(raw, now)).collect()
    }
}

impl<'de> serde::Deserialize<'de> for RawItems {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Capped;
        impl<'de> Visitor<'de> for Capped {
            type Value = RawItems;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an array of at most {MAX_CALL_ITEMS} events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawItems, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Box<RawValue>>()? {
                    if items.len() == MAX_CALL_ITEMS {
                        return Err(de::Error::custom(format!("at most {MAX_CALL_ITEMS} events per call")));
                    }
                    items.push(item);
                }
                Ok(RawItems(items))
            }
        }
        deserializer.deserialize_seq(Capped)
    }
}

/// The items of a batch body, unparsed, borrowing from `body`: at most `limit`.
pub fn batch_items(body: &[u8], limit: usize) -> Result<Vec<&RawValue>, BodyError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = de
        .deserialize_any(Items { limit, too_many: &too_many })
        .and_then(|items| de.end().map(|()| items))
        .map_err(|e| match e.to_string() {
            _ if too_many.get() => BodyError::TooMany(limit),
            m if m.starts_with(NOT_AN_ARRAY) => BodyError::NotAnArray(kind_name(&m[NOT_AN_ARRAY.len()..])),
            m => BodyError::Malformed(m),
        })?;
    Ok(items)
}

/// A single-event body as raw JSON text (syntax checked, no tree).
pub fn single_item(body: &[u8]) -> Result<&RawValue, BodyError> {
    serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))
}

/// Checks one item: reads only an event's fields, within bounds, and validates them.
pub fn check_item(raw: &RawValue, now: Millis) -> CheckedItem {
    let (fields, mut errors) = event_fields(raw);
    let event_id = fields.as_object().and_then(|o| o.get("eventId")).and_then(Value::as_str).map(str::to_string);
    match validate_event(&fields, now) {
        Ok(event) if errors.is_empty() => Ok(event),
        Ok(_) => Err(ItemProblems { event_id, errors }),
        Err(problems) => {
            // A field left out for its size is already reported; not also as missing.
            let oversized: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
            errors.extend(problems.into_iter().filter(|p| !oversized.contains(&p.field)));
            Err(ItemProblems { event_id, errors })
        }
    }
}

/// A `Value` already in memory (a server function's argument, a test event from the UI).
pub fn check_value(raw: &Value, now: Millis) -> CheckedItem {
    validate_event(raw, now).map_err(|errors| ItemProblems {
        event_id: raw.get("eventId").and_then(Value::as_str).map(str::to_string),
        errors,
    })
}

/// The event fields of an item as the object `validate_event` reads, and the fields left
/// out for their size. A non-object comes back as a stand-in of its kind (never parsed).
fn event_fields(raw: &RawValue) -> (Value, Vec<FieldError>) {
    let text = raw.get().trim_start();
    if !text.starts_with('{') {
        return (stand_in(text), Vec::new());
    }
    let mut errors = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let read = de.deserialize_map(Fields { errors: &mut errors });
    // The text already parsed once as JSON, so this only fails on something exotic.
    let fields = read.unwrap_or_else(|e| {
        errors.push(FieldError::new("body", format!("unreadable: {e}")));
        Map::new()
    });
    (Value::Object(fields), errors)
}

/// A value of the same JSON kind as `text`, for the "must be a JSON object" message.
fn stand_in(text: &str) -> Value {
    match text.as_bytes().first() {
        Some(b'[') => Value::Array(Vec::new()),
        Some(b'"') => Value::String(String::new()),
        Some(b't' | b'f') => Value::Bool(true),
        Some(b'n') => Value::Null,
        _ => Value::from(0),
    }
}

const NOT_AN_ARRAY: &str = "not an array: ";

fn kind_name(s: &str) -> &'static str {
    ["an object", "a string", "a number", "a boolean", "null"]
        .into_iter()
        .find(|k| s.starts_with(k))
        .unwrap_or("not JSON")
}

struct Items<'c> {
    limit: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.limit {
                self.too_many.set(true);
                return Err(de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(format!("{NOT_AN_ARRAY}an object")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}a string")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}a number")))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}a number")))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}a number")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}a boolean")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format!("{NOT_AN_ARRAY}null")))
    }
}

/// Keeps an event's fields (each parsed only within its bound), skips every other one.
struct Fields<'e> {
    errors: &'e mut Vec<FieldError>,
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let errors = self.errors;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(field) = FIELDS.iter().find(|f| **f == key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let raw = map.next_value::<&'de RawValue>()?;
            let bound = if *field == "metadata" { MAX_METADATA_TEXT_BYTES } else { MAX_FIELD_TEXT_BYTES };
            if raw.get().len() > bound {
                errors.retain(|e| e.field != *field);
                errors.push(FieldError::new(*field, format!("must be at most {bound} bytes of JSON text")));
                out.remove(*field);
                continue;
            }
            errors.retain(|e| e.field != *field);
            out.remove(*field);
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(value) => drop(out.insert(field.to_string(), value)),
                // Valid JSON that is nested deeper than the parser allows.
                Err(e) => errors.push(FieldError::new(*field, format!("cannot be read: {e}"))),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: Millis = 1_700_000_000_000;

    fn event(id: &str) -> Value {
        json!({"eventId": id, "leadId": "l", "eventType": "Page View", "timestamp": "2023-11-14T22:00:00Z"})
    }

    /// The items' text, for comparing (`RawValue` has no `PartialEq`).
    fn texts(body: &[u8], limit: usize) -> Result<Vec<&str>, BodyError> {
        batch_items(body, limit).map(|items| items.into_iter().map(RawValue::get).collect())
    }

    #[test]
    fn a_batch_is_split_into_raw_items_up_to_the_limit() {
        let body = serde_json::to_vec(&json!([event("a"), 7, {"x": [1, 2]}])).unwrap();
        assert_eq!(texts(&body, 3).unwrap()[1..], ["7", r#"{"x":[1,2]}"#]);
        assert_eq!(texts(&body, 2), Err(BodyError::TooMany(2)));
        assert_eq!(texts(b"[]", 2), Ok(Vec::new()));
        assert_eq!(texts(br#"{"a":1}"#, 2), Err(BodyError::NotAnArray("an object")));
        assert_eq!(texts(b"\"x\"", 2), Err(BodyError::NotAnArray("a string")));
        assert_eq!(texts(b"null", 2), Err(BodyError::NotAnArray("null")));
        assert!(matches!(batch_items(b"[1,", 2), Err(BodyError::Malformed(_))));
        assert!(matches!(batch_items(b"[1] x", 2), Err(BodyError::Malformed(_))), "trailing text");
    }

    #[test]
    fn millions_of_tiny_items_stop_one_past_the_limit() {
        let mut body = b"[".to_vec();
        body.extend(std::iter::repeat_n(b"0,".as_slice(), 2_000_000).flatten());
        body.extend_from_slice(b"0]");
        assert_eq!(texts(&body, 5000), Err(BodyError::TooMany(5000)));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // Skipped as raw text (no recursion, no tree): the item is simply not an object.
        let body = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let items = batch_items(body.as_bytes(), 10).unwrap();
        let problems = check_item(items[0], NOW).unwrap_err();
        assert_eq!(problems.errors, [FieldError::new("body", "must be a JSON object, got an array")]);
        // Inside a field that is parsed, the parser's depth limit answers.
        let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        let text = format!(r#"{{"eventId":"a","metadata":{{"x":{deep}}}}}"#);
        let problems = check_item(single_item(text.as_bytes()).unwrap(), NOW).unwrap_err();
        assert!(
            problems.errors.iter().any(|e| e.field == "metadata" && e.problem.contains("recursion")),
            "{problems:?}"
        );
    }

    #[test]
    fn items_are_checked_like_values_and_unknown_fields_are_never_parsed() {
        let valid = serde_json::to_string(&event("a")).unwrap();
        let raw: &RawValue = serde_json::from_str(&valid).unwrap();
        assert_eq!(check_item(raw, NOW), check_value(&event("a"), NOW));
        // An unknown field of any size or shape is skipped.
        let mut with_junk = event("b");
        with_junk["junk"] = Value::Array(vec![Value::from(0); 100_000]);
        let text = serde_json::to_string(&with_junk).unwrap();
        assert_eq!(check_item(serde_json::from_str(&text).unwrap(), NOW).unwrap().event_id, "b");
        // A non-object says what it is, as validation always did.
        let problems = check_item(serde_json::from_str("[1,2,3]").unwrap(), NOW).unwrap_err();
        assert_eq!(problems.errors, [FieldError::new("body", "must be a JSON object, got an array")]);
    }

    #[test]
    fn oversized_fields_are_named_and_not_also_missing() {
        let mut e = event("c");
        e["leadId"] = Value::String("x".repeat(MAX_FIELD_TEXT_BYTES));
        e["metadata"] = json!({"blob": "y".repeat(MAX_METADATA_TEXT_BYTES)});
        let text = serde_json::to_string(&e).unwrap();
        let problems = check_item(serde_json::from_str(&text).unwrap(), NOW).unwrap_err();
        assert_eq!(problems.event_id.as_deref(), Some("c"));
        let fields: Vec<&str> = problems.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["leadId", "metadata"]);
        assert!(problems.errors[0].problem.contains("at most 4096 bytes"), "{:?}", problems.errors);
        // Within the text bound but over the 16 KB limit: validation's own message.
        e["leadId"] = Value::String("l".into());
        e["metadata"] = json!({"blob": "y".repeat(MAX_METADATA_BYTES)});
        let text = serde_json::to_string(&e).unwrap();
        let problems = check_item(serde_json::from_str(&text).unwrap(), NOW).unwrap_err();
        assert_eq!(problems.errors.len(), 1);
        assert!(problems.errors[0].problem.starts_with("must be at most 16384 bytes as JSON"));
    }

    #[test]
    fn server_function_items_round_trip_and_are_capped() {
        let items = RawItems::from_values(&[event("a"), json!(5)]);
        let text = serde_json::to_string(&items).unwrap();
        let back: RawItems = serde_json::from_str(&text).unwrap();
        let checked = back.check(NOW);
        assert_eq!(checked[0].as_ref().unwrap().event_id, "a");
        assert!(checked[1].is_err());
        let too_many = format!("[{}0]", "0,".repeat(MAX_CALL_ITEMS));
        let err = serde_json::from_str::<RawItems>(&too_many).unwrap_err().to_string();
        assert!(err.contains("at most 10000 events per call"), "{err}");
    }

    #[test]
    fn a_repeated_field_keeps_the_last_like_serde_json() {
        let text =
            r#"{"eventId":"first","leadId":"l","eventType":"t","timestamp":"2023-11-14T22:00:00Z","eventId":"last"}"#;
        assert_eq!(check_item(serde_json::from_str(text).unwrap(), NOW).unwrap().event_id, "last");
    }

    proptest! {
        /// Reading raw text field by field decides exactly as validating the whole value.
        #[test]
        fn raw_items_are_judged_exactly_like_parsed_values(v in crate::domain::arbitrary::json(false)) {
            let text = serde_json::to_string(&v).unwrap();
            let raw: &RawValue = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(check_item(raw, NOW), check_value(&v, NOW));
        }

        /// Any bytes: an answer, never a panic; every item problem names a field.
        #[test]
        fn any_body_gets_an_answer(body in proptest::collection::vec(any::<u8>(), 0..64), limit in 0usize..4) {
            if let Ok(items) = batch_items(&body, limit) {
                prop_assert!(items.len() <= limit);
                for item in items {
                    if let Err(p) = check_item(item, NOW) {
                        prop_assert!(p.errors.iter().all(|e| !e.field.is_empty() && !e.problem.is_empty()));
                    }
                }
            }
        }
    }
}
