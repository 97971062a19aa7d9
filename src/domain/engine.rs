//! The scoring model with conditions and limits, pure. Every active rule of an event's type
//! whose conditions all hold adds its points (negative allowed), unless its frequency limit
//! for this lead and window is used up; an event no rule matches scores 0 and is still
//! logged. Each priced event says which rules matched and what each added, so a lead's page
//! can explain every change.
//!
//! Limits need memory across events: the caller keeps how many events each limited rule has
//! scored per lead and window (`Usage`), loads it for the keys `limited_keys` names before a
//! batch, and stores the increments `price` makes together with the scores.

use super::conditions::Condition;
use super::limits::Limit;
#[cfg(test)]
use super::limits::Per;
use super::webhooks::Outbox;
use super::{Rule, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// A validated rule from the API or the rule form (`validation::validate_scoring_rule`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDraft {
    pub name: Option<String>,
    pub event_type: String,
    pub points: i64,
    pub is_active: bool,
    pub conditions: Vec<Condition>,
    pub limit: Option<Limit>,
    /// Only `eventType`, `points` and `isActive` were sent: `POST /api/rules` keeps its old
    /// meaning and upserts the condition-free rule of that type, so old clients keep working.
    pub legacy: bool,
}

/// One rule's part in an event's score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RuleMatch {
    pub rule_id: String,
    pub name: String,
    /// What the rule added: its points, or 0 when its limit held it back.
    pub points: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limited: bool,
}

/// A limited rule's count for one lead in one window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub lead_id: String,
    pub rule_id: String,
    pub per: PerKey,
    pub window: i64,
}

impl UsageKey {
    /// The key as one name, `<rule id>_<per>_<window>`, without the lead (a count kept on
    /// the lead's own record, or compared with one). A rule id other than letters and digits
    /// is hex-encoded, so the name is never a path in a document store (no `.` or `$`).
    pub fn field(&self) -> String {
        let id = if self.rule_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            self.rule_id.clone()
        } else {
            format!("x{}", self.rule_id.bytes().map(|b| format!("{b:02x}")).collect::<String>())
        };
        format!("{id}_{}_{}", self.per, self.window)
    }
}

/// `Per` as part of a key (a rule whose window changes starts counting afresh).
pub type PerKey = &'static str;

/// Events each limited rule has scored, per lead and window.
pub type Usage = HashMap<UsageKey, u32>;

#[derive(Clone, Debug, PartialEq)]
pub struct Priced {
    pub points: i64,
    pub matches: Vec<RuleMatch>,
}

impl Priced {
    /// The explanation as stored with the event (`explanation::to_text`): `None` when no rule
    /// matched.
    pub fn matches_json(&self) -> Option<String> {
        (!self.matches.is_empty()).then(|| super::explanation::to_text(&self.matches))
    }
}

/// An event's pricing as far as it goes without stored counts (`Engine::prepare`).
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The rules of its type whose conditions hold, by their place among them.
    matched: Vec<usize>,
    /// Its price, when no matched rule is limited (then nothing stored can change it).
    pub priced: Option<Priced>,
    /// That price's explanation as stored (`Priced::matches_json`).
    pub matches_json: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    by_type: HashMap<String, Vec<Rule>>,
    /// Who hears of the score changes pricing makes (webhooks), written with them.
    outbox: Outbox,
}

impl Engine {
    /// The active rules, by event type, in the order given (the order matches are listed in).
    pub fn new(rules: &[Rule]) -> Self {
        let mut by_type: HashMap<String, Vec<Rule>> = HashMap::new();
        for rule in rules.iter().filter(|r| r.is_active) {
            by_type.entry(rule.event_type.clone()).or_default().push(rule.clone());
        }
        Self { by_type, outbox: Outbox::default() }
    }

    /// The webhook subscriptions to write deliveries for, along with the score changes.
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = outbox;
        self
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether any rule has a limit (then `apply` keeps usage counts at all).
    pub fn has_limits(&self) -> bool {
        self.by_type.values().flatten().any(|r| r.limit.is_some())
    }

