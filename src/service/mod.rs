//! The service layer: the one place that knows what ingesting, querying and editing rules
//! mean. REST handlers and server functions both call it; neither talks to the store.
//!
//! Ingest path: validate → durably record as unprocessed → answer 202 → wake the worker.
//! Scoring happens in `worker`, never on the request path.

pub mod accounts;
pub mod dead_letters;
pub mod decay;
pub mod export;
pub mod feed;
pub mod metrics;
pub mod overview;
pub mod rescore;
pub mod rules;
pub mod sessions;
pub mod stages;
pub mod store;
pub mod throttle;
pub mod webhooks;
pub mod worker;

use self::store::{DynStore, InsertOutcome, StoreError};
use self::worker::WorkerState;
use crate::domain::error::ApiError;
use crate::domain::intake::{check_value, CheckedItem, ItemProblems};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::time::Millis;
use crate::domain::{
    BatchDuplicate, BatchItemError, BatchReport, FieldError, LeadDetail, NewEvent, ScoreChange, StoredEvent,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{broadcast, Notify};

/// Batches of applied score changes, as the worker commits them.
pub type UpdateBatch = Arc<[ScoreChange]>;

/// How many update batches a slow subscriber may lag before it is told it missed some.
const UPDATE_CHANNEL_CAPACITY: usize = 1024;
/// What `Retry-After` says when the store cannot take a write right now.
const STORE_RETRY_AFTER_SECONDS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    /// The lead was merged into this one (`domain::identity`).
    #[error("merged into {0}")]
    Merged(String),
    /// Credentials are missing or wrong; the field names which.
    #[error("{}: {}", .0.field, .0.problem)]
    Unauthorized(FieldError),
    /// Allowed in general, refused here (e.g. removing the last admin).
    #[error("{0}")]
    Forbidden(String),
    /// The change conflicts with what exists (a taken username, setup already done).
    #[error("{}: {}", .0.field, .0.problem)]
    Conflict(FieldError),
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts; retry in {0} s")]
    TooManyRequests(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            StoreError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The one mapping from service errors to the error answer, for REST and server functions.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(details) => ApiError::invalid(details),
            ServiceError::NotFound => ApiError::not_found("Not found"),
            ServiceError::Merged(into) => ApiError::field(308, "Lead merged", "id", format!("merged into {into:?}")),
            ServiceError::Unauthorized(problem) => ApiError::new(401, "Unauthorized", vec![problem]),
            ServiceError::Forbidden(m) => ApiError::forbidden(m),
            ServiceError::Conflict(problem) => ApiError::new(409, "Conflict", vec![problem]),
            ServiceError::TooManyRequests(secs) => {
                ApiError::too_many("rate", format!("too many failed attempts; retry in {secs} s"), secs)
            }
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                metrics::store_error("request");
                let mut e = ApiError::new(503, "Store unavailable, retry later", vec![]);
                e.retry_after = Some(STORE_RETRY_AFTER_SECONDS);
                e
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::new(500, "Internal error", vec![])
            }
        }
    }
}

/// What the dashboard's server functions and page renders get through context: the services
/// and the access settings they need. The caller travels in the request (`accounts::Actor`).
#[derive(Clone)]
pub struct Backend {
    pub service: Arc<Service>,
    pub accounts: Arc<accounts::Accounts>,
    /// `AUTH=off`: everything open; pages show a banner.
    pub auth_off: bool,
}

#[derive(Debug, PartialEq)]
pub enum IngestOutcome {
    Accepted {
        event_id: String,
    },
    /// The stored event, if it still reads as one.
    Duplicate(Option<StoredEvent>),
}

/// Limits on one batch request.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_events: usize,
}

