//! Rescoring (`domain::rescore`): `POST /api/rescore` starts a job, `GET /api/rescore/:id`
//! reports it, and a background task runs it: in one ingest-order pass where the store offers
//! it (`domain::rescore_scan`, SQLite), otherwise page by page of leads. The job is kept as a
//! setting after every page, so a restart resumes it where it stopped; the `$rescore` events
//! it records are scored by the worker, exactly once, on either store and any number of
//! instances.

use super::accounts::Actor;
use super::store::NewAuditEntry;
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::engine::Engine;
use crate::domain::rescore::{is_adjustment, needs_replay, replay, rescore_event, JobState, RescoreJob, RescoreStatus};
use crate::domain::rescore_scan::planned_event;
use crate::domain::time::Millis;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The job a key names, and the key naming the latest job.
const JOB_KEY: &str = "rescore.job.";
const LATEST_KEY: &str = "rescore.latest";
/// When a rule last changed (any save or delete), for `RescoreStatus::rules_changed`.
pub const RULES_CHANGED_KEY: &str = "rules.changedAt";
/// Leads read per page: a job holds one page of events in memory, never all of them.
const LEADS_PER_PAGE: usize = 2_000;
/// Adjustments an ingest-order pass queues at a time: enough that the worker scores them in
/// full batches, few enough that new events wait behind them for well under a second.
const ADJUSTMENTS_PER_PAGE: usize = 10_000;
/// How often a running pass saves its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often the job looks whether the last page's events are scored.
const SETTLE_POLL: Duration = Duration::from_millis(10);
/// A page that fails is tried again after this, and the job fails after this many in a row.
const FAILED_RETRY: Duration = Duration::from_secs(2);
const FAILURES_TO_GIVE_UP: u32 = 30;

