//! `/`: the live leaderboard, its filters (evaluated on the server, kept in the URL), the
//! test-event form and the file upload.

use super::auth::Allowed;
use super::live::Live;
use super::server_fns::{
    describe, fetch_event_types, fetch_lead_total, fetch_leaderboard, fetch_stage_counts, send_test_event,
};
use super::upload::Upload;
use super::{lead_href, short_time, LoadError};
use crate::domain::access::Access;
use crate::domain::live::apply_updates;
use crate::domain::query::LeadQuery;
use crate::domain::FieldError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Form;
use leptos_router::hooks::use_query_map;
use std::collections::HashMap;

#[component]
pub fn Dashboard() -> impl IntoView {
    let live = Live::get();
    let params = use_query_map();
    let parsed = Memo::new(move |_| {
        let map = params.read();
        let pairs: Vec<(String, String)> = ["search", "minScore", "maxScore", "stage", "limit", "offset"]
            .iter()
            .filter_map(|k| map.get(k).map(|v| (k.to_string(), v)))
            .collect();
        LeadQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    });
    let query = Memo::new(move |_| parsed.get().unwrap_or_default());
    let query_errors = move || parsed.get().err().unwrap_or_default();

    let leads = Resource::new(move || (query.get(), live.resync.get()), |(q, _)| fetch_leaderboard(q));
    // Counts per stage: refetched on live frames, at most every few seconds (each is a count
    // over the score index, cheap but not free on a million leads).
    let recount = RwSignal::new(0u32);
    let stages = Resource::new(move || (recount.get(), live.resync.get()), |_| fetch_stage_counts());
    // How many match in all, for the pager: recounted with the stage counts.
    let total = Resource::new(move || (query.get(), recount.get(), live.resync.get()), |(q, _, _)| fetch_lead_total(q));
    let last_recount = StoredValue::new(0i64);
    let recount_due = StoredValue::new(false);
    // Lead ids changed by the latest frame, with a counter so the row re-renders and flashes.
    let flashes = RwSignal::new(HashMap::<String, u32>::new());

    Effect::new(move |_| {
        let Some(frame) = live.frame.get() else { return };
        let q = query.get_untracked();
        let mut refetch = false;
        leads.update(|current| {
            if let Some(Ok(rows)) = current {
                refetch = apply_updates(rows, &frame, &q);
            }
        });
        flashes.update(|f| frame.iter().for_each(|u| *f.entry(u.lead_id.clone()).or_default() += 1));
        if refetch {
            leads.refetch();
        }
        // At most one recount per interval, and always one after the last frame of a burst.
        let now = chrono::Utc::now().timestamp_millis();
        let wait = RECOUNT_EVERY_MS - (now - last_recount.get_value());
        if wait <= 0 {
            last_recount.set_value(now);
            recount.update(|n| *n += 1);
        } else if !recount_due.get_value() {
            recount_due.set_value(true);
            set_timeout(
                move || {
                    recount_due.set_value(false);
                    last_recount.set_value(chrono::Utc::now().timestamp_millis());
                    recount.update(|n| *n += 1);
                },
                std::time::Duration::from_millis(wait as u64),
            );
        }
    });

    view! {
        <Title text="Leaderboard · Leadscore"/>
        <super::overview::OverviewPanel/>
        <div class="dashboard">
            <section class="panel leaderboard" aria-labelledby="board-title">
                <div class="panel-head">
                    <h1 id="board-title">"Leaderboard"</h1>
                </div>
                <StageStrip stages query/>
                <Filters query stages/>
                <FieldErrors errors=Signal::derive(query_errors)/>
                <Transition fallback=|| view! { <p class="muted">"Loading leads…"</p> }>
                    {move || Suspend::new(async move {
                        match leads.await {
                            Err(e) => view! { <LoadError what="the leaderboard" error=e/> }.into_any(),
                            Ok(_) => view! { <LeadTable leads flashes offset=Signal::derive(move || query.get().offset)/> }.into_any(),
                        }
                    })}
                </Transition>
                <Transition>
                    {move || Suspend::new(async move {
                        total.await.ok().map(|total| view! { <Pager query=query.get() total/> })
                    })}
                </Transition>
            </section>
            <aside class="side">
                <Allowed access=Access::Edit>
                    <TestEventForm/>
                    <Upload/>
                </Allowed>
            </aside>
        </div>
    }
}

