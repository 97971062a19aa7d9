//! `/leads/:id`: a lead's score, chart, history and event log, paged, updating live.

use super::chart::ScoreChart;
use super::live::Live;
use super::server_fns::fetch_lead;
use super::{short_time, LoadError};
use crate::domain::query::DetailPage;
use crate::domain::LeadDetail;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

const PAGE: usize = 50;

#[component]
pub fn LeadPage() -> impl IntoView {
    let live = Live::get();
    let params = use_params_map();
    let query = use_query_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    let page = Memo::new(move |_| {
        let q = query.read();
        let offset = |k: &str| q.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        DetailPage {
            history_limit: PAGE,
            history_offset: offset("historyOffset"),
            events_limit: PAGE,
            events_offset: offset("eventsOffset"),
        }
    });
    // Bumped when the stream reports a change to this lead.
    let changed = RwSignal::new(0u64);
    Effect::new(move |_| {
        if let Some(frame) = live.frame.get() {
            let me = id.get_untracked();
            if frame.iter().any(|u| u.lead_id == me) {
                changed.update(|n| *n += 1);
            }
        }
    });
    let detail = Resource::new(
        move || (id.get(), page.get(), changed.get(), live.resync.get()),
        |(id, page, _, _)| fetch_lead(id, page),
    );

    view! {
        <Title text=move || format!("{} · Leadscore", id.get())/>
        <Transition fallback=|| view! { <p class="muted">"Loading lead…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <LoadError what="this lead" error=e/> }.into_any(),
                    Ok(None) => view! {
                        <section class="panel">
                            <h1>"Lead not found"</h1>
                            <p>"No lead with id " <code>{id.get_untracked()}</code> " has been scored yet. "
                               <a href="/">"Back to the leaderboard"</a></p>
                        </section>
                    }.into_any(),
                    Ok(Some(d)) => {
                        let asked = id.get_untracked();
                        let merged = (d.lead.id != asked).then(|| view! {
                            <p class="notice" id="merged-notice">
                                <code>{asked}</code>" was merged into this lead when it identified."
                            </p>
                        });
                        view! { {merged}<Detail detail=d page=page.get_untracked()/> }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

#[component]
fn Detail(detail: LeadDetail, page: DetailPage) -> impl IntoView {
    let LeadDetail { lead, history, events } = detail;
    let last_active = lead.last_event_at.map(short_time).unwrap_or_else(|| short_time(lead.updated_at));
    let pager = |key: &'static str, offset: usize, len: usize, other: (&'static str, usize)| {
        let link = move |o: usize| format!("?{key}={o}&{}={}", other.0, other.1);
        view! {
            <nav class="pager" aria-label=format!("{key} pages")>
                {(offset > 0).then(|| view! { <a href=link(offset.saturating_sub(PAGE))>"← Newer"</a> })}
                <span class="muted small">{format!("{}–{}", offset + usize::from(len > 0), offset + len)}</span>
                {(len == PAGE).then(|| view! { <a href=link(offset + PAGE)>"Older →"</a> })}
            </nav>
        }
    };
    let history_pager =
        pager("historyOffset", page.history_offset, history.len(), ("eventsOffset", page.events_offset));
    let events_pager = pager("eventsOffset", page.events_offset, events.len(), ("historyOffset", page.history_offset));
    let chart_history = history.clone();
    let event_times: std::collections::HashMap<String, crate::domain::time::Millis> =
        events.iter().map(|e| (e.event_id.clone(), e.timestamp)).collect();
    view! {
        <section class="panel lead-summary">
            <p class="muted small"><a href="/">"← Leaderboard"</a></p>
            <h1 class="lead-title">{lead.id.clone()}</h1>
            <dl class="facts">
                <div><dt>"Score"</dt><dd class="big" id="lead-score">{lead.score}</dd></div>
                <div><dt>"Stage"</dt><dd class="big" id="lead-stage">{lead.stage.clone()}</dd></div>
                <div><dt>"Events"</dt><dd>{lead.event_count}</dd></div>
                <div><dt>"Last activity"</dt><dd>{last_active}</dd></div>
            </dl>
            <p>
                <a class="button secondary" id="export-history" download rel="external"
                    href=format!("/api/export/leads/{}/history.csv", super::encode_component(&lead.id))>
                    "Export history CSV"
                </a>
            </p>
        </section>
        {lead.profile.clone().map(|profile| view! {
            <section class="panel" aria-labelledby="profile-title">
                <h2 id="profile-title">"Profile"</h2>
                <dl class="facts profile" id="profile">
                    {profile.into_iter().map(|(key, value)| {
                        let shown = match value {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        view! { <div><dt>{key}</dt><dd>{shown}</dd></div> }
                    }).collect_view()}
                </dl>
            </section>
        })}
        <section class="panel" aria-labelledby="chart-title">
            <h2 id="chart-title">"Score over time"</h2>
            <ScoreChart history=Signal::derive(move || chart_history.clone()) event_times=Signal::derive(move || event_times.clone())/>
        </section>
        <div class="two-col">
            <section class="panel" aria-labelledby="history-title">
                <h2 id="history-title">"Score history"</h2>
                <table class="table compact" id="history">
                    <thead><tr>
                        <th scope="col">"Time"</th><th scope="col">"Event"</th>
                        <th scope="col" class="num">"Old"</th><th scope="col" class="num">"New"</th><th scope="col" class="num">"Δ"</th>
                    </tr></thead>
                    <tbody>
                        {history.into_iter().map(|h| view! {
                            <tr>
                                <td class="time">{short_time(h.timestamp)}</td>
                                <td>{type_label(&h.event_type)}{h.stage_change.map(|m| view! {
                                    <span class="stage-move" title=format!("from {} to {}", m.from, m.to)>{format!(" → {}", m.to)}</span>
                                })}</td>
                                <td class="num">{h.old_score}</td>
                                <td class="num new-score">{h.new_score}</td>
                                <td class="num" class:neg={h.delta < 0}>{format!("{:+}", h.delta)}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
                {history_pager}
            </section>
            <section class="panel" aria-labelledby="events-title">
                <h2 id="events-title">"Event log"</h2>
                <table class="table compact" id="events">
                    <thead><tr>
                        <th scope="col">"Time"</th><th scope="col">"Type"</th><th scope="col" class="num">"Points"</th><th scope="col">"Why"</th><th scope="col">"Metadata"</th>
                    </tr></thead>
                    <tbody>
                        {events.into_iter().map(|e| { let why = explain(&e); view! {
                            <tr>
                                <td class="time" title=format!("eventId {}", e.event_id)>{short_time(e.timestamp)}</td>
                                <td>{type_label(&e.event_type)}</td>
                                <td class="num">{e.points.map(|p| format!("{p:+}")).unwrap_or_else(|| "pending".into())}</td>
                                <td class="why small">{why}</td>
                                <td><code class="meta">{e.metadata.unwrap_or_default()}</code></td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
                {events_pager}
            </section>
        </div>
    }
}

/// Which rules made an event's points: "Pricing page +20 · Newsletter 0 (limit reached)".
fn explain(e: &crate::domain::StoredEvent) -> String {
    match (&e.matches, e.points) {
        (_, None) => String::new(),
        (None, Some(0)) => "no rule matched".into(),
        // Scored before explanations were kept.
        (None, Some(_)) => String::new(),
        (Some(matches), Some(_)) => {
            matches
                .iter()
                .map(|m| {
                    if m.limited {
                        format!("{} 0 (limit reached)", m.name)
                    } else {
                        format!("{} {:+}", m.name, m.points)
                    }
                })
                .collect::<Vec<_>>()
                .join(" · ")
        }
    }
}

/// An event type as people read it: the server's own adjustments get a name, not `$decay`.
fn type_label(event_type: &str) -> String {
    match event_type {
        crate::domain::decay::DECAY_EVENT_TYPE => "Decay".into(),
        crate::domain::rescore::RESCORE_EVENT_TYPE => "Rescore".into(),
        other => other.into(),
    }
}
