//! Rescoring: every lead's stored events replayed with the rules (and decay) as they are now,
//! as Pardot and HubSpot re-evaluate everyone after a rule is published.
//!
//! A rescore job walks the leads and records one `$rescore` event for each lead the current
//! rules would score differently. The worker scores it like any other event, which makes it
//! exactly-once and crash-safe for free; scoring it *is* the replay: under the store's
//! once-only guard it re-prices the lead's scored events in ingest order from fresh limit
//! counts, stores their new points and explanations, replaces the lead's limit counts, and
//! adds the difference between the replayed total and the score as the event's points. So the
//! score stays the sum of its history (one `$rescore` entry for the difference), and events
//! scored after it meet the counts a from-scratch replay would have left.

use super::decay::Decayed;
use super::engine::{Engine, Priced, RuleMatch, Usage};
use super::time::{iso, iso_opt, Millis};
use super::{NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const RESCORE_EVENT_TYPE: &str = "$rescore";

/// Events Leadscore writes itself (`$decay`, `$rescore`): corrections, not the lead's
/// activity. A replay or a decay pass leaves their points out.
pub fn is_adjustment(event_type: &str) -> bool {
    event_type.starts_with('$')
}

/// What replaying one lead's scored events gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// The events whose points or explanation change, by `seq`, with their new price.
    pub repriced: Vec<(i64, Priced)>,
    /// The lead's limit counts after the replay: they replace the stored ones.
    pub usage: Usage,
    /// The score a from-scratch replay gives: the plain sum of the new points, or with decay
    /// their decayed total at `now`, rounded.
    pub target: i64,
}

/// Replays `events` (one lead's scored events, in ingest order) with `engine`.
pub fn replay(engine: &Engine, events: &[StoredEvent], half_life_days: Option<f64>, now: Millis) -> Replay {
    let mut run = Run::default();
    let mut repriced = Vec::new();
    for event in events {
        if let Some(priced) = run.step(engine, event, half_life_days) {
            repriced.push((event.seq, priced));
        }
    }
    Replay { repriced, target: run.target(half_life_days, now), usage: run.into_usage() }
}

/// One lead's replay so far: what `replay` keeps between events, and what an ingest-order
/// pass (`rescore_scan::Scan`) keeps per lead, so both price exactly alike.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Boxed, and only once a limit counts something: a pass keeps a million of these.
    usage: Option<Box<Usage>>,
    sum: i64,
    decayed: Decayed,
}

impl Run {
    /// Prices the lead's next scored event: its new price, if that differs from the stored
    /// one. Adjustments are left out (`None`).
    pub fn step(&mut self, engine: &Engine, event: &StoredEvent, half_life_days: Option<f64>) -> Option<Priced> {
        if is_adjustment(&event.event_type) {
            return None;
        }
        let priced = match &mut self.usage {
            Some(usage) => engine.price(event, usage),
            None => {
                let mut fresh = Usage::new();
                let priced = engine.price(event, &mut fresh);
                if !fresh.is_empty() {
                    self.usage = Some(Box::new(fresh));
                }
                priced
            }
        };
        self.sum = self.sum.saturating_add(priced.points);
        if let Some(h) = half_life_days {
            if priced.points != 0 {
                self.decayed = self.decayed.add(priced.points, event.timestamp, h);
            }
        }
        let same = event.points == Some(priced.points)
            && event.matches.as_deref().unwrap_or_default() == priced.matches.as_slice();
        (!same).then_some(priced)
    }

    /// The limit counts the replay left.
    pub fn into_usage(self) -> Usage {
        self.usage.map(|u| *u).unwrap_or_default()
    }

    /// The score a from-scratch replay gives: the plain sum of the new points, or with decay
    /// their decayed total at `now`, rounded.
    pub fn target(&self, half_life_days: Option<f64>, now: Millis) -> i64 {
        match half_life_days {
            None => self.sum,
            Some(h) => {
                let exact = self.decayed.at(now, h).value.round();
                if exact.is_finite() {
                    exact as i64
                } else {
                    self.sum
                }
            }
        }
    }
}

/// Whether a lead needs a `$rescore` event: its scoring was under way as it was read, or the
/// replay changes its score, an event's points or explanation, or its limit counts.
pub fn needs_replay(replay: &Replay, lead: &LeadEvents) -> bool {
    lead.busy || replay.target != lead.score || !replay.repriced.is_empty() || counts(&replay.usage) != lead.usage
}

/// Limit counts by `UsageKey::field`, sorted, leaving out zeros: as `LeadEvents::usage`.
pub fn counts(usage: &Usage) -> Vec<(String, u32)> {
    let mut all: Vec<(String, u32)> = usage.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.field(), *n)).collect();
    all.sort();
    all
}

