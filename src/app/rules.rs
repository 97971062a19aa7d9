//! `/rules`: every rule, with its points and state edited in place; the editor below adds a
//! rule or changes one's name, conditions and limit.

use super::auth::{Allowed, Viewer};
use super::dashboard::FieldErrors;
use super::decay_setting::DecaySetting;
use super::live::Live;
use super::rescore_panel::RescorePanel;
use super::rule_editor::RuleEditor;
use super::server_fns::{delete_rule, describe, fetch_rules, save_rule, set_rule_points, update_rule, Checked};
use super::stage_ladder::StageLadder;
use super::LoadError;
use crate::domain::access::Access;
use crate::domain::error::ApiError;
use crate::domain::limits::Limit;
use crate::domain::rule_form::RuleForm;
use crate::domain::{FieldError, Rule};
use leptos::prelude::*;
use leptos_meta::Title;

/// The outcome of the last change, shown in one status line.
#[derive(Clone, Debug, PartialEq)]
enum Feedback {
    Saved(String),
    Failed(String),
}

/// Where a save came from, so its field problems show beside the right inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A rule's row (points, active).
    Row(String),
    /// The editor, adding (`None`) or changing a rule.
    Editor(Option<String>),
}

/// A save: from the editor, which rule (`None`: a new one, or the type's base rule) and the
/// form; from a row, its points and state only.
#[derive(Clone)]
pub enum SaveRequest {
    Form(Origin, Option<String>, RuleForm),
    Points { id: String, points: String, active: bool },
}
type SaveResult = (Origin, Result<Checked<Rule>, ApiError>);

/// What the rows and the editor share.
#[derive(Clone, Copy)]
pub struct RuleEditing {
    pub save: Action<SaveRequest, SaveResult>,
    remove: Action<Rule, Result<Rule, ApiError>>,
    problems: RwSignal<(Option<Origin>, Vec<FieldError>)>,
    /// The rule the editor shows; `None`: a new rule.
    pub editing: RwSignal<Option<Rule>>,
    /// Bumped when the editor should start over (after a save, or on "Edit").
    pub editor_epoch: RwSignal<u32>,
}

impl RuleEditing {
    pub fn errors_for(self, origin: Origin) -> Signal<Vec<FieldError>> {
        let problems = self.problems;
        Signal::derive(move || problems.with(|(o, p)| if o.as_ref() == Some(&origin) { p.clone() } else { vec![] }))
    }

    pub fn busy(self) -> bool {
        self.save.pending().get() || self.remove.pending().get()
    }
}

#[component]
pub fn RulesPage() -> impl IntoView {
    let live = Live::get();
    let viewer = Viewer::get();
    let reload = RwSignal::new(0u32);
    let rules = Resource::new(move || (reload.get(), live.resync.get()), |_| fetch_rules());
    let feedback = RwSignal::new(None::<Feedback>);
    let save = Action::new(|request: &SaveRequest| {
        let request = request.clone();
        async move {
            match request {
                SaveRequest::Form(origin, Some(id), form) => (origin, update_rule(id, form).await),
                SaveRequest::Form(origin, None, form) => (origin, save_rule(form).await),
                SaveRequest::Points { id, points, active } => {
                    (Origin::Row(id.clone()), set_rule_points(id, points, active).await)
                }
            }
        }
    });
    let remove = Action::new(|rule: &Rule| delete_rule(rule.id.clone()));
    let problems = RwSignal::new((None::<Origin>, Vec::<FieldError>::new()));
    let editing = RwSignal::new(None::<Rule>);
    let editor_epoch = RwSignal::new(0u32);
    Effect::new(move |_| {
        let Some((origin, result)) = save.value().get() else { return };
        match result {
            Ok(Ok(rule)) => {
                problems.set((None, vec![]));
                let state = if rule.is_active { "active" } else { "inactive" };
                feedback
                    .set(Some(Feedback::Saved(format!("Saved “{}”: {:+} points, {state}.", rule.name, rule.points))));
                if matches!(origin, Origin::Editor(_)) {
                    editing.set(None);
                    editor_epoch.update(|n| *n += 1);
                }
                reload.update(|n| *n += 1);
            }
            Ok(Err(p)) => {
                feedback.set(Some(Feedback::Failed("Not saved; see the problems below the rule.".into())));
                problems.set((Some(origin), p));
            }
            Err(e) => feedback.set(Some(Feedback::Failed(format!("Not saved: {}", describe(&e))))),
        }
    });
    Effect::new(move |_| match remove.value().get() {
        Some(Ok(rule)) => {
            feedback.set(Some(Feedback::Saved(format!("Deleted “{}”.", rule.name))));
            if editing.with_untracked(|e| e.as_ref().is_some_and(|e| e.id == rule.id)) {
                editing.set(None);
                editor_epoch.update(|n| *n += 1);
            }
            reload.update(|n| *n += 1);
        }
        Some(Err(e)) => feedback.set(Some(Feedback::Failed(format!("Not deleted: {}", describe(&e))))),
        None => {}
    });
    let ctx = RuleEditing { save, remove, problems, editing, editor_epoch };

    view! {
        <Title text="Rules · Leadscore"/>
        <section class="panel" aria-labelledby="rules-title">
            <h1 id="rules-title">"Scoring rules"</h1>
            <p class="muted">"Every active rule of an event's type whose conditions all hold adds its points, up to its limit. An event no rule matches scores 0 and is still logged. Changes apply to events scored from now on."</p>
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
                                    <th scope="col">"Rule"</th><th scope="col">"Event type"</th><th scope="col">"When"</th>
                                    <th scope="col">"Limit"</th><th scope="col">"Points"</th><th scope="col">"Active"</th>
                                    <th scope="col"><span class="sr-only">"Actions"</span></th>
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
            <RuleEditor ctx/>
        </Allowed>
        <RescorePanel rules_changed=reload.read_only()/>
        <StageLadder/>
        <DecaySetting/>
    }
}

