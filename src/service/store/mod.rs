//! Persistence behind one trait, so the service never knows which database it talks to.
//!
//! Contract every implementation keeps (checked by `tests/store_conformance.rs`):
//! - `insert_events` returns only after the inserted events are durable, and reports each
//!   item as inserted or as a duplicate of an already stored `eventId` (including a repeat
//!   earlier in the same call);
//! - `apply` is idempotent per event: applying an already processed event changes nothing,
//!   so a worker may redeliver after a crash at any instant;
//! - after `apply`, a lead's score equals the sum of its history deltas;
//! - a dead-lettered event leaves the queue until retried; a discarded one never comes back,
//!   and its `eventId` still counts for dedupe;
//! - `apply` writes the webhook deliveries of the changes it makes (`Engine::outbox`) so that
//!   no applied change ever misses its deliveries, whatever crashes, and none is written twice.

pub mod accounts;
pub mod mongo;
pub mod sqlite;

pub use accounts::{AccountStore, CreateUser, KeyRecord, NewAuditEntry, SessionRecord, UserChange, UserRecord};

use crate::domain::decay::DecayPage;
use crate::domain::engine::Engine;
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::rescore::RescorePage;
use crate::domain::time::Millis;
use crate::domain::webhooks::{Attempt, Delivery, StoredWebhook};
use crate::domain::{DeadLetter, HistoryEntry, Lead, NewEvent, Rule, RuleDraft, RuleInput, ScoreChange, StoredEvent};
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; callers answer 503 and retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What happened to one event handed to `insert_events`.
#[derive(Clone, Debug, PartialEq)]
pub enum InsertOutcome {
    Inserted,
    /// The `eventId` was already stored; carries the stored event, `None` if it no longer
    /// reads as one (see the dead-letter list): a duplicate all the same.
    Duplicate(Option<StoredEvent>),
}

/// Backlog of the durable queue, for `/api/health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: u64,
    pub oldest_received_at: Option<Millis>,
    /// Events set aside in the dead-letter list.
    pub dead_letters: u64,
}

/// The head of the queue as the worker reads it: the events, and the rows that could not be
/// read as events (a hand edit, a bug, a damaged file), which must not stop the others.
#[derive(Clone, Debug, Default)]
pub struct Queued {
    pub events: Vec<StoredEvent>,
    pub unreadable: Vec<Unreadable>,
}

/// An unprocessed row that is not a valid event.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    pub seq: i64,
    /// Whatever of these could be read.
    pub event_id: Option<String>,
    pub lead_id: Option<String>,
    pub error: String,
    /// The row as stored, rendered as JSON-like text.
    pub raw: String,
}

