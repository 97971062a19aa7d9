//! Webhooks: what the CRM hears. A subscription names a URL and the changes it wants
//! (`scoreChanged`, `stageChanged`); every score change a lead goes through in one scoring
//! batch becomes a delivery for each subscription that wants it, written to a durable outbox
//! together with the change (`Outbox::deliveries`), then sent and retried with backoff for
//! 24 hours. A delivery's payload `id` names the change, so a receiver dedupes retries (and
//! the same change sent to two subscriptions) by it.

use super::stages::{stage_for, Stage};
use super::time::{iso, iso_opt, Millis};
use super::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const SCORE_CHANGED: &str = "scoreChanged";
pub const STAGE_CHANGED: &str = "stageChanged";
pub const EVENT_KINDS: [&str; 2] = [STAGE_CHANGED, SCORE_CHANGED];
pub const MAX_URL_LEN: usize = 2_048;
pub const MAX_WEBHOOKS: usize = 20;
/// A delivery is retried for this long after the change, then given up.
pub const RETRY_FOR_MS: Millis = 24 * 3_600_000;
/// Longest wait between two attempts.
const MAX_BACKOFF_MS: Millis = 3_600_000;

/// A subscription as listed: never its secret, which is shown once, when it is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
}

/// A subscription with its signing secret, as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWebhook {
    pub hook: Webhook,
    pub secret: String,
}

/// What `POST /api/webhooks` answers: the subscription and, this once, its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub hook: Webhook,
    pub secret: String,
}

/// A validated `POST /api/webhooks` body.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDraft {
    pub url: String,
    pub events: Vec<String>,
}

/// Reads `{url, events}`: an absolute `http`/`https` URL, and a non-empty list of the kinds.
pub fn parse_webhook(raw: &Value) -> Result<WebhookDraft, Vec<FieldError>> {
    let Some(obj) = raw.as_object() else {
        return Err(vec![FieldError::new(
            "body",
            "must be an object like {\"url\": \"https://…\", \"events\": [\"stageChanged\"]}",
        )]);
    };
    let mut errors = Vec::new();
    for key in obj.keys().filter(|k| !matches!(k.as_str(), "url" | "events")) {
        errors.push(FieldError::new(key.clone(), "unknown field; a webhook has url and events"));
    }
    let url = match obj.get("url").and_then(Value::as_str).map(str::trim) {
        Some(u) if u.len() > MAX_URL_LEN => {
            errors.push(FieldError::new("url", format!("must be at most {MAX_URL_LEN} characters")));
            None
        }
        Some(u) => match url_problem(u) {
            None => Some(u.to_string()),
            Some(p) => {
                errors.push(FieldError::new("url", p));
                None
            }
        },
        None => {
            errors.push(FieldError::new("url", "is required: the http:// or https:// address to POST to"));
            None
        }
    };
    let kinds = EVENT_KINDS.join(", ");
    let mut events = Vec::new();
    match obj.get("events").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, item) in list.iter().enumerate() {
                match item.as_str().filter(|k| EVENT_KINDS.contains(k)) {
                    Some(k) if !events.iter().any(|e| e == k) => events.push(k.to_string()),
                    Some(_) => {}
                    None => errors.push(FieldError::new(format!("events[{i}]"), format!("must be one of {kinds}"))),
                }
            }
        }
        _ => errors.push(FieldError::new("events", format!("is required: a non-empty list of {kinds}"))),
    }
    match url {
        Some(url) if errors.is_empty() => Ok(WebhookDraft { url, events }),
        _ => Err(errors),
    }
}

/// What is wrong with a webhook URL, if anything.
fn url_problem(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else { return Some("must start with http:// or https://".into()) };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || url.chars().any(char::is_control) {
        return Some("must be an absolute URL with a host, without spaces".into());
    }
    None
}

/// Who wants what, and the ladder stage names are read with, for the scoring step that
/// writes deliveries along with the score changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outbox {
    pub subscriptions: Vec<Webhook>,
    pub ladder: Vec<Stage>,
}

