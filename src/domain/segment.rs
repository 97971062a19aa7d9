//! Segment's tracking API, as events: what `/v1/track`, `/v1/page`, … and each message of
//! `/v1/batch` become. Tracking SDKs (Segment's, RudderStack's, Jitsu's) speak this shape, so
//! a team points its existing SDK at Leadscore instead of writing POSTs by hand.
//!
//! | message  | leadId                   | eventType      | metadata                                 |
//! |----------|--------------------------|----------------|------------------------------------------|
//! | track    | userId, else anonymousId | `event`        | `properties`' fields, `context`          |
//! | page     | 〃                       | `Page View`    | `properties`' fields, `name`, `category` |
//! | screen   | 〃                       | `Screen View`  | 〃                                       |
//! | identify | 〃                       | `Identify`     | `traits`                                 |
//! | group    | 〃                       | `Group`        | `groupId`, `traits`                      |
//! | alias    | userId                   | `Alias`        | `previousId`                             |
//!
//! `messageId` is the event id, so a retried message is recognised forever (Segment forgets
//! after ~24 h). Timestamps are corrected for the client's clock as Segment does:
//! `timestamp + (receivedAt − sentAt)`.

use super::model::{FieldError, NewEvent};
use super::time::{parse_iso, Millis};
use super::validation::{
    kind, not_reserved, nul_key, text_field, MAX_EVENT_TYPE_CHARS, MAX_FUTURE_SKEW_MS, MAX_ID_CHARS, MIN_TIMESTAMP_MS,
};
use serde_json::{Map, Value};

/// Segment's limits: a message, and a whole `/v1/batch` request.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The six calls of the Segment spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    pub const ALL: [Call; 6] = [Call::Track, Call::Identify, Call::Page, Call::Screen, Call::Group, Call::Alias];

    /// The message `type` naming this call.
    pub fn name(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }

    pub fn from_name(name: &str) -> Option<Call> {
        Call::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The event type of every message of this call but `track` (which names its own).
    pub fn fixed_event_type(self) -> Option<&'static str> {
        match self {
            Call::Track => None,
            Call::Identify => Some("Identify"),
            Call::Page => Some("Page View"),
            Call::Screen => Some("Screen View"),
            Call::Group => Some("Group"),
            Call::Alias => Some("Alias"),
        }
    }
}

/// What the request around a message says.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// When the server received the request.
    pub received_at: Millis,
    /// The batch's `sentAt` (a message's own `sentAt` wins).
    pub sent_at: Option<Millis>,
    /// The batch's `context`, under each message's own.
    pub context: Map<String, Value>,
}

impl Envelope {
    /// Reads a `/v1/batch` body's `sentAt` and `context` (anything but its `batch`).
    pub fn of_batch(body: &Map<String, Value>, received_at: Millis) -> Result<Envelope, FieldError> {
        let sent_at = match body.get("sentAt") {
            None | Some(Value::Null) => None,
            Some(v) => Some(instant(v).map_err(|p| FieldError::new("sentAt", p))?),
        };
        let context = match body.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(v @ Value::Object(c)) => match nul_key(v, "context") {
                None => c.clone(),
                Some(path) => return Err(FieldError::new("context", nul_problem(&path))),
            },
            Some(v) => return Err(FieldError::new("context", format!("must be an object, got {}", kind(v)))),
        };
        Ok(Envelope { received_at, sent_at, context })
    }
}

/// A message with no `messageId`: the caller makes one up (`timestamped` says whether the
/// message names its own time, so that a retry of it could be recognised by its content).
pub type FallbackId<'a> = &'a mut dyn FnMut(&str, bool) -> String;

