//! What admins do with the dead-letter list: look, put an event back in the queue once what
//! broke it is repaired, or discard it. Both changes go to the audit log.

use super::accounts::Actor;
use super::store::NewAuditEntry;
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::{DeadLetter, DeadLetterList, FieldError};

/// Dead letters per page at most.
pub const MAX_PAGE: usize = 1_000;

impl Service {
    /// A page of the list: `limit` dead letters (default 100) from the event after `after` on.
    pub async fn dead_letters(&self, after: Option<i64>, limit: Option<usize>) -> ServiceResult<DeadLetterList> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::Invalid(vec![FieldError::new(
                "limit",
                format!("must be a whole number from 1 to {MAX_PAGE}"),
            )]));
        }
        let (dead_letters, total) = self.store.dead_letters(after, limit).await?;
        Ok(DeadLetterList { dead_letters, total })
    }

    /// Puts the event back in the queue; it is scored once, like any queued event.
    pub async fn retry_dead_letter(&self, id: i64, actor: &Actor) -> ServiceResult<()> {
        let letter = self.letter(id).await?;
        if !self.store.retry_dead_letter(id).await? {
            return Err(ServiceError::NotFound);
        }
        self.wake_worker.notify_one();
        self.audit("deadLetter.retry", &letter, actor).await;
        Ok(())
    }

    /// Drops the dead letter: the event stays stored (its `eventId` still dedupes) unscored.
    pub async fn discard_dead_letter(&self, id: i64, actor: &Actor) -> ServiceResult<()> {
        let letter = self.letter(id).await?;
        if !self.store.discard_dead_letter(id).await? {
            return Err(ServiceError::NotFound);
        }
        self.audit("deadLetter.discard", &letter, actor).await;
        Ok(())
    }

    async fn letter(&self, id: i64) -> ServiceResult<DeadLetter> {
        let (letters, _) = self.store.dead_letters(id.checked_sub(1), 1).await?;
        letters.into_iter().find(|l| l.id == id).ok_or(ServiceError::NotFound)
    }

    async fn audit(&self, action: &str, letter: &DeadLetter, actor: &Actor) {
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: action.into(),
            target: letter.event_id.clone().unwrap_or_else(|| format!("event #{}", letter.id)),
            before: Some(serde_json::json!({"error": letter.error, "attempts": letter.attempts})),
            after: None,
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
