//! `/rules`: every rule, edited in place; new rules added below.

use super::auth::{Allowed, Viewer};
use super::dashboard::FieldErrors;
use super::live::Live;
use super::server_fns::{describe, fetch_rules, save_rule};
use super::LoadError;
use crate::domain::access::Access;
use crate::domain::{FieldError, Rule};
use leptos::prelude::*;
use leptos_meta::Title;

/// The outcome of the last save, shown in one status line.
#[derive(Clone, Debug, PartialEq)]
enum Feedback {
    Saved(String),
    Failed(String),
}

#[component]
pub fn RulesPage() -> impl IntoView {
    let live = Live::get();
    let viewer = Viewer::get();
    let reload = RwSignal::new(0u32);
    let rules = Resource::new(move || (reload.get(), live.resync.get()), |_| fetch_rules());
    let feedback = RwSignal::new(None::<Feedback>);
    let save = Action::new(|(event_type, points, active): &(String, String, bool)| {
        let (t, p, a) = (event_type.clone(), points.clone(), *active);
        async move { (t.clone(), save_rule(t, p, a).await) }
    });
    // Field problems of the last save, by event type ("" for the new-rule form).
    let problems = RwSignal::new((String::new(), Vec::<FieldError>::new()));
    Effect::new(move |_| {
        let Some((event_type, result)) = save.value().get() else { return };
        match result {
            Ok(Ok(rule)) => {
                problems.set((String::new(), vec![]));
                let state = if rule.is_active { "active" } else { "inactive" };
                feedback.set(Some(Feedback::Saved(format!(
                    "Saved “{}”: {:+} points, {state}.",
                    rule.event_type, rule.points
                ))));
                reload.update(|n| *n += 1);
            }
            Ok(Err(p)) => {
                feedback
                    .set(Some(Feedback::Failed(format!("“{event_type}” was not saved; see the problems below it."))));
                problems.set((event_type, p));
            }
            Err(e) => feedback.set(Some(Feedback::Failed(format!("Not saved: {}", describe(&e))))),
        }
    });
    let ctx = RuleEditing { save, problems };

    view! {
        <Title text="Rules · Leadscore"/>
        <section class="panel" aria-labelledby="rules-title">
            <h1 id="rules-title">"Scoring rules"</h1>
            <p class="muted">"Each event type is worth its points when the event is scored. Inactive or unknown types score 0. Changes apply to events scored from now on."</p>
            {move || feedback.get().map(|f| match f {
                Feedback::Saved(m) => view! { <p class="notice ok" role="status" id="rules-feedback">{m}</p> }.into_any(),
                Feedback::Failed(m) => view! { <p class="notice error" role="alert" id="rules-feedback">{m}</p> }.into_any(),
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading rules…"</p> }>
                {move || Suspend::new(async move {
                    let editable = viewer.0.await.is_ok_and(|me| me.may(Access::Edit));
                    match rules.await {
                        Err(e) => view! { <LoadError what="the rules" error=e/> }.into_any(),
                        Ok(list) => view! {
                            <table class="table rules" id="rules">
                                <thead><tr>
                                    <th scope="col">"Event type"</th><th scope="col">"Points"</th><th scope="col">"Active"</th><th scope="col"><span class="sr-only">"Save"</span></th>
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|rule| if editable {
                                        view! { <RuleRow rule ctx/> }.into_any()
                                    } else {
                                        view! { <ReadOnlyRule rule/> }.into_any()
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <Allowed access=Access::Edit>
            <NewRule ctx/>
        </Allowed>
    }
}

/// A rule as a viewer sees it: no inputs, no buttons.
#[component]
fn ReadOnlyRule(rule: Rule) -> impl IntoView {
    view! {
        <tr data-rule=rule.event_type.clone()>
            <th scope="row">{rule.event_type.clone()}</th>
            <td>{format!("{:+}", rule.points)}</td>
            <td>{if rule.is_active { "Active" } else { "Off" }}</td>
            <td></td>
        </tr>
    }
}

#[derive(Clone, Copy)]
struct RuleEditing {
    save: Action<
        (String, String, bool),
        (String, Result<super::server_fns::Checked<Rule>, crate::domain::error::ApiError>),
    >,
    problems: RwSignal<(String, Vec<FieldError>)>,
}

impl RuleEditing {
    fn errors_for(self, event_type: String) -> Signal<Vec<FieldError>> {
        let problems = self.problems;
        Signal::derive(move || problems.with(|(t, p)| if *t == event_type { p.clone() } else { vec![] }))
    }
}

#[component]
fn RuleRow(rule: Rule, ctx: RuleEditing) -> impl IntoView {
    let points = RwSignal::new(rule.points.to_string());
    let active = RwSignal::new(rule.is_active);
    let event_type = rule.event_type.clone();
    let submit = {
        let event_type = event_type.clone();
        move || {
            ctx.save.dispatch((event_type.clone(), points.get_untracked(), active.get_untracked()));
        }
    };
    let on_toggle = {
        let submit = submit.clone();
        move |_| {
            active.update(|a| *a = !*a);
            submit();
        }
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        submit();
    };
    let form_id = format!("rule-{}", event_type.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    let errors = ctx.errors_for(event_type.clone());
    view! {
        <tr data-rule=event_type.clone()>
            <th scope="row">{event_type.clone()}</th>
            <td>
                <form id=form_id.clone() on:submit=on_submit class="inline">
                    <input type="number" step="1" name="points" bind:value=points aria-label=format!("Points for {event_type}")
                        aria-invalid=move || (!errors.get().is_empty()).to_string()/>
                </form>
                <FieldErrors errors/>
            </td>
            <td>
                <label class="switch">
                    <input type="checkbox" name="isActive" prop:checked=move || active.get() on:change=on_toggle
                        aria-label=format!("{event_type} active")/>
                    <span>{move || if active.get() { "Active" } else { "Off" }}</span>
                </label>
            </td>
            <td><button type="submit" form=form_id disabled=move || ctx.save.pending().get()>"Save"</button></td>
        </tr>
    }
}

#[component]
fn NewRule(ctx: RuleEditing) -> impl IntoView {
    let event_type = RwSignal::new(String::new());
    let points = RwSignal::new(String::new());
    let active = RwSignal::new(true);
    let errors = Signal::derive(move || {
        let typed = event_type.get();
        ctx.problems.with(|(t, p)| if *t == typed || (t.is_empty() && !p.is_empty()) { p.clone() } else { vec![] })
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        ctx.save.dispatch((event_type.get_untracked(), points.get_untracked(), active.get_untracked()));
    };
    view! {
        <section class="panel" aria-labelledby="new-rule-title">
            <h2 id="new-rule-title">"Add a rule"</h2>
            <form class="row-form" on:submit=on_submit id="new-rule">
                <label>"Event type" <input name="eventType" bind:value=event_type placeholder="e.g. Webinar Attended"/></label>
                <label>"Points" <input type="number" step="1" name="points" bind:value=points placeholder="e.g. 30"/></label>
                <label class="switch"><input type="checkbox" name="isActive" bind:checked=active/>" Active"</label>
                <button type="submit" disabled=move || ctx.save.pending().get()>"Add rule"</button>
            </form>
            <FieldErrors errors/>
        </section>
    }
}
