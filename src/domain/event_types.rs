//! The event types the dashboard's test form offers: one choice per type that an active rule
//! scores, labelled with what it is worth. Worked out on the server, so the browser receives
//! two strings per type rather than the rules (whose types are KBs of WASM to read).

use super::Rule;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeChoice {
    pub event_type: String,
    /// `Page View (+5)` for one plain rule; `Demo Request (3 rules)` or `(1 rule)` when
    /// conditions or a limit decide what it is worth.
    pub label: String,
}

/// In the order the rules come (the first rule of a type places it).
pub fn event_type_choices(rules: &[Rule]) -> Vec<EventTypeChoice> {
    let mut types: Vec<(&str, Vec<&Rule>)> = Vec::new();
    for rule in rules.iter().filter(|r| r.is_active) {
        match types.iter_mut().find(|(t, _)| *t == rule.event_type) {
            Some((_, list)) => list.push(rule),
            None => types.push((&rule.event_type, vec![rule])),
        }
    }
    types
        .into_iter()
        .map(|(event_type, list)| {
            let label = match list.as_slice() {
                [only] if only.conditions.is_empty() && only.limit.is_none() => {
                    format!("{event_type} ({:+})", only.points)
                }
                [_] => format!("{event_type} (1 rule)"),
                _ => format!("{event_type} ({} rules)", list.len()),
            };
            EventTypeChoice { event_type: event_type.to_string(), label }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::{Limit, Per};

    fn rule(event_type: &str, points: i64, active: bool) -> Rule {
        Rule {
            id: format!("{event_type}-{points}"),
            name: String::new(),
            event_type: event_type.into(),
            points,
            is_active: active,
            conditions: vec![],
            limit: None,
            base: true,
            updated_at: 0,
        }
    }

    #[test]
    fn one_choice_per_active_type_with_its_worth() {
        let mut capped = rule("Email Open", 2, true);
        capped.limit = Some(Limit { count: 3, per: Per::Day });
        let rules = [
            rule("Page View", 5, true),
            rule("Demo Request", 50, true),
            rule("Page View", 10, true),
            rule("Unsubscribe", -20, true),
            rule("Webinar", 40, false),
            capped,
        ];
        let got: Vec<(String, String)> =
            event_type_choices(&rules).into_iter().map(|c| (c.event_type, c.label)).collect();
        let want = [
            ("Page View", "Page View (2 rules)"),
            ("Demo Request", "Demo Request (+50)"),
            ("Unsubscribe", "Unsubscribe (-20)"),
            ("Email Open", "Email Open (1 rule)"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }
}
