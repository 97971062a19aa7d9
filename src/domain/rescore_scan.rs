//! Rescoring in ingest order: one pass over every scored event in the order they were
//! scored, instead of lead by lead.
//!
//! On SQLite a lead's events are scattered over the events table, so replaying lead by lead
//! rewrites about one table page per event; a pass in ingest order rewrites each page once.
//! It keeps each lead's replay so far (`rescore::Run`: a sum, a decayed total, its limit
//! counts: with windowed limits, one per window used) in memory, never the events. The new prices are
//! written as the pass goes; what is left per lead is a `Plan`: the move from the score the
//! pass read to the replayed one. A plan rides in the lead's `$rescore` event and is used only
//! if the lead is still as the pass read it (same score, same number of applied events);
//! otherwise scoring the event replays the lead in full, as it always did.

use super::engine::{Engine, Priced, UsageKey};
use super::rescore::{counts, rescore_event, Run, RESCORE_EVENT_TYPE};
use super::time::Millis;
use super::{NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// What one lead needs after an ingest-order pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The lead as the pass read it: the plan holds only while both are still so.
    pub score: i64,
    pub event_count: i64,
    /// Its score after the replay.
    pub target: i64,
    /// Its limit counts after the replay, replacing the stored ones.
    pub usage: Vec<PlannedCount>,
}

/// One limit count: `UsageKey`'s parts and the count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedCount {
    pub lead_id: String,
    pub rule_id: String,
    pub per: String,
    pub window: i64,
    pub count: u32,
}

/// What a pass found: the leads it read, their scored events, and the plans of the leads
/// that need one, in lead id order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Planned {
    pub leads: u64,
    pub events: u64,
    pub plans: Vec<(String, Plan)>,
}

/// The pass: every lead's replay so far, fed events in the order they were scored.
pub struct Scan<'e> {
    engine: &'e Engine,
    half_life_days: Option<f64>,
    leads: HashMap<Box<str>, Run>,
}

impl<'e> Scan<'e> {
    /// A pass over about `leads` leads (room for them is made at once, so the table is never
    /// copied into a bigger one while it holds a million).
    pub fn new(engine: &'e Engine, half_life_days: Option<f64>, leads: usize) -> Self {
        Self { engine, half_life_days, leads: HashMap::with_capacity(leads) }
    }

    /// The next scored event, credited to `lead` (an event of a merged lead is credited to
    /// the lead it was merged into): its new price, if it differs from the stored one.
    pub fn add(&mut self, lead: &str, event: &StoredEvent) -> Option<Priced> {
        let run = match self.leads.get_mut(lead) {
            Some(run) => run,
            None => self.leads.entry(lead.into()).or_default(),
        };
        run.step(self.engine, event, self.half_life_days)
    }

    /// What `lead` needs, given its score, applied-event count and limit counts (as
    /// `rescore::counts` lists them) as stored when its events were read; `None`: nothing.
    /// Its replay is dropped: each lead is planned once.
    pub fn plan(
        &mut self,
        lead: &str,
        score: i64,
        event_count: i64,
        stored: &[(String, u32)],
        now: Millis,
    ) -> Option<Plan> {
        let run = self.leads.remove(lead).unwrap_or_default();
        let target = run.target(self.half_life_days, now);
        let usage = run.into_usage();
        if target == score && counts(&usage) == stored {
            return None;
        }
        let mut usage: Vec<PlannedCount> = usage
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(UsageKey { lead_id, rule_id, per, window }, count)| PlannedCount {
                lead_id,
                rule_id,
                per: per.to_string(),
                window,
                count,
            })
            .collect();
        usage.sort_by(|a, b| (&a.rule_id, &a.per, a.window).cmp(&(&b.rule_id, &b.per, b.window)));
        Some(Plan { score, event_count, target, usage })
    }

    /// Leads with events replayed and not yet planned.
    pub fn leads(&self) -> usize {
        self.leads.len()
    }
}

/// The `$rescore` event carrying `plan`, the `n`th of a pass's run `run` of job `job` (both
/// lowercase hex): numbered, so the SQLite store keys them in order (`event_keys`). A run
/// that resumes a job numbers afresh under its own `run`.
pub fn planned_event(
    job: &str,
    run: &str,
    n: usize,
    lead_id: &str,
    half_life_days: Option<f64>,
    now: Millis,
    plan: &Plan,
) -> NewEvent {
    let mut event = rescore_event(job, lead_id, half_life_days, now);
    event.event_id = format!("{RESCORE_EVENT_TYPE}:{job}.{run}#{n}");
    let mut meta: Value = event.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
    meta["plan"] = serde_json::to_value(plan).unwrap_or_default();
    event.metadata = Some(meta.to_string());
    event
}

