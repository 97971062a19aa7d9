//! The score-over-time chart: a step line drawn as SVG from a lead's history.

use crate::domain::HistoryEntry;
use leptos::prelude::*;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// Geometry of the chart, computed from history entries in chronological order.
#[derive(Debug, PartialEq)]
pub struct StepChart {
    /// SVG path: starts at the first entry's old score, then one horizontal + vertical step
    /// per entry.
    pub path: String,
    /// One point per entry: (x, y, new score).
    pub points: Vec<(f64, f64, i64)>,
    pub min: i64,
    pub max: i64,
}

impl StepChart {
    /// Steps are spaced evenly (many changes can share a millisecond); the axis labels give
    /// the times of the first and last entry.
    pub fn new(chronological: &[HistoryEntry]) -> Option<Self> {
        let first = chronological.first()?;
        let scores = std::iter::once(first.old_score).chain(chronological.iter().map(|h| h.new_score));
        let (min, max) = scores.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let (lo, hi) = if min == max { (min - 1, max + 1) } else { (min, max) };
        let y = |s: i64| TOP + (HEIGHT - TOP - BOTTOM) * (hi - s) as f64 / (hi - lo) as f64;
        let step = (WIDTH - LEFT - RIGHT) / chronological.len() as f64;
        let x = |i: usize| LEFT + step * i as f64;
        let mut path = format!("M{:.1},{:.1}", x(0), y(first.old_score));
        let mut points = Vec::with_capacity(chronological.len());
        for (i, h) in chronological.iter().enumerate() {
            let (px, py) = (x(i + 1), y(h.new_score));
            path.push_str(&format!(" H{px:.1} V{py:.1}"));
            points.push((px, py, h.new_score));
        }
        Some(Self { path, points, min, max })
    }
}

#[component]
pub fn ScoreChart(#[prop(into)] history: Signal<Vec<HistoryEntry>>) -> impl IntoView {
    move || {
        let mut entries = history.get();
        entries.reverse(); // the API gives newest first
        let Some(chart) = StepChart::new(&entries) else {
            return view! { <p class="muted">"No score changes yet."</p> }.into_any();
        };
        let first = entries.first().map(|h| super::short_time(h.timestamp)).unwrap_or_default();
        let last = entries.last().map(|h| super::short_time(h.timestamp)).unwrap_or_default();
        let y_of = |s: i64| chart.points.iter().find(|p| p.2 == s).map(|p| p.1);
        let (y_max, y_min) = (y_of(chart.max).unwrap_or(TOP), y_of(chart.min).unwrap_or(HEIGHT - BOTTOM));
        let points = chart
            .points
            .iter()
            .zip(&entries)
            .map(|(&(x, y, score), h)| {
                let tip = format!(
                    "{} → {} ({:+}) · {} · {}",
                    h.old_score,
                    score,
                    h.delta,
                    h.event_type,
                    super::short_time(h.timestamp)
                );
                view! {
                    <circle class="step-point" cx=format!("{x:.1}") cy=format!("{y:.1}") r="4" tabindex="0">
                        <title>{tip}</title>
                    </circle>
                }
            })
            .collect_view();
        view! {
            <svg class="chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
                aria-label=format!("Score over time: {} changes, from {} to {}", entries.len(), entries[0].old_score, chart.points.last().map_or(0, |p| p.2))>
                <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=HEIGHT - BOTTOM/>
                <line class="axis" x1=LEFT y1=HEIGHT - BOTTOM x2=WIDTH - RIGHT y2=HEIGHT - BOTTOM/>
                <text class="tick" x=LEFT - 6.0 y=y_max + 4.0 text-anchor="end">{chart.max}</text>
                <text class="tick" x=LEFT - 6.0 y=y_min + 4.0 text-anchor="end">{chart.min}</text>
                <text class="axis-label" x="14" y=(HEIGHT - BOTTOM) / 2.0 transform=format!("rotate(-90 14 {})", (HEIGHT - BOTTOM) / 2.0) text-anchor="middle">"score"</text>
                <text class="tick" x=LEFT y=HEIGHT - 14.0>{first}</text>
                <text class="tick" x=WIDTH - RIGHT y=HEIGHT - 14.0 text-anchor="end">{last}</text>
                <text class="axis-label" x=(WIDTH + LEFT) / 2.0 y=HEIGHT - 2.0 text-anchor="middle">"time (oldest → newest change)"</text>
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

    fn entry(old: i64, new: i64) -> HistoryEntry {
        HistoryEntry {
            lead_id: "l".into(),
            event_id: format!("e{new}"),
            event_type: "t".into(),
            old_score: old,
            new_score: new,
            delta: new - old,
            timestamp: 0,
            stage_change: None,
            merged_from: None,
        }
    }

    #[test]
    fn one_step_and_one_point_per_entry() {
        let chart = StepChart::new(&[entry(0, 10), entry(10, 5), entry(5, 105)]).unwrap();
        assert_eq!(chart.points.len(), 3);
        assert_eq!(chart.path.matches('H').count(), 3);
        assert_eq!(chart.path.matches('V').count(), 3);
        assert_eq!((chart.min, chart.max), (0, 105));
        // Higher scores are drawn higher (smaller y).
        assert!(chart.points[2].1 < chart.points[0].1);
        assert!(chart.points[1].1 > chart.points[0].1);
        assert!(chart.path.starts_with("M56.0,184.0"), "starts at the first old score on the x axis: {}", chart.path);
    }

    #[test]
    fn flat_and_empty_histories() {
        assert!(StepChart::new(&[]).is_none());
        let flat = StepChart::new(&[entry(0, 0), entry(0, 0)]).unwrap();
        assert_eq!(flat.points.len(), 2);
        assert!(flat.points.iter().all(|p| p.1.is_finite()));
    }
}