/// What `/api/health` reports.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    pub store: StoreHealth,
    pub worker: WorkerHealth,
    pub queue: QueueHealth,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    #[schema(value_type = String, example = "sqlite")]
    pub backend: &'static str,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Memory the embedded database holds in this process (page caches, bounded by their
    /// settings), so a growing RSS can be told apart from a leak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerHealth {
    /// Its last step succeeded recently, and its steps are not failing.
    pub alive: bool,
    /// Since its last successful step.
    pub last_heartbeat_ms_ago: Option<Millis>,
    pub consecutive_failures: u32,
    /// Why its steps fail, while they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events that failed on their own and are being retried before they are set aside.
    pub failing_events: usize,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueHealth {
    pub depth: Option<u64>,
    pub oldest_unprocessed_age_ms: Option<Millis>,
    /// Events in the dead-letter list (`GET /api/dead-letters`).
    pub dead_letters: Option<u64>,
}

pub struct Service {
    store: DynStore,
    wake_worker: Arc<Notify>,
    updates: broadcast::Sender<UpdateBatch>,
    worker_state: Arc<WorkerState>,
    batch_limits: BatchLimits,
    /// The stage ladder as last read, for the live stream and reads (see `stages.rs`), and
    /// whether it has been read from the store yet.
    ladder: tokio::sync::watch::Sender<Arc<Vec<crate::domain::stages::Stage>>>,
    ladder_loaded: std::sync::atomic::AtomicBool,
    /// The last stage counts and when they were taken: every open dashboard asks.
    stage_counts: std::sync::Mutex<Option<(std::time::Instant, Vec<crate::domain::stages::StageCount>)>>,
    /// Starts a decay pass now (the setting changed).
    wake_decay: Arc<Notify>,
    /// Starts (or resumes) the rescore job now.
    wake_rescore: Arc<Notify>,
    /// Looks at the webhook outbox now (a redeliver).
    wake_webhooks: Arc<Notify>,
    /// Bumped for every batch of score changes (by `count_changes`), and its value when the
    /// stage counts were last taken: the counts are taken again only after a change.
    score_generation: Arc<std::sync::atomic::AtomicU64>,
    counted_generation: std::sync::atomic::AtomicU64,
    /// The last overview and when it was taken (`overview.rs`).
    overview_cache: std::sync::Mutex<Option<(std::time::Instant, crate::domain::overview::Overview)>>,
}

/// A counter of the batches sent on `updates`, kept by a task that reads each at once. (A
/// receiver read only now and then would keep the channel's last 1,024 batches alive — up
/// to 20,000 changes each — for as long as nobody asked.)
fn count_changes(updates: &broadcast::Sender<UpdateBatch>) -> Arc<std::sync::atomic::AtomicU64> {
    use tokio::sync::broadcast::error::RecvError;
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (mut changes, counter) = (updates.subscribe(), generation.clone());
        runtime.spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    generation
}

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

