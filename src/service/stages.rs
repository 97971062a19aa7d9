//! Lifecycle stages: the ladder (`GET`/`PUT /api/stages`), each lead's stage, counts per
//! stage. A stage is never stored on a lead: it follows from the score and the ladder, so a
//! new ladder re-stages every lead at once, and a stage filter is a score range the score
//! index serves.

use super::accounts::Actor;
use super::store::{NewAuditEntry, StoreError};
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::stages::{default_stages, parse_stages, stage_for, Stage, StageChange, StageCount};
use crate::domain::{FieldError, LeadDetail};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where the ladder is kept (`Store::setting`).
pub const STAGES_KEY: &str = "stages";
/// Counts per stage are reused for this long whatever happens, and after that for as long
/// as no score changed: a dashboard is at most this far behind, and many dashboards during
/// heavy ingest share one count.
const COUNTS_FRESH: std::time::Duration = std::time::Duration::from_millis(500);

impl Service {
    /// The ladder: as saved, or the default one.
    pub async fn stages(&self) -> ServiceResult<Vec<Stage>> {
        Ok(self.ladder_now().await?)
    }

    /// The ladder as the store has it now; keeps the live stream's copy current.
    pub(super) async fn ladder_now(&self) -> Result<Vec<Stage>, StoreError> {
        let ladder = match self.store.setting(STAGES_KEY).await? {
            None => default_stages(),
            Some(raw) => parse_stages(&raw)
                .map_err(|e| StoreError::Internal(format!("the saved stage ladder does not read: {e:?}")))?,
        };
        // Keep the live stream's copy current (several instances may share the store).
        self.ladder.send_if_modified(|current| {
            let changed = **current != ladder;
            if changed {
                *current = Arc::new(ladder.clone());
            }
            changed
        });
        self.ladder_loaded.store(true, Ordering::Release);
        Ok(ladder)
    }

    /// The ladder reads name stages with: the copy `ladder`'s loop keeps current (a ladder
    /// saved on another instance shows within its period, here at once), read from the
    /// store only until that copy has been loaded. Saves one store round trip per read.
    pub(super) async fn current_ladder(&self) -> Result<Arc<Vec<Stage>>, StoreError> {
        if self.ladder_loaded.load(Ordering::Acquire) {
            return Ok(self.ladder.borrow().clone());
        }
        self.ladder_now().await.map(Arc::new)
    }

    /// The ladder the live stream names stages with. Every read of the ladder refreshes it,
    /// and so does this loop, every `period`: another instance sharing the store may have
    /// saved a new one.
    pub fn ladder(self: &Arc<Self>, period: std::time::Duration) -> tokio::sync::watch::Receiver<Arc<Vec<Stage>>> {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(service) = service.upgrade() else { return };
                if let Err(e) = service.ladder_now().await {
                    tracing::debug!(error = %e, "cannot refresh the stage ladder");
                }
            }
        });
        self.ladder.subscribe()
    }

    /// Whether any score changed since the last call (this instance's worker's changes, or on
    /// a shared store every instance's, as the live stream sees them).
    fn scores_changed(&self) -> bool {
        // A batch not yet seen by every receiver (the counting task among them) is a change
        // the counter may not show yet.
        let unseen = !self.updates.is_empty();
        let now = self.score_generation.load(Ordering::Relaxed);
        self.counted_generation.swap(now, Ordering::Relaxed) != now || unseen
    }

    /// Replaces the ladder; audited with the one before.
    pub async fn save_stages(&self, raw: &Value, actor: &Actor) -> ServiceResult<Vec<Stage>> {
        let ladder = parse_stages(raw).map_err(ServiceError::Invalid)?;
        let before = self.stages().await?;
        let value = serde_json::to_value(&ladder).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.store.put_setting(STAGES_KEY, value.clone(), now_ms()).await?;
        self.ladder.send_replace(Arc::new(ladder.clone()));
        *self.stage_counts.lock().unwrap() = None;
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: "stages.update".into(),
            target: "stage ladder".into(),
            before: serde_json::to_value(&before).ok(),
            after: Some(value),
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        Ok(ladder)
    }

    /// Every stage with how many leads are in it, each counted on the score index; shared
    /// between everyone who asks (see `COUNTS_FRESH`).
    pub async fn stage_counts(&self) -> ServiceResult<Vec<StageCount>> {
        if let Some((at, counts)) = self.stage_counts.lock().unwrap().as_ref() {
            if at.elapsed() < COUNTS_FRESH || !self.scores_changed() {
                return Ok(counts.clone());
            }
        }
        let ladder = self.stages().await?;
        let mut out = Vec::with_capacity(ladder.len());
        for (i, stage) in ladder.iter().enumerate() {
            let low = (i > 0).then_some(stage.min_score);
            let high = ladder.get(i + 1).map(|next| next.min_score - 1);
            let leads = self.store.count_leads(low, high).await?;
            out.push(StageCount { name: stage.name.clone(), min_score: stage.min_score, leads });
        }
        *self.stage_counts.lock().unwrap() = Some((std::time::Instant::now(), out.clone()));
        Ok(out)
    }
}

/// Names the lead's stage and every stage move in its history.
pub fn name_stages(detail: &mut LeadDetail, ladder: &[Stage]) {
    detail.lead.stage = stage_for(ladder, detail.lead.score).to_string();
    for h in &mut detail.history {
        h.stage_change = StageChange::between(ladder, h.old_score, h.new_score);
    }
}

/// The error for a stage filter naming no stage.
pub fn unknown_stage(ladder: &[Stage]) -> ServiceError {
    let names: Vec<&str> = ladder.iter().map(|s| s.name.as_str()).collect();
    ServiceError::Invalid(vec![FieldError::new("stage", format!("must be one of {}", names.join(", ")))])
}
