//! The score-over-time chart: a step line drawn as SVG from a lead's history.

use crate::domain::time::Millis;
use crate::domain::HistoryEntry;
use leptos::prelude::*;
use std::collections::HashMap;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// One change as the chart draws it: at its event's own time, with the score before and
/// after it when changes are taken in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at: Millis,
    pub old: i64,
    pub new: i64,
    pub delta: i64,
    pub event_type: String,
}

/// The steps of a history page (newest first, as the API gives it): each change at its
/// event's time (`event_times`, by event id; the time it was applied when the event is not
/// at hand), in time order, running from the score before the page's oldest change. An event
/// that arrived late lands where it happened, not where it was scored.
pub fn steps(history: &[HistoryEntry], event_times: &HashMap<String, Millis>) -> Vec<Step> {
    let Some(oldest) = history.last() else { return Vec::new() };
    let mut timed: Vec<(Millis, usize, &HistoryEntry)> = history
        .iter()
        .rev()
        .enumerate()
        .map(|(i, h)| (event_times.get(&h.event_id).copied().unwrap_or(h.timestamp), i, h))
        .collect();
    timed.sort_by_key(|(at, i, _)| (*at, *i));
    let mut score = oldest.old_score;
    timed
        .into_iter()
        .map(|(at, _, h)| {
            let old = score;
            score += h.delta;
            Step { at, old, new: score, delta: h.delta, event_type: h.event_type.clone() }
        })
        .collect()
}

/// Geometry of the chart, computed from steps in time order.
#[derive(Debug, PartialEq)]
pub struct StepChart {
    /// SVG path: starts at the first step's old score, then one horizontal + vertical step
    /// per change.
    pub path: String,
    /// One point per step: (x, y, new score).
    pub points: Vec<(f64, f64, i64)>,
    pub min: i64,
    pub max: i64,
}

impl StepChart {
    /// x is the event's time on a linear axis from the first step to the last (evenly spaced
    /// when they all share one instant).
    pub fn new(steps: &[Step]) -> Option<Self> {
        let first = steps.first()?;
        let last = steps.last()?;
        let scores = std::iter::once(first.old).chain(steps.iter().map(|s| s.new));
        let (min, max) = scores.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let (lo, hi) = if min == max { (min - 1, max + 1) } else { (min, max) };
        let y = |s: i64| TOP + (HEIGHT - TOP - BOTTOM) * (hi - s) as f64 / (hi - lo) as f64;
        let span = (last.at - first.at) as f64;
        let width = WIDTH - LEFT - RIGHT;
        let x = |i: usize, at: Millis| {
            if span > 0.0 {
                LEFT + width * (at - first.at) as f64 / span
            } else {
                LEFT + width * (i + 1) as f64 / steps.len() as f64
            }
        };
        let mut path = format!("M{LEFT:.1},{:.1}", y(first.old));
        let mut points = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            let (px, py) = (x(i, s.at), y(s.new));
            path.push_str(&format!(" H{px:.1} V{py:.1}"));
            points.push((px, py, s.new));
        }
        Some(Self { path, points, min, max })
    }
}