/// The event job `job` records for a lead. Its id names the job and the lead, so a job that
/// resumes after a crash records each lead's event once.
pub fn rescore_event(job: &str, lead_id: &str, half_life_days: Option<f64>, now: Millis) -> NewEvent {
    NewEvent {
        event_id: format!("{RESCORE_EVENT_TYPE}:{job}:{lead_id}"),
        lead_id: lead_id.to_string(),
        event_type: RESCORE_EVENT_TYPE.to_string(),
        timestamp: now,
        metadata: Some(json!({"job": job, "halfLifeDays": half_life_days}).to_string()),
    }
}

/// The half-life a `$rescore` event replays with (as the job read the setting).
pub fn half_life_of(event: &StoredEvent) -> Option<f64> {
    let meta: Value = event.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok())?;
    meta.get("halfLifeDays").and_then(Value::as_f64)
}

/// The `$rescore` event's own price: the difference between the replayed total and the
/// score it found.
pub fn difference(replay: &Replay, score: i64) -> Priced {
    adjustment(replay.target, score)
}

/// The `$rescore` event's price that moves a lead from `score` to `target`.
pub fn adjustment(target: i64, score: i64) -> Priced {
    let points = target.saturating_sub(score);
    let name = "Rescore with the current rules".to_string();
    Priced { points, matches: vec![RuleMatch { rule_id: RESCORE_EVENT_TYPE.into(), name, points, limited: false }] }
}

/// One lead as a rescore job reads it: its score and its scored events in ingest order.
#[derive(Clone, Debug, PartialEq)]
pub struct LeadEvents {
    pub lead_id: String,
    pub score: i64,
    pub events: Vec<StoredEvent>,
    /// Its stored limit counts, as `counts` lists them.
    pub usage: Vec<(String, u32)>,
    /// Its scoring was under way as it was read (MongoDB), so score and events may not
    /// agree: it gets a `$rescore` event whatever they say.
    pub busy: bool,
}

/// One page of leads in id order, and where the next starts (`None`: this was the last).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RescorePage {
    pub leads: Vec<LeadEvents>,
    pub next: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A rescore job, as `GET /api/rescore/:id` answers and as it is kept (a setting), so a
/// restart resumes it where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RescoreJob {
    pub id: String,
    pub state: JobState,
    /// Scored events replayed so far, of about `total` (events stored when it started; more
    /// arrive meanwhile, and those are scored with the new rules as they come).
    pub processed: u64,
    pub total: u64,
    /// Leads read, and leads whose replay changed something (one `$rescore` entry each).
    pub leads: u64,
    pub adjusted: u64,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub started_at: Millis,
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<Millis>,
    /// Leads an ingest-order pass found to adjust (`domain::rescore_scan`), once it has read
    /// every event: `adjusted` counts up to it. Absent for a job that goes lead by lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_adjust: Option<u64>,
    /// The half-life the job replays decay with (`null`: none).
    pub half_life_days: Option<f64>,
    /// The last lead read: where a resumed job goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the rules page shows: the latest job, and whether a rule changed after it started
/// (then past events are scored by older rules than new ones are).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RescoreStatus {
    pub job: Option<RescoreJob>,
    pub rules_changed: bool,
    /// The server's clock, for the rate and time left.
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub now: Millis,
}

impl RescoreJob {
    pub fn new(id: String, total: u64, half_life_days: Option<f64>, now: Millis) -> Self {
        Self {
            id,
            state: JobState::Running,
            processed: 0,
            total,
            leads: 0,
            adjusted: 0,
            started_at: now,
            finished_at: None,
            to_adjust: None,
            half_life_days,
            cursor: None,
            error: None,
        }
    }

    /// Done so far, 0 to 1.
    pub fn fraction(&self) -> f64 {
        match self.state {
            JobState::Done => 1.0,
            _ if self.total == 0 => 0.0,
            _ => (self.processed as f64 / self.total as f64).min(1.0),
        }
    }