#[async_trait]
/// Events, leads and rules; accounts, sessions, keys and the audit log come from `AccountStore`.
pub trait Store: AccountStore + Send + Sync + 'static {
    /// A short name for logs and health: `sqlite` or `mongodb`.
    fn backend(&self) -> &'static str;
    /// Where the data lives, without credentials.
    fn location(&self) -> String;

    async fn ping(&self) -> StoreResult<()>;

    /// Memory the store's engine holds in this process, if it lives here (SQLite's caches).
    fn memory_bytes(&self) -> Option<u64> {
        None
    }

    /// Stores events as unprocessed, durably, in order. One outcome per input, same order.
    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<InsertOutcome>>;
    /// The oldest unprocessed events, in ingest order (up to `limit` rows, readable or not).
    async fn unprocessed(&self, limit: usize) -> StoreResult<Queued>;
    /// Prices queued events with `rules` and adds each to its lead exactly once, with its
    /// explanation and limit counts; returns the changes actually applied.
    async fn apply(&self, events: Vec<StoredEvent>, rules: Arc<Engine>, now: Millis) -> StoreResult<Vec<ScoreChange>>;
    async fn queue_stats(&self) -> StoreResult<QueueStats>;

    /// Takes these events out of the queue into the dead-letter list; an event no longer
    /// unprocessed (scored meanwhile, by another instance say) is left alone.
    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> StoreResult<()>;
    /// The dead-letter list from the event after `after` on, oldest event first, and how
    /// many there are in all.
    async fn dead_letters(&self, after: Option<i64>, limit: usize) -> StoreResult<(Vec<DeadLetter>, u64)>;
    /// Puts a dead letter's event back in the queue; false if there is no such dead letter.
    async fn retry_dead_letter(&self, id: i64) -> StoreResult<bool>;
    /// Drops a dead letter for good: its event stays stored, unscored; false if none.
    async fn discard_dead_letter(&self, id: i64) -> StoreResult<bool>;

    async fn leads(&self, query: &LeadQuery) -> StoreResult<Vec<Lead>>;
    /// The next `limit` leads `query` matches after the lead `after` (its score and id), in
    /// leaderboard order, by index seeks however deep the page (exports page through every
    /// lead this way). `None`: from the top. Offset and stage of `query` are not used.
    async fn leads_after(&self, query: &LeadQuery, after: Option<(i64, &str)>, limit: usize) -> StoreResult<Vec<Lead>> {
        let Some((score, id)) = after else {
            return self.leads(&LeadQuery { limit, offset: 0, stage: None, ..query.clone() }).await;
        };
        let mut page = match query.same_score(score, id, limit) {
            Some(band) => self.leads(&band).await?,
            None => Vec::new(),
        };
        if page.len() < limit {
            if let Some(below) = query.below(score, limit - page.len()) {
                page.extend(self.leads(&below).await?);
            }
        }
        Ok(page)
    }
    async fn lead(&self, lead_id: &str) -> StoreResult<Option<Lead>>;
    /// The lead `lead_id` was merged into (`domain::identity`), if it was.
    async fn merged_into(&self, lead_id: &str) -> StoreResult<Option<String>>;
    /// A lead's history, newest first.
    async fn history(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<HistoryEntry>>;
    /// A lead's events, newest first in ingest order (the order they are scored in), scored or not.
    async fn lead_events(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<StoredEvent>>;

    /// All rules, by event type; within a type the base rule first, then oldest first.
    async fn rules(&self) -> StoreResult<Vec<Rule>>;
    /// Sets the points and state of the type's base rule, creating it if there is none.
    async fn upsert_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule>;
    /// Adds a rule with a new id.
    async fn create_rule(&self, rule: RuleDraft, now: Millis) -> StoreResult<Rule>;
    /// Replaces a rule's fields (see `Rule::stays_base`); `None` if there is no such rule.
    async fn update_rule(&self, id: &str, rule: RuleDraft, now: Millis) -> StoreResult<Option<Rule>>;
    /// Removes a rule, returning it; `None` if there was none.
    async fn delete_rule(&self, id: &str) -> StoreResult<Option<Rule>>;
    /// Inserts `defaults` only when there are no rules at all; true if it did.
    async fn seed_rules(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool>;

    /// A setting saved with `put_setting` (the stage ladder, say); `None` if never saved.
    async fn setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>>;
    async fn put_setting(&self, key: &str, value: serde_json::Value, now: Millis) -> StoreResult<()>;
    /// How many leads have a score within `min..=max` (`None`: unbounded), by the score index.
    async fn count_leads(&self, min_score: Option<i64>, max_score: Option<i64>) -> StoreResult<u64>;
    /// How many leads a search matches, within its score filters (a walk of the leads, as the
    /// search itself is).
    async fn count_searched(&self, query: &LeadQuery) -> StoreResult<u64>;
    /// The lowest and highest score of any lead (`None`: no leads), from the score index.
    async fn score_range(&self) -> StoreResult<Option<(i64, i64)>>;
    /// Events received at or after `since`: the queue's order is the order of arrival, so the
    /// first such event is found by a binary search on its position and the rest counted
    /// from there (no index on the arrival time, which every insert would pay for).
    async fn events_since(&self, since: Millis) -> StoreResult<u64>;

    /// A page of leads after `after` in id order, each with what a decay pass needs, and the
    /// cursor of the next page (`None`: the last page). A lead whose scoring is under way is
    /// left out of the page, since its score and its events would not agree.
    async fn decay_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<DecayPage>;
    /// Whether an adjustment (decay or rescore) waits to be scored: a decay pass or a rescore
    /// page must not read scores before.
    async fn adjustments_pending(&self) -> StoreResult<bool>;

    /// A page of leads after `after` in id order, each with its scored events in ingest order
    /// (`domain::rescore`), and the cursor of the next page (`None`: the last page).
    async fn rescore_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<RescorePage>;
    /// Rescoring in one pass over the scored events in ingest order (`domain::rescore_scan`),
    /// for a store where replaying lead by lead rewrites its events slowly (SQLite): stores
    /// each event's new price as it goes and returns the plans of the leads that need one,
    /// in lead id order, decayed to `now`; `progress` counts the events read. `None`: the
    /// store has no such pass, and a job goes lead by lead (`rescore_inputs`).
    async fn rescore_scan(
        &self,
        _engine: Arc<Engine>,
        _half_life_days: Option<f64>,
        _now: Millis,
        _progress: Arc<std::sync::atomic::AtomicU64>,
    ) -> StoreResult<Option<crate::domain::rescore_scan::Planned>> {
        Ok(None)
    }
    /// About how many events have been scored (a rescore job's total).
    async fn scored_total(&self) -> StoreResult<u64>;

    /// Webhook subscriptions, with their secrets, oldest first.
    async fn webhooks(&self) -> StoreResult<Vec<StoredWebhook>>;
    async fn create_webhook(&self, hook: StoredWebhook) -> StoreResult<()>;
    /// Removes a subscription (false if there was none); its unsent deliveries are given up.
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;
    /// Up to `limit` deliveries due at `now`, oldest first, each held until `until` so no
    /// other sender takes it meanwhile (a sender that dies leaves it due again then).
    async fn claim_deliveries(&self, now: Millis, until: Millis, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// Records how an attempt went, unless the delivery changed since it was claimed with
    /// `held_until` (a redeliver, or its subscription deleted): then false, and it stays so.
    async fn record_attempt(&self, id: i64, held_until: Millis, attempt: Attempt) -> StoreResult<bool>;
    /// A subscription's deliveries, newest first.
    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// Makes a delivery due again at `now`; false if the subscription has no such delivery.
    async fn redeliver(&self, webhook_id: &str, id: i64, now: Millis) -> StoreResult<bool>;
    /// Forgets deliveries done with (delivered or failed) created before `before`; how many.
    async fn prune_deliveries(&self, before: Millis) -> StoreResult<u64>;

    /// The feed of applied changes, when several server processes may share this store: each
    /// one's live stream must then read every change back from it, not only its own worker's.
    /// `None` for a store one process owns (SQLite), whose worker sees every change.
    fn shared_feed(&self) -> Option<&dyn SharedFeed> {
        None
    }
}

/// Applied score changes numbered in the order they were recorded, for every instance's live
/// stream. Numbers are reserved before their changes are written, so a position may show up
/// a moment after higher ones (another worker's), or never (its worker crashed).
#[async_trait]
pub trait SharedFeed: Send + Sync {
    /// The highest position written, and the highest handed out (written or not) so far.
    async fn head(&self) -> StoreResult<(i64, i64)>;
    /// Changes at positions within any of `spans` (`from..to`), in order, up to `limit`.
    async fn within(&self, spans: &[(i64, i64)], limit: usize) -> StoreResult<Vec<(i64, ScoreChange)>>;
}

pub type DynStore = Arc<dyn Store>;