/// The conditions in words: `page equals "/pricing" and utm.source exists`.
pub fn conditions_text(rule: &Rule) -> String {
    if rule.conditions.is_empty() {
        return "every event".into();
    }
    rule.conditions
        .iter()
        .map(|c| match &c.value {
            serde_json::Value::Null => format!("{} {}", c.field, c.op.as_str()),
            v => format!("{} {} {v}", c.field, c.op.as_str()),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn limit_text(limit: Option<Limit>) -> String {
    match limit {
        None => "—".into(),
        Some(Limit { count, per }) if per.as_str() == "lead" => format!("{count} per lead, ever"),
        Some(Limit { count, per }) => format!("{count} per {}", per.as_str()),
    }
}

/// A rule as a viewer sees it: no inputs, no buttons.
#[component]
fn ReadOnlyRule(rule: Rule) -> impl IntoView {
    view! {
        <tr data-rule=rule.event_type.clone() data-rule-id=rule.id.clone()>
            <th scope="row">{rule.name.clone()}</th>
            <td>{rule.event_type.clone()}</td>
            <td class="small">{conditions_text(&rule)}</td>
            <td class="small">{limit_text(rule.limit)}</td>
            <td>{format!("{:+}", rule.points)}</td>
            <td>{if rule.is_active { "Active" } else { "Off" }}</td>
            <td></td>
        </tr>
    }
}

#[component]
fn RuleRow(rule: Rule, ctx: RuleEditing) -> impl IntoView {
    let points = RwSignal::new(rule.points.to_string());
    let active = RwSignal::new(rule.is_active);
    let origin = Origin::Row(rule.id.clone());
    let submit = {
        let id = rule.id.clone();
        move || {
            ctx.save.dispatch(SaveRequest::Points {
                id: id.clone(),
                points: points.get_untracked(),
                active: active.get_untracked(),
            });
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
    let edit = {
        let rule = rule.clone();
        move |_| {
            ctx.editing.set(Some(rule.clone()));
            ctx.editor_epoch.update(|n| *n += 1);
            if let Some(editor) = document().get_element_by_id("rule-editor") {
                editor.scroll_into_view();
            }
        }
    };
    let delete = {
        let rule = rule.clone();
        move |_| {
            let sure = window()
                .confirm_with_message(&format!(
                    "Delete the rule “{}”? Events already scored keep their points.",
                    rule.name
                ))
                .unwrap_or(false);
            if sure {
                ctx.remove.dispatch(rule.clone());
            }
        }
    };
    let form_id = format!("rule-{}", rule.id);
    let errors = ctx.errors_for(origin);
    let name = rule.name.clone();
    view! {
        <tr data-rule=rule.event_type.clone() data-rule-id=rule.id.clone()>
            <th scope="row">{rule.name.clone()}{rule.base.then(|| view! { <span class="muted small" title="The rule POST /api/rules with only eventType, points and isActive sets">" · base"</span> })}</th>
            <td>{rule.event_type.clone()}</td>
            <td class="small">{conditions_text(&rule)}</td>
            <td class="small">{limit_text(rule.limit)}</td>
            <td>
                <form id=form_id.clone() on:submit=on_submit class="inline">
                    <input type="number" step="1" name="points" bind:value=points aria-label=format!("Points for {name}")
                        aria-invalid=move || (!errors.get().is_empty()).to_string()/>
                </form>
                <FieldErrors errors/>
            </td>
            <td>
                <label class="switch">
                    <input type="checkbox" name="isActive" prop:checked=move || active.get() on:change=on_toggle
                        aria-label=format!("{name} active")/>
                    <span>{move || if active.get() { "Active" } else { "Off" }}</span>
                </label>
            </td>
            <td class="actions">
                <button type="submit" form=form_id disabled=move || ctx.busy()>"Save"</button>
                " "
                <button type="button" class="secondary" on:click=edit aria-label=format!("Edit {name}")>"Edit"</button>
                " "
                <button type="button" class="secondary danger" disabled=move || ctx.busy() on:click=delete
                    aria-label=format!("Delete {}", rule.name)>"Delete"</button>
            </td>
        </tr>
    }
}