#[component]
pub fn ScoreChart(
    #[prop(into)] history: Signal<Vec<HistoryEntry>>,
    #[prop(into)] event_times: Signal<HashMap<String, Millis>>,
) -> impl IntoView {
    move || {
        let steps = steps(&history.get(), &event_times.get());
        let Some(chart) = StepChart::new(&steps) else {
            return view! { <p class="muted">"No score changes yet."</p> }.into_any();
        };
        let first = steps.first().map(|s| super::short_time(s.at)).unwrap_or_default();
        let last = steps.last().map(|s| super::short_time(s.at)).unwrap_or_default();
        let y_of = |s: i64| chart.points.iter().find(|p| p.2 == s).map(|p| p.1);
        let (y_max, y_min) = (y_of(chart.max).unwrap_or(TOP), y_of(chart.min).unwrap_or(HEIGHT - BOTTOM));
        let points = chart
            .points
            .iter()
            .zip(&steps)
            .map(|(&(x, y, score), s)| {
                let tip =
                    format!("{} → {} ({:+}) · {} · {}", s.old, score, s.delta, s.event_type, super::short_time(s.at));
                view! {
                    <circle class="step-point" cx=format!("{x:.1}") cy=format!("{y:.1}") r="4" tabindex="0">
                        <title>{tip}</title>
                    </circle>
                }
            })
            .collect_view();
        view! {
            <svg class="chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
                aria-label=format!("Score over time: {} changes, from {} to {}", steps.len(), steps[0].old, chart.points.last().map_or(0, |p| p.2))>
                <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=HEIGHT - BOTTOM/>
                <line class="axis" x1=LEFT y1=HEIGHT - BOTTOM x2=WIDTH - RIGHT y2=HEIGHT - BOTTOM/>
                <text class="tick" x=LEFT - 6.0 y=y_max + 4.0 text-anchor="end">{chart.max}</text>
                <text class="tick" x=LEFT - 6.0 y=y_min + 4.0 text-anchor="end">{chart.min}</text>
                <text class="axis-label" x="14" y=(HEIGHT - BOTTOM) / 2.0 transform=format!("rotate(-90 14 {})", (HEIGHT - BOTTOM) / 2.0) text-anchor="middle">"score"</text>
                <text class="tick" x=LEFT y=HEIGHT - 14.0>{first}</text>
                <text class="tick" x=WIDTH - RIGHT y=HEIGHT - 14.0 text-anchor="end">{last}</text>
                <text class="axis-label" x=(WIDTH + LEFT) / 2.0 y=HEIGHT - 2.0 text-anchor="middle">"when each event happened"</text>
                <path class="step-line" d=chart.path.clone()/>
                {points}
            </svg>
        }
        .into_any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(at: Millis, old: i64, new: i64) -> Step {
        Step { at, old, new, delta: new - old, event_type: "t".into() }
    }

    #[test]
    fn one_step_and_one_point_per_change_at_its_time() {
        let chart = StepChart::new(&[step(0, 0, 10), step(100, 10, 5), step(1_000, 5, 105)]).unwrap();
        assert_eq!(chart.points.len(), 3);
        assert_eq!(chart.path.matches('H').count(), 3);
        assert_eq!(chart.path.matches('V').count(), 3);
        assert_eq!((chart.min, chart.max), (0, 105));
        // Higher scores are drawn higher (smaller y); x follows the time.
        assert!(chart.points[2].1 < chart.points[0].1);
        assert!(chart.points[1].1 > chart.points[0].1);
        let width = WIDTH - LEFT - RIGHT;
        assert_eq!(chart.points[0].0, LEFT);
        assert!((chart.points[1].0 - (LEFT + width * 0.1)).abs() < 1e-9, "a tenth of the way: {:?}", chart.points);
        assert_eq!(chart.points[2].0, LEFT + width);
        assert!(chart.path.starts_with("M56.0,184.0"), "starts at the first old score on the x axis: {}", chart.path);
    }

    #[test]
    fn flat_empty_and_simultaneous_histories() {
        assert!(StepChart::new(&[]).is_none());
        let flat = StepChart::new(&[step(5, 0, 0), step(5, 0, 0)]).unwrap();
        assert_eq!(flat.points.len(), 2);
        assert!(flat.points.iter().all(|p| p.0.is_finite() && p.1.is_finite()));
        assert!(flat.points[0].0 < flat.points[1].0, "one instant: spaced evenly");
    }

    #[test]
    fn changes_are_placed_at_their_events_time_and_rechained_in_that_order() {
        // Scored in this order (oldest first): a (+5), b (+50, but it happened first), c (+10).
        let history: Vec<HistoryEntry> =
            [entry(100, 105, "a", 3_000), entry(105, 155, "b", 3_001), entry(155, 165, "c", 3_002)]
                .into_iter()
                .rev()
                .collect();
        let times = HashMap::from([("a".to_string(), 2_000), ("b".to_string(), 1_000)]);
        let s = steps(&history, &times);
        let got: Vec<(Millis, i64, i64)> = s.iter().map(|s| (s.at, s.old, s.new)).collect();
        assert_eq!(
            got,
            [(1_000, 100, 150), (2_000, 150, 155), (3_002, 155, 165)],
            "c's event is not at hand: its scoring time"
        );
    }

    fn entry(old: i64, new: i64, id: &str, at: Millis) -> HistoryEntry {
        HistoryEntry {
            lead_id: "l".into(),
            event_id: id.into(),
            event_type: "t".into(),
            old_score: old,
            new_score: new,
            delta: new - old,
            timestamp: at,
            stage_change: None,
            merged_from: None,
        }
    }
}
