//! Identity merge: when a visitor known by an anonymous id identifies, the anonymous lead's
//! history becomes the known lead's, as HubSpot and Mixpanel merge an anonymous profile into
//! the contact it turns out to be.
//!
//! An event asks for a merge of lead `from` into its own lead when it is
//! - an `Alias` event whose `metadata.previousId` is `from` (Segment's `alias`), or
//! - an `Identify` event whose `metadata.anonymousId` is `from` (an `identify` carrying both).
//!
//! Scoring that event (once, under the store's once-only guard) first moves `from`'s events,
//! history, limit counts and score to the lead, re-chains the history in ingest order (so each
//! entry's old → new follows the one before, and the score is still the sum of the deltas),
//! records `from` → lead so later events for `from` are credited to the lead, and removes
//! `from`. A lead merged once is never merged again: a repeat of the merge changes nothing.

use super::profile::IDENTIFY_EVENT_TYPE;
use super::StoredEvent;
use serde_json::Value;

pub const ALIAS_EVENT_TYPE: &str = "Alias";

/// The lead this event asks to merge into its own, if any.
pub fn merge_source(event: &StoredEvent) -> Option<String> {
    let field = match event.event_type.as_str() {
        ALIAS_EVENT_TYPE => "previousId",
        IDENTIFY_EVENT_TYPE => "anonymousId",
        _ => return None,
    };
    let metadata: Value = serde_json::from_str(event.metadata.as_deref()?).ok()?;
    let from = match metadata.get(field)? {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (from != event.lead_id).then_some(from)
}

/// The history's old and new scores re-chained from 0 over its deltas, in the order given
/// (ingest order): `(old, new)` per entry. The last `new` is the score.
pub fn rechain(deltas: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut score = 0i64;
    deltas
        .into_iter()
        .map(|delta| {
            let old = score;
            score += delta;
            (old, score)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::domain::queued_event as event;

    #[test]
    fn alias_and_identify_with_both_ids_ask_for_a_merge() {
        assert_eq!(merge_source(&event("Alias", "u", json!({"previousId": "a"}))).as_deref(), Some("a"));
        assert_eq!(merge_source(&event("Identify", "u", json!({"anonymousId": "a"}))).as_deref(), Some("a"));
        assert_eq!(merge_source(&event("Identify", "u", json!({"traits": {}}))), None);
        assert_eq!(merge_source(&event("Alias", "u", json!({"anonymousId": "a"}))), None, "alias names previousId");
        assert_eq!(merge_source(&event("Page View", "u", json!({"previousId": "a"}))), None);
        assert_eq!(merge_source(&event("Alias", "u", json!({"previousId": "u"}))), None, "itself");
        assert_eq!(merge_source(&event("Alias", "u", json!({"previousId": ""}))), None);
        assert_eq!(merge_source(&event("Alias", "u", json!({"previousId": 7}))).as_deref(), Some("7"));
    }

    #[test]
    fn a_rechained_history_runs_from_zero_through_every_delta() {
        assert_eq!(rechain([5, 50, -10, 0]), [(0, 5), (5, 55), (55, 45), (45, 45)]);
        assert!(rechain([]).is_empty());
    }
}
