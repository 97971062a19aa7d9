//! The scoring worker: drains the durable queue in ingest order.
//!
//! Each step reads the oldest unprocessed events, prices them with the rules as they are now,
//! and hands them to `Store::apply`, which flips each event's processed flag together with its
//! score change and history entry. A crash anywhere leaves events either fully applied or still
//! unprocessed, and the next start picks the latter up again: there is no in-memory queue.
//!
//! Batch size trades latency for throughput: a step takes whatever is queued (up to
//! `batch_size`), and after a small one waits `linger` before the next, so a steady trickle is
//! scored in fewer, larger transactions. A backlog is drained back to back.

use super::store::DynStore;
use super::{now_ms, UpdateBatch, WorkerHealth};
use crate::domain::scoring::RuleBook;
use crate::domain::time::Millis;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
}

impl Worker {
    /// Runs until `shutdown` turns true; a batch in flight is always finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let outcome = self.step().await;
            match &outcome {
                Ok(_) => self.state.succeeded(now_ms()),
                Err(e) => self.state.failed(e.to_string()),
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
    pub async fn step(&self) -> Result<Step, super::store::StoreError> {
        let events = self.store.unprocessed(self.batch_size).await?;
        if events.is_empty() {
            return Ok(Step::default());
        }
        let rules = RuleBook::new(&self.store.rules().await?);
        let changes = self.store.apply(rules.score(&events), now_ms()).await?;
        let step = Step { taken: events.len(), applied: changes.len() };
        if !changes.is_empty() {
            match &self.publish {
                // No subscribers is fine: nobody is watching the dashboard.
                Publish::Direct(updates) => drop(updates.send(changes.into())),
                Publish::Feed(tailer) => tailer.notify_one(),
            }
        }
        Ok(step)
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
