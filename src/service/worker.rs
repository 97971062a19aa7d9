//! The scoring worker: drains the durable queue in ingest order.
//!
//! Each step reads the oldest unprocessed events, prices them with the rules as they are now,
//! and hands them to `Store::apply`, which flips each event's processed flag together with its
//! score change and history entry. A crash anywhere leaves events either fully applied or still
//! unprocessed, and the next start picks the latter up again: there is no in-memory queue.
//!
//! An event that cannot be read or applied must not hold the queue: a failing batch is split
//! until the failing events stand alone, and those go to the dead-letter list after
//! `dead_letter_after` attempts (see `suspects.rs`). The rest is scored meanwhile.
//!
//! Batch size trades latency for throughput: a step takes whatever is queued (up to
//! `batch_size`), and after a small one waits `linger` before the next, so a steady trickle is
//! scored in fewer, larger transactions. A backlog is drained back to back.

pub mod suspects;

use super::store::{DynStore, StoreError, Unreadable};
use super::{now_ms, UpdateBatch, WorkerHealth};
use crate::domain::engine::Engine;
use crate::domain::time::Millis;
use crate::domain::{DeadLetter, ScoreChange, StoredEvent};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use suspects::Suspects;
use tokio::sync::{broadcast, watch, Notify};

/// Where the worker's applied changes go on their way to the live stream.
pub enum Publish {
    /// Straight to this process's stream: the store is this process's alone (SQLite).
    Direct(broadcast::Sender<UpdateBatch>),
    /// Several processes share the store, so the feed tailer reads every change back from it
    /// (see `feed.rs`); the worker only tells it to look now.
    Feed(Arc<Notify>),
}

/// A worker whose last successful step is older than this is reported dead (the idle poll,
/// 1 s by default, bounds the interval between steps).
const STALE_AFTER_MS: Millis = 15_000;
/// Steps failing in a row before health reports the worker as failing (a single transient
/// failure does not make health flap).
const FAILING_AFTER: u32 = 3;

/// What `/api/health` learns from the worker: only successful steps count as signs of life,
/// so a worker whose every step fails is reported, with the reason.
#[derive(Debug, Default)]
pub struct WorkerState {
    last_success: AtomicI64,
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Events failing on their own, not yet set aside.
    failing_events: AtomicUsize,
}

