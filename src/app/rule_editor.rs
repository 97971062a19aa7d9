//! The rule editor: adds a rule, or changes every field of one (name, event type, points,
//! state, conditions, limit). The plain form (no name, conditions or limit) sets the event
//! type's base rule, as `POST /api/rules` does.

use super::dashboard::FieldErrors;
use super::rules::{Origin, RuleEditing, SaveRequest};
use crate::domain::conditions::Op;
use crate::domain::limits::Per;
use crate::domain::rule_form::{ConditionForm, RuleForm};
use crate::domain::Rule;
use leptos::prelude::*;

/// One condition's inputs, with a stable key so typing never re-renders the list.
#[derive(Clone, Copy)]
struct ConditionRow {
    key: usize,
    field: RwSignal<String>,
    op: RwSignal<String>,
    value: RwSignal<String>,
}

impl ConditionRow {
    fn new(key: usize, c: &ConditionForm) -> Self {
        Self {
            key,
            field: RwSignal::new(c.field.clone()),
            op: RwSignal::new(c.op.clone()),
            value: RwSignal::new(c.value.clone()),
        }
    }

    fn form(self) -> ConditionForm {
        ConditionForm {
            field: self.field.get_untracked(),
            op: self.op.get_untracked(),
            value: self.value.get_untracked(),
        }
    }
}

#[component]
pub fn RuleEditor(ctx: RuleEditing) -> impl IntoView {
    view! {
        <section class="panel" id="rule-editor" aria-labelledby="rule-editor-title">
            {move || {
                ctx.editor_epoch.track();
                let rule = ctx.editing.get_untracked();
                view! { <EditorForm rule ctx/> }
            }}
        </section>
    }
}

#[component]
fn EditorForm(rule: Option<Rule>, ctx: RuleEditing) -> impl IntoView {
    let initial = rule.as_ref().map(RuleForm::from_rule).unwrap_or_else(RuleForm::blank);
    let id = rule.as_ref().map(|r| r.id.clone());
    let name = RwSignal::new(initial.name.clone());
    let event_type = RwSignal::new(initial.event_type.clone());
    let points = RwSignal::new(initial.points.clone());
    let active = RwSignal::new(initial.is_active);
    let limit_count = RwSignal::new(initial.limit_count.clone());
    let limit_per = RwSignal::new(initial.limit_per.clone());
    let next_key = StoredValue::new(initial.conditions.len());
    let rows =
        RwSignal::new(initial.conditions.iter().enumerate().map(|(i, c)| ConditionRow::new(i, c)).collect::<Vec<_>>());
    let add_condition = move |_| {
        let key = next_key.get_value();
        next_key.set_value(key + 1);
        let blank = ConditionForm { op: "equals".into(), ..ConditionForm::default() };
        rows.update(|r| r.push(ConditionRow::new(key, &blank)));
    };
    let origin = Origin::Editor(id.clone());
    let errors = ctx.errors_for(origin.clone());
    let on_submit = {
        let id = id.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let form = RuleForm {
                name: name.get_untracked(),
                event_type: event_type.get_untracked(),
                points: points.get_untracked(),
                is_active: active.get_untracked(),
                conditions: rows.get_untracked().into_iter().map(ConditionRow::form).collect(),
                limit_count: limit_count.get_untracked(),
                limit_per: limit_per.get_untracked(),
            };
            ctx.save.dispatch(SaveRequest::Form(origin.clone(), id.clone(), form));
        }
    };
    let cancel = move |_| {
        ctx.editing.set(None);
        ctx.editor_epoch.update(|n| *n += 1);
    };
    let title = match &rule {
        Some(r) => format!("Edit “{}”", r.name),
        None => "Add a rule".to_string(),
    };
    let editing = rule.is_some();
    view! {
        <h2 id="rule-editor-title">{title}</h2>
        <form class="rule-form" on:submit=on_submit id="rule-form">
            <div class="row-form">
                <label>"Name" <input name="name" bind:value=name placeholder="e.g. Pricing page view"/></label>
                <label>"Event type" <input name="eventType" bind:value=event_type placeholder="e.g. Page View"/></label>
                <label>"Points" <input type="number" step="1" name="points" bind:value=points placeholder="e.g. 30"/></label>
                <label class="switch"><input type="checkbox" name="isActive" bind:checked=active/>" Active"</label>
            </div>
            <fieldset class="conditions">
                <legend>"Conditions "<span class="muted small">"(all must hold; a field is a dot path into the event's metadata, e.g. utm.source)"</span></legend>
                <For each=move || rows.get() key=|r| r.key let:row>
                    <ConditionInputs row remove=move || rows.update(|r| r.retain(|x| x.key != row.key))/>
                </For>
                <button type="button" class="secondary" id="add-condition" on:click=add_condition>"+ Add condition"</button>
            </fieldset>
            <fieldset class="limit">
                <legend>"Limit "<span class="muted small">"(leave the count empty for none)"</span></legend>
                <label>"At most " <input type="number" min="1" step="1" name="limitCount" bind:value=limit_count placeholder="no limit" class="short"/></label>
                <label>" events per lead "
                    <select name="limitPer" prop:value=move || limit_per.get() on:change=move |ev| limit_per.set(event_target_value(&ev))>
                        {Per::ALL.into_iter().map(|per| {
                            let value = per.as_str();
                            let label = match per { Per::Day => "a day", Per::Week => "a week", Per::Month => "a month", Per::Lead => "ever" };
                            view! { <option value=value selected=move || limit_per.get() == value>{label}</option> }
                        }).collect_view()}
                    </select>
                </label>
            </fieldset>
            <div class="row-form">
                <button type="submit" disabled=move || ctx.busy()>{if editing { "Save changes" } else { "Add rule" }}</button>
                {editing.then(|| view! { <button type="button" class="secondary" on:click=cancel>"Cancel"</button> })}
            </div>
        </form>
        <FieldErrors errors/>
    }
}

#[component]
fn ConditionInputs(row: ConditionRow, remove: impl Fn() + Send + Sync + 'static) -> impl IntoView {
    let needs_value = move || !matches!(Op::parse(&row.op.get()), Some(Op::Exists | Op::NotExists));
    let hint = move || Op::parse(&row.op.get()).map(Op::expects).unwrap_or("a value");
    view! {
        <div class="condition" data-condition=row.key.to_string()>
            <input name="conditionField" bind:value=row.field placeholder="field, e.g. page" aria-label="Condition field"/>
            <select name="conditionOp" aria-label="Condition operator" prop:value=move || row.op.get()
                on:change=move |ev| row.op.set(event_target_value(&ev))>
                {Op::ALL.into_iter().map(|op| {
                    let value = op.as_str();
                    view! { <option value=value selected=move || row.op.get() == value>{value}</option> }
                }).collect_view()}
            </select>
            <input name="conditionValue" bind:value=row.value aria-label="Condition value"
                placeholder=hint disabled=move || !needs_value()/>
            <button type="button" class="secondary" aria-label="Remove condition" on:click=move |_| remove()>"×"</button>
        </div>
    }
}
