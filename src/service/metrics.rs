//! What Leadscore measures for Prometheus, in one place: every metric's name, help text and
//! labels are here, and the rest of the code records through these functions. `GET /metrics`
//! renders them (`server::metrics_api`); gauges that describe the store (queue depth, oldest
//! unscored event, dead letters, rescoring) are read from it at each scrape.
//!
//! The recorder is the process's (the `metrics` crate's global): several servers in one
//! process, as in tests, share it.

use crate::domain::BatchReport;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const EVENTS: &str = "leadscore_events_total";
pub const SCORED: &str = "leadscore_events_scored_total";
pub const QUEUE_DEPTH: &str = "leadscore_queue_depth";
pub const QUEUE_OLDEST_AGE: &str = "leadscore_queue_oldest_unscored_age_seconds";
pub const DEAD_LETTERS: &str = "leadscore_dead_letters";
pub const WORKER_BATCH_EVENTS: &str = "leadscore_worker_batch_events";
pub const WORKER_BATCH_DURATION: &str = "leadscore_worker_batch_duration_seconds";
pub const WORKER_ALIVE: &str = "leadscore_worker_alive";
pub const HTTP_DURATION: &str = "leadscore_http_request_duration_seconds";
pub const STREAM_CLIENTS: &str = "leadscore_stream_clients";
pub const STORE_ERRORS: &str = "leadscore_store_errors_total";
pub const RESCORE_PROCESSED: &str = "leadscore_rescore_processed_events";
pub const RESCORE_TOTAL: &str = "leadscore_rescore_total_events";
pub const RESCORE_RUNNING: &str = "leadscore_rescore_running";
pub const SQLITE_COMMIT_DURATION: &str = "leadscore_sqlite_commit_duration_seconds";
pub const SQLITE_CHECKPOINT_DURATION: &str = "leadscore_sqlite_checkpoint_duration_seconds";

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let events = [1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WORKER_BATCH_EVENTS.into()), &events))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(EVENTS, "Events received, by endpoint and outcome (accepted, duplicate, rejected).");
    describe_counter!(SCORED, "Events the worker scored.");
    describe_gauge!(QUEUE_DEPTH, "Events accepted and not yet scored.");
    describe_gauge!(QUEUE_OLDEST_AGE, Unit::Seconds, "Age of the oldest event not yet scored (0 when none).");
    describe_gauge!(DEAD_LETTERS, "Events set aside in the dead-letter list.");
    describe_histogram!(WORKER_BATCH_EVENTS, "Events per worker batch.");
    describe_histogram!(WORKER_BATCH_DURATION, Unit::Seconds, "Time a worker batch took to score and store.");
    describe_gauge!(WORKER_ALIVE, "1 while the worker's steps succeed, else 0.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP requests, by route, method and status.");
    describe_gauge!(STREAM_CLIENTS, "Open live-stream (SSE) connections.");
    describe_counter!(STORE_ERRORS, "Store failures, by where they surfaced (request, worker).");
    describe_gauge!(RESCORE_PROCESSED, "Events the latest rescore job has replayed.");
    describe_gauge!(RESCORE_TOTAL, "Events the latest rescore job replays in all.");
    describe_gauge!(RESCORE_RUNNING, "1 while a rescore job runs.");
    describe_histogram!(
        SQLITE_COMMIT_DURATION,
        Unit::Seconds,
        "Embedded store: time a group commit took (the WAL written and synced to disk)."
    );
    describe_histogram!(
        SQLITE_CHECKPOINT_DURATION,
        Unit::Seconds,
        "Embedded store: time a WAL checkpoint took (pages copied into the database file, on a thread of its own)."
    );
}

/// What one ingest request did with its events.
pub fn ingested(endpoint: &'static str, accepted: usize, duplicates: usize, rejected: usize) {
    for (outcome, n) in [("accepted", accepted), ("duplicate", duplicates), ("rejected", rejected)] {
        if n > 0 {
            counter!(EVENTS, "endpoint" => endpoint, "outcome" => outcome).increment(n as u64);
        }
    }
}

pub fn ingested_batch(endpoint: &'static str, report: &BatchReport) {
    ingested(endpoint, report.accepted, report.duplicates, report.rejected);
}

/// One worker step that took events.
pub fn worker_batch(taken: usize, applied: usize, took: Duration) {
    histogram!(WORKER_BATCH_EVENTS).record(taken as f64);
    histogram!(WORKER_BATCH_DURATION).record(took.as_secs_f64());
    counter!(SCORED).increment(applied as u64);
}

/// One group commit of the embedded store's writer.
pub fn sqlite_commit(took: Duration) {
    histogram!(SQLITE_COMMIT_DURATION).record(took.as_secs_f64());
}

/// One WAL checkpoint of the embedded store's writer.
pub fn sqlite_checkpoint(took: Duration) {
    histogram!(SQLITE_CHECKPOINT_DURATION).record(took.as_secs_f64());
}

pub fn store_error(source: &'static str) {
    counter!(STORE_ERRORS, "source" => source).increment(1);
}

pub fn http_request(route: &'static str, method: &str, status: u16, took: Duration) {
    let labels = [("route", route.to_string()), ("method", method.to_string()), ("status", status.to_string())];
    histogram!(HTTP_DURATION, &labels).record(took.as_secs_f64());
}

/// Counts an open stream connection for as long as it is held.
pub struct StreamClient(());

impl StreamClient {
    pub fn open() -> Self {
        gauge!(STREAM_CLIENTS).increment(1.0);
        StreamClient(())
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        gauge!(STREAM_CLIENTS).decrement(1.0);
    }
}

/// The store's gauges, as read at a scrape.
pub fn store_gauges(health: &super::Health, rescore: Option<&crate::domain::rescore::RescoreJob>) {
    if let Some(depth) = health.queue.depth {
        gauge!(QUEUE_DEPTH).set(depth as f64);
    }
    if health.store.reachable {
        let age = health.queue.oldest_unprocessed_age_ms.unwrap_or(0);
        gauge!(QUEUE_OLDEST_AGE).set(age as f64 / 1000.0);
    }
    if let Some(n) = health.queue.dead_letters {
        gauge!(DEAD_LETTERS).set(n as f64);
    }
    gauge!(WORKER_ALIVE).set(if health.worker.alive { 1.0 } else { 0.0 });
    if let Some(job) = rescore {
        gauge!(RESCORE_PROCESSED).set(job.processed as f64);
        gauge!(RESCORE_TOTAL).set(job.total as f64);
        let running = job.state == crate::domain::rescore::JobState::Running;
        gauge!(RESCORE_RUNNING).set(if running { 1.0 } else { 0.0 });
    }
}
