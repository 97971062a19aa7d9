//! The MongoDB store, through the official `mongodb` driver: the production backend.
//!
//! Collections are the old app's — `leads` (`_id` = lead id), `events` (`_id` = `seq`, the
//! ingest sequence), `scorehistories` (`_id` = event id), `scoringrules` — plus `counters`
//! (the ingest sequence and the feed positions). Leads also carry `apply`'s bookkeeping
//! (`leaseToken`, `leaseUntil`, `lastBatch`), which readers never fetch. Every filter,
//! update and index this store sends is built by a function in [`docs`], unit-tested to the
//! document; the account collections (`users`, `sessions`, `api_keys`, `audit_log`) live in
//! `accounts`.
//!
//! `apply` keeps every event exactly once without transactions, in a fixed number of round
//! trips per batch (`apply.rs`); several server processes may share one database, and each
//! one's live stream tails the history in feed order (`SharedFeed` below).

mod accounts;
mod apply;
mod dead_letters;
mod decay;
pub mod docs;
mod merge;
mod rescore;
mod rules;
mod webhooks;

pub use apply::{CrashPoint, Leased};
pub use docs::LEASE_MS;

use super::{InsertOutcome, QueueStats, Queued, SharedFeed, Store, StoreError, StoreResult};
use crate::domain::decay::DecayPage;
use crate::domain::engine::Engine;
use crate::domain::identity::merge_source;
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::rescore::RescorePage;
use crate::domain::time::Millis;
use crate::domain::webhooks::{Attempt, Delivery, StoredWebhook};
use crate::domain::{DeadLetter, HistoryEntry, Lead, NewEvent, Rule, RuleDraft, RuleInput, ScoreChange, StoredEvent};
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::{Acknowledgment, ClientOptions, DatabaseOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DUPLICATE_KEY: i32 = 11000;
/// `dropIndexes` of an index (or collection) that is not there: nothing to drop.
const INDEX_NOT_FOUND: i32 = 27;
const NAMESPACE_NOT_FOUND: i32 = 26;
const DEFAULT_DATABASE: &str = "leadscore";

pub struct MongoStore {
    db: Database,
    location: String,
    events: Collection<Document>,
    leads: Collection<Document>,
    history: Collection<Document>,
    rules: Collection<Document>,
    counters: Collection<Document>,
    dead_letters: Collection<Document>,
    /// Why the store is not ready yet (indexes not all created); `None` once it is. Until
    /// then ingest answers 503: without the unique eventId index a duplicate could get a 202.
    not_ready: std::sync::Mutex<Option<String>>,
    /// Commands sent to the server, counted by the driver's command monitoring.
    commands: Arc<AtomicU64>,
    /// Tests: where the next `apply` stops as if the process had died (see `crash_after`).
    crash_at: std::sync::Mutex<Option<CrashPoint>>,
    /// Tests: where the next `apply` pauses (see `pause_after`).
    #[allow(clippy::type_complexity)]
    pause_at: std::sync::Mutex<Option<(CrashPoint, Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
}

impl MongoStore {
    /// Parses the URI and creates the client; does not wait for the server (see `prepare`).
    /// The database is the URI's (`mongodb://host/<db>`), else `leadscore`.
    pub async fn connect(uri: &str) -> StoreResult<Self> {
        Self::connect_to(uri, None).await
    }

    /// Like `connect`, on a named database (tests use one per test).
    pub async fn connect_to(uri: &str, database: Option<&str>) -> StoreResult<Self> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Unavailable(format!("invalid MongoDB URI: {e}")))?;
        // Fail fast while the database is down instead of holding requests for 30 s.
        if !uri.contains("serverSelectionTimeoutMS") {
            options.server_selection_timeout = Some(Duration::from_secs(5));
        }
        options.app_name.get_or_insert_with(|| "leadscore".into());
        let commands = Arc::new(AtomicU64::new(0));
        let counter = commands.clone();
        options.command_event_handler = Some(EventHandler::callback(move |event| {
            if matches!(event, CommandEvent::Started(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let name = database
            .map(str::to_string)
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let location =
            format!("{} / {name}", options.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(","));
        let client = Client::with_options(options).map_err(classify)?;
        // A 202 means on disk: journaled, and on a majority of a replica set. Every other write
        // is too: one a failover rolled back could lose a score or let an event count twice.
        let durable = WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build();
        let db = client.database_with_options(&name, DatabaseOptions::builder().write_concern(durable).build());
        Ok(Self::on(db, location, commands))
    }

    fn on(db: Database, location: String, commands: Arc<AtomicU64>) -> Self {
        Self {
            events: db.collection("events"),
            leads: db.collection("leads"),
            history: db.collection("scorehistories"),
            rules: db.collection("scoringrules"),
            counters: db.collection("counters"),
            dead_letters: db.collection("deadletters"),
            not_ready: std::sync::Mutex::new(Some("indexes are not created yet".into())),
            commands,
            crash_at: std::sync::Mutex::new(None),
            pause_at: std::sync::Mutex::new(None),
            location,
            db,
        }
    }

    /// Creates the indexes, the account collections' included (idempotent: MongoDB ignores an
    /// identical existing index), drops superseded ones and brings old documents up to date.
    /// Every index is attempted even when one fails; each failure is logged at `error`, and
    /// the store stays not ready (ingest 503, health says why) until all succeed.
    pub async fn prepare(&self) -> StoreResult<()> {
        let mut failures = Vec::new();
        for (collection, index) in docs::indexes().into_iter().chain(accounts::indexes()) {
            let name = index.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default();
            if let Err(e) = self.db.collection::<Document>(collection).create_index(index).await {
                let e = classify(e);
                if matches!(e, StoreError::Unavailable(_)) {
                    return Err(self.not_ready(e.to_string()));
                }
                tracing::error!(collection, index = %name, error = %e, "mongodb: cannot create index");
                failures.push(format!("{collection}.{name}: {e}"));
            }
        }
        for (collection, name) in docs::SUPERSEDED_INDEXES {
            match self.db.collection::<Document>(collection).drop_index(*name).await {
                Ok(()) => tracing::info!(collection, index = name, "mongodb: dropped superseded index"),
                Err(e) if matches!(*e.kind, ErrorKind::Command(ref c) if c.code == INDEX_NOT_FOUND || c.code == NAMESPACE_NOT_FOUND) =>
                    {}
                Err(e) => tracing::warn!(collection, index = name, error = %e, "mongodb: cannot drop superseded index"),
            }
        }
        if !failures.is_empty() {
            return Err(self.not_ready(format!("indexes missing: {}", failures.join("; "))));
        }
        self.backfill().await.map_err(|e| self.not_ready(e.to_string()))?;
        self.backfill_rules().await.map_err(|e| self.not_ready(e.to_string()))?;
        *self.not_ready.lock().unwrap() = None;
        Ok(())
    }

    fn not_ready(&self, why: String) -> StoreError {
        *self.not_ready.lock().unwrap() = Some(why.clone());
        StoreError::Unavailable(why)
    }

    /// 503 with the reason while `prepare` has not succeeded.
    fn ready(&self) -> StoreResult<()> {
        match self.not_ready.lock().unwrap().as_ref() {
            None => Ok(()),
            Some(why) => Err(StoreError::Unavailable(format!("MongoDB store not ready: {why}"))),
        }
    }

    /// Documents written before the explicit `seq` (events) and `leadId` (leads) fields get
    /// them, in batches; idempotent, and nothing to do on a database this release created.
    async fn backfill(&self) -> StoreResult<()> {
        for (collection, field) in [(&self.events, "seq"), (&self.leads, "leadId")] {
            loop {
                let batch: Vec<Document> = collection
                    .find(doc! {field: {"$exists": false}})
                    .projection(doc! {"_id": 1})
                    .limit(1000)
                    .await
                    .map_err(classify)?
                    .try_collect()
                    .await
                    .map_err(classify)?;
                if batch.is_empty() {
                    break;
                }
                tracing::info!(collection = collection.name(), field, documents = batch.len(), "mongodb: backfilling");
                for d in batch {
                    let Some(id) = d.get("_id").cloned() else { continue };
                    let update = doc! {"$set": {field: id.clone()}};
                    collection.update_one(doc! {"_id": id}, update).await.map_err(classify)?;
                }
            }
        }
        Ok(())
    }

    /// Commands this store has sent since it connected (round trips; tests and benchmarks).
    pub fn commands_sent(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Drops the whole database (tests only use it on their own throw-away database).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.db.drop().await.map_err(classify)
    }

    /// Reserves `n` consecutive numbers of a counter; returns the first.
    async fn reserve(&self, counter: &str, n: usize) -> StoreResult<i64> {
        let (filter, update) = docs::reserve(counter, n as i64);
        let doc = self
            .counters
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?
            .ok_or_else(|| StoreError::Internal(format!("counter {counter} missing after upsert")))?;
        Ok(docs::int(doc.get("seq")).unwrap_or(n as i64) - n as i64 + 1)
    }

    async fn find_all<T>(
        &self,
        coll: &Collection<Document>,
        filter: Document,
        sort: Document,
        skip: usize,
        limit: usize,
        parse: fn(&Document) -> Option<T>,
    ) -> StoreResult<Vec<T>> {
        let docs = self.find_docs(coll, (filter, None), sort, skip, limit).await?;
        docs.iter().map(|d| parse(d).ok_or_else(|| StoreError::Internal(format!("unexpected document: {d}")))).collect()
    }

    /// A page of documents (`limit` 0 or `usize::MAX`: all of them), with only the fields
    /// `projection` names (`None`: whole documents).
    async fn find_docs(
        &self,
        coll: &Collection<Document>,
        (filter, projection): (Document, Option<Document>),
        sort: Document,
        skip: usize,
        limit: usize,
    ) -> StoreResult<Vec<Document>> {
        let limit = if limit == usize::MAX { 0 } else { limit };
        let mut options = mongodb::options::FindOptions::builder()
            .sort(sort)
            .skip(skip as u64)
            .limit(limit as i64)
            // The whole page in one reply (the default first batch is 101 documents).
            .batch_size(if limit == 0 { 10_000 } else { limit.min(10_000) as u32 })
            .build();
        options.projection = projection;
        coll.find(filter).with_options(options).await.map_err(classify)?.try_collect().await.map_err(classify)
    }
}

fn is_duplicate(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Network and server-selection trouble is "unavailable" (503, retry); the rest is internal.
/// Server error codes that say the server cannot serve right now (a failover, a shutdown, a
/// time limit, lost credentials), not that this request or its data is wrong: HostUnreachable,
/// HostNotFound, Unauthorized, AuthenticationFailed, NetworkTimeout, ShutdownInProgress,
/// PrimarySteppedDown, ExceededTimeLimit, SocketException, NotWritablePrimary,
/// InterruptedAtShutdown, InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk,
/// NotPrimaryOrSecondary.
const TRANSIENT_CODES: &[i32] = &[6, 7, 13, 18, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];

/// Unavailable (503, retry later; the worker blames no event) or Internal (the request or the
/// data it touches is at fault).
fn classify(e: MongoError) -> StoreError {
    let code = match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    };
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::Authentication { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(format!("MongoDB unreachable: {e}")),
        _ if e.contains_label("RetryableWriteError") => StoreError::Unavailable(format!("MongoDB unavailable: {e}")),
        _ if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) => {
            StoreError::Unavailable(format!("MongoDB unavailable: {e}"))
        }
        _ => StoreError::Internal(format!("MongoDB error: {e}")),
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db.run_command(doc! {"ping": 1}).await.map(|_| ()).map_err(classify)
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<InsertOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.ready()?;
        let first = self.reserve(docs::EVENTS_COUNTER, events.len()).await?;
        let received_at = chrono::Utc::now().timestamp_millis();
        let batch: Vec<Document> =
            events.iter().enumerate().map(|(i, e)| docs::new_event(e, first + i as i64, received_at)).collect();
        // Unordered: every item is attempted; duplicates come back as per-index errors.
        let duplicates: Vec<usize> = match self.events.insert_many(batch).ordered(false).await {
            Ok(_) => Vec::new(),
            Err(err) => match err.kind.as_ref() {
                ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                    let errors = failure.write_errors.clone().unwrap_or_default();
                    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                        return Err(StoreError::Internal(format!("insert failed: {}", other.message)));
                    }
                    errors.iter().map(|w| w.index).collect()
                }
                _ => return Err(classify(err)),
            },
        };
        let mut out = vec![InsertOutcome::Inserted; events.len()];
        if !duplicates.is_empty() {
            let ids: Vec<&str> = duplicates.iter().map(|&i| events[i].event_id.as_str()).collect();
            let stored: Vec<Document> = self
                .events
                .find(doc! {"eventId": {"$in": ids}})
                .await
                .map_err(classify)?
                .try_collect()
                .await
                .map_err(classify)?;
            for i in duplicates {
                let id = &events[i].event_id;
                let existing = stored
                    .iter()
                    .find(|d| docs::text(d.get("eventId")).as_ref() == Some(id))
                    .ok_or_else(|| StoreError::Internal(format!("duplicate {id} not found")))?;
                // A stored event that no longer reads (see the dead-letter list) is a duplicate all the same.
                out[i] = InsertOutcome::Duplicate(docs::stored_event(existing));
            }
        }
        Ok(out)
    }

    async fn unprocessed(&self, limit: usize) -> StoreResult<Queued> {
        self.read_queue(limit).await
    }

    async fn apply(
        &self,
        mut events: Vec<StoredEvent>,
        rules: Arc<Engine>,
        now: Millis,
    ) -> StoreResult<Vec<ScoreChange>> {
        self.resolve_aliases(&mut events).await?;
        let Some(at) = events.iter().position(|e| merge_source(e).is_some()) else {
            let leased = self.lease(events, rules, now).await?;
            return self.commit(leased).await;
        };
        // An event asking for a merge is scored on its own, after the events before it; the
        // rest waits for the next step, which credits it to the merged lead.
        if at > 0 {
            events.truncate(at);
            let leased = self.lease(events, rules, now).await?;
            return self.commit(leased).await;
        }
        events.truncate(1);
        let from = merge_source(&events[0]).unwrap_or_default();
        let merged = match self.merge(&events[0], &from, &rules, now).await? {
            merge::Merge::Busy => return Ok(Vec::new()),
            merge::Merge::Nothing => None,
            merge::Merge::Done(from, before) => Some((from, before)),
        };
        let seq = events[0].seq;
        let mut leased = self.lease(events, rules, now).await?;
        if let Some(merged) = merged {
            leased.merges.insert(seq, merged);
        }
        self.commit(leased).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.ready()?;
        let depth = self.events.count_documents(docs::unprocessed()).await.map_err(classify)?;
        let oldest = self.events.find_one(docs::unprocessed()).sort(doc! {"seq": 1}).await.map_err(classify)?;
        Ok(QueueStats {
            depth,
            oldest_received_at: oldest.and_then(|d| docs::millis(d.get("receivedAt"))),
            dead_letters: self.count_dead_letters().await?,
        })
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> StoreResult<()> {
        self.set_aside(letters).await
    }

    async fn dead_letters(&self, after: Option<i64>, limit: usize) -> StoreResult<(Vec<DeadLetter>, u64)> {
        self.list_dead_letters(after.unwrap_or(i64::MIN), limit).await
    }

    async fn retry_dead_letter(&self, id: i64) -> StoreResult<bool> {
        self.end_dead_letter(id, true).await
    }

    async fn discard_dead_letter(&self, id: i64) -> StoreResult<bool> {
        self.end_dead_letter(id, false).await
    }

    async fn leads(&self, query: &LeadQuery) -> StoreResult<Vec<Lead>> {
        let found = self
            .find_docs(
                &self.leads,
                (docs::leads_filter(query), Some(docs::lead_view())),
                docs::leads_sort(),
                query.offset,
                query.limit,
            )
            .await?;
        found
            .iter()
            .map(|d| docs::lead(d).ok_or_else(|| StoreError::Internal(format!("unexpected lead: {d}"))))
            .collect()
    }

    async fn lead(&self, lead_id: &str) -> StoreResult<Option<Lead>> {
        let found =
            self.leads.find_one(docs::scored_lead(lead_id)).projection(docs::lead_view()).await.map_err(classify)?;
        Ok(found.as_ref().and_then(docs::lead))
    }

    async fn merged_into(&self, lead_id: &str) -> StoreResult<Option<String>> {
        self.alias_of(lead_id).await
    }

    async fn history(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<HistoryEntry>> {
        let (filter, sort) = docs::history_page(lead_id);
        self.find_all(&self.history, filter, sort, page.history_offset, page.history_limit, docs::history).await
    }

    async fn lead_events(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<StoredEvent>> {
        let (filter, sort) = docs::lead_events_page(lead_id);
        let found = self.find_docs(&self.events, (filter, None), sort, page.events_offset, page.events_limit).await?;
        // An event that does not read is in the dead-letter list (or on its way): the lead's
        // page shows the others rather than failing.
        Ok(found.iter().filter_map(docs::stored_event).collect())
    }

    async fn rules(&self) -> StoreResult<Vec<Rule>> {
        self.list_rules().await
    }

    async fn upsert_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule> {
        self.upsert_base_rule(rule, now).await
    }

    async fn create_rule(&self, rule: RuleDraft, now: Millis) -> StoreResult<Rule> {
        self.create_rule_doc(rule, now).await
    }

    async fn update_rule(&self, id: &str, rule: RuleDraft, now: Millis) -> StoreResult<Option<Rule>> {
        self.update_rule_doc(id, rule, now).await
    }

    async fn delete_rule(&self, id: &str) -> StoreResult<Option<Rule>> {
        self.delete_rule_doc(id).await
    }

    fn shared_feed(&self) -> Option<&dyn SharedFeed> {
        Some(self)
    }

    async fn seed_rules(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool> {
        self.seed_rule_docs(defaults, now).await
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let found = self.db.collection::<Document>("settings").find_one(doc! {"_id": key}).await.map_err(classify)?;
        Ok(found.and_then(|d| d.get("value").cloned()).map(|v| v.into_relaxed_extjson()))
    }

    async fn put_setting(&self, key: &str, value: serde_json::Value, now: Millis) -> StoreResult<()> {
        let value = mongodb::bson::Bson::try_from(value).map_err(|e| StoreError::Internal(e.to_string()))?;
        // `_id` in the replacement too: the stand-in's upserts do not take it from the filter.
        let replacement = doc! {"_id": key, "value": value, "updatedAt": mongodb::bson::DateTime::from_millis(now)};
        let settings = self.db.collection::<Document>("settings");
        settings.replace_one(doc! {"_id": key}, replacement).upsert(true).await.map_err(classify)?;
        Ok(())
    }

    async fn decay_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<DecayPage> {
        self.read_decay_inputs(after, limit).await
    }

    async fn adjustments_pending(&self) -> StoreResult<bool> {
        self.decay_waiting().await
    }

    async fn webhooks(&self) -> StoreResult<Vec<StoredWebhook>> {
        self.list_webhooks().await
    }

    async fn create_webhook(&self, hook: StoredWebhook) -> StoreResult<()> {
        self.insert_webhook(&hook).await
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        self.remove_webhook(id).await
    }

    async fn claim_deliveries(&self, now: Millis, until: Millis, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.claim_due(now, until, limit).await
    }

    async fn record_attempt(&self, id: i64, held_until: Millis, attempt: Attempt) -> StoreResult<bool> {
        self.write_attempt(id, held_until, &attempt).await
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.deliveries_of(webhook_id, limit).await
    }

    async fn redeliver(&self, webhook_id: &str, id: i64, now: Millis) -> StoreResult<bool> {
        self.deliver_again(webhook_id, id, now).await
    }

    async fn prune_deliveries(&self, before: Millis) -> StoreResult<u64> {
        self.prune_done(before).await
    }

    async fn rescore_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<RescorePage> {
        self.read_rescore_inputs(after, limit).await
    }

    async fn scored_total(&self) -> StoreResult<u64> {
        self.count_scored().await
    }

    async fn score_range(&self) -> StoreResult<Option<(i64, i64)>> {
        let end = |order: i32| self.leads.find_one(doc! {}).sort(doc! {"score": order}).projection(doc! {"score": 1});
        let (low, high) = (end(1).await.map_err(classify)?, end(-1).await.map_err(classify)?);
        Ok(match (low.and_then(|d| docs::int(d.get("score"))), high.and_then(|d| docs::int(d.get("score")))) {
            (Some(lo), Some(hi)) => Some((lo, hi)),
            _ => None,
        })
    }

    async fn events_since(&self, since: Millis) -> StoreResult<u64> {
        let at = |seq: i64| {
            self.events.find_one(doc! {"_id": {"$gte": seq}}).sort(doc! {"_id": 1}).projection(doc! {"receivedAt": 1})
        };
        let last =
            self.events.find_one(doc! {}).sort(doc! {"_id": -1}).projection(doc! {"_id": 1}).await.map_err(classify)?;
        let first =
            self.events.find_one(doc! {}).sort(doc! {"_id": 1}).projection(doc! {"_id": 1}).await.map_err(classify)?;
        let (Some(first), Some(last)) = (first, last) else { return Ok(0) };
        let (mut lo, mut hi) = (docs::int(first.get("_id")).unwrap_or(0), docs::int(last.get("_id")).unwrap_or(0) + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid).await.map_err(classify)? {
                Some(d) if docs::millis(d.get("receivedAt")).unwrap_or(0) >= since => hi = mid,
                Some(d) => lo = docs::int(d.get("_id")).unwrap_or(mid) + 1,
                None => hi = mid,
            }
        }
        self.events.count_documents(doc! {"_id": {"$gte": lo}}).await.map_err(classify)
    }

    async fn count_searched(&self, query: &LeadQuery) -> StoreResult<u64> {
        self.leads.count_documents(docs::leads_filter(query)).await.map_err(classify)
    }

    async fn count_leads(&self, min_score: Option<i64>, max_score: Option<i64>) -> StoreResult<u64> {
        // On the score alone, so the index answers: a lead `apply` created a moment ago and
        // has not filled yet (no events) counts in the first stage meanwhile.
        let mut range = Document::new();
        if let Some(min) = min_score {
            range.insert("$gte", min);
        }
        if let Some(max) = max_score {
            range.insert("$lte", max);
        }
        let filter = if range.is_empty() {
            doc! {}
        } else {
            doc! {"score": range}
        };
        self.leads.count_documents(filter).await.map_err(classify)
    }
}

/// Every document this store sends, built in one place so unit tests can check them exactly.

#[async_trait]
impl SharedFeed for MongoStore {
    async fn head(&self) -> StoreResult<(i64, i64)> {
        let (filter, sort) = docs::feed_newest();
        let newest = self.history.find_one(filter).sort(sort).await.map_err(classify)?;
        let written = newest.and_then(|d| docs::int(d.get("feedSeq"))).unwrap_or(0);
        let counter = self.counters.find_one(doc! {"_id": docs::FEED_COUNTER}).await.map_err(classify)?;
        let reserved = counter.and_then(|c| docs::int(c.get("seq"))).unwrap_or(0);
        Ok((written, reserved.max(written)))
    }

    async fn within(&self, spans: &[(i64, i64)], limit: usize) -> StoreResult<Vec<(i64, ScoreChange)>> {
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let (filter, sort) = docs::feed_within(spans);
        self.find_all(&self.history, filter, sort, 0, limit, docs::feed_change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_key_errors_are_recognised_and_outages_are_unavailable() {
        let io = MongoError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert!(matches!(classify(io), StoreError::Unavailable(_)));
        let io = MongoError::from(std::io::Error::other("x"));
        assert!(!is_duplicate(&io));
    }
}
