//! The rules engine: which event types are worth how many points.

use super::model::{Rule, RuleInput, ScoredEvent, StoredEvent};
use std::collections::HashMap;

/// The rules seeded into an empty store on first start (the old app's defaults).
pub fn default_rules() -> Vec<RuleInput> {
    [("Page View", 5), ("Email Open", 10), ("Form Submission", 20), ("Demo Request", 50), ("Purchase", 100)]
        .into_iter()
        .map(|(t, p)| RuleInput { event_type: t.to_string(), points: p, is_active: true })
        .collect()
}

/// A snapshot of the rules, looked up by event type.
#[derive(Clone, Debug, Default)]
pub struct RuleBook {
    points: HashMap<String, i64>,
}

impl RuleBook {
    pub fn new(rules: &[Rule]) -> Self {
        let points = rules.iter().filter(|r| r.is_active).map(|r| (r.event_type.clone(), r.points)).collect();
        Self { points }
    }

    /// Points for an event type: the active rule's, or 0 for unknown and inactive types
    /// (the event is still logged and gets a history entry with delta 0).
    pub fn points_for(&self, event_type: &str) -> i64 {
        self.points.get(event_type).copied().unwrap_or(0)
    }

    /// Prices a batch of stored events, keeping their queue order.
    pub fn score(&self, events: &[StoredEvent]) -> Vec<ScoredEvent> {
        events
            .iter()
            .map(|e| ScoredEvent {
                seq: e.seq,
                event_id: e.event_id.clone(),
                lead_id: e.lead_id.clone(),
                event_type: e.event_type.clone(),
                timestamp: e.timestamp,
                points: self.points_for(&e.event_type),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: &str, points: i64, is_active: bool) -> Rule {
        Rule { event_type: t.into(), points, is_active, updated_at: 0 }
    }

    fn event(seq: i64, t: &str) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: format!("e{seq}"),
            lead_id: "l".into(),
            event_type: t.into(),
            timestamp: 0,
            metadata: None,
            received_at: 0,
            processed: false,
            points: None,
        }
    }

    #[test]
    fn defaults_are_the_old_apps_five_rules() {
        let d = default_rules();
        let pairs: Vec<_> = d.iter().map(|r| (r.event_type.as_str(), r.points, r.is_active)).collect();
        assert_eq!(
            pairs,
            [
                ("Page View", 5, true),
                ("Email Open", 10, true),
                ("Form Submission", 20, true),
                ("Demo Request", 50, true),
                ("Purchase", 100, true)
            ]
        );
    }

    #[test]
    fn active_rules_score_inactive_and_unknown_score_zero() {
        let book =
            RuleBook::new(&[rule("Page View", 5, true), rule("Purchase", 100, false), rule("Refund", -40, true)]);
        assert_eq!(book.points_for("Page View"), 5);
        assert_eq!(book.points_for("Refund"), -40);
        assert_eq!(book.points_for("Purchase"), 0);
        assert_eq!(book.points_for("page view"), 0, "event types are exact, case-sensitive keys");
        assert_eq!(book.points_for("Webinar"), 0);
    }

    #[test]
    fn score_keeps_order_and_identity() {
        let book = RuleBook::new(&[rule("A", 3, true)]);
        let scored = book.score(&[event(2, "A"), event(5, "B"), event(9, "A")]);
        let got: Vec<_> = scored.iter().map(|s| (s.seq, s.event_id.as_str(), s.points)).collect();
        assert_eq!(got, [(2, "e2", 3), (5, "e5", 0), (9, "e9", 3)]);
    }
}