/// One message as an event. `call` is the endpoint's (`None` for a batch item, whose `type`
/// says). Errors name the message's fields (`userId`, `event`, …).
pub fn to_event(
    call: Option<Call>,
    text: &str,
    envelope: &Envelope,
    fallback_id: FallbackId,
) -> Result<NewEvent, Vec<FieldError>> {
    if text.len() > MAX_MESSAGE_BYTES {
        let problem = format!("a message must be at most {MAX_MESSAGE_BYTES} bytes, got {}", text.len());
        return Err(vec![FieldError::new("body", problem)]);
    }
    let message: Map<String, Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(v) => return Err(vec![FieldError::new("body", format!("a message must be an object, got {}", kind(&v)))]),
        Err(e) => return Err(vec![FieldError::new("body", format!("malformed JSON: {e}"))]),
    };
    let mut errors = Vec::new();
    let call = call.or_else(|| message_type(&message, &mut errors));
    let lead_id = lead_id(call, &message, &mut errors);
    let event_type = match call.map(|c| (c, c.fixed_event_type())) {
        Some((_, Some(fixed))) => Some(fixed.to_string()),
        Some((_, None)) => {
            not_reserved("event", text_field(&message, "event", MAX_EVENT_TYPE_CHARS, &mut errors), &mut errors)
        }
        None => None,
    };
    let timestamp = timestamp(&message, envelope, &mut errors);
    let metadata = call.and_then(|c| metadata(c, &message, envelope, &mut errors));
    let event_id = match message.get("messageId") {
        None | Some(Value::Null) => Some(fallback_id(text, message.contains_key("timestamp"))),
        Some(_) => not_reserved("messageId", id_field(&message, "messageId", &mut errors), &mut errors),
    };
    match (event_id, lead_id, event_type, timestamp, metadata) {
        (Some(event_id), Some(lead_id), Some(event_type), Some(timestamp), Some(metadata)) if errors.is_empty() => {
            Ok(NewEvent { event_id, lead_id, event_type, timestamp, metadata: Some(metadata) })
        }
        _ => Err(errors),
    }
}