impl Service {
    pub fn new(store: DynStore, batch_limits: BatchLimits) -> Self {
        let updates = broadcast::channel(UPDATE_CHANNEL_CAPACITY).0;
        Self {
            store,
            wake_worker: Arc::new(Notify::new()),
            wake_decay: Arc::new(Notify::new()),
            wake_rescore: Arc::new(Notify::new()),
            wake_webhooks: Arc::new(Notify::new()),
            score_generation: count_changes(&updates),
            counted_generation: std::sync::atomic::AtomicU64::new(u64::MAX),
            overview_cache: std::sync::Mutex::new(None),
            updates,
            worker_state: Arc::new(WorkerState::default()),
            batch_limits,
            ladder: tokio::sync::watch::channel(Arc::new(crate::domain::stages::default_stages())).0,
            ladder_loaded: std::sync::atomic::AtomicBool::new(false),
            stage_counts: std::sync::Mutex::new(None),
        }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Handles the worker needs: its wake-up signal, the update channel and its health state.
    pub fn worker_handles(&self) -> (Arc<Notify>, broadcast::Sender<UpdateBatch>, Arc<WorkerState>) {
        (self.wake_worker.clone(), self.updates.clone(), self.worker_state.clone())
    }

    /// Live score changes, batch by batch as the worker applies them.
    pub fn subscribe(&self) -> broadcast::Receiver<UpdateBatch> {
        self.updates.subscribe()
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.batch_limits
    }

    /// Validates and durably records one event. `Accepted` means it is on disk.
    pub async fn ingest_one(&self, raw: &Value) -> ServiceResult<IngestOutcome> {
        self.ingest_checked(check_value(raw, now_ms())).await
    }

    /// Records one event already checked (see `domain::intake`).
    pub async fn ingest_checked(&self, item: CheckedItem) -> ServiceResult<IngestOutcome> {
        let event = item.map_err(|p| ServiceError::Invalid(p.errors))?;
        let event_id = event.event_id.clone();
        let outcome = self.record(vec![event]).await?.pop();
        match outcome {
            Some(InsertOutcome::Inserted) => Ok(IngestOutcome::Accepted { event_id }),
            Some(InsertOutcome::Duplicate(stored)) => Ok(IngestOutcome::Duplicate(stored)),
            None => Err(ServiceError::Internal("store returned no outcome".into())),
        }
    }

    /// Validates every item, records the valid ones in one durable write and reports on each
    /// item: accepted, duplicate (of a stored event or an earlier item) or rejected with reasons.
    pub async fn ingest_batch(&self, items: &[Value]) -> ServiceResult<BatchReport> {
        let now = now_ms();
        self.ingest_checked_batch(items.iter().map(|raw| check_value(raw, now)).collect()).await
    }

    /// Like `ingest_batch`, for items already checked (see `domain::intake`).
    pub async fn ingest_checked_batch(&self, items: Vec<CheckedItem>) -> ServiceResult<BatchReport> {
        if items.is_empty() {
            return Err(ServiceError::Invalid(vec![FieldError::new("body", "batch must contain at least one event")]));
        }
        if items.len() > self.batch_limits.max_events {
            return Err(ServiceError::Invalid(vec![FieldError::new(
                "body",
                format!("batch must contain at most {} events, got {}", self.batch_limits.max_events, items.len()),
            )]));
        }
        let mut report = BatchReport::default();
        let mut seen = HashSet::new();
        let mut valid: Vec<(usize, NewEvent)> = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(event) if !seen.insert(event.event_id.clone()) => {
                    report.duplicate_items.push(BatchDuplicate { index, event_id: event.event_id });
                }
                Ok(event) => valid.push((index, event)),
                Err(ItemProblems { event_id, errors }) => {
                    report.rejected += 1;
                    report.errors.extend(errors.into_iter().map(|p| BatchItemError {
                        index,
                        event_id: event_id.clone(),
                        field: p.field,
                        problem: p.problem,
                    }));
                }
            }
        }
        let (indexes, events): (Vec<usize>, Vec<NewEvent>) = valid.into_iter().unzip();
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let outcomes = if events.is_empty() { Vec::new() } else { self.record(events).await? };
        for ((index, event_id), outcome) in indexes.into_iter().zip(ids).zip(outcomes) {
            match outcome {
                InsertOutcome::Inserted => report.accepted += 1,
                InsertOutcome::Duplicate(_) => report.duplicate_items.push(BatchDuplicate { index, event_id }),
            }
        }
        report.duplicate_items.sort_by_key(|d| d.index);
        report.summarize();
        Ok(report)
    }

    /// Like `ingest_checked_batch` for more items than one batch may hold (a Segment batch is
    /// bounded by bytes, not count): recorded a batch at a time, reported as one.
    pub async fn ingest_checked_chunks(&self, mut items: Vec<CheckedItem>) -> ServiceResult<BatchReport> {
        let size = self.batch_limits.max_events.max(1);
        let mut report = BatchReport::default();
        let mut offset = 0;
        while !items.is_empty() {
            let rest = items.split_off(size.min(items.len()));
            let chunk = std::mem::replace(&mut items, rest);
            let n = chunk.len();
            let part = self.ingest_checked_batch(chunk).await?;
            report.accepted += part.accepted;
            report.rejected += part.rejected;
            report.errors.extend(part.errors.into_iter().map(|e| BatchItemError { index: e.index + offset, ..e }));
            report
                .duplicate_items
                .extend(part.duplicate_items.into_iter().map(|d| BatchDuplicate { index: d.index + offset, ..d }));
            offset += n;
        }
        report.summarize();
        Ok(report)
    }

    async fn record(&self, events: Vec<NewEvent>) -> ServiceResult<Vec<InsertOutcome>> {
        let outcomes = self.store.insert_events(events).await?;
        if outcomes.iter().any(|o| matches!(o, InsertOutcome::Inserted)) {
            self.wake_worker.notify_one();
        }
        Ok(outcomes)
    }

    /// The leaderboard; a stage filter is served as the score range it stands for.
    pub async fn leaderboard(&self, query: &LeadQuery) -> ServiceResult<Vec<crate::domain::Lead>> {
        let ladder = self.current_ladder().await?;
        let resolved = query.resolve_stage(&ladder).ok_or_else(|| stages::unknown_stage(&ladder))?;
        let mut leads = self.store.leads(&resolved).await?;
        for lead in &mut leads {
            lead.stage = crate::domain::stages::stage_for(&ladder, lead.score).to_string();
        }
        Ok(leads)
    }

    /// The error for a lead that is not there: merged into another, or never seen.
    pub(crate) async fn missing_lead(&self, lead_id: &str) -> ServiceError {
        match self.store.merged_into(lead_id).await {
            Ok(Some(into)) => ServiceError::Merged(into),
            Ok(None) => ServiceError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// How many leads the leaderboard query matches in all (its limit and offset aside).
    /// Without a search this is a count over the score index (the whole board: the cached
    /// stage counts); a search walks the leads, as listing them does.
    pub async fn leaderboard_total(&self, query: &LeadQuery) -> ServiceResult<u64> {
        let ladder = self.current_ladder().await?;
        let q = query.resolve_stage(&ladder).ok_or_else(|| stages::unknown_stage(&ladder))?;
        Ok(match (&q.search, q.min_score, q.max_score) {
            (None, None, None) => self.stage_counts().await?.iter().map(|c| c.leads).sum(),
            (None, min, max) => self.store.count_leads(min, max).await?,
            (Some(_), _, _) => self.store.count_searched(&q).await?,
        })
    }

    pub async fn lead_detail(&self, lead_id: &str, page: &DetailPage) -> ServiceResult<LeadDetail> {
        let Some(lead) = self.store.lead(lead_id).await? else { return Err(self.missing_lead(lead_id).await) };
        let (history, events, ladder) = tokio::try_join!(
            self.store.history(lead_id, page),
            self.store.lead_events(lead_id, page),
            self.current_ladder()
        )?;
        let mut detail = LeadDetail { lead, history, events };
        stages::name_stages(&mut detail, &ladder);
        Ok(detail)
    }

    pub async fn health(&self) -> Health {
        let now = now_ms();
        let (reachable, error, queue) = match self.store.queue_stats().await {
            Ok(q) => (
                true,
                None,
                QueueHealth {
                    depth: Some(q.depth),
                    oldest_unprocessed_age_ms: q.oldest_received_at.map(|t| (now - t).max(0)),
                    dead_letters: Some(q.dead_letters),
                },
            ),
            Err(e) => (
                false,
                Some(e.to_string()),
                QueueHealth { depth: None, oldest_unprocessed_age_ms: None, dead_letters: None },
            ),
        };
        let worker = self.worker_state.health(now);
        Health {
            status: if reachable && worker.alive { "ok" } else { "unavailable" },
            store: StoreHealth {
                backend: self.store.backend(),
                reachable,
                error,
                memory_bytes: self.store.memory_bytes(),
            },
            worker,
            queue,
        }
    }
}
