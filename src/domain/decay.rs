//! Score decay, as HubSpot decays engagement: with a half-life of `h` days, an event's points
//! count `points × 0.5^(age / h)`, its age taken from the event's own timestamp.
//!
//! Each lead keeps its exact decayed total as of some instant (`Decayed`); an event adds to it
//! and a decay pass moves it forward, needing none of the lead's events. Every factor applied
//! is `0.5^(Δ/h)` with `Δ ≥ 0` (the total is first moved to the later instant), so nothing
//! overflows however long the history or short the half-life.
//!
//! A pass moves the integer score to the exact total rounded, writing the difference as a
//! `decay` history entry: the score stays the sum of its history, and right after a pass it
//! is never more than half a point from the exact value.

use super::engine::{Priced, RuleMatch};
use super::time::{iso, Millis};
use super::{FieldError, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The event type of the adjustments a pass records. Names starting with `$` are kept for
/// events Leadscore writes itself: clients cannot send them (`validation`).
pub const DECAY_EVENT_TYPE: &str = "$decay";

const DAY_MS: f64 = 86_400_000.0;
pub const MIN_HALF_LIFE_DAYS: f64 = 1.0;
pub const MAX_HALF_LIFE_DAYS: f64 = 3_650.0;

/// A lead's exact decayed total as of `as_of`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decayed {
    pub value: f64,
    pub as_of: Millis,
}

fn halvings(from: Millis, to: Millis, half_life_days: f64) -> f64 {
    (-((to - from).max(0) as f64) / (half_life_days * DAY_MS)).exp2()
}

impl Decayed {
    /// The total at `now` (not before `as_of`).
    pub fn at(self, now: Millis, half_life_days: f64) -> Decayed {
        if now <= self.as_of {
            return self;
        }
        Decayed { value: self.value * halvings(self.as_of, now, half_life_days), as_of: now }
    }

    /// Adds an event's points, decayed from its own time `at`.
    pub fn add(self, points: i64, at: Millis, half_life_days: f64) -> Decayed {
        let moved = self.at(at, half_life_days);
        Decayed { value: moved.value + points as f64 * halvings(at, moved.as_of, half_life_days), as_of: moved.as_of }
    }

    /// The `decay` history entry a pass at `now` writes for a lead with this integer score:
    /// the score moves to the exact total rounded (0: nothing to write).
    pub fn adjustment(self, score: i64, now: Millis, half_life_days: f64) -> i64 {
        let target = self.at(now, half_life_days).value.round();
        if target.is_finite() {
            (target as i64).saturating_sub(score)
        } else {
            0
        }
    }
}

/// What `GET /api/settings/decay` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DecaySettings {
    /// `null`: no decay.
    pub half_life_days: Option<f64>,
    /// The last pass that adjusted scores, if any.
    pub last_pass: Option<DecayPass>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DecayPass {
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// The half-life it applied (`null`: it gave decayed points back).
    pub half_life_days: Option<f64>,
    /// Leads it read, and adjustments it recorded (each scored by the worker soon after).
    pub leads: u64,
    pub adjusted: u64,
    /// Leads it skipped because their scoring was under way; a pass runs again soon for them.
    #[serde(default)]
    pub busy: u64,
}

/// What a pass needs of one lead: its score and event count, and the points and times of
/// its scored events, earlier adjustments left out. The exact total is recomputed from the
/// events on every pass, so rounding never accumulates, and a new half-life (or none)
/// applies to the whole history at the next pass.
#[derive(Clone, Debug, PartialEq)]
pub struct DecayInput {
    pub lead_id: String,
    pub score: i64,
    pub event_count: i64,
    pub events: Vec<(i64, Millis)>,
}

/// One page of a pass's reading: the leads it can adjust, how many it could not because
/// their scoring was under way (the pass runs again soon for those), and where the next
/// page starts (`None`: this was the last).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecayPage {
    pub inputs: Vec<DecayInput>,
    pub busy: u64,
    pub next: Option<String>,
}

/// The adjustment event a pass at `now` records for one lead: it moves the score to the
/// exact decayed total rounded (with decay off, to the plain sum of its events' points,
/// which undoes earlier decay). `None`: the score is already there.
///
/// It is an ordinary event, scored by the worker like any other, so it is applied exactly
/// once and shows in the history and on the stream. Its id names the lead's event count as
/// read: two passes (two instances) that read the same state write the same event, which
/// the store keeps once. The delta is relative: events scored after the read keep their points.
pub fn adjustment_event(input: &DecayInput, half_life_days: Option<f64>, now: Millis) -> Option<NewEvent> {
    let (delta, exact) = match half_life_days {
        None => {
            let sum = input.events.iter().fold(0i64, |s, (p, _)| s.saturating_add(*p));
            (sum.saturating_sub(input.score), sum as f64)
        }
        Some(h) => {
            let total = input.events.iter().fold(Decayed::default(), |d, &(p, at)| d.add(p, at, h));
            (total.adjustment(input.score, now, h), total.at(now, h).value)
        }
    };
    (delta != 0).then(|| NewEvent {
        event_id: format!("{DECAY_EVENT_TYPE}:{}:{}", input.lead_id, input.event_count),
        lead_id: input.lead_id.clone(),
        event_type: DECAY_EVENT_TYPE.to_string(),
        timestamp: now,
        metadata: Some(
            json!({"delta": delta, "halfLifeDays": half_life_days, "exact": (exact * 1000.0).round() / 1000.0})
                .to_string(),
        ),
    })
}

