//! What rule editors do with the rules: list, create, change, remove. Events scored from
//! then on use the new rules; events already scored keep their points (history is never
//! rewritten behind anyone's back). Every change goes to the audit log with the rule as it
//! was before.

use super::accounts::Actor;
use super::store::NewAuditEntry;
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::validation::validate_scoring_rule;
use crate::domain::{FieldError, Rule, RuleDraft};
use serde_json::Value;

/// Rules one event type may have: each matching rule is priced for every event of its type,
/// and MongoDB records every match of a batch in one lead document.
pub const MAX_RULES_PER_TYPE: usize = 50;

/// What a `POST /api/rules` did.
#[derive(Debug)]
pub enum Saved {
    /// The old meaning: the type's base rule was updated (or created).
    Base(Rule),
    /// A new rule, with its new id.
    Created(Rule),
}

impl Service {
    pub async fn rules(&self) -> ServiceResult<Vec<Rule>> {
        Ok(self.store.rules().await?)
    }

    /// `{eventType, points, isActive}` alone sets the type's base rule, as it always did, so
    /// old clients keep working; with `name`, `conditions` or `limit` it adds a rule.
    pub async fn save_rule(&self, raw: &Value, actor: &Actor) -> ServiceResult<Saved> {
        let draft = validate_scoring_rule(raw).map_err(ServiceError::Invalid)?;
        let now = now_ms();
        let rules = self.store.rules().await?;
        // A rule read from `GET /api/rules` and posted back with its id: that rule changes
        // (a client that knows nothing of ids must not make a copy of it).
        if let Some(before) = raw.get("id").and_then(Value::as_str).and_then(|id| rules.iter().find(|r| r.id == id)) {
            return Ok(Saved::Base(self.replace_rule(before.clone(), draft, &rules, actor).await?));
        }
        if draft.legacy {
            let before = rules.into_iter().find(|r| r.base && r.event_type == draft.event_type);
            let input = crate::domain::RuleInput {
                event_type: draft.event_type,
                points: draft.points,
                is_active: draft.is_active,
            };
            let saved = self.store.upsert_rule(input, now).await?;
            let action = if before.is_some() { "rule.update" } else { "rule.create" };
            self.audit_rule(action, before.as_ref(), Some(&saved), actor).await;
            Ok(Saved::Base(saved))
        } else {
            check_room(&rules, &draft.event_type, None)?;
            let saved = self.store.create_rule(draft, now).await?;
            self.audit_rule("rule.create", None, Some(&saved), actor).await;
            Ok(Saved::Created(saved))
        }
    }

    /// Replaces every field of rule `id` with `raw`'s (`eventType` and `points` required).
    pub async fn update_rule(&self, id: &str, raw: &Value, actor: &Actor) -> ServiceResult<Rule> {
        let draft = validate_scoring_rule(raw).map_err(ServiceError::Invalid)?;
        let rules = self.store.rules().await?;
        let before = rules.iter().find(|r| r.id == id).cloned().ok_or(ServiceError::NotFound)?;
        self.replace_rule(before, draft, &rules, actor).await
    }

    /// Replaces `before` (one of `rules`, the list as just read) with `draft`, audited.
    async fn replace_rule(&self, before: Rule, draft: RuleDraft, rules: &[Rule], actor: &Actor) -> ServiceResult<Rule> {
        if draft.event_type != before.event_type {
            check_room(rules, &draft.event_type, Some(&before.id))?;
        }
        let saved = self.store.update_rule(&before.id, draft, now_ms()).await?.ok_or(ServiceError::NotFound)?;
        self.audit_rule("rule.update", Some(&before), Some(&saved), actor).await;
        Ok(saved)
    }

    /// Changes only a rule's points and state (the rules page's quick edit): its name,
    /// conditions and limit stay exactly as stored, whatever copy the page holds.
    pub async fn set_rule_points(
        &self,
        id: &str,
        points: &Value,
        is_active: bool,
        actor: &Actor,
    ) -> ServiceResult<Rule> {
        let current = self.store.rules().await?.into_iter().find(|r| r.id == id).ok_or(ServiceError::NotFound)?;
        let raw = serde_json::json!({"eventType": current.event_type, "points": points, "isActive": is_active});
        let checked = validate_scoring_rule(&raw).map_err(ServiceError::Invalid)?;
        let draft = RuleDraft {
            name: Some(current.name.clone()),
            event_type: current.event_type.clone(),
            points: checked.points,
            is_active,
            conditions: current.conditions.clone(),
            limit: current.limit,
            legacy: false,
        };
        let saved = self.store.update_rule(id, draft, now_ms()).await?.ok_or(ServiceError::NotFound)?;
        self.audit_rule("rule.update", Some(&current), Some(&saved), actor).await;
        Ok(saved)
    }

    pub async fn delete_rule(&self, id: &str, actor: &Actor) -> ServiceResult<Rule> {
        let removed = self.store.delete_rule(id).await?.ok_or(ServiceError::NotFound)?;
        self.audit_rule("rule.delete", Some(&removed), None, actor).await;
        Ok(removed)
    }

    async fn audit_rule(&self, action: &str, before: Option<&Rule>, after: Option<&Rule>, actor: &Actor) {
        let rule = after.or(before).expect("a rule change has a rule");
        let summary = |r: &Rule| {
            serde_json::json!({
                "name": r.name, "eventType": r.event_type, "points": r.points, "isActive": r.is_active,
                "conditions": r.conditions, "limit": r.limit,
            })
        };
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: action.into(),
            target: format!("{} ({})", rule.name, rule.id),
            before: before.map(summary),
            after: after.map(summary),
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        // The rules page offers a rescore once they changed.
        let key = super::rescore::RULES_CHANGED_KEY;
        if let Err(e) = self.store.put_setting(key, serde_json::json!(now_ms()), now_ms()).await {
            tracing::warn!(error = %e, "cannot note when the rules changed");
        }
    }
}

/// Refuses a rule for a type that has `MAX_RULES_PER_TYPE` already (`except`: the rule being
/// moved to it).
fn check_room(rules: &[Rule], event_type: &str, except: Option<&str>) -> ServiceResult<()> {
    let taken = rules.iter().filter(|r| r.event_type == event_type && Some(r.id.as_str()) != except).count();
    if taken >= MAX_RULES_PER_TYPE {
        return Err(ServiceError::Invalid(vec![FieldError::new(
            "eventType",
            format!("has {taken} rules already; an event type may have at most {MAX_RULES_PER_TYPE}"),
        )]));
    }
    Ok(())
}