/// The `messageId` of a message, if it has a readable one (to name it in a report).
pub fn message_id(text: &str) -> Option<String> {
    let message: Map<String, Value> = serde_json::from_str(text).ok()?;
    match message.get("messageId")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn message_type(message: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Call> {
    let problem = match message.get("type") {
        None | Some(Value::Null) => "is required".to_string(),
        Some(Value::String(s)) => match Call::from_name(&s.to_ascii_lowercase()) {
            Some(call) => return Some(call),
            None => format!("must be one of track, identify, page, screen, group, alias; got {s:?}"),
        },
        Some(v) => format!("must be a string, got {}", kind(v)),
    };
    errors.push(FieldError::new("type", problem));
    None
}

/// An id field: a string, or a number the way SDKs of typed languages send user ids.
fn id_field(message: &Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match message.get(field) {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => text_field(message, field, MAX_ID_CHARS, errors),
    }
}

fn present(message: &Map<String, Value>, field: &str) -> bool {
    !matches!(message.get(field), None | Some(Value::Null))
}

fn lead_id(call: Option<Call>, message: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    if call == Some(Call::Alias) || present(message, "userId") {
        return id_field(message, "userId", errors);
    }
    if present(message, "anonymousId") {
        return id_field(message, "anonymousId", errors);
    }
    errors.push(FieldError::new("userId", "userId or anonymousId is required"));
    None
}

/// A date-time as an ISO-8601 string.
fn instant(value: &Value) -> Result<Millis, String> {
    match value {
        Value::String(s) => parse_iso(s).ok_or_else(|| format!("must be an ISO-8601 date-time, got {s:?}")),
        v => Err(format!("must be an ISO-8601 string, got {}", kind(v))),
    }
}

/// The message's time, corrected for the sender's clock: `timestamp + (receivedAt − sentAt)`.
/// No `timestamp` (nor `originalTimestamp`) means now.
fn timestamp(message: &Map<String, Value>, envelope: &Envelope, errors: &mut Vec<FieldError>) -> Option<Millis> {
    let field = if present(message, "timestamp") { "timestamp" } else { "originalTimestamp" };
    let stated = match message.get(field) {
        None | Some(Value::Null) => return Some(envelope.received_at),
        Some(v) => instant(v),
    };
    let sent_at = match message.get("sentAt") {
        None | Some(Value::Null) => Ok(envelope.sent_at),
        Some(v) => instant(v).map(Some),
    };
    let sent_at = sent_at.map_err(|p| errors.push(FieldError::new("sentAt", p))).ok()?;
    let problem = match stated {
        Err(p) => p,
        Ok(t) => {
            let t = t.saturating_add(sent_at.map_or(0, |s| envelope.received_at.saturating_sub(s)));
            if t < MIN_TIMESTAMP_MS {
                "must not be before 1971-01-01".to_string()
            } else if t > envelope.received_at + MAX_FUTURE_SKEW_MS {
                "must not be more than 24 hours in the future (after correcting for sentAt)".to_string()
            } else {
                return Some(t);
            }
        }
    };
    errors.push(FieldError::new(field, problem));
    None
}

/// The event's metadata as JSON text.
fn metadata(
    call: Call,
    message: &Map<String, Value>,
    envelope: &Envelope,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let before = errors.len();
    let mut meta = Map::new();
    match call {
        Call::Track | Call::Page | Call::Screen => {
            if let Some(properties) = object(message, "properties", errors) {
                meta.extend(properties.clone());
            }
            if call != Call::Track {
                for field in ["name", "category"] {
                    if let Some(v) = message.get(field).filter(|v| !v.is_null()) {
                        match nul_key(v, field) {
                            None => {
                                meta.entry(field).or_insert_with(|| v.clone());
                            }
                            Some(path) => errors.push(FieldError::new(field, nul_problem(&path))),
                        }
                    }
                }
            }
        }
        Call::Identify | Call::Group => {
            if let Some(traits) = object(message, "traits", errors) {
                meta.insert("traits".into(), Value::Object(traits.clone()));
            }
            if call == Call::Group {
                if let Some(group) = id_field(message, "groupId", errors) {
                    meta.insert("groupId".into(), Value::String(group));
                }
            }
        }
        Call::Alias => {
            if let Some(previous) = id_field(message, "previousId", errors) {
                meta.insert("previousId".into(), Value::String(previous));
            }
        }
    }
    // A known user's anonymous id is kept: it says which anonymous history is theirs.
    if present(message, "userId") && call != Call::Alias {
        if let Some(Value::String(anonymous)) = message.get("anonymousId") {
            meta.insert("anonymousId".into(), Value::String(anonymous.clone()));
        }
    }
    let mut context = envelope.context.clone();
    if let Some(own) = object(message, "context", errors) {
        context.extend(own.clone());
    }
    if !context.is_empty() {
        meta.insert("context".into(), Value::Object(context));
    }
    if errors.len() > before {
        return None;
    }
    let text = Value::Object(meta).to_string();
    if text.len() > MAX_MESSAGE_BYTES {
        let problem =
            format!("with the batch's context, must be at most {MAX_MESSAGE_BYTES} bytes, got {}", text.len());
        errors.push(FieldError::new("context", problem));
        return None;
    }
    Some(text)
}

/// Why a key holding NUL is refused (MongoDB's documents cannot hold one).
fn nul_problem(path: &str) -> String {
    format!("keys may not contain the NUL character (U+0000), as {path} does")
}

/// An optional object field (`null` counts as absent).
fn object<'a>(
    message: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    match message.get(field) {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(o)) => match nul_key(v, field) {
            None => Some(o),
            Some(path) => {
                errors.push(FieldError::new(field, nul_problem(&path)));
                None
            }
        },
        Some(v) => {
            errors.push(FieldError::new(field, format!("must be an object, got {}", kind(v))));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::to_iso;
    use serde_json::json;

    const NOW: Millis = 1_700_000_000_000;

    fn envelope() -> Envelope {
        Envelope { received_at: NOW, ..Envelope::default() }
    }

    fn event(call: Option<Call>, message: Value) -> Result<NewEvent, Vec<FieldError>> {
        to_event(call, &message.to_string(), &envelope(), &mut |_, _| "generated".into())
    }

    fn fields(result: Result<NewEvent, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn metadata(e: &NewEvent) -> Value {
        serde_json::from_str(e.metadata.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn a_track_call_is_an_event_of_its_name_for_the_user() {
        let e = event(
            Some(Call::Track),
            json!({"messageId": "m-1", "userId": "u-1", "anonymousId": "a-1", "event": "Signed Up",
                   "properties": {"plan": "pro"}, "context": {"ip": "203.0.113.9"},
                   "timestamp": to_iso(NOW - 60_000)}),
        )
        .unwrap();
        assert_eq!((e.event_id.as_str(), e.lead_id.as_str(), e.event_type.as_str()), ("m-1", "u-1", "Signed Up"));
        assert_eq!(e.timestamp, NOW - 60_000);
        assert_eq!(metadata(&e), json!({"plan": "pro", "anonymousId": "a-1", "context": {"ip": "203.0.113.9"}}));
    }

    #[test]
    fn every_call_has_its_event_type_and_a_batch_item_names_its_type() {
        let cases = [
            (
                json!({"type": "page", "anonymousId": "a", "name": "Pricing", "properties": {"path": "/pricing"}}),
                "Page View",
            ),
            (json!({"type": "screen", "userId": 42, "name": "Home"}), "Screen View"),
            (json!({"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}}), "Identify"),
            (json!({"type": "group", "userId": "u", "groupId": "g-1"}), "Group"),
            (json!({"type": "alias", "userId": "u", "previousId": "a"}), "Alias"),
            (json!({"type": "Track", "userId": "u", "event": "Clicked"}), "Clicked"),
        ];
        for (message, event_type) in cases {
            let e = event(None, message.clone()).unwrap_or_else(|e| panic!("{message}: {e:?}"));
            assert_eq!(e.event_type, event_type);
            assert_eq!(e.event_id, "generated", "no messageId: the caller's");
        }
        let page =
            event(None, json!({"type": "page", "anonymousId": "a", "name": "Pricing", "properties": {"path": "/p"}}));
        assert_eq!(metadata(&page.unwrap()), json!({"path": "/p", "name": "Pricing"}));
        assert_eq!(event(None, json!({"type": "screen", "userId": 42})).unwrap().lead_id, "42");
        let alias = event(None, json!({"type": "alias", "userId": "u", "previousId": "a"})).unwrap();
        assert_eq!(metadata(&alias), json!({"previousId": "a"}));
    }

    #[test]
    fn problems_name_the_message_fields() {
        assert_eq!(fields(event(Some(Call::Track), json!({"event": "x"}))), ["userId"]);
        assert_eq!(fields(event(Some(Call::Track), json!({"userId": "u"}))), ["event"]);
        assert_eq!(fields(event(Some(Call::Track), json!({"userId": "u", "event": "$decay"}))), ["event"]);
        assert_eq!(fields(event(None, json!({"userId": "u"}))), ["type"]);
        assert_eq!(fields(event(None, json!({"type": "bogus", "userId": "u"}))), ["type"]);
        assert_eq!(fields(event(Some(Call::Alias), json!({"anonymousId": "a", "previousId": "p"}))), ["userId"]);
        assert_eq!(fields(event(Some(Call::Alias), json!({"userId": "u"}))), ["previousId"]);
        assert_eq!(fields(event(Some(Call::Group), json!({"userId": "u"}))), ["groupId"]);
        assert_eq!(
            fields(event(
                Some(Call::Track),
                json!({"userId": "u", "event": "x", "properties": [1], "timestamp": "soon"})
            )),
            ["timestamp", "properties"]
        );
        assert_eq!(fields(event(Some(Call::Identify), json!({"userId": "u", "traits": "x"}))), ["traits"]);
        // A key MongoDB's documents cannot hold.
        let nul = json!({"userId": "u", "event": "x", "context": {"page": {"a\u{0}": 1}}});
        assert_eq!(fields(event(Some(Call::Track), nul)), ["context"]);
        let nul = json!({"userId": "u", "name": {"a\u{0}": 1}});
        assert_eq!(fields(event(Some(Call::Page), nul)), ["name"]);
        let batch = json!({"batch": [], "context": {"x": {"\u{0}": 1}}});
        assert_eq!(Envelope::of_batch(batch.as_object().unwrap(), NOW).unwrap_err().field, "context");
        assert_eq!(fields(event(Some(Call::Track), json!({"userId": "", "event": "x"}))), ["userId"]);
        assert_eq!(
            fields(event(Some(Call::Track), json!({"userId": "u", "event": "x", "messageId": {}}))),
            ["messageId"]
        );
        assert_eq!(fields(event(Some(Call::Track), json!([1]))), ["body"]);
        let big = json!({"userId": "u", "event": "x", "properties": {"blob": "x".repeat(MAX_MESSAGE_BYTES)}});
        assert_eq!(fields(event(Some(Call::Track), big)), ["body"]);
    }

    #[test]
    fn the_senders_clock_is_corrected_with_sent_at() {
        // The client's clock runs an hour behind: it stamped and sent the message at what it
        // thought was an hour ago; the server received it 2 s after sending.
        let hour = 3_600_000;
        let message = json!({"userId": "u", "event": "x", "timestamp": to_iso(NOW - hour - 2_000 - 500),
                             "sentAt": to_iso(NOW - hour - 2_000)});
        let env = Envelope { received_at: NOW, ..Envelope::default() };
        let e = to_event(Some(Call::Track), &message.to_string(), &env, &mut |_, _| "g".into()).unwrap();
        assert_eq!(e.timestamp, NOW - 500, "the 500 ms between stamping and sending are kept");

        let batch = Envelope { received_at: NOW, sent_at: Some(NOW + hour), context: Map::new() };
        let ahead = json!({"userId": "u", "event": "x", "timestamp": to_iso(NOW + hour - 1_000)});
        let e = to_event(Some(Call::Track), &ahead.to_string(), &batch, &mut |_, _| "g".into()).unwrap();
        assert_eq!(e.timestamp, NOW - 1_000, "the batch's sentAt applies to its messages");

        let untimed = event(Some(Call::Track), json!({"userId": "u", "event": "x"})).unwrap();
        assert_eq!(untimed.timestamp, NOW, "no timestamp: when it arrived");
        let original =
            event(Some(Call::Track), json!({"userId": "u", "event": "x", "originalTimestamp": to_iso(NOW - 5)}));
        assert_eq!(original.unwrap().timestamp, NOW - 5);
        let future =
            event(Some(Call::Track), json!({"userId": "u", "event": "x", "timestamp": to_iso(NOW + 2 * 86_400_000)}));
        assert_eq!(fields(future), ["timestamp"]);
    }

    #[test]
    fn the_batch_context_lies_under_each_messages_own() {
        let body = json!({"sentAt": to_iso(NOW), "context": {"library": {"name": "sdk"}, "ip": "1.1.1.1"}});
        let env = Envelope::of_batch(body.as_object().unwrap(), NOW).unwrap();
        let message = json!({"type": "track", "userId": "u", "event": "x", "context": {"ip": "2.2.2.2"}});
        let e = to_event(None, &message.to_string(), &env, &mut |_, _| "g".into()).unwrap();
        assert_eq!(metadata(&e)["context"], json!({"library": {"name": "sdk"}, "ip": "2.2.2.2"}));
        let bad = json!({"sentAt": 5});
        assert_eq!(Envelope::of_batch(bad.as_object().unwrap(), NOW).unwrap_err().field, "sentAt");
    }

    #[test]
    fn the_fallback_id_hears_whether_the_message_is_timestamped() {
        let mut seen = Vec::new();
        let text = json!({"userId": "u", "event": "x", "timestamp": to_iso(NOW)}).to_string();
        to_event(Some(Call::Track), &text, &envelope(), &mut |t, timed| {
            seen.push((t.to_string(), timed));
            "g".into()
        })
        .unwrap();
        assert_eq!(seen, [(text.clone(), true)]);
        assert_eq!(message_id(&json!({"messageId": 7}).to_string()).as_deref(), Some("7"));
    }
}