impl WorkerState {
    fn succeeded(&self, now: Millis) {
        self.last_success.store(now, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failed(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(error);
    }

    pub fn health(&self, now: Millis) -> WorkerHealth {
        let beat = self.last_success.load(Ordering::Relaxed);
        let ago = (beat > 0).then(|| (now - beat).max(0));
        let failures = self.failures.load(Ordering::Relaxed);
        let error = (failures > 0).then(|| self.last_error.lock().unwrap().clone()).flatten();
        WorkerHealth {
            alive: ago.is_some_and(|a| a < STALE_AFTER_MS) && failures < FAILING_AFTER,
            last_heartbeat_ms_ago: ago,
            consecutive_failures: failures,
            last_error: error,
            failing_events: self.failing_events.load(Ordering::Relaxed),
        }
    }
}

pub struct Worker {
    pub store: DynStore,
    pub wake: Arc<Notify>,
    pub publish: Publish,
    pub state: Arc<WorkerState>,
    pub batch_size: usize,
    /// How long to sleep when idle and not woken; bounds the heartbeat interval too.
    pub idle_poll: Duration,
    /// Pause after a small batch so the next one gathers more events (fewer, larger
    /// transactions under a steady trickle); a full batch goes straight on.
    pub linger: Duration,
    /// Failed attempts after which an event goes to the dead-letter list.
    pub dead_letter_after: u32,
    pub suspects: Mutex<Suspects>,
}

impl Worker {
    /// Runs until `shutdown` turns true; a batch in flight is always finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = std::time::Instant::now();
            let outcome = self.step().await;
            match &outcome {
                Ok(step) => {
                    self.state.succeeded(now_ms());
                    if step.taken > 0 {
                        super::metrics::worker_batch(step.taken, step.applied, started.elapsed());
                    }
                }
                Err(e) => {
                    self.state.failed(e.to_string());
                    super::metrics::store_error("worker");
                }
            }
            let pause = match outcome {
                Ok(Step { applied, taken }) if applied > 0 => {
                    failures = 0;
                    if let Some(linger) = linger_after(taken, self.batch_size, self.linger) {
                        // Not woken by new events: gathering them is the point.
                        tokio::select! {
                            _ = tokio::time::sleep(linger) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    continue;
                }
                // Events another worker holds (MongoDB claims): look again shortly.
                Ok(Step { taken, .. }) if taken > 0 => Duration::from_millis(100),
                Ok(_) => {
                    failures = 0;
                    self.idle_poll
                }
                Err(e) => {
                    failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "worker: scoring step failed");
                    backoff
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("worker stopped");
    }

    /// Scores one batch.
    pub async fn step(&self) -> Result<Step, StoreError> {
        // Taken out for the step (only this task runs steps) and put back whatever happens.
        let mut suspects = std::mem::take(&mut *self.suspects.lock().unwrap());
        let step = self.step_with(&mut suspects).await;
        self.state.failing_events.store(suspects.len(), Ordering::Relaxed);
        *self.suspects.lock().unwrap() = suspects;
        step
    }

    async fn step_with(&self, suspects: &mut Suspects) -> Result<Step, StoreError> {
        let queued = self.store.unprocessed(self.batch_size).await?;
        let taken = queued.events.len() + queued.unreadable.len();
        let seqs: HashSet<i64> =
            queued.events.iter().map(|e| e.seq).chain(queued.unreadable.iter().map(|u| u.seq)).collect();
        suspects.keep_only(&seqs);
        if taken == 0 {
            return Ok(Step::default());
        }
        // The rules as they are now, and who hears of the changes (webhooks).
        let outbox = super::webhooks::outbox(&self.store).await?;
        let rules = Arc::new(Engine::new(&self.store.rules().await?).with_outbox(outbox));
        let started = Instant::now();
        let now = now_ms();
        let mut letters = Vec::new();
        let due: Vec<Unreadable> = queued.unreadable.into_iter().filter(|u| suspects.due(u.seq, started)).collect();
        for bad in due {
            let attempts = suspects.failed(bad.seq, started);
            tracing::warn!(seq = bad.seq, attempts, error = %bad.error, "worker: cannot read a queued event");
            if attempts >= self.dead_letter_after {
                letters.push(unreadable_letter(bad, attempts, now));
            }
        }
        // Suspects one by one, after the rest: a known bad event cannot fail a batch again.
        // A lead's later events wait while it has a suspect, so they do not overtake it.
        let scored = queued.events;
        let mut first_suspect: HashMap<String, i64> = HashMap::new();
        for e in scored.iter().filter(|e| suspects.contains(e.seq)) {
            first_suspect.entry(e.lead_id.clone()).or_insert(e.seq);
        }
        let (mut alone, mut together) = (Vec::new(), Vec::new());
        for e in scored {
            if suspects.contains(e.seq) {
                if suspects.due(e.seq, started) {
                    alone.push(e);
                }
            } else if first_suspect.get(&e.lead_id).is_none_or(|&first| e.seq < first) {
                together.push(e);
            }
        }
        let mut outcome = Isolated::default();
        self.apply_isolating(together, &rules, now, &mut outcome).await?;
        for event in alone {
            self.apply_isolating(vec![event], &rules, now, &mut outcome).await?;
        }
        for seq in &outcome.applied {
            suspects.clear(*seq);
        }
        // Blame an event only when the store shows it works otherwise: something else was
        // applied in this step, or every failure is one lead's. Failures across several leads
        // with nothing applied are the store's (an outage it reports as an error): nobody is
        // set aside, and the step fails for health to show.
        let leads: HashSet<&str> = outcome.failed.iter().map(|(e, _)| e.lead_id.as_str()).collect();
        if outcome.applied.is_empty() && leads.len() > 1 {
            let (_, error) = outcome.failed.swap_remove(0);
            return Err(StoreError::Internal(error));
        }
        for (event, error) in outcome.failed {
            let attempts = suspects.failed(event.seq, started);
            tracing::warn!(seq = event.seq, event_id = %event.event_id, attempts, %error, "worker: cannot apply an event");
            if attempts >= self.dead_letter_after {
                letters.push(failed_letter(&event, error, attempts, now));
            }
        }
        if !letters.is_empty() {
            let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
            tracing::error!(?ids, "worker: events set aside in the dead-letter list");
            self.store.dead_letter(letters).await?;
            for id in ids {
                suspects.clear(id);
            }
        }
        let changes = outcome.changes;
        let step = Step { taken, applied: changes.len() };
        if !changes.is_empty() {
            match &self.publish {
                // No subscribers is fine: nobody is watching the dashboard.
                Publish::Direct(updates) => drop(updates.send(changes.into())),
                Publish::Feed(tailer) => tailer.notify_one(),
            }
        }
        Ok(step)
    }

    /// Applies `events`; a batch the store rejects for something in it (not for being
    /// unavailable) is halved until each failing event stands alone in `failed`. Once one of
    /// a lead's events failed, the lead's later events wait for the next step.
    async fn apply_isolating(
        &self,
        events: Vec<StoredEvent>,
        rules: &Arc<Engine>,
        now: Millis,
        out: &mut Isolated,
    ) -> Result<(), StoreError> {
        let mut pending = VecDeque::from([events]);
        while let Some(mut batch) = pending.pop_front() {
            batch.retain(|e| !out.failed_leads.contains(&e.lead_id));
            if batch.is_empty() {
                continue;
            }
            match self.store.apply(batch.clone(), rules.clone(), now).await {
                Ok(changes) => {
                    // Only what the store reports as added: on MongoDB a lead another worker
                    // holds is left for later, which is no success of its events.
                    let added: HashSet<&str> = changes.iter().map(|c| c.event_id.as_str()).collect();
                    out.applied.extend(batch.iter().filter(|e| added.contains(e.event_id.as_str())).map(|e| e.seq));
                    out.changes.extend(changes);
                    out.failed_in_a_row = 0;
                }
                Err(StoreError::Internal(error)) => {
                    out.failed_in_a_row += 1;
                    if out.failed_in_a_row >= GIVE_UP_AFTER {
                        // Everything fails: an outage, not poison. Stop splitting (no spin).
                        return Err(StoreError::Internal(error));
                    }
                    if batch.len() == 1 {
                        let event = batch.remove(0);
                        out.failed_leads.insert(event.lead_id.clone());
                        out.failed.push((event, error));
                    } else {
                        tracing::warn!(events = batch.len(), %error, "worker: a batch failed; splitting it to find the cause");
                        let second = batch.split_off(batch.len() / 2);
                        pending.push_front(second);
                        pending.push_front(batch);
                    }
                }
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(())
    }
}

/// Failed `apply` calls in a row after which a step stops looking for the bad event: far
/// more than halving a full batch down to one event takes (about 15 calls).
const GIVE_UP_AFTER: u32 = 64;

/// What `apply_isolating` did.
#[derive(Default)]
struct Isolated {
    changes: Vec<ScoreChange>,
    applied: Vec<i64>,
    failed: Vec<(StoredEvent, String)>,
    failed_leads: HashSet<String>,
    failed_in_a_row: u32,
}

fn unreadable_letter(bad: Unreadable, attempts: u32, now: Millis) -> DeadLetter {
    DeadLetter {
        id: bad.seq,
        event_id: bad.event_id,
        lead_id: bad.lead_id,
        error: bad.error,
        attempts,
        dead_lettered_at: now,
        raw: bad.raw,
    }
}

fn failed_letter(event: &StoredEvent, error: String, attempts: u32, now: Millis) -> DeadLetter {
    DeadLetter {
        id: event.seq,
        event_id: Some(event.event_id.clone()),
        lead_id: Some(event.lead_id.clone()),
        error,
        attempts,
        dead_lettered_at: now,
        raw: serde_json::to_string(event).unwrap_or_default(),
    }
}

/// What one worker step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Unprocessed events read from the queue.
    pub taken: usize,
    /// Of those, how many this step applied.
    pub applied: usize,
}

/// The pause after a step that applied `taken` events: none after a large batch (a backlog
/// drains back to back) or when lingering is off.
fn linger_after(taken: usize, batch_size: usize, linger: Duration) -> Option<Duration> {
    (taken < batch_size / 4 && !linger.is_zero()).then_some(linger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_only_successful_steps() {
        let state = WorkerState::default();
        assert!(!state.health(1_000).alive, "no step yet");
        state.succeeded(1_000);
        assert!(state.health(1_000 + STALE_AFTER_MS - 1).alive);
        assert!(!state.health(1_000 + STALE_AFTER_MS).alive, "no successful step for too long");
        for n in 1..FAILING_AFTER {
            state.failed(format!("boom {n}"));
            assert!(state.health(1_001).alive, "{n} failures in a row are tolerated");
        }
        state.failed("rule unreadable".into());
        let h = state.health(1_001);
        assert!(!h.alive);
        assert_eq!((h.consecutive_failures, h.last_error.as_deref()), (FAILING_AFTER, Some("rule unreadable")));
        state.succeeded(2_000);
        let h = state.health(2_000);
        assert!(h.alive && h.last_error.is_none() && h.consecutive_failures == 0, "{h:?}");
    }

    #[test]
    fn lingers_only_after_a_small_batch() {
        let linger = Duration::from_millis(20);
        assert_eq!(linger_after(1, 20_000, linger), Some(linger));
        assert_eq!(linger_after(4_999, 20_000, linger), Some(linger));
        assert_eq!(linger_after(5_000, 20_000, linger), None, "a quarter batch or more: straight on");
        assert_eq!(linger_after(20_000, 20_000, linger), None);
        assert_eq!(linger_after(1, 20_000, Duration::ZERO), None, "0 turns lingering off");
    }
}
