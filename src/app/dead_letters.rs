//! `/dead-letters`: events the worker could not read or score and set aside so the rest of
//! the queue went on. An admin reads why, repairs the cause, then retries (the event is
//! scored once) or discards it (it stays stored, unscored).

use super::admin::{Changes, Status};
use super::live::Live;
use super::server_fns::{discard_dead_letter, fetch_dead_letters, retry_dead_letter, DEAD_LETTER_PAGE};
use super::{lead_href, short_time, LoadError};
use crate::domain::error::ApiError;
use crate::domain::DeadLetter;
use leptos::prelude::*;
use leptos_meta::Title;

/// Retry or discard, and which dead letter.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Retry(i64),
    Discard(i64),
}

type Ops = Action<Op, (Op, Result<(), ApiError>)>;

#[component]
pub fn DeadLettersPage() -> impl IntoView {
    let live = Live::get();
    let changes = Changes::new();
    // Pages by id: the ids of the pages before this one, to go back.
    let after = RwSignal::new(None::<i64>);
    let earlier = RwSignal::new(Vec::<Option<i64>>::new());
    let letters = Resource::new(
        move || (after.get(), changes.reload.get(), live.resync.get()),
        |(a, _, _)| fetch_dead_letters(a),
    );
    let ops: Ops = Action::new(|op: &Op| {
        let op = *op;
        async move {
            let result = match op {
                Op::Retry(id) => retry_dead_letter(id).await,
                Op::Discard(id) => discard_dead_letter(id).await,
            };
            (op, result)
        }
    });
    Effect::new(move |_| match ops.value().get() {
        Some((Op::Retry(id), Ok(()))) => {
            changes.succeeded(format!("Event #{id} is queued again; it is scored once if it reads now."))
        }
        Some((Op::Discard(id), Ok(()))) => changes.succeeded(format!("Event #{id} discarded: it will not be scored.")),
        Some((Op::Retry(id) | Op::Discard(id), Err(e))) => {
            changes.failed(id.to_string(), &format!("Could not change event #{id}"), &e)
        }
        None => {}
    });

    view! {
        <Title text="Dead letters · Leadscore"/>
        <section class="panel" aria-labelledby="dead-title">
            <h1 id="dead-title">"Dead letters"</h1>
            <p class="muted">"Events the worker could not read or score after several attempts. They were set aside so every other event went on being scored. Repair the cause (the stored event, or the lead it belongs to), then retry: the event is scored once. Discarding keeps it stored, unscored; its eventId still counts as received."</p>
            <Status changes html_id="dead-feedback"/>
            <button type="button" class="secondary" on:click=move |_| live.resync.update(|n| *n += 1)>"Refresh"</button>
            <Transition fallback=|| view! { <p class="muted">"Loading dead letters…"</p> }>
                {move || Suspend::new(async move {
                    match letters.await {
                        Err(e) => view! { <LoadError what="the dead letters" error=e/> }.into_any(),
                        Ok(list) => {
                            let shown = list.dead_letters.len();
                            let last = list.dead_letters.last().map(|l| l.id);
                            view! {
                                <p class="muted small" id="dead-total">{format!("{} in all", list.total)}</p>
                                <table class="table compact" id="dead-letters">
                                    <thead><tr><th scope="col">"Event"</th><th scope="col">"Lead"</th><th scope="col">"Why"</th><th scope="col">"Attempts"</th><th scope="col">"Set aside (UTC)"</th><th scope="col">"Actions"</th></tr></thead>
                                    <tbody>
                                        {list.dead_letters.into_iter().map(|letter| view! { <LetterRow letter ops/> }).collect_view()}
                                    </tbody>
                                </table>
                                {(shown == 0).then(|| view! { <p class="muted empty">"No dead letters: every event was scored."</p> })}
                                <nav class="pager" aria-label="Dead letter pages">
                                    <button type="button" class="secondary" disabled=move || earlier.with(Vec::is_empty)
                                        on:click=move |_| after.set(earlier.write().pop().flatten())>"← Previous"</button>
                                    <button type="button" class="secondary" disabled={shown < DEAD_LETTER_PAGE}
                                        on:click=move |_| { earlier.write().push(after.get_untracked()); after.set(last); }>"Next →"</button>
                                </nav>
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn LetterRow(letter: DeadLetter, ops: Ops) -> impl IntoView {
    let DeadLetter { id, event_id, lead_id, error, attempts, dead_lettered_at, raw } = letter;
    let busy = move || ops.pending().get();
    let name = event_id.clone().unwrap_or_else(|| format!("#{id}"));
    let discard = move |_| {
        let sure =
            window().confirm_with_message(&format!("Discard event #{id}? It will never be scored.")).unwrap_or(false);
        if sure {
            ops.dispatch(Op::Discard(id));
        }
    };
    view! {
        <tr data-dead-letter=id.to_string()>
            <th scope="row"><code>{name.clone()}</code><span class="muted small">{format!(" #{id}")}</span></th>
            <td>{match lead_id {
                Some(lead) => view! { <a href=lead_href(&lead)>{lead.clone()}</a> }.into_any(),
                None => view! { <span class="muted">"unreadable"</span> }.into_any(),
            }}</td>
            <td class="why">
                <span class="error-text">{error}</span>
                <details><summary>"Stored event"</summary><code class="meta">{raw}</code></details>
            </td>
            <td>{attempts}</td>
            <td class="time">{short_time(dead_lettered_at)}</td>
            <td class="actions">
                <button type="button" disabled=busy aria-label=format!("Retry {name}")
                    on:click=move |_| { ops.dispatch(Op::Retry(id)); }>"Retry"</button>
                " "
                <button type="button" class="secondary" disabled=busy aria-label=format!("Discard {name}")
                    on:click=discard>"Discard"</button>
            </td>
        </tr>
    }
}