/// How often, at most, live frames make the stage counts refetch.
const RECOUNT_EVERY_MS: i64 = 3_000;

type StageCounts = Resource<Result<Vec<crate::domain::stages::StageCount>, crate::domain::error::ApiError>>;

/// Leads per stage, each a link that filters the leaderboard to it.
#[component]
fn StageStrip(stages: StageCounts, query: Memo<LeadQuery>) -> impl IntoView {
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let Ok(counts) = stages.await else { return ().into_any() };
                view! {
                    <nav class="stage-strip" aria-label="Leads per stage" id="stage-counts">
                        {counts.into_iter().map(|c| {
                            let name = c.name.clone();
                            let selected = move || query.with(|q| q.stage.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&name)));
                            let href = format!("/?stage={}", super::encode_component(&c.name));
                            view! {
                                <a href=href class="stage-chip" class:selected=selected data-stage=c.name.clone()
                                    title=format!("score {} and up", c.min_score)>
                                    <span class="stage-name">{c.name.clone()}</span>
                                    <span class="stage-count">{c.leads}</span>
                                </a>
                            }
                        }).collect_view()}
                    </nav>
                }.into_any()
            })}
        </Transition>
    }
}

#[component]
fn Filters(query: Memo<LeadQuery>, stages: StageCounts) -> impl IntoView {
    let value = move |f: fn(&LeadQuery) -> String| move || f(&query.get());
    view! {
        <Form method="GET" action="" attr:class="filters" attr:aria-label="Filter leads">
            <label>
                "Search id, email, name, company"
                <input type="search" name="search" placeholder="e.g. acme" prop:value=value(|q| q.search.clone().unwrap_or_default())/>
            </label>
            <label>
                "Min score"
                <input type="number" name="minScore" inputmode="numeric" prop:value=value(|q| q.min_score.map(|v| v.to_string()).unwrap_or_default())/>
            </label>
            <label>
                "Max score"
                <input type="number" name="maxScore" inputmode="numeric" prop:value=value(|q| q.max_score.map(|v| v.to_string()).unwrap_or_default())/>
            </label>
            <label>
                "Stage"
                <select name="stage" prop:value=value(|q| q.stage.clone().unwrap_or_default())>
                    <option value="">"Any"</option>
                    // Awaited inside Suspense: server and client render the same options.
                    <Suspense>
                        {move || Suspend::new(async move {
                            stages.await.unwrap_or_default().into_iter().map(|c| {
                                let name = c.name.clone();
                                let selected = move || query.with(|q| q.stage.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&name)));
                                view! { <option value=c.name.clone() selected=selected>{c.name.clone()}</option> }
                            }).collect_view()
                        })}
                    </Suspense>
                </select>
            </label>
            <label>
                "Show"
                <select name="limit" prop:value=value(|q| q.limit.to_string())>
                    {[10, 25, 50, 100, 250, 500].map(|n| view! { <option value=n.to_string()>{n}</option> }).collect_view()}
                </select>
            </label>
            <button type="submit">"Apply"</button>
            <a class="button secondary" href="/">"Reset"</a>
            // A download, not a page: `download` keeps the router's hands off it.
            <a class="button secondary" id="export-leads" href=move || export_href(&query.get()) download rel="external">
                "Export CSV"
            </a>
        </Form>
    }
}

/// Who a lead is, from its profile: "name · company", either alone, or nothing.
fn person(lead: &crate::domain::Lead) -> String {
    let Some(profile) = &lead.profile else { return String::new() };
    use crate::domain::profile::{company, display_name};
    [display_name(profile), company(profile)].into_iter().flatten().collect::<Vec<_>>().join(" · ")
}

