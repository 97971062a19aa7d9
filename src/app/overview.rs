//! The dashboard's overview: leads, events today, events per second live, scoring lag and
//! how scores are spread. The figures come from the server (`fetch_overview`, every few
//! seconds and after a resync); the live rate is counted here from the stream's frames.

use super::live::Live;
use super::server_fns::fetch_overview;
use crate::domain::overview::ScoreBucket;
use leptos::prelude::*;
use std::collections::VecDeque;

/// How often the figures are asked for again.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// The live rate is the events of the frames in this window, per second.
const RATE_WINDOW_MS: f64 = 10_000.0;

#[component]
pub fn OverviewPanel() -> impl IntoView {
    let live = Live::get();
    let tick = RwSignal::new(0u32);
    let overview = Resource::new(move || (tick.get(), live.resync.get()), |_| fetch_overview());
    // Frames of the last window: (when, events in it).
    let frames = StoredValue::new(VecDeque::<(f64, u32)>::new());
    let rate = RwSignal::new(0.0f64);
    let recount = move |now: f64| {
        frames.update_value(|f| {
            while f.front().is_some_and(|(at, _)| now - at > RATE_WINDOW_MS) {
                f.pop_front();
            }
        });
        let events: u32 = frames.with_value(|f| f.iter().map(|(_, n)| n).sum());
        rate.set(f64::from(events) * 1000.0 / RATE_WINDOW_MS);
    };
    Effect::new(move |_| {
        let Some(frame) = live.frame.get() else { return };
        let now = chrono::Utc::now().timestamp_millis() as f64;
        frames.update_value(|f| f.push_back((now, frame.iter().map(|u| u.events).sum())));
        recount(now);
    });
    // One timer, started in the browser: refresh the figures, let the rate fall when quiet.
    Effect::new(move |started: Option<bool>| {
        if started != Some(true) {
            let _ = set_interval_with_handle(
                move || {
                    tick.update(|n| *n += 1);
                    recount(chrono::Utc::now().timestamp_millis() as f64);
                },
                REFRESH,
            );
        }
        true
    });
    view! {
        <section class="panel overview" aria-label="Overview" id="overview">
            <Transition fallback=|| view! { <p class="muted">"Loading overview…"</p> }>
                {move || Suspend::new(async move {
                    let Ok(o) = overview.await else {
                        return view! { <p class="muted">"The overview is not available right now."</p> }.into_any();
                    };
                    let lag = if o.queue_depth == 0 {
                        "none".to_string()
                    } else {
                        format!("{:.1} s · {} queued", o.scoring_lag_ms as f64 / 1000.0, o.queue_depth)
                    };
                    view! {
                        <dl class="tiles">
                            <div><dt>"Leads"</dt><dd id="ov-leads">{o.leads}</dd></div>
                            <div><dt>"Events today"</dt><dd id="ov-events-today">{o.events_today}</dd></div>
                            <div><dt>"Live"</dt><dd id="ov-rate">{move || format!("{:.1} events/s", rate.get())}</dd></div>
                            <div><dt>"Scoring lag"</dt><dd id="ov-lag">{lag}</dd></div>
                        </dl>
                        <Histogram buckets=o.histogram/>
                    }.into_any()
                })}
            </Transition>
        </section>
    }
}

const W: f64 = 640.0;
const H: f64 = 120.0;
const BASE: f64 = 96.0;

/// Leads per score range, as bars (attributes, not styles: the page's CSP allows no inline
/// styles).
#[component]
fn Histogram(buckets: Vec<ScoreBucket>) -> impl IntoView {
    if buckets.is_empty() {
        return view! { <p class="muted">"No scores yet."</p> }.into_any();
    }
    let most = buckets.iter().map(|b| b.leads).max().unwrap_or(0).max(1) as f64;
    let slot = W / buckets.len() as f64;
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let height = (BASE - 8.0) * b.leads as f64 / most;
            let x = i as f64 * slot;
            let label = if b.from == b.to { b.from.to_string() } else { format!("{}–{}", b.from, b.to) };
            view! {
                <g class="bucket" data-from=b.from.to_string() data-leads=b.leads.to_string()>
                    <rect class="bar" x=format!("{:.1}", x + 2.0) y=format!("{:.1}", BASE - height)
                        width=format!("{:.1}", slot - 4.0) height=format!("{height:.1}")>
                        <title>{format!("{} leads scoring {label}", b.leads)}</title>
                    </rect>
                    <text class="tick" x=format!("{:.1}", x + slot / 2.0) y=H - 8.0 text-anchor="middle">{label}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg class="histogram" viewBox=format!("0 0 {W} {H}") role="img" id="score-histogram"
            aria-label="How many leads score in each range">
            <line class="axis" x1="0" y1=BASE x2=W y2=BASE/>
            {bars}
        </svg>
    }
    .into_any()
}