/// The plan a `$rescore` event carries, if it carries one that reads.
pub fn plan_of(event: &StoredEvent) -> Option<Plan> {
    let meta: Value = serde_json::from_str(event.metadata.as_deref()?).ok()?;
    serde_json::from_value(meta.get("plan")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::{Limit, Per};
    use crate::domain::rescore::{half_life_of, replay};
    use crate::domain::Rule;
    use proptest::prelude::*;
    use serde_json::json;

    const DAY: Millis = 86_400_000;
    const T0: Millis = 1_714_521_600_000;

    fn rules() -> Vec<Rule> {
        let rule = |id: &str, points: i64, conditions: Value, limit: Option<Limit>| {
            crate::domain::test_rule(id, "Page View", points, conditions, limit)
        };
        vec![
            rule("view", 2, json!([]), Some(Limit { count: 3, per: Per::Day })),
            rule("pricing", 10, json!([{"field": "page", "op": "equals", "value": "/pricing"}]), None),
            rule("once", 7, json!([]), Some(Limit { count: 1, per: Per::Lead })),
        ]
    }

    fn event(seq: i64, lead: usize, ty: &str, day: i64, page: &str, points: i64) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: format!("e{seq}"),
            lead_id: format!("lead{lead}"),
            event_type: ty.into(),
            timestamp: T0 + day * DAY,
            metadata: Some(json!({"page": page}).to_string()),
            received_at: T0,
            processed: true,
            points: Some(points),
            matches: None,
        }
    }

    proptest! {
        /// However the leads' events interleave, the pass prices every event and plans every
        /// lead exactly as replaying that lead on its own does.
        #[test]
        fn the_pass_agrees_with_replaying_each_lead(
            steps in prop::collection::vec((0usize..4, 0usize..3, 0i64..4, 0i64..20, any::<bool>()), 0..60),
            half_life in prop::option::of(1.0f64..60.0),
        ) {
            let engine = Engine::new(&rules());
            let events: Vec<StoredEvent> = steps.iter().enumerate().map(|(i, &(lead, kind, day, points, pricing))| {
                let ty = ["Page View", "Other", "$decay"][kind];
                event(i as i64 + 1, lead, ty, day, if pricing { "/pricing" } else { "/blog" }, points)
            }).collect();
            let now = T0 + 10 * DAY;
            let mut scan = Scan::new(&engine, half_life, 4);
            let mut repriced = Vec::new();
            for e in &events {
                if let Some(p) = scan.add(&e.lead_id, e) {
                    repriced.push((e.seq, p));
                }
            }
            let mut expected = Vec::new();
            for lead in 0..4 {
                let id = format!("lead{lead}");
                let mine: Vec<StoredEvent> = events.iter().filter(|e| e.lead_id == id).cloned().collect();
                let r = replay(&engine, &mine, half_life, now);
                expected.extend(r.repriced.clone());
                if lead % 2 == 0 {
                    // Stored as the replay leaves it: nothing to plan.
                    prop_assert_eq!(scan.plan(&id, r.target, 9, &counts(&r.usage), now), None);
                    continue;
                }
                let plan = scan.plan(&id, 5, 9, &[], now);
                let wanted = (r.target != 5 || !counts(&r.usage).is_empty()).then_some(r.target);
                prop_assert_eq!(plan.as_ref().map(|p| p.target), wanted);
                if let Some(plan) = plan {
                    prop_assert_eq!((plan.score, plan.event_count), (5, 9));
                    let planned: Vec<(String, u32)> = plan.usage.iter().map(|c| {
                        let per = crate::domain::limits::Per::ALL.into_iter().map(Per::as_str).find(|p| *p == c.per).unwrap();
                        let key = UsageKey { lead_id: c.lead_id.clone(), rule_id: c.rule_id.clone(), per, window: c.window };
                        prop_assert_eq!(&key.lead_id, &id);
                        Ok((key.field(), c.count))
                    }).collect::<Result<_, TestCaseError>>()?;
                    let mut planned = planned;
                    planned.sort();
                    prop_assert_eq!(planned, counts(&r.usage));
                }
            }
            expected.sort_by_key(|(seq, _)| *seq);
            prop_assert_eq!(repriced, expected);
            prop_assert_eq!(scan.leads(), 0);
        }
    }

    #[test]
    fn a_lead_already_as_replayed_needs_no_plan() {
        let engine = Engine::new(&rules());
        let mut scan = Scan::new(&engine, None, 1);
        let priced = scan.add("lead0", &event(1, 0, "Page View", 0, "/pricing", 0)).expect("a new price");
        assert_eq!(priced.points, 2 + 10 + 7);
        let stored = vec![("once_lead_0".to_string(), 1), ("view_day_19844".to_string(), 1)];
        assert_eq!(scan.plan("lead0", 19, 1, &stored, T0), None);
        assert_eq!(scan.plan("never-seen", 0, 0, &[], T0), None, "no events, no score: nothing");
        let plan = scan.plan("never-seen-but-scored", 4, 1, &[], T0).unwrap();
        assert_eq!((plan.target, plan.usage.len()), (0, 0));
    }

    #[test]
    fn a_plan_rides_in_its_rescore_event() {
        let plan = Plan {
            score: 3,
            event_count: 2,
            target: 9,
            usage: vec![PlannedCount {
                lead_id: "l".into(),
                rule_id: "r".into(),
                per: "day".into(),
                window: 19844,
                count: 2,
            }],
        };
        let e = planned_event("1ab", "7f", 12, "l", Some(30.0), 5, &plan);
        assert_eq!((e.event_id.as_str(), e.event_type.as_str()), ("$rescore:1ab.7f#12", RESCORE_EVENT_TYPE));
        assert_eq!(e.lead_id, "l");
        let stored = crate::domain::queued_as(e, 1, 5);
        assert_eq!(plan_of(&stored), Some(plan));
        assert_eq!(half_life_of(&stored), Some(30.0));
        assert_eq!(plan_of(&StoredEvent { metadata: Some("{\"job\":\"j\"}".into()), ..stored }), None);
    }
}