/// "26–50 of 1,234", with links to the pages before and after (the filters kept).
#[component]
fn Pager(query: LeadQuery, total: u64) -> impl IntoView {
    let (offset, limit) = (query.offset as u64, query.limit as u64);
    let shown_to = (offset + limit).min(total);
    let link = |to: u64| {
        let mut href = export_href(&query).replacen("/api/export/leads.csv", "/", 1);
        href.push(if href.contains('?') { '&' } else { '?' });
        href.push_str(&format!("limit={limit}&offset={to}"));
        href
    };
    let range = if total == 0 || offset >= total {
        format!("none of {}", thousands(total))
    } else {
        format!("{}–{} of {}", thousands(offset + 1), thousands(shown_to), thousands(total))
    };
    view! {
        <nav class="pager" id="leaderboard-pager" aria-label="Leaderboard pages" data-total=total.to_string()>
            {(offset > 0).then(|| view! { <a rel="prev" href=link(offset.saturating_sub(limit))>"← Previous"</a> })}
            <span class="muted small">{range}</span>
            {(shown_to < total).then(|| view! { <a rel="next" href=link(offset + limit)>"Next →"</a> })}
        </nav>
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every lead the filters match, as CSV (the page size does not cut an export).
fn export_href(q: &LeadQuery) -> String {
    let mut pairs = Vec::new();
    if let Some(search) = &q.search {
        pairs.push(format!("search={}", super::encode_component(search)));
    }
    if let Some(min) = q.min_score {
        pairs.push(format!("minScore={min}"));
    }
    if let Some(max) = q.max_score {
        pairs.push(format!("maxScore={max}"));
    }
    if let Some(stage) = &q.stage {
        pairs.push(format!("stage={}", super::encode_component(stage)));
    }
    let query = if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) };
    format!("/api/export/leads.csv{query}")
}

