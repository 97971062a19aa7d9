//! The rules a new store starts with.

use super::model::RuleInput;

/// The rules seeded into an empty store on first start (the old app's defaults), each its
/// event type's base rule.
pub fn default_rules() -> Vec<RuleInput> {
    [("Page View", 5), ("Email Open", 10), ("Form Submission", 20), ("Demo Request", 50), ("Purchase", 100)]
        .into_iter()
        .map(|(t, p)| RuleInput { event_type: t.to_string(), points: p, is_active: true })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::engine::{Engine, Usage};
    use crate::domain::{Rule, StoredEvent};

    fn rule(t: &str, points: i64, is_active: bool) -> Rule {
        Rule {
            id: format!("id-{t}"),
            name: t.into(),
            event_type: t.into(),
            points,
            is_active,
            conditions: Vec::new(),
            limit: None,
            base: true,
            updated_at: 0,
        }
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
            matches: None,
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
        let engine =
            Engine::new(&[rule("Page View", 5, true), rule("Purchase", 100, false), rule("Refund", -40, true)]);
        let mut usage = Usage::new();
        let mut points = |t: &str| engine.price(&event(1, t), &mut usage).points;
        assert_eq!(points("Page View"), 5);
        assert_eq!(points("Refund"), -40);
        assert_eq!(points("Purchase"), 0);
        assert_eq!(points("page view"), 0, "event types are exact, case-sensitive keys");
        assert_eq!(points("Webinar"), 0);
    }
}
