//! What rule editors do with the rules: list, create, change, remove. Events scored from
//! then on use the new rules; events already scored keep their points (history is never
//! rewritten behind anyone's back). Every change goes to the audit log with the rule as it
//! was before.

use super::accounts::Actor;
use super::store::NewAuditEntry;
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::validation::validate_scoring_rule;
use crate::domain::Rule;
use serde_json::Value;

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
        if draft.legacy {
            let before = self.store.rules().await?.into_iter().find(|r| r.base && r.event_type == draft.event_type);
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
            let saved = self.store.create_rule(draft, now).await?;
            self.audit_rule("rule.create", None, Some(&saved), actor).await;
            Ok(Saved::Created(saved))
        }
    }

    /// Replaces every field of rule `id` with `raw`'s (`eventType` and `points` required).
    pub async fn update_rule(&self, id: &str, raw: &Value, actor: &Actor) -> ServiceResult<Rule> {
        let draft = validate_scoring_rule(raw).map_err(ServiceError::Invalid)?;
        let before = self.store.rules().await?.into_iter().find(|r| r.id == id).ok_or(ServiceError::NotFound)?;
        let saved = self.store.update_rule(id, draft, now_ms()).await?.ok_or(ServiceError::NotFound)?;
        self.audit_rule("rule.update", Some(&before), Some(&saved), actor).await;
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
    }
}