#[component]
fn LeadTable(
    leads: Resource<Result<Vec<crate::domain::Lead>, crate::domain::error::ApiError>>,
    flashes: RwSignal<HashMap<String, u32>>,
    offset: Signal<usize>,
) -> impl IntoView {
    let ordered = Memo::new(move |_| leads.get().and_then(Result::ok).unwrap_or_default());
    let ids = Memo::new(move |_| ordered.with(|rows| rows.iter().map(|l| l.id.clone()).collect::<Vec<_>>()));
    // A row is rebuilt (and its highlight animation replays) only when its lead changed.
    let rows = move || {
        let flashes = flashes.get();
        ordered.get().into_iter().map(|lead| (flashes.get(&lead.id).copied().unwrap_or(0), lead)).collect::<Vec<_>>()
    };
    view! {
        <table class="table" id="leaderboard">
            <thead>
                <tr>
                    <th scope="col" class="num">"#"</th>
                    <th scope="col">"Lead"</th>
                    <th scope="col">"Person"</th>
                    <th scope="col" class="num">"Score"</th>
                    <th scope="col">"Stage"</th>
                    <th scope="col">"Last active"</th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=rows
                    key=|(version, lead)| (lead.id.clone(), lead.score, *version)
                    children=move |(version, lead)| {
                        let href = lead_href(&lead.id);
                        let id = lead.id.clone();
                        let rank = move || ids.with(|ids| ids.iter().position(|x| *x == id)).map(|p| p + offset.get() + 1);
                        view! {
                            <tr class:flash={version > 0} data-lead=lead.id.clone()>
                                <td class="num rank">{rank}</td>
                                <td class="lead-id"><a href=href>{lead.id.clone()}</a></td>
                                <td class="person">{person(&lead)}</td>
                                <td class="num score">{lead.score}</td>
                                <td class="stage">{lead.stage.clone()}</td>
                                <td class="time">{short_time(lead.updated_at)}</td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || ordered.with(Vec::is_empty)>
            <p class="muted empty">"No leads match. Send an event to get started."</p>
        </Show>
    }
}

/// Field problems from the server or the form, listed with the field they belong to.
#[component]
pub fn FieldErrors(#[prop(into)] errors: Signal<Vec<FieldError>>) -> impl IntoView {
    view! {
        <Show when=move || !errors.get().is_empty()>
            <ul class="notice error field-errors" role="alert">
                {move || errors.get().into_iter().map(|e| view! { <li><strong>{e.field}</strong>" "{e.problem}</li> }).collect_view()}
            </ul>
        </Show>
    }
}

#[component]
fn TestEventForm() -> impl IntoView {
    let choices = Resource::new(|| (), |_| fetch_event_types());
    let lead_id = RwSignal::new(String::new());
    let event_type = RwSignal::new(String::new());
    let metadata = RwSignal::new(String::new());
    let problems = RwSignal::new(Vec::<FieldError>::new());
    let sent = RwSignal::new(None::<String>);
    let send = Action::new(|(lead, ty, meta): &(String, String, String)| {
        send_test_event(lead.clone(), ty.clone(), meta.clone())
    });

    Effect::new(move |_| match send.value().get() {
        Some(Ok(Ok(id))) => {
            problems.set(vec![]);
            sent.set(Some(id));
        }
        Some(Ok(Err(p))) => {
            sent.set(None);
            problems.set(p);
        }
        Some(Err(e)) => {
            sent.set(None);
            problems.set(vec![FieldError::new("server", describe(&e))]);
        }
        None => {}
    });

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // Checked here first so the common mistakes need no round trip; the server checks again.
        let mut p = Vec::new();
        if lead_id.get_untracked().trim().is_empty() {
            p.push(FieldError::new("leadId", "is required"));
        }
        if event_type.get_untracked().is_empty() {
            p.push(FieldError::new("eventType", "choose an event type"));
        }
        let meta = metadata.get_untracked();
        if !meta.trim().is_empty() {
            match serde_json::from_str::<serde_json::Value>(&meta) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => p.push(FieldError::new("metadata", "must be a JSON object, like {\"page\": \"/pricing\"}")),
                Err(e) => p.push(FieldError::new("metadata", format!("is not valid JSON: {e}"))),
            }
        }
        sent.set(None);
        if p.is_empty() {
            problems.set(vec![]);
            send.dispatch((lead_id.get_untracked(), event_type.get_untracked(), meta));
        } else {
            problems.set(p);
        }
    };
    let invalid = move |field: &'static str| move || problems.get().iter().any(|p| p.field == field).to_string();

    view! {
        <section class="panel" aria-labelledby="send-title">
            <h2 id="send-title">"Send test event"</h2>
            <form class="stack" on:submit=on_submit novalidate>
                <label>
                    "Lead id"
                    <input name="leadId" bind:value=lead_id autocomplete="off" aria-invalid=invalid("leadId")/>
                </label>
                <label>
                    "Event type"
                    <select name="eventType" bind:value=event_type aria-invalid=invalid("eventType")>
                        <option value="">"Choose…"</option>
                        <Suspense>
                            {move || Suspend::new(async move {
                                choices.await.unwrap_or_default().into_iter().map(|c| {
                                    view! { <option value=c.event_type>{c.label}</option> }
                                }).collect_view()
                            })}
                        </Suspense>
                    </select>
                </label>
                <label>
                    "Metadata (optional JSON object)"
                    <textarea name="metadata" rows="3" bind:value=metadata placeholder="{\"page\": \"/pricing\"}" aria-invalid=invalid("metadata")></textarea>
                </label>
                <FieldErrors errors=problems/>
                <button type="submit" disabled=move || send.pending().get()>
                    {move || if send.pending().get() { "Sending…" } else { "Send event" }}
                </button>
                <Show when=move || sent.get().is_some()>
                    <p class="notice ok" role="status">"Accepted " <code>{move || sent.get().unwrap_or_default()}</code></p>
                </Show>
            </form>
        </section>
    }
}
