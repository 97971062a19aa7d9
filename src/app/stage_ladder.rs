//! The stage ladder on the rules page: each stage's name and the score it starts at, with
//! how many leads are in it; editors change, add and remove stages and save the ladder whole.

use super::auth::Viewer;
use super::dashboard::FieldErrors;
use super::server_fns::{describe, fetch_stage_counts, save_stages};
use super::LoadError;
use crate::domain::access::Access;
use crate::domain::stages::StageCount;
use crate::domain::FieldError;
use leptos::prelude::*;

/// One stage's inputs, with a stable key so typing never re-renders the list.
#[derive(Clone, Copy)]
struct StageRow {
    key: usize,
    name: RwSignal<String>,
    min_score: RwSignal<String>,
}

#[component]
pub fn StageLadder() -> impl IntoView {
    let viewer = Viewer::get();
    let reload = RwSignal::new(0u32);
    let counts = Resource::new(move || reload.get(), |_| fetch_stage_counts());
    // Here, not in the form: a save reloads the form, and its outcome must stay in view.
    let feedback = RwSignal::new(None::<Result<String, String>>);
    view! {
        <section class="panel" aria-labelledby="stages-title" id="stages">
            <h2 id="stages-title">"Lifecycle stages"</h2>
            <p class="muted">"A lead is in the highest stage its score reaches (below the first threshold: the first stage). Stages follow the score, so a new ladder applies to every lead at once."</p>
            {move || feedback.get().map(|f| match f {
                Ok(m) => view! { <p class="notice ok" role="status" id="stages-feedback">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice error" role="alert" id="stages-feedback">{m}</p> }.into_any(),
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading stages…"</p> }>
                {move || Suspend::new(async move {
                    let editable = viewer.0.await.is_ok_and(|me| me.may(Access::Edit));
                    match counts.await {
                        Err(e) => view! { <LoadError what="the stages" error=e/> }.into_any(),
                        Ok(list) if editable => view! { <LadderForm list reload feedback/> }.into_any(),
                        Ok(list) => view! {
                            <table class="table compact" id="stage-table">
                                <thead><tr><th scope="col">"Stage"</th><th scope="col" class="num">"From score"</th><th scope="col" class="num">"Leads"</th></tr></thead>
                                <tbody>{list.into_iter().map(|s| view! {
                                    <tr><th scope="row">{s.name}</th><td class="num">{s.min_score}</td><td class="num">{s.leads}</td></tr>
                                }).collect_view()}</tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn LadderForm(
    list: Vec<StageCount>,
    reload: RwSignal<u32>,
    feedback: RwSignal<Option<Result<String, String>>>,
) -> impl IntoView {
    let leads: Vec<(String, u64)> = list.iter().map(|s| (s.name.clone(), s.leads)).collect();
    let next_key = StoredValue::new(list.len());
    let rows = RwSignal::new(
        list.iter()
            .enumerate()
            .map(|(key, s)| StageRow {
                key,
                name: RwSignal::new(s.name.clone()),
                min_score: RwSignal::new(s.min_score.to_string()),
            })
            .collect::<Vec<_>>(),
    );
    let problems = RwSignal::new(Vec::<FieldError>::new());
    let save = Action::new(|stages: &Vec<(String, String)>| save_stages(stages.clone()));
    Effect::new(move |_| match save.value().get() {
        Some(Ok(Ok(ladder))) => {
            problems.set(vec![]);
            let names: Vec<String> = ladder.iter().map(|s| format!("{} from {}", s.name, s.min_score)).collect();
            feedback.set(Some(Ok(format!("Saved the ladder: {}.", names.join(", ")))));
            reload.update(|n| *n += 1);
        }
        Some(Ok(Err(p))) => {
            feedback.set(Some(Err("The ladder was not saved; see the problems below.".into())));
            problems.set(p);
        }
        Some(Err(e)) => feedback.set(Some(Err(format!("Not saved: {}", describe(&e))))),
        None => {}
    });
    let add = move |_| {
        let key = next_key.get_value();
        next_key.set_value(key + 1);
        rows.update(|r| {
            r.push(StageRow { key, name: RwSignal::new(String::new()), min_score: RwSignal::new(String::new()) })
        });
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let stages =
            rows.get_untracked().iter().map(|r| (r.name.get_untracked(), r.min_score.get_untracked())).collect();
        save.dispatch(stages);
    };
    let leads_in = move |name: String| leads.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
    view! {
        // `novalidate`: the server names every problem, beside the ladder.
        <form id="stage-form" class="rule-form" novalidate on:submit=on_submit>
            <For each=move || rows.get() key=|r| r.key let:row>
                <div class="condition" data-stage-row=row.key.to_string()>
                    <input name="stageName" bind:value=row.name aria-label="Stage name" placeholder="e.g. Warm"/>
                    <input type="number" step="1" name="stageMin" bind:value=row.min_score aria-label="Stage starts at score" class="short"/>
                    <span class="muted small">{
                        let leads_in = leads_in.clone();
                        move || leads_in(row.name.get()).map(|n| format!("{n} leads")).unwrap_or_default()
                    }</span>
                    <button type="button" class="secondary" aria-label="Remove stage"
                        on:click=move |_| rows.update(|r| r.retain(|x| x.key != row.key))>"×"</button>
                </div>
            </For>
            <div class="row-form">
                <button type="button" class="secondary" on:click=add>"+ Add stage"</button>
                <button type="submit" disabled=move || save.pending().get()>"Save stages"</button>
            </div>
        </form>
        <FieldErrors errors=Signal::derive(move || problems.get())/>
    }
}
