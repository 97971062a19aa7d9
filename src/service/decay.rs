//! Score decay (`domain::decay`): the setting (`GET`/`PUT /api/settings/decay`) and the
//! background pass. A pass records each lead's adjustment as an event of its own, which the
//! worker scores like any other: exactly once (its id is derived from what the pass read),
//! with a history entry, a stage change and a stream update, on either store and any number
//! of instances.

use super::accounts::Actor;
use super::store::NewAuditEntry;
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::decay::{adjustment_event, parse_half_life, DecayPage, DecayPass, DecaySettings};
use crate::domain::time::Millis;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Where the half-life is kept (`Store::setting`).
pub const DECAY_KEY: &str = "decay";
/// Where the last pass that wrote adjustments says what it did. With decay turned off, one
/// more pass gives the points back; after that, passes read nothing.
const LAST_PASS_KEY: &str = "decay.lastPass";
/// Leads read per page: a pass holds one page of events in memory, never all of them.
const LEADS_PER_PAGE: usize = 500;
/// How often a pass retries a page the store refused (the writer was behind), and how long
/// it waits in between.
const PAGE_ATTEMPTS: u32 = 30;
const PAGE_RETRY: Duration = Duration::from_secs(1);
/// When a pass waits for the last one's adjustments, or failed, it tries again this soon.
const WAITING_RETRY: Duration = Duration::from_secs(2);
const FAILED_RETRY: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Clone, Debug, PartialEq)]
pub enum PassOutcome {
    Ran(DecayPass),
    /// No decay, and none to undo.
    Off,
    /// The last pass's adjustments are not all scored yet: reading scores now would count
    /// them twice.
    Waiting,
}

impl Service {
    pub async fn decay_settings(&self) -> ServiceResult<DecaySettings> {
        Ok(DecaySettings { half_life_days: self.half_life().await?, last_pass: self.last_pass().await? })
    }

    /// Sets the half-life (`null`: off), audited; the next pass starts at once.
    pub async fn save_decay(&self, raw: &Value, actor: &Actor) -> ServiceResult<DecaySettings> {
        let half_life = parse_half_life(raw).map_err(ServiceError::Invalid)?;
        let before = self.half_life().await?;
        let value = json!({"halfLifeDays": half_life});
        self.store.put_setting(DECAY_KEY, value.clone(), now_ms()).await?;
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: "decay.update".into(),
            target: "score decay".into(),
            before: Some(json!({"halfLifeDays": before})),
            after: Some(value),
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        self.wake_decay.notify_one();
        Ok(DecaySettings { half_life_days: half_life, last_pass: self.last_pass().await? })
    }

    pub(super) async fn half_life(&self) -> ServiceResult<Option<f64>> {
        match self.store.setting(DECAY_KEY).await? {
            None => Ok(None),
            Some(raw) => parse_half_life(&raw)
                .map_err(|e| ServiceError::Internal(format!("the saved decay setting does not read: {e:?}"))),
        }
    }

    async fn last_pass(&self) -> ServiceResult<Option<DecayPass>> {
        Ok(self.store.setting(LAST_PASS_KEY).await?.and_then(|v| serde_json::from_value(v).ok()))
    }

    /// One pass at `now`: every lead's adjustment recorded as an event.
    pub async fn decay_pass(&self, now: Millis) -> ServiceResult<PassOutcome> {
        let half_life = self.half_life().await?;
        let undo = self.last_pass().await?.is_some_and(|p| p.half_life_days.is_some());
        if half_life.is_none() && !undo {
            return Ok(PassOutcome::Off);
        }
        if self.store.adjustments_pending().await? || self.rescoring().await? {
            return Ok(PassOutcome::Waiting);
        }
        let mut pass = DecayPass { at: now, half_life_days: half_life, leads: 0, adjusted: 0, busy: 0 };
        let mut cursor = None;
        loop {
            let DecayPage { inputs, busy, next } = self.store.decay_inputs(cursor.clone(), LEADS_PER_PAGE).await?;
            pass.leads += inputs.len() as u64;
            pass.busy += busy;
            let events: Vec<_> = inputs.iter().filter_map(|i| adjustment_event(i, half_life, now)).collect();
            pass.adjusted += events.len() as u64;
            // A rescore started meanwhile sets scores outright: a relative adjustment read
            // before it would be added on top. Its replay decays anyway; the next pass goes on.
            if !events.is_empty() && self.rescoring().await? {
                return Ok(PassOutcome::Waiting);
            }
            if !events.is_empty() {
                self.record_adjustments(events).await?;
            }
            match next {
                Some(after) => cursor = Some(after),
                None => break,
            }
        }
        if pass.adjusted > 0 || undo {
            let value = serde_json::to_value(&pass).map_err(|e| ServiceError::Internal(e.to_string()))?;
            self.store.put_setting(LAST_PASS_KEY, value, now).await?;
        }
        Ok(PassOutcome::Ran(pass))
    }

    /// Records a page of adjustments, waiting (bounded) while the writer is behind.
    pub(super) async fn record_adjustments(&self, events: Vec<crate::domain::NewEvent>) -> ServiceResult<()> {
        let mut attempt = 1;
        loop {
            match self.record(events.clone()).await {
                Err(ServiceError::Unavailable(_)) if attempt < PAGE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(PAGE_RETRY).await;
                }
                other => return other.map(drop),
            }
        }
    }
}

/// Runs a pass at start, every `every`, and whenever the setting changes, until shutdown.
pub async fn run(service: Arc<Service>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let wake = service.wake_decay.clone();
    loop {
        let pause = match service.decay_pass(now_ms()).await {
            Ok(PassOutcome::Ran(pass)) => {
                if pass.adjusted > 0 {
                    tracing::info!(leads = pass.leads, adjusted = pass.adjusted, "decay pass recorded adjustments");
                }
                // Leads skipped while being scored get another pass soon, not next hour.
                if pass.busy > 0 {
                    every.min(WAITING_RETRY)
                } else {
                    every
                }
            }
            Ok(PassOutcome::Off) => every,
            // Soon: the worker is scoring the last pass's adjustments.
            Ok(PassOutcome::Waiting) => every.min(WAITING_RETRY),
            Err(e) => {
                tracing::warn!(error = %e, "decay pass failed; retrying");
                every.min(FAILED_RETRY)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