    /// The usage counts pricing `events` will read: load these before calling `price`.
    pub fn limited_keys(&self, events: &[StoredEvent]) -> Vec<UsageKey> {
        let mut keys: Vec<UsageKey> = events
            .iter()
            .flat_map(|e| {
                let metadata = self.metadata(e);
                self.matching(e, metadata.as_ref())
                    .filter_map(|rule| rule.limit.map(|limit| key(e, rule, limit)))
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Prices one event and counts it against the limits it uses. Events must come in the
    /// order they are scored in, so "the first N" means the same thing on every replay.
    pub fn price(&self, event: &StoredEvent, usage: &mut Usage) -> Priced {
        if event.event_type == super::decay::DECAY_EVENT_TYPE {
            return super::decay::price(event.metadata.as_deref());
        }
        let metadata = self.metadata(event);
        let matched: Vec<&Rule> = self.matching(event, metadata.as_ref()).collect();
        price_matched(event, &matched, usage)
    }

    /// What pricing `event` needs that reads no stored counts, worked out before the store's
    /// transaction (so off the one writer thread): the rules whose conditions hold, and the
    /// price itself when none of them is limited.
    pub fn prepare(&self, event: &StoredEvent) -> Prepared {
        if event.event_type == super::decay::DECAY_EVENT_TYPE {
            let priced = super::decay::price(event.metadata.as_deref());
            return Prepared { matched: Vec::new(), matches_json: priced.matches_json(), priced: Some(priced) };
        }
        let metadata = self.metadata(event);
        let rules = self.rules_of(event);
        let matched: Vec<usize> =
            (0..rules.len()).filter(|&i| rules[i].conditions.iter().all(|c| c.holds(metadata.as_ref()))).collect();
        if matched.iter().any(|&i| rules[i].limit.is_some()) {
            return Prepared { matched, priced: None, matches_json: None };
        }
        let chosen: Vec<&Rule> = matched.iter().map(|&i| &rules[i]).collect();
        let priced = price_matched(event, &chosen, &mut Usage::new());
        Prepared { matched, matches_json: priced.matches_json(), priced: Some(priced) }
    }

    /// `price` after `prepare`, loading the counts the event's limited rules read with `load`
    /// first. Returns the counts as pricing left them (the caller keeps them only if the
    /// event is really added).
    pub fn price_prepared<E>(
        &self,
        event: &StoredEvent,
        prepared: &Prepared,
        load: impl FnOnce(Vec<UsageKey>) -> Result<Usage, E>,
    ) -> Result<(Priced, Usage), E> {
        if let Some(priced) = &prepared.priced {
            return Ok((priced.clone(), Usage::new()));
        }
        let rules = self.rules_of(event);
        let matched: Vec<&Rule> = prepared.matched.iter().filter_map(|&i| rules.get(i)).collect();
        let keys = matched.iter().filter_map(|rule| rule.limit.map(|limit| key(event, rule, limit))).collect();
        let mut usage = load(keys)?;
        let priced = price_matched(event, &matched, &mut usage);
        Ok((priced, usage))
    }

    fn matching<'a>(&'a self, event: &StoredEvent, metadata: Option<&'a Value>) -> impl Iterator<Item = &'a Rule> {
        self.rules_of(event).iter().filter(move |r| r.conditions.iter().all(|c| c.holds(metadata)))
    }

    fn rules_of(&self, event: &StoredEvent) -> &[Rule] {
        self.by_type.get(&event.event_type).map(Vec::as_slice).unwrap_or_default()
    }

    /// The event's metadata, parsed only when one of its type's rules has a condition.
    fn metadata(&self, event: &StoredEvent) -> Option<Value> {
        if self.rules_of(event).iter().all(|r| r.conditions.is_empty()) {
            return None;
        }
        event.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok())
    }
}

/// Adds up the rules an event matched, each within its limit, counting in `usage`.
fn price_matched(event: &StoredEvent, matched: &[&Rule], usage: &mut Usage) -> Priced {
    let mut priced = Priced { points: 0, matches: Vec::with_capacity(matched.len()) };
    for &rule in matched {
        let limited = match rule.limit {
            None => false,
            Some(limit) => {
                let used = usage.entry(key(event, rule, limit)).or_insert(0);
                let full = *used >= limit.count;
                if !full {
                    *used += 1;
                }
                full
            }
        };
        let points = if limited { 0 } else { rule.points };
        priced.points = priced.points.saturating_add(points);
        priced.matches.push(RuleMatch { rule_id: rule.id.clone(), name: rule.name.clone(), points, limited });
    }
    priced
}

fn key(event: &StoredEvent, rule: &Rule, limit: Limit) -> UsageKey {
    UsageKey {
        lead_id: event.lead_id.clone(),
        rule_id: rule.id.clone(),
        per: limit.per.as_str(),
        window: limit.per.window(event.timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iso;
    use serde_json::json;

    fn rule(id: &str, event_type: &str, points: i64, conditions: Value, limit: Option<Limit>) -> Rule {
        crate::domain::test_rule(id, event_type, points, conditions, limit)
    }

    fn event(seq: i64, lead: &str, event_type: &str, at: &str, metadata: Value) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: format!("e{seq}"),
            lead_id: lead.into(),
            event_type: event_type.into(),
            timestamp: parse_iso(at).unwrap(),
            metadata: (!metadata.is_null()).then(|| metadata.to_string()),
            received_at: 0,
            processed: false,
            points: None,
            matches: None,
        }
    }

    #[test]
    fn every_matching_rule_adds_its_points() {
        let engine = Engine::new(&[
            rule("any-view", "Page View", 5, json!([]), None),
            rule("pricing", "Page View", 20, json!([{"field": "page", "op": "equals", "value": "/pricing"}]), None),
            rule("blog", "Page View", -2, json!([{"field": "page", "op": "startsWith", "value": "/blog"}]), None),
            Rule { is_active: false, ..rule("off", "Page View", 1000, json!([]), None) },
        ]);
        let mut usage = Usage::new();
        let pricing =
            engine.price(&event(1, "l", "Page View", "2024-05-01T12:00:00Z", json!({"page": "/Pricing"})), &mut usage);
        assert_eq!(pricing.points, 25);
        let ids: Vec<&str> = pricing.matches.iter().map(|m| m.rule_id.as_str()).collect();
        assert_eq!(ids, ["any-view", "pricing"], "in rule order; inactive rules never match");
        let blog =
            engine.price(&event(2, "l", "Page View", "2024-05-01T12:00:00Z", json!({"page": "/blog/x"})), &mut usage);
        assert_eq!(blog.points, 3);
        let bare = engine.price(&event(3, "l", "Page View", "2024-05-01T12:00:00Z", Value::Null), &mut usage);
        assert_eq!(bare.points, 5, "no metadata: only the condition-free rule");
        let unknown = engine.price(&event(4, "l", "Webinar", "2024-05-01T12:00:00Z", Value::Null), &mut usage);
        assert_eq!((unknown.points, unknown.matches.len()), (0, 0), "scores 0, still logged by the caller");
    }

    #[test]
    fn limits_count_per_lead_and_window_and_say_when_they_hold_back() {
        let once = Limit { count: 1, per: Per::Lead };
        let twice_a_day = Limit { count: 2, per: Per::Day };
        let engine = Engine::new(&[
            rule("newsletter", "Email Open", 10, json!([]), Some(once)),
            rule("visit", "Page View", 3, json!([]), Some(twice_a_day)),
        ]);
        let mut usage = Usage::new();
        let mut points =
            |seq, lead: &str, t: &str, at: &str| engine.price(&event(seq, lead, t, at, Value::Null), &mut usage);
        assert_eq!(points(1, "a", "Email Open", "2024-05-01T08:00:00Z").points, 10);
        let again = points(2, "a", "Email Open", "2024-06-01T08:00:00Z");
        assert_eq!(again.points, 0, "non-repeatable: once per lead, ever");
        assert_eq!(
            again.matches,
            [RuleMatch { rule_id: "newsletter".into(), name: "newsletter".into(), points: 0, limited: true }]
        );
        assert_eq!(points(3, "b", "Email Open", "2024-05-01T08:00:00Z").points, 10, "another lead has its own count");
        let day: Vec<i64> =
            ["2024-05-01T00:00:00Z", "2024-05-01T12:00:00Z", "2024-05-01T23:59:59Z", "2024-05-02T00:00:00Z"]
                .iter()
                .enumerate()
                .map(|(i, at)| points(10 + i as i64, "a", "Page View", at).points)
                .collect();
        assert_eq!(day, [3, 3, 0, 3], "two a day; the next day counts afresh");
        // A late event lands in its own day's window, which still has room.
        assert_eq!(points(20, "a", "Page View", "2024-04-30T10:00:00Z").points, 3);
    }

    #[test]
    fn limited_keys_name_exactly_what_pricing_reads() {
        let engine = Engine::new(&[
            rule(
                "pricing",
                "Page View",
                20,
                json!([{"field": "page", "op": "equals", "value": "/pricing"}]),
                Some(Limit { count: 1, per: Per::Week }),
            ),
            rule("free", "Page View", 1, json!([]), None),
        ]);
        let events = [
            event(1, "a", "Page View", "2024-05-01T00:00:00Z", json!({"page": "/pricing"})),
            event(2, "a", "Page View", "2024-05-02T00:00:00Z", json!({"page": "/pricing"})),
            event(3, "b", "Page View", "2024-05-02T00:00:00Z", json!({"page": "/docs"})),
        ];
        let keys = engine.limited_keys(&events);
        assert_eq!(keys.len(), 1, "same lead, same week: one key; b matches no limited rule");
        let mut usage: Usage = keys.into_iter().map(|k| (k, 0)).collect();
        let total: i64 = events.iter().map(|e| engine.price(e, &mut usage).points).sum();
        assert_eq!(total, 20 + 1 + 1 + 1);
        assert_eq!(usage.len(), 1, "pricing touched no other key");
        // One event at a time, loading what it reads: the same prices.
        let mut counts = Usage::new();
        let mut asked = Vec::new();
        let loaded: Vec<i64> = events
            .iter()
            .map(|e| {
                let load = |keys: Vec<UsageKey>| -> Result<Usage, ()> {
                    asked.push(keys.len());
                    Ok(keys.into_iter().map(|k| (k.clone(), counts.get(&k).copied().unwrap_or(0))).collect())
                };
                let (priced, used) = engine.price_prepared(e, &engine.prepare(e), load).unwrap();
                counts.extend(used);
                priced.points
            })
            .collect();
        assert_eq!(loaded, [21, 1, 1]);
        assert_eq!(asked, [1, 1], "each event loads only its own limited rule's count; b's loads none");
        let (limited, free) = (engine.prepare(&events[0]), engine.prepare(&events[2]));
        assert_eq!(limited.priced, None, "a limited rule matched: priced with the counts");
        assert_eq!(free.priced.as_ref().map(|p| p.points), Some(1), "priced beforehand");
        assert_eq!(free.matches_json, free.priced.unwrap().matches_json());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn arb_event() -> impl Strategy<Value = (usize, usize, i64, bool)> {
            (0..3usize, 0..2usize, 0..40i64 * 86_400_000, any::<bool>())
        }

        proptest! {
            /// Whatever the events, in whatever order: a limited rule never scores more than
            /// its count per lead and window, an event's points are the sum of its matches,
            /// and pricing the same events again from the same counts gives the same result.
            #[test]
            fn limits_are_never_exceeded(events in proptest::collection::vec(arb_event(), 0..200), count in 1u32..4, per in 0..4usize) {
                let per = Per::ALL[per];
                let engine = Engine::new(&[
                    rule("limited", "Page View", 7, json!([{"field": "page", "op": "exists"}]), Some(Limit { count, per })),
                    rule("free", "Page View", 1, json!([]), None),
                ]);
                let stored: Vec<StoredEvent> = events.iter().enumerate().map(|(i, (lead, kind, at, page))| StoredEvent {
                    seq: i as i64,
                    event_id: format!("e{i}"),
                    lead_id: format!("lead-{lead}"),
                    event_type: ["Page View", "Purchase"][*kind].into(),
                    timestamp: *at,
                    metadata: page.then(|| r#"{"page": "/x"}"#.to_string()),
                    received_at: 0,
                    processed: false,
                    points: None,
                    matches: None,
                }).collect();
                let run = || {
                    let mut usage = Usage::new();
                    let priced: Vec<Priced> = stored.iter().map(|e| engine.price(e, &mut usage)).collect();
                    (priced, usage)
                };
                let (priced, usage) = run();
                let mut scored: HashMap<(String, i64), u32> = HashMap::new();
                for (e, p) in stored.iter().zip(&priced) {
                    prop_assert_eq!(p.points, p.matches.iter().map(|m| m.points).sum::<i64>());
                    if p.matches.iter().any(|m| m.rule_id == "limited" && !m.limited) {
                        *scored.entry((e.lead_id.clone(), per.window(e.timestamp))).or_default() += 1;
                    }
                }
                prop_assert!(scored.values().all(|n| *n <= count), "{:?}", scored);
                prop_assert!(usage.values().all(|n| *n <= count));
                prop_assert_eq!(run().0, priced);
            }
        }
    }
}