    /// Events per second so far, and seconds left at that rate (while running).
    pub fn rate(&self, now: Millis) -> (f64, Option<f64>) {
        let end = self.finished_at.unwrap_or(now);
        let secs = ((end - self.started_at).max(1) as f64) / 1000.0;
        let rate = self.processed as f64 / secs;
        let left = (self.state == JobState::Running && rate > 0.0)
            .then(|| self.total.saturating_sub(self.processed) as f64 / rate);
        (rate, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::{Limit, Per};
    use crate::domain::time::parse_iso;
    use crate::domain::Rule;

    const DAY: Millis = 86_400_000;

    fn rule(id: &str, points: i64, conditions: Value, limit: Option<Limit>) -> Rule {
        crate::domain::test_rule(id, "Page View", points, conditions, limit)
    }

    fn scored(seq: i64, ty: &str, at: Millis, page: &str, points: i64) -> StoredEvent {
        StoredEvent {
            seq,
            event_id: format!("e{seq}"),
            lead_id: "lead".into(),
            event_type: ty.into(),
            timestamp: at,
            metadata: Some(json!({"page": page}).to_string()),
            received_at: at,
            processed: true,
            points: Some(points),
            matches: None,
        }
    }

    #[test]
    fn a_replay_reprices_in_order_from_fresh_counts_and_skips_adjustments() {
        let t0 = parse_iso("2024-05-01T12:00:00Z").unwrap();
        let engine = Engine::new(&[
            rule("view", 1, json!([]), None),
            rule(
                "pricing",
                10,
                json!([{"field": "page", "op": "equals", "value": "/pricing"}]),
                Some(Limit { count: 1, per: Per::Lead }),
            ),
        ]);
        let events = [
            scored(1, "Page View", t0, "/pricing", 1),
            scored(2, "$decay", t0, "", -1),
            scored(3, "Page View", t0 + DAY, "/pricing", 1),
            scored(4, "Page View", t0 + DAY, "/blog", 1),
        ];
        let r = replay(&engine, &events, None, t0 + 2 * DAY);
        assert_eq!(r.target, 11 + 1 + 1, "the limit lets the first pricing view count, not the second");
        let seqs: Vec<i64> = r.repriced.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 3, 4], "every event's explanation changed; the decay entry is left alone");
        assert!(r.repriced[1].1.matches[1].limited);
        assert_eq!(r.usage.values().copied().collect::<Vec<_>>(), [1], "one count: the limit, used once");
        let mut read =
            LeadEvents { lead_id: "lead".into(), score: 3, events: events.to_vec(), usage: vec![], busy: false };
        assert!(needs_replay(&r, &read));
        let price = difference(&r, 3);
        assert_eq!((price.points, price.matches[0].rule_id.as_str()), (10, RESCORE_EVENT_TYPE));

        // Already scored this way: nothing to do.
        let plain = Engine::new(&[rule("view", 1, json!([]), None)]);
        let mut settled: Vec<StoredEvent> = events.to_vec();
        for e in &mut settled {
            if !is_adjustment(&e.event_type) {
                e.matches =
                    Some(vec![RuleMatch { rule_id: "view".into(), name: "view".into(), points: 1, limited: false }]);
            }
        }
        let r = replay(&plain, &settled, None, t0);
        assert!(r.repriced.is_empty() && r.usage.is_empty());
        assert!(!needs_replay(&r, &read));
        read.score = 2;
        assert!(needs_replay(&r, &read), "a score off by the decay entry needs one");
        read.score = 3;
        read.usage = vec![("view_day_19844".into(), 1)];
        assert!(needs_replay(&r, &read), "counts the replay would not leave need one");
        read.usage = vec![];
        read.busy = true;
        assert!(needs_replay(&r, &read), "a lead read while it was being scored gets one anyway");
    }

    #[test]
    fn with_decay_the_target_is_the_decayed_total_rounded() {
        let t0 = parse_iso("2024-05-01T00:00:00Z").unwrap();
        let engine = Engine::new(&[rule("view", 100, json!([]), None)]);
        let events = [scored(1, "Page View", t0, "/", 100), scored(2, "Page View", t0 + 30 * DAY, "/", 100)];
        let r = replay(&engine, &events, Some(30.0), t0 + 30 * DAY);
        assert_eq!(r.target, 150);
        assert_eq!(replay(&engine, &events, None, t0 + 30 * DAY).target, 200);
    }

    #[test]
    fn rescore_events_name_their_job_and_half_life() {
        let e = rescore_event("r1", "lead-9", Some(30.0), 5);
        assert_eq!((e.event_id.as_str(), e.event_type.as_str()), ("$rescore:r1:lead-9", RESCORE_EVENT_TYPE));
        let stored = crate::domain::queued_as(e, 1, 5);
        assert_eq!(half_life_of(&stored), Some(30.0));
        assert_eq!(half_life_of(&StoredEvent { metadata: None, ..stored }), None);
    }

    #[test]
    fn progress_and_rate() {
        let mut job = RescoreJob::new("r".into(), 1000, None, 0);
        job.processed = 250;
        assert_eq!(job.fraction(), 0.25);
        let (rate, left) = job.rate(5_000);
        assert_eq!((rate, left), (50.0, Some(15.0)));
        job.state = JobState::Done;
        job.finished_at = Some(10_000);
        assert_eq!((job.fraction(), job.rate(99_000)), (1.0, (25.0, None)));
        let text = serde_json::to_value(&job).unwrap();
        assert_eq!(text["state"], "done");
        assert_eq!(text["finishedAt"], "1970-01-01T00:00:10.000Z");
    }
}