/// Prices an adjustment event: exactly its recorded delta, explained as decay.
pub fn price(metadata: Option<&str>) -> Priced {
    let meta: Value = metadata.and_then(|m| serde_json::from_str(m).ok()).unwrap_or(Value::Null);
    let points = meta.get("delta").and_then(Value::as_i64).unwrap_or(0);
    let name = match meta.get("halfLifeDays").and_then(Value::as_f64) {
        Some(h) => format!("Decay (half-life {h} days)"),
        None => "Decay undone (decay turned off)".to_string(),
    };
    Priced { points, matches: vec![RuleMatch { rule_id: DECAY_EVENT_TYPE.to_string(), name, points, limited: false }] }
}

/// Reads `PUT /api/settings/decay`: `{"halfLifeDays": null}` (off) or a number of days.
pub fn parse_half_life(raw: &Value) -> Result<Option<f64>, Vec<FieldError>> {
    let problem = || {
        vec![FieldError::new(
            "halfLifeDays",
            format!("must be null (no decay) or a number of days from {MIN_HALF_LIFE_DAYS} to {MAX_HALF_LIFE_DAYS}"),
        )]
    };
    let Some(obj) = raw.as_object() else {
        return Err(vec![FieldError::new("body", "must be an object like {\"halfLifeDays\": 30}")]);
    };
    match obj.get("halfLifeDays") {
        Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(d) if (MIN_HALF_LIFE_DAYS..=MAX_HALF_LIFE_DAYS).contains(&d) => Ok(Some(d)),
            _ => Err(problem()),
        },
        _ => Err(problem()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: Millis = 86_400_000;
    const T0: Millis = 1_714_564_800_000;

    #[test]
    fn points_halve_every_half_life() {
        let d = Decayed::default().add(100, T0, 30.0);
        assert!((d.at(T0, 30.0).value - 100.0).abs() < 1e-9, "fresh: full points");
        assert!((d.at(T0 + 30 * DAY, 30.0).value - 50.0).abs() < 1e-9);
        assert!((d.at(T0 + 90 * DAY, 30.0).value - 12.5).abs() < 1e-9);
        assert_eq!(d.adjustment(100, T0 + 30 * DAY, 30.0), -50);
        assert_eq!(d.adjustment(50, T0 + 30 * DAY, 30.0), 0, "already there: no entry");
        let late = d.add(40, T0 - 30 * DAY, 30.0);
        assert!((late.at(T0, 30.0).value - 120.0).abs() < 1e-9, "a late event counts from its own time");
        let years = Decayed::default().add(1, T0, 1.0).add(1, T0 + 3_000 * DAY, 1.0);
        assert!((years.value - 1.0).abs() < 1e-9 && years.value.is_finite(), "no overflow across years at 1 day");
    }

    #[test]
    fn a_pass_moves_the_score_to_the_rounded_total_with_a_relative_event() {
        let input = DecayInput {
            lead_id: "lead-1".into(),
            score: 140,
            event_count: 3,
            events: vec![(100, T0 - 30 * DAY), (40, T0)],
        };
        let event = adjustment_event(&input, Some(30.0), T0).expect("100 → 50");
        assert_eq!(event.event_id, "$decay:lead-1:3");
        assert_eq!((event.event_type.as_str(), event.timestamp), (DECAY_EVENT_TYPE, T0));
        let priced = price(event.metadata.as_deref());
        assert_eq!(priced.points, -50);
        assert_eq!(priced.matches[0].name, "Decay (half-life 30 days)");
        let settled = DecayInput { score: 90, ..input.clone() };
        assert_eq!(adjustment_event(&settled, Some(30.0), T0), None, "already the rounded total");
        let off = adjustment_event(&settled, None, T0).expect("decay off gives the points back");
        assert_eq!(price(off.metadata.as_deref()).points, 50);
        assert_eq!(adjustment_event(&input, None, T0), None, "never decayed: nothing to undo");
        assert_eq!(price(Some("not json")).points, 0, "an unreadable adjustment adds nothing");
    }

    #[test]
    fn half_life_settings_parse_or_name_their_problem() {
        assert_eq!(parse_half_life(&json!({"halfLifeDays": null})), Ok(None));
        assert_eq!(parse_half_life(&json!({"halfLifeDays": 45.5})), Ok(Some(45.5)));
        for bad in [json!({"halfLifeDays": 0}), json!({"halfLifeDays": "30"}), json!({}), json!({"halfLifeDays": 1e9})]
        {
            assert_eq!(parse_half_life(&bad).unwrap_err()[0].field, "halfLifeDays", "{bad}");
        }
        assert_eq!(parse_half_life(&json!(30)).unwrap_err()[0].field, "body");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Events arriving between passes, late ones too: after each pass the integer
            /// score (raw points plus decay entries, the sum of its history) is within half a
            /// point of the exact decayed total, however many passes ran; and the running
            /// total equals the sum of every event decayed on its own.
            #[test]
            fn passes_never_drift(
                steps in proptest::collection::vec((-500i64..500, 0i64..20 * DAY, 0i64..5 * DAY), 1..60),
                half_life in 1.0f64..365.0,
            ) {
                let mut now = T0;
                let (mut score, mut history, mut total) = (0i64, 0i64, Decayed::default());
                let mut events = Vec::new();
                for (points, age, pause) in steps {
                    total = total.add(points, now - age, half_life);
                    events.push((points, now - age));
                    score += points;
                    history += points;
                    now += pause;
                    let delta = total.adjustment(score, now, half_life);
                    score += delta;
                    history += delta;
                    let exact: f64 = events.iter().map(|(p, at)| *p as f64 * (-((now - at) as f64) / (half_life * 86_400_000.0)).exp2()).sum();
                    prop_assert!((total.at(now, half_life).value - exact).abs() < 1e-6 * (1.0 + exact.abs()));
                    prop_assert!((score as f64 - exact).abs() <= 0.5 + 1e-6, "score {} exact {}", score, exact);
                    prop_assert_eq!(score, history);
                }
            }
        }
    }
}
