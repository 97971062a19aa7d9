//! Score decay on the rules page: the half-life (empty: none) and what the last pass did.
//! Editors change it; everyone else reads it.

use super::auth::Viewer;
use super::dashboard::FieldErrors;
use super::format::utc_minute;
use super::server_fns::{describe, fetch_decay, save_decay};
use super::LoadError;
use crate::domain::access::Access;
use crate::domain::decay::{DecayPass, DecaySettings};
use crate::domain::FieldError;
use leptos::prelude::*;

#[component]
pub fn DecaySetting() -> impl IntoView {
    let viewer = Viewer::get();
    let reload = RwSignal::new(0u32);
    let settings = Resource::new(move || reload.get(), |_| fetch_decay());
    let feedback = RwSignal::new(None::<Result<String, String>>);
    view! {
        <section class="panel" aria-labelledby="decay-title" id="decay">
            <h2 id="decay-title">"Score decay"</h2>
            <p class="muted">"With a half-life, each event's points count half as much after that many days, by the event's own time, as HubSpot decays engagement. A background pass moves every lead to its decayed total (hourly, and right after a change) and writes the difference into its history; clearing the half-life gives the points back."</p>
            {move || feedback.get().map(|f| match f {
                Ok(m) => view! { <p class="notice ok" role="status" id="decay-feedback">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice error" role="alert" id="decay-feedback">{m}</p> }.into_any(),
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading the decay setting…"</p> }>
                {move || Suspend::new(async move {
                    let editable = viewer.0.await.is_ok_and(|me| me.may(Access::Edit));
                    match settings.await {
                        Err(e) => view! { <LoadError what="the decay setting" error=e/> }.into_any(),
                        Ok(current) => view! {
                            {editable.then(|| view! { <DecayForm current=current.clone() reload feedback/> })}
                            {(!editable).then(|| view! { <p id="decay-now">{half_life_text(current.half_life_days)}</p> })}
                            <p class="muted small" id="decay-last-pass">{last_pass_text(current.last_pass.as_ref())}</p>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn DecayForm(
    current: DecaySettings,
    reload: RwSignal<u32>,
    feedback: RwSignal<Option<Result<String, String>>>,
) -> impl IntoView {
    let days = RwSignal::new(current.half_life_days.map(|d| d.to_string()).unwrap_or_default());
    let problems = RwSignal::new(Vec::<FieldError>::new());
    let save = Action::new(|text: &String| save_decay(text.clone()));
    Effect::new(move |_| match save.value().get() {
        Some(Ok(Ok(saved))) => {
            problems.set(vec![]);
            feedback.set(Some(Ok(format!("Saved: {}.", half_life_text(saved.half_life_days)))));
            reload.update(|n| *n += 1);
        }
        Some(Ok(Err(p))) => {
            feedback.set(Some(Err("Not saved; see the problem below.".into())));
            problems.set(p);
        }
        Some(Err(e)) => feedback.set(Some(Err(format!("Not saved: {}", describe(&e))))),
        None => {}
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.dispatch(days.get_untracked());
    };
    view! {
        <form id="decay-form" class="row-form" novalidate on:submit=on_submit>
            <label>"Half-life (days) "
                <input type="number" step="any" min="1" name="halfLifeDays" class="short" bind:value=days placeholder="no decay"/>
            </label>
            <button type="submit" disabled=move || save.pending().get()>"Save decay"</button>
        </form>
        <FieldErrors errors=Signal::derive(move || problems.get())/>
    }
}

fn half_life_text(days: Option<f64>) -> String {
    match days {
        None => "no decay".into(),
        Some(d) => format!("points halve every {d} days"),
    }
}

fn last_pass_text(pass: Option<&DecayPass>) -> String {
    let Some(p) = pass else { return "No pass has adjusted a score yet.".into() };
    let when = utc_minute(p.at);
    let what = match p.half_life_days {
        Some(d) => format!("decayed with a half-life of {d} days"),
        None => "gave decayed points back".into(),
    };
    format!("Last pass {when}: {what}; {} of {} leads adjusted.", p.adjusted, p.leads)
}