/// A delivery to write to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    /// `<webhook id>:<payload id>`: the outbox keeps one per key, whoever writes it twice.
    pub key: String,
    pub webhook_id: String,
    pub kind: String,
    pub payload: String,
    pub created_at: Millis,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// The deliveries for one lead's change in one scoring step: from `old` to `new`, ending
    /// with event `last_event_id`. A change of score goes to `scoreChanged` subscriptions, a
    /// change of stage also to `stageChanged` ones; no change, no delivery.
    pub fn deliveries(&self, lead_id: &str, old: i64, new: i64, last_event_id: &str, at: Millis) -> Vec<NewDelivery> {
        if old == new || self.subscriptions.is_empty() {
            return Vec::new();
        }
        let (from_stage, to_stage) = (stage_for(&self.ladder, old), stage_for(&self.ladder, new));
        let mut changes = vec![(SCORE_CHANGED, json!(old), json!(new))];
        if from_stage != to_stage {
            changes.push((STAGE_CHANGED, json!(from_stage), json!(to_stage)));
        }
        let mut out = Vec::new();
        for (kind, from, to) in changes {
            let id = format!("{kind}:{last_event_id}");
            let payload = json!({
                "id": id, "type": kind, "occurredAt": super::time::to_iso(at),
                "lead": {"id": lead_id, "score": new, "stage": to_stage},
                "from": from, "to": to,
            })
            .to_string();
            for hook in self.subscriptions.iter().filter(|h| h.events.iter().any(|e| e == kind)) {
                out.push(NewDelivery {
                    key: format!("{}:{id}", hook.id),
                    webhook_id: hook.id.clone(),
                    kind: kind.to_string(),
                    payload: payload.clone(),
                    created_at: at,
                });
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum DeliveryState {
    /// Not yet delivered; `nextAttemptAt` says when it is tried (again).
    Pending,
    Delivered,
    /// Given up after 24 hours of attempts (or its webhook was deleted); "redeliver" tries again.
    Failed,
}

/// A delivery as listed by `GET /api/webhooks/:id/deliveries`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<Millis>,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub delivered_at: Option<Millis>,
    /// The JSON body as sent (signed byte for byte).
    pub payload: String,
}

/// How an attempt went, for the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `None`: delivered (2xx) or given up; see `state`.
    pub next_at: Option<Millis>,
    pub state: DeliveryState,
}

/// The outcome of attempt number `attempts` (1 for the first) at `now` of a delivery
/// created at `created_at`: delivered on a 2xx, else retried after `base × 2^(attempts-1)`
/// (at most an hour apart) until 24 hours after the change, then failed.
pub fn after_attempt(
    created_at: Millis,
    attempts: u32,
    now: Millis,
    status: Option<u16>,
    error: Option<String>,
    base_ms: Millis,
) -> Attempt {
    if status.is_some_and(|s| (200..300).contains(&s)) {
        return Attempt { attempts, at: now, status, error: None, next_at: None, state: DeliveryState::Delivered };
    }
    let wait = base_ms.saturating_mul(1 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF_MS);
    let next = now + wait;
    if next > created_at + RETRY_FOR_MS {
        return Attempt { attempts, at: now, status, error, next_at: None, state: DeliveryState::Failed };
    }
    Attempt { attempts, at: now, status, error, next_at: Some(next), state: DeliveryState::Pending }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stages::default_stages;

    #[test]
    fn subscriptions_parse_or_name_their_problem() {
        let ok = parse_webhook(
            &json!({"url": "https://crm.example.com/hooks?x=1", "events": ["stageChanged", "stageChanged"]}),
        );
        assert_eq!(
            ok,
            Ok(WebhookDraft { url: "https://crm.example.com/hooks?x=1".into(), events: vec!["stageChanged".into()] })
        );
        let fields = |v: Value| parse_webhook(&v).unwrap_err().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(json!({"url": "ftp://x", "events": ["scoreChanged"]})), ["url"]);
        assert_eq!(fields(json!({"url": "https:///path", "events": ["scoreChanged"]})), ["url"]);
        assert_eq!(fields(json!({"url": "http://ok.test", "events": []})), ["events"]);
        assert_eq!(fields(json!({"url": "http://ok.test", "events": ["leadMerged"]})), ["events[0]"]);
        assert_eq!(fields(json!({"events": ["scoreChanged"], "secret": "mine"})), ["secret", "url"]);
        assert_eq!(fields(json!([])), ["body"]);
    }

    #[test]
    fn a_change_becomes_one_delivery_per_wanting_subscription() {
        let hook = |id: &str, events: &[&str]| Webhook {
            id: id.into(),
            url: "http://x.test".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            created_at: 0,
        };
        let outbox = Outbox {
            subscriptions: vec![
                hook("a", &[SCORE_CHANGED]),
                hook("b", &[STAGE_CHANGED, SCORE_CHANGED]),
                hook("c", &[STAGE_CHANGED]),
            ],
            ladder: default_stages(),
        };
        // 20 → 30: Cold stays Cold: score only.
        let small = outbox.deliveries("lead-1", 20, 30, "e7", 1_000);
        assert_eq!(
            small.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
            ["a:scoreChanged:e7", "b:scoreChanged:e7"]
        );
        let body: Value = serde_json::from_str(&small[0].payload).unwrap();
        assert_eq!(
            body,
            json!({"id": "scoreChanged:e7", "type": "scoreChanged", "occurredAt": "1970-01-01T00:00:01.000Z",
                   "lead": {"id": "lead-1", "score": 30, "stage": "Cold"}, "from": 20, "to": 30})
        );
        // 40 → 120: Cold → MQL: both kinds.
        let big = outbox.deliveries("lead-1", 40, 120, "e8", 2_000);
        let kinds: Vec<(&str, &str)> = big.iter().map(|d| (d.webhook_id.as_str(), d.kind.as_str())).collect();
        assert_eq!(kinds, [("a", SCORE_CHANGED), ("b", SCORE_CHANGED), ("b", STAGE_CHANGED), ("c", STAGE_CHANGED)]);
        let stage: Value = serde_json::from_str(&big[2].payload).unwrap();
        assert_eq!(
            (stage["from"].as_str(), stage["to"].as_str(), stage["lead"]["stage"].as_str()),
            (Some("Cold"), Some("MQL"), Some("MQL"))
        );
        assert!(outbox.deliveries("lead-1", 50, 50, "e9", 0).is_empty(), "no change, nothing to say");
        assert!(Outbox::default().deliveries("lead-1", 0, 10, "e9", 0).is_empty());
    }

    #[test]
    fn attempts_back_off_for_a_day_then_fail() {
        let ok = after_attempt(0, 1, 10, Some(204), None, 10_000);
        assert_eq!((ok.state, ok.next_at), (DeliveryState::Delivered, None));
        let first = after_attempt(0, 1, 0, Some(500), None, 10_000);
        assert_eq!((first.state, first.next_at), (DeliveryState::Pending, Some(10_000)));
        assert_eq!(after_attempt(0, 4, 100_000, None, Some("refused".into()), 10_000).next_at, Some(180_000));
        assert_eq!(after_attempt(0, 30, 1_000_000, Some(503), None, 10_000).next_at, Some(1_000_000 + MAX_BACKOFF_MS));
        let late = after_attempt(0, 40, RETRY_FOR_MS - 1_000, Some(503), None, 10_000);
        assert_eq!((late.state, late.next_at), (DeliveryState::Failed, None), "a day after the change: given up");
    }
}
