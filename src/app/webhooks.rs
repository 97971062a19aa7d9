//! `/webhooks`: the subscriptions that tell a CRM about score and stage changes (admins).
//! A new one's signing secret is shown once; each subscription's deliveries list their
//! attempts, the receiver's last answer, and "Redeliver".

use super::admin::{Changes, Status};
use super::dashboard::FieldErrors;
use super::server_fns::{create_webhook, delete_webhook, fetch_deliveries, fetch_webhooks, redeliver};
use super::{short_time, LoadError};
use crate::domain::webhooks::{CreatedWebhook, Delivery, DeliveryState, Webhook, EVENT_KINDS};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn WebhooksPage() -> impl IntoView {
    let changes = Changes::new();
    let hooks = Resource::new(move || changes.reload.get(), |_| fetch_webhooks());
    // The subscription whose deliveries are shown.
    let selected = RwSignal::new(None::<Webhook>);
    let created = RwSignal::new(None::<CreatedWebhook>);
    let url = RwSignal::new(String::new());
    let kinds = EVENT_KINDS.map(|k| (k, RwSignal::new(true)));
    let create = Action::new(|(url, events): &(String, Vec<String>)| create_webhook(url.clone(), events.clone()));
    let remove = Action::new(|id: &String| delete_webhook(id.clone()));
    Effect::new(move |_| match create.value().get() {
        Some(Ok(Ok(hook))) => {
            changes.succeeded(format!("Added a webhook to {}.", hook.hook.url));
            url.set(String::new());
            created.set(Some(hook));
        }
        Some(Ok(Err(problems))) => {
            let e = crate::domain::error::ApiError::new(400, "Not added; see the problems below", problems);
            changes.failed(String::new(), "Could not add the webhook", &e);
        }
        Some(Err(e)) => changes.failed(String::new(), "Could not add the webhook", &e),
        None => {}
    });
    Effect::new(move |_| match remove.value().get() {
        Some(Ok(hook)) => {
            if selected.with_untracked(|s| s.as_ref().is_some_and(|s| s.id == hook.id)) {
                selected.set(None);
            }
            changes.succeeded(format!("Deleted the webhook to {}: its unsent deliveries are given up.", hook.url));
        }
        Some(Err(e)) => changes.failed("delete".into(), "Could not delete the webhook", &e),
        None => {}
    });
    let errors = changes.errors_for(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let events = kinds.iter().filter(|(_, on)| on.get_untracked()).map(|(k, _)| k.to_string()).collect();
        created.set(None);
        create.dispatch((url.get_untracked(), events));
    };

    view! {
        <Title text="Webhooks · Leadscore"/>
        <section class="panel" aria-labelledby="hooks-title">
            <h1 id="hooks-title">"Webhooks"</h1>
            <p class="muted">"Each score change (scoreChanged) and stage change (stageChanged) is POSTed as JSON {id, type, occurredAt, lead: {id, score, stage}, from, to} to the subscriptions that want it, signed in the header Leadscore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\" with the secret>. A delivery is written with the change itself, so none is lost; one the receiver does not take with a 2xx is retried with backoff for 24 hours. Receivers dedupe by id."</p>
            <Status changes html_id="hooks-feedback"/>
            {move || created.get().map(|c| view! {
                <div class="new-key" role="status">
                    <p><strong>"Copy this signing secret now: it will not be shown again."</strong></p>
                    <code id="new-secret">{c.secret}</code>
                    <button type="button" class="secondary" on:click=move |_| created.set(None)>"I have copied it"</button>
                </div>
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading webhooks…"</p> }>
                {move || Suspend::new(async move {
                    match hooks.await {
                        Err(e) => view! { <LoadError what="the webhooks" error=e/> }.into_any(),
                        Ok(list) => {
                            let empty = list.is_empty();
                            view! {
                                <table class="table" id="webhooks">
                                    <thead><tr><th scope="col">"URL"</th><th scope="col">"Sends"</th><th scope="col">"Added (UTC)"</th><th scope="col">"Actions"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|hook| {
                                            let (show, gone) = (hook.clone(), hook.id.clone());
                                            let sure = format!("Delete the webhook to {}? Deliveries not yet sent are given up.", hook.url);
                                            view! {
                                                <tr data-webhook=hook.id.clone()>
                                                    <th scope="row"><code>{hook.url.clone()}</code></th>
                                                    <td>{hook.events.join(", ")}</td>
                                                    <td class="time">{short_time(hook.created_at)}</td>
                                                    <td class="actions">
                                                        <button type="button" class="secondary" on:click=move |_| selected.set(Some(show.clone()))>"Deliveries"</button>
                                                        " "
                                                        <button type="button" class="secondary" disabled=move || remove.pending().get()
                                                            on:click=move |_| {
                                                                if window().confirm_with_message(&sure).unwrap_or(false) {
                                                                    remove.dispatch(gone.clone());
                                                                }
                                                            }>"Delete"</button>
                                                    </td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                {empty.then(|| view! { <p class="muted empty">"No webhooks yet."</p> })}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
        <section class="panel" aria-labelledby="new-hook-title">
            <h2 id="new-hook-title">"Add a webhook"</h2>
            <form class="row-form" id="new-webhook-form" on:submit=on_submit novalidate>
                <label>"URL " <input name="url" type="url" class="wide" bind:value=url autocomplete="off" placeholder="https://crm.example.com/hooks/leadscore"/></label>
                <fieldset class="scopes">
                    <legend>"Send"</legend>
                    {kinds.map(|(k, on)| view! {
                        <label class="switch"><input type="checkbox" name="events" value=k checked=true bind:checked=on/>{k}</label>
                    }).collect_view()}
                </fieldset>
                <button type="submit" disabled=move || create.pending().get()>"Add webhook"</button>
            </form>
            <FieldErrors errors/>
        </section>
        {move || selected.get().map(|hook| view! { <Deliveries hook/> })}
    }
}

/// One subscription's latest deliveries, with "Redeliver" on each.
#[component]
fn Deliveries(hook: Webhook) -> impl IntoView {
    let changes = Changes::new();
    let id = hook.id.clone();
    let list = Resource::new(move || changes.reload.get(), move |_| fetch_deliveries(id.clone()));
    let id = hook.id.clone();
    let again = Action::new(move |delivery: &i64| {
        let (id, delivery) = (id.clone(), *delivery);
        async move { (delivery, redeliver(id, delivery).await) }
    });
    Effect::new(move |_| match again.value().get() {
        Some((n, Ok(()))) => changes.succeeded(format!("Delivery #{n} is queued again: it is sent within a second.")),
        Some((n, Err(e))) => changes.failed(n.to_string(), &format!("Could not redeliver #{n}"), &e),
        None => {}
    });
    view! {
        <section class="panel" aria-labelledby="deliveries-title" id="deliveries">
            <h2 id="deliveries-title">"Deliveries to "<code>{hook.url.clone()}</code></h2>
            <Status changes html_id="deliveries-feedback"/>
            <button type="button" class="secondary" on:click=move |_| changes.reload.update(|n| *n += 1)>"Refresh"</button>
            <Transition fallback=|| view! { <p class="muted">"Loading deliveries…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Err(e) => view! { <LoadError what="the deliveries" error=e/> }.into_any(),
                        Ok(list) => {
                            let empty = list.is_empty();
                            view! {
                                <table class="table compact" id="delivery-list">
                                    <thead><tr><th scope="col">"#"</th><th scope="col">"Type"</th><th scope="col">"State"</th><th scope="col">"Attempts"</th><th scope="col">"Last answer"</th><th scope="col">"Next attempt (UTC)"</th><th scope="col">"Created (UTC)"</th><th scope="col">"Actions"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|d| view! { <DeliveryRow d again/> }).collect_view()}
                                    </tbody>
                                </table>
                                {empty.then(|| view! { <p class="muted empty">"Nothing sent yet: deliveries appear as scores change."</p> })}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn DeliveryRow(d: Delivery, again: Action<i64, (i64, Result<(), crate::domain::error::ApiError>)>) -> impl IntoView {
    let state = match d.state {
        DeliveryState::Pending => "waiting",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    };
    let answer = match (d.last_status, &d.last_error) {
        (_, Some(e)) => e.clone(),
        (Some(s), None) => format!("HTTP {s}"),
        (None, None) => "—".into(),
    };
    let id = d.id;
    view! {
        <tr data-delivery=id.to_string() data-state=state>
            <th scope="row">{id}</th>
            <td>{d.kind.clone()}<details><summary>"Payload"</summary><code class="meta">{d.payload.clone()}</code></details></td>
            <td class=format!("delivery-{state}")>{state}</td>
            <td>{d.attempts}</td>
            <td class="small">{answer}</td>
            <td class="time">{d.next_attempt_at.map(short_time).unwrap_or_else(|| "—".into())}</td>
            <td class="time">{short_time(d.created_at)}</td>
            <td class="actions">
                <button type="button" disabled=move || again.pending().get() aria-label=format!("Redeliver #{id}")
                    on:click=move |_| { again.dispatch(id); }>"Redeliver"</button>
            </td>
        </tr>
    }
}