impl Service {
    /// Starts a rescore job, or answers the one already running.
    pub async fn start_rescore(&self, actor: &Actor) -> ServiceResult<RescoreJob> {
        if let Some(job) = self.latest_rescore().await?.filter(|j| j.state == JobState::Running) {
            return Ok(job);
        }
        let now = now_ms();
        let id = format!("{now:x}{:04x}", rand::random::<u16>());
        let job = RescoreJob::new(id.clone(), self.store.scored_total().await?, self.half_life().await?, now);
        self.save_job(&job).await?;
        self.store.put_setting(LATEST_KEY, json!(id), now).await?;
        let entry = NewAuditEntry {
            at: now,
            actor: actor.principal.actor(),
            action: "rescore.start".into(),
            target: format!("rescore {id}"),
            before: None,
            after: Some(json!({"total": job.total, "halfLifeDays": job.half_life_days})),
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        self.wake_rescore.notify_one();
        Ok(job)
    }

    pub async fn rescore_job(&self, id: &str) -> ServiceResult<RescoreJob> {
        let raw = self.store.setting(&format!("{JOB_KEY}{id}")).await?.ok_or(ServiceError::NotFound)?;
        serde_json::from_value(raw).map_err(|e| ServiceError::Internal(format!("rescore job {id} does not read: {e}")))
    }

    /// The latest job, running or not (`None`: there never was one).
    pub async fn latest_rescore(&self) -> ServiceResult<Option<RescoreJob>> {
        match self.store.setting(LATEST_KEY).await? {
            Some(serde_json::Value::String(id)) => self.rescore_job(&id).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Whether a rescore job is running (a decay pass waits for it).
    pub(super) async fn rescoring(&self) -> ServiceResult<bool> {
        Ok(self.latest_rescore().await?.is_some_and(|j| j.state == JobState::Running))
    }

    /// The latest job, and whether the rules changed after it started.
    pub async fn rescore_status(&self) -> ServiceResult<RescoreStatus> {
        let job = self.latest_rescore().await?;
        let changed: Option<Millis> = self.store.setting(RULES_CHANGED_KEY).await?.and_then(|v| v.as_i64());
        let rules_changed = changed.is_some_and(|at| job.as_ref().is_none_or(|j| at > j.started_at));
        Ok(RescoreStatus { job, rules_changed, now: now_ms() })
    }

    async fn save_job(&self, job: &RescoreJob) -> ServiceResult<()> {
        let value = serde_json::to_value(job).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(self.store.put_setting(&format!("{JOB_KEY}{}", job.id), value, now_ms()).await?)
    }

    /// Runs `job` from its cursor to the end: in one pass in ingest order where the store
    /// offers it, otherwise lead by lead.
    async fn run_job(&self, job: RescoreJob) -> ServiceResult<RescoreJob> {
        match self.run_pass(job.clone()).await? {
            Some(done) => Ok(done),
            None => self.run_by_leads(job).await,
        }
    }

    /// The job as one ingest-order pass (`domain::rescore_scan`): the store reprices every
    /// event and plans each lead, then each planned lead gets its `$rescore` event, a page at
    /// a time, saving the job after every page. A restart runs the whole pass again (the
    /// prices it stores are the same again, and a lead already adjusted needs no plan), with
    /// the rules as they are then, and the job's half-life and start as its time: so a lead
    /// adjusted before the restart gets no second entry, even with decay. `None` if the
    /// store has no such pass.
    async fn run_pass(&self, mut job: RescoreJob) -> ServiceResult<Option<RescoreJob>> {
        // What an interrupted run queued is scored first, so the pass reads those leads as
        // adjusted (this run's events are numbered afresh: dedupe would not catch a repeat).
        self.settle().await?;
        // The rules as they are now: an edit during the pass applies to events scored after
        // it, and shows as "rules changed since the last rescore".
        let engine = Arc::new(Engine::new(&self.store.rules().await?));
        let progress = Arc::new(AtomicU64::new(0));
        let started = now_ms();
        let pass = self.store.rescore_scan(engine, job.half_life_days, job.started_at, progress.clone());
        tokio::pin!(pass);
        let planned = loop {
            tokio::select! {
                planned = &mut pass => break planned?,
                _ = tokio::time::sleep(PROGRESS_EVERY) => {
                    job.processed = progress.load(Ordering::Relaxed);
                    job.total = job.total.max(job.processed);
                    self.save_job(&job).await?;
                }
            }
        };
        let Some(planned) = planned else { return Ok(None) };
        let read_in = now_ms() - started;
        tracing::info!(id = %job.id, events = planned.events, leads = planned.leads, to_adjust = planned.plans.len(),
            ms = read_in, "rescore pass: every event repriced; adjusting leads");
        (job.processed, job.leads) = (planned.events, planned.leads);
        job.to_adjust = Some(job.adjusted + planned.plans.len() as u64);
        job.total = job.total.max(job.processed);
        self.save_job(&job).await?;
        let run = format!("{started:x}");
        for (i, page) in planned.plans.chunks(ADJUSTMENTS_PER_PAGE).enumerate() {
            // The previous page's adjustments are scored before more are queued.
            self.settle().await?;
            let events = page.iter().enumerate().map(|(j, (lead, plan))| {
                let n = i * ADJUSTMENTS_PER_PAGE + j;
                planned_event(&job.id, &run, n, lead, job.half_life_days, job.started_at, plan)
            });
            self.record_adjustments(events.collect()).await?;
            job.adjusted += page.len() as u64;
            job.cursor = page.last().map(|(lead, _)| lead.clone());
            self.save_job(&job).await?;
        }
        let job = self.finish(job).await?;
        tracing::info!(id = %job.id, ms = now_ms() - started - read_in, "rescore pass: leads adjusted");
        Ok(Some(job))
    }

    /// The job lead by lead: a page of leads with their events at a time, and a `$rescore`
    /// event for each lead whose replay changes anything, saving the job after every page.
    async fn run_by_leads(&self, mut job: RescoreJob) -> ServiceResult<RescoreJob> {
        loop {
            let page = self.store.rescore_inputs(job.cursor.clone(), LEADS_PER_PAGE).await?;
            // The rules and decay as they are now: an edit during the job applies from the
            // next page.
            let engine = Engine::new(&self.store.rules().await?);
            job.half_life_days = self.half_life().await?;
            let now = now_ms();
            let mut events = Vec::new();
            for lead in &page.leads {
                let replayed = replay(&engine, &lead.events, job.half_life_days, now);
                if needs_replay(&replayed, lead) {
                    events.push(rescore_event(&job.id, &lead.lead_id, job.half_life_days, now));
                }
                job.processed += lead.events.iter().filter(|e| !is_adjustment(&e.event_type)).count() as u64;
            }
            job.leads += page.leads.len() as u64;
            // The previous page's replays (and any decay pass's adjustments) are scored before
            // more are queued: the queue never holds more than a page of them.
            self.settle().await?;
            job.adjusted += events.len() as u64;
            if !events.is_empty() {
                self.record_adjustments(events).await?;
            }
            job.total = job.total.max(job.processed);
            job.cursor = page.next;
            if job.cursor.is_none() {
                break;
            }
            self.save_job(&job).await?;
        }
        self.finish(job).await
    }

    /// Waits until the job's last adjustments are scored, and records it done.
    async fn finish(&self, mut job: RescoreJob) -> ServiceResult<RescoreJob> {
        self.settle().await?;
        job.state = JobState::Done;
        // The total was an estimate taken at the start; now it is known.
        job.total = job.processed;
        job.finished_at = Some(now_ms());
        self.save_job(&job).await?;
        tracing::info!(id = %job.id, leads = job.leads, adjusted = job.adjusted, "rescore job done");
        Ok(job)
    }

    /// Waits until no adjustment is queued.
    async fn settle(&self) -> ServiceResult<()> {
        while self.store.adjustments_pending().await? {
            tokio::time::sleep(SETTLE_POLL).await;
        }
        Ok(())
    }
}

/// Runs the latest job whenever one is running (at start: a job a restart interrupted), until
/// shutdown.
pub async fn run(service: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let wake = service.wake_rescore.clone();
    let mut failures = 0;
    loop {
        let pause = match service.latest_rescore().await {
            Ok(Some(job)) if job.state == JobState::Running => {
                let running = tokio::select! {
                    outcome = service.run_job(job.clone()) => Some(outcome),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match running {
                    None => return,
                    Some(Ok(_)) => {
                        failures = 0;
                        None
                    }
                    Some(Err(e)) => {
                        failures += 1;
                        tracing::warn!(id = %job.id, error = %e, failures, "rescore page failed; retrying");
                        if failures >= FAILURES_TO_GIVE_UP {
                            let failed = RescoreJob {
                                state: JobState::Failed,
                                finished_at: Some(now_ms()),
                                error: Some(e.to_string()),
                                ..job
                            };
                            if let Err(e) = service.save_job(&failed).await {
                                tracing::error!(error = %e, "cannot record the rescore job's failure");
                            }
                            failures = 0;
                        }
                        Some(FAILED_RETRY)
                    }
                }
            }
            Ok(_) => Some(Duration::MAX),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rescore job; retrying");
                Some(FAILED_RETRY)
            }
        };
        let Some(pause) = pause else { continue };
        tokio::select! {
            _ = tokio::time::sleep(pause.min(Duration::from_secs(3600))) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
