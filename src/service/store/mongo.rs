//! The MongoDB store, through the official `mongodb` driver: the production backend.
//!
//! Collections are the old app's — `leads` (`_id` = lead id), `events`, `scorehistories`,
//! `scoringrules` — plus `counters` for the ingest sequence. Every filter, update and index
//! this store sends is built by a function in [`docs`], unit-tested to the document; the
//! account collections (`users`, `sessions`, `api_keys`, `audit_log`) live in `accounts`.
//!
//! # Exactly once without transactions
//!
//! A standalone server has no multi-document transactions, so `apply` makes each event's
//! effect idempotent and ordered so that a crash between any two writes, a redelivery, or
//! several workers at once never count an event twice or lose it:
//!
//! 0. Skip events that are not stored or already processed.
//! 1. **History entry first**, with `_id` = the event id: it exists at most once and fixes the
//!    event's delta. A redelivery finds it (duplicate key 11000) and reuses that delta.
//! 2. **Claim** it (`applied: false`, no live lease → set a lease). Only one worker at a time
//!    can hold a claim; a claim left by a crashed worker expires after [`CLAIM_LEASE_MS`].
//! 3. **Bump the lead** with `$inc`, filtered on `pending: {$ne: eventId}` and pushing the
//!    event id onto `pending` in the same single-document update. If the filter does not
//!    match, the lead already holds this event (a crash after this step): nothing is added.
//! 4. Mark the history entry **applied** (with old and new score).
//! 5. `$pull` the event id from the lead's `pending` (it is now recorded by step 4, so
//!    `pending` only ever holds events in flight and stays tiny).
//! 6. Mark the event **processed**.
//!
//! After a crash at any point, the event is still unprocessed and is redelivered: steps that
//! already happened are recognised (1: duplicate key, 3: `pending` holds it, 4: `applied`)
//! and the rest run. So every event is added to its lead exactly once, and a lead's score is
//! the sum of its applied history deltas.

mod accounts;

use super::{InsertOutcome, QueueStats, Store, StoreError, StoreResult};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::time::Millis;
use crate::domain::{HistoryEntry, Lead, NewEvent, Rule, RuleInput, ScoreChange, ScoredEvent, StoredEvent};
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database};
use std::time::Duration;

/// How long a worker's claim on an event protects it from other workers.
pub const CLAIM_LEASE_MS: Millis = 10_000;
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
    /// Why the store is not ready yet (indexes not all created); `None` once it is. Until
    /// then ingest answers 503: without the unique eventId index a duplicate could get a 202.
    not_ready: std::sync::Mutex<Option<String>>,
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
        let name = database
            .map(str::to_string)
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let location =
            format!("{} / {name}", options.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(","));
        let client = Client::with_options(options).map_err(classify)?;
        Ok(Self::on(client.database(&name), location))
    }

    fn on(db: Database, location: String) -> Self {
        // A 202 means on disk: journaled, and on a majority of a replica set.
        let durable = WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build();
        let events = db.collection_with_options(
            "events",
            mongodb::options::CollectionOptions::builder().write_concern(durable).build(),
        );
        Self {
            events,
            leads: db.collection("leads"),
            history: db.collection("scorehistories"),
            rules: db.collection("scoringrules"),
            counters: db.collection("counters"),
            not_ready: std::sync::Mutex::new(Some("indexes are not created yet".into())),
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

    /// Drops the whole database (tests only use it on their own throw-away database).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.db.drop().await.map_err(classify)
    }

    /// Reserves `n` consecutive ingest sequence numbers; returns the first.
    async fn reserve_seq(&self, n: usize) -> StoreResult<i64> {
        let (filter, update) = docs::reserve_seq(n as i64);
        let counter = self
            .counters
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?
            .ok_or_else(|| StoreError::Internal("sequence counter missing after upsert".into()))?;
        Ok(docs::int(counter.get("seq")).unwrap_or(n as i64) - n as i64 + 1)
    }

    /// Applies one event exactly once (see the module docs); returns the change if this call
    /// added it to the lead.
    async fn apply_one(&self, e: &ScoredEvent, now: Millis) -> StoreResult<Option<ScoreChange>> {
        // 0. Only a stored, unprocessed event is applied.
        let pending = self.events.find_one(docs::still_unprocessed(e.seq, &e.event_id)).await.map_err(classify)?;
        if pending.is_none() {
            return Ok(None);
        }
        // 1. History entry first.
        if let Err(err) = self.history.insert_one(docs::history_entry(e, now)).await {
            if !is_duplicate(&err) {
                return Err(classify(err));
            }
        }
        // 2. Claim it.
        let (filter, update) = docs::claim(&e.event_id, now);
        let claimed = self.history.find_one_and_update(filter, update).return_document(ReturnDocument::After).await;
        let Some(entry) = claimed.map_err(classify)? else {
            // Applied already (finish the bookkeeping) or held by a live claim (retry later).
            let entry = self.history.find_one(doc! {"_id": &e.event_id}).await.map_err(classify)?;
            if entry.as_ref().is_some_and(|h| docs::boolean(h.get("applied")).unwrap_or(false)) {
                self.finish(e, docs::int(entry.as_ref().and_then(|h| h.get("delta"))).unwrap_or(0)).await?;
            }
            return Ok(None);
        };
        let delta = docs::int(entry.get("delta")).unwrap_or(e.points);
        // 3. Bump the lead, once.
        let (score, added) = self.bump_lead(e, delta, now).await?;
        // 4. Record it as applied.
        let (filter, update) = docs::history_applied(&e.event_id, score - delta, score);
        self.history.update_one(filter, update).await.map_err(classify)?;
        // 5 and 6.
        self.finish(e, delta).await?;
        Ok(added.then(|| ScoreChange {
            lead_id: e.lead_id.clone(),
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            delta,
            score,
            updated_at: now,
        }))
    }

    /// Step 3: returns the lead's score after this event and whether this call added it.
    async fn bump_lead(&self, e: &ScoredEvent, delta: i64, now: Millis) -> StoreResult<(i64, bool)> {
        let (filter, update) = docs::bump_lead(e, delta, now);
        for _ in 0..5 {
            let bumped = self
                .leads
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match bumped {
                Ok(Some(lead)) => return Ok((docs::int(lead.get("score")).unwrap_or(0), true)),
                Ok(None) => {}
                // No match, so the upsert tried to create the lead: either the lead already
                // holds this event (a crash after step 3), or another worker created the lead
                // at the same instant. Look, and retry in the second case.
                Err(err) if is_duplicate(&err) => {
                    let lead = self.leads.find_one(doc! {"_id": &e.lead_id}).await.map_err(classify)?;
                    if let Some(lead) = lead.filter(|l| docs::holds(l, &e.event_id)) {
                        return Ok((docs::int(lead.get("score")).unwrap_or(0), false));
                    }
                }
                Err(err) => return Err(classify(err)),
            }
        }
        Err(StoreError::Internal(format!("could not apply {} to lead {}", e.event_id, e.lead_id)))
    }

    async fn finish(&self, e: &ScoredEvent, delta: i64) -> StoreResult<()> {
        let (filter, update) = docs::release_pending(&e.lead_id, &e.event_id);
        self.leads.update_one(filter, update).await.map_err(classify)?;
        let (filter, update) = docs::mark_processed(e.seq, delta);
        self.events.update_one(filter, update).await.map_err(classify)?;
        Ok(())
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
        let docs: Vec<Document> = coll
            .find(filter)
            .sort(sort)
            .skip(skip as u64)
            .limit(limit as i64)
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)?;
        docs.iter().map(|d| parse(d).ok_or_else(|| StoreError::Internal(format!("unexpected document: {d}")))).collect()
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
fn classify(e: MongoError) -> StoreError {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(format!("MongoDB unreachable: {e}")),
        _ if e.contains_label("RetryableWriteError") => StoreError::Unavailable(format!("MongoDB unavailable: {e}")),
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
        let first = self.reserve_seq(events.len()).await?;
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
            let stored = self
                .find_all(&self.events, doc! {"eventId": {"$in": ids}}, doc! {"seq": 1}, 0, 0, docs::stored_event)
                .await?;
            for i in duplicates {
                let existing = stored.iter().find(|s| s.event_id == events[i].event_id).cloned();
                out[i] = InsertOutcome::Duplicate(
                    existing
                        .ok_or_else(|| StoreError::Internal(format!("duplicate {} not found", events[i].event_id)))?,
                );
            }
        }
        Ok(out)
    }

    async fn unprocessed(&self, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.find_all(&self.events, docs::unprocessed(), doc! {"seq": 1}, 0, limit, docs::stored_event).await
    }

    async fn apply(&self, events: Vec<ScoredEvent>, now: Millis) -> StoreResult<Vec<ScoreChange>> {
        let mut changes = Vec::with_capacity(events.len());
        for e in &events {
            if let Some(change) = self.apply_one(e, now).await? {
                changes.push(change);
            }
        }
        Ok(changes)
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.ready()?;
        let depth = self.events.count_documents(docs::unprocessed()).await.map_err(classify)?;
        let oldest = self.events.find_one(docs::unprocessed()).sort(doc! {"seq": 1}).await.map_err(classify)?;
        Ok(QueueStats { depth, oldest_received_at: oldest.and_then(|d| docs::millis(d.get("receivedAt"))) })
    }

    async fn leads(&self, query: &LeadQuery) -> StoreResult<Vec<Lead>> {
        self.find_all(&self.leads, docs::leads_filter(query), docs::leads_sort(), query.offset, query.limit, docs::lead)
            .await
    }

    async fn lead(&self, lead_id: &str) -> StoreResult<Option<Lead>> {
        let found = self.leads.find_one(doc! {"_id": lead_id}).await.map_err(classify)?;
        Ok(found.as_ref().and_then(docs::lead))
    }

    async fn history(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<HistoryEntry>> {
        let (filter, sort) = docs::history_page(lead_id);
        self.find_all(&self.history, filter, sort, page.history_offset, page.history_limit, docs::history).await
    }

    async fn lead_events(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<StoredEvent>> {
        let (filter, sort) = docs::lead_events_page(lead_id);
        self.find_all(&self.events, filter, sort, page.events_offset, page.events_limit, docs::stored_event).await
    }

    async fn rules(&self) -> StoreResult<Vec<Rule>> {
        self.find_all(&self.rules, doc! {}, doc! {"eventType": 1}, 0, 0, docs::rule).await
    }

    async fn upsert_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule> {
        let (filter, update) = docs::upsert_rule(&rule, now);
        let saved = self
            .rules
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?;
        saved.as_ref().and_then(docs::rule).ok_or_else(|| StoreError::Internal("rule missing after upsert".into()))
    }

    async fn seed_rules(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool> {
        if self.rules.count_documents(doc! {}).await.map_err(classify)? > 0 {
            return Ok(false);
        }
        let docs: Vec<Document> =
            defaults.iter().map(|r| docs::upsert_rule(r, now)).map(|(f, u)| docs::merge(f, u)).collect();
        match self.rules.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(true),
            // Another instance seeded at the same moment: its rules stand.
            Err(err)
                if matches!(err.kind.as_ref(), ErrorKind::InsertMany(f)
                if f.write_errors.as_ref().is_some_and(|w| w.iter().all(|w| w.code == DUPLICATE_KEY))) =>
            {
                Ok(false)
            }
            Err(err) => Err(classify(err)),
        }
    }
}

/// Every document this store sends, built in one place so unit tests can check them exactly.
pub mod docs {
    use super::CLAIM_LEASE_MS;
    use crate::domain::query::LeadQuery;
    use crate::domain::time::Millis;
    use crate::domain::{HistoryEntry, Lead, NewEvent, Rule, RuleInput, ScoredEvent, StoredEvent};
    use mongodb::bson::{doc, Bson, DateTime, Document};
    use mongodb::options::IndexOptions;
    use mongodb::IndexModel;

    /// Indexes earlier releases created that no query uses any more, by collection. The three
    /// with `_id` inside a compound key gave way to explicit fields: several MongoDB-compatible
    /// servers cannot index `_id` there (the nx-27017 stand-in breaks every insert).
    pub const SUPERSEDED_INDEXES: &[(&str, &str)] = &[
        ("events", "lead_events"),
        ("events", "lead_events_by_seq"),
        ("events", "unprocessed"),
        ("leads", "leaderboard"),
    ];

    /// The indexes behind every query, by collection.
    pub fn indexes() -> Vec<(&'static str, IndexModel)> {
        let index = |keys: Document, options: IndexOptions| IndexModel::builder().keys(keys).options(options).build();
        let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
        vec![
            (
                "events",
                index(
                    doc! {"eventId": 1},
                    IndexOptions::builder().name("eventId_unique".to_string()).unique(true).build(),
                ),
            ),
            ("events", index(doc! {"leadId": 1, "seq": -1}, named("events_by_lead_seq"))),
            (
                "events",
                index(
                    doc! {"processed": 1, "seq": 1},
                    IndexOptions::builder()
                        .name("queue_by_seq".to_string())
                        .partial_filter_expression(doc! {"processed": false})
                        .build(),
                ),
            ),
            ("leads", index(doc! {"score": -1, "leadId": 1}, named("leaderboard_by_score_id"))),
            ("scorehistories", index(doc! {"leadId": 1, "timestamp": -1, "seq": -1}, named("lead_history"))),
            (
                "scoringrules",
                index(
                    doc! {"eventType": 1},
                    IndexOptions::builder().name("eventType_unique".to_string()).unique(true).build(),
                ),
            ),
        ]
    }

    pub fn reserve_seq(n: i64) -> (Document, Document) {
        (doc! {"_id": "events"}, doc! {"$inc": {"seq": n}})
    }

    /// An event as stored: `seq` (also its `_id`) is its ingest sequence number: queue order.
    pub fn new_event(e: &NewEvent, seq: i64, received_at: Millis) -> Document {
        let metadata = e
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|v| mongodb::bson::to_bson(&v).ok())
            .unwrap_or(Bson::Null);
        doc! {
            "_id": seq,
            "seq": seq,
            "eventId": &e.event_id,
            "leadId": &e.lead_id,
            "eventType": &e.event_type,
            "timestamp": DateTime::from_millis(e.timestamp),
            "metadata": metadata,
            "receivedAt": DateTime::from_millis(received_at),
            "processed": false,
            "points": Bson::Null,
        }
    }

    pub fn unprocessed() -> Document {
        doc! {"processed": false}
    }

    pub fn still_unprocessed(seq: i64, event_id: &str) -> Document {
        doc! {"_id": seq, "eventId": event_id, "processed": false}
    }

    pub fn history_entry(e: &ScoredEvent, now: Millis) -> Document {
        doc! {
            "_id": &e.event_id,
            "eventId": &e.event_id,
            "leadId": &e.lead_id,
            "eventType": &e.event_type,
            "delta": e.points,
            "seq": e.seq,
            "timestamp": DateTime::from_millis(now),
            "applied": false,
            // Epoch milliseconds: only ever compared, and numbers compare the same everywhere.
            "claimedUntil": 0_i64,
        }
    }

    /// Takes the entry for this worker unless it is applied or another worker's lease is live.
    pub fn claim(event_id: &str, now: Millis) -> (Document, Document) {
        (
            doc! {"_id": event_id, "applied": false, "claimedUntil": {"$lt": now}},
            doc! {"$set": {"claimedUntil": now + CLAIM_LEASE_MS}},
        )
    }

    /// Adds the delta unless the lead already holds this event; creates the lead if needed.
    pub fn bump_lead(e: &ScoredEvent, delta: i64, now: Millis) -> (Document, Document) {
        (
            doc! {"_id": &e.lead_id, "pending": {"$ne": &e.event_id}},
            doc! {
                "$inc": {"score": delta, "eventCount": 1_i64},
                // No `$setOnInsert`: not every compatible server applies it on an upsert (the
                // stand-in does not). Setting the same values again, and `$min` for the creation
                // time, come to the same thing everywhere.
                "$set": {
                    "lastEventId": &e.event_id,
                    "updatedAt": DateTime::from_millis(now),
                    "leadId": &e.lead_id,
                    "searchKey": e.lead_id.to_lowercase(),
                },
                "$max": {"lastEventAt": DateTime::from_millis(e.timestamp)},
                "$min": {"createdAt": DateTime::from_millis(now)},
                "$push": {"pending": &e.event_id},
            },
        )
    }

    /// Whether a lead document has this event in flight (step 3 done, step 5 not yet).
    pub fn holds(lead: &Document, event_id: &str) -> bool {
        lead.get_array("pending").is_ok_and(|p| p.iter().any(|v| v.as_str() == Some(event_id)))
    }

    pub fn history_applied(event_id: &str, old_score: i64, new_score: i64) -> (Document, Document) {
        (doc! {"_id": event_id}, doc! {"$set": {"applied": true, "oldScore": old_score, "newScore": new_score}})
    }

    pub fn release_pending(lead_id: &str, event_id: &str) -> (Document, Document) {
        (doc! {"_id": lead_id}, doc! {"$pull": {"pending": event_id}})
    }

    pub fn mark_processed(seq: i64, points: i64) -> (Document, Document) {
        (doc! {"_id": seq}, doc! {"$set": {"processed": true, "points": points}})
    }

    pub fn leads_filter(q: &LeadQuery) -> Document {
        let mut filter = Document::new();
        let mut score = Document::new();
        if let Some(min) = q.min_score {
            score.insert("$gte", min);
        }
        if let Some(max) = q.max_score {
            score.insert("$lte", max);
        }
        if !score.is_empty() {
            filter.insert("score", score);
        }
        if let Some(needle) = q.search_needle() {
            // Lowercased id, lowercased needle, every metacharacter escaped: a literal substring.
            filter.insert("searchKey", doc! {"$regex": escape_regex(&needle)});
        }
        filter
    }

    pub fn leads_sort() -> Document {
        doc! {"score": -1, "leadId": 1}
    }

    /// Escapes every ASCII character that is not a letter or digit, so user input can only
    /// ever match itself.
    pub fn escape_regex(s: &str) -> String {
        let mut out = String::with_capacity(s.len() * 2);
        for c in s.chars() {
            if c.is_ascii() && !c.is_ascii_alphanumeric() {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    pub fn history_page(lead_id: &str) -> (Document, Document) {
        (doc! {"leadId": lead_id, "applied": true}, doc! {"timestamp": -1, "seq": -1})
    }

    pub fn lead_events_page(lead_id: &str) -> (Document, Document) {
        (doc! {"leadId": lead_id}, doc! {"seq": -1})
    }

    pub fn upsert_rule(r: &RuleInput, now: Millis) -> (Document, Document) {
        (
            doc! {"eventType": &r.event_type},
            doc! {"$set": {"points": r.points, "isActive": r.is_active, "updatedAt": DateTime::from_millis(now)}},
        )
    }

    /// A filter and a `$set` update as one document to insert.
    pub fn merge(filter: Document, update: Document) -> Document {
        let mut out = filter;
        if let Ok(set) = update.get_document("$set") {
            out.extend(set.clone());
        }
        out
    }

    // Readers are tolerant: MongoDB-compatible servers (and documents other tools wrote) may
    // hand back a boolean as 0/1, a number as Int32, Int64 or Double, a date as a string.
    // A document that still cannot be read is reported by the caller, never guessed at.

    /// An integer from any numeric type, a boolean, or a numeric string.
    pub fn int(v: Option<&Bson>) -> Option<i64> {
        match v? {
            Bson::Int64(n) => Some(*n),
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Double(f) if f.is_finite() => Some(*f as i64),
            Bson::Boolean(b) => Some(i64::from(*b)),
            Bson::String(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
            }
            _ => None,
        }
    }

    /// Epoch milliseconds from a BSON date, a number, or a string (digits or ISO 8601).
    pub fn millis(v: Option<&Bson>) -> Option<Millis> {
        match v? {
            Bson::DateTime(d) => Some(d.timestamp_millis()),
            Bson::Boolean(_) => None,
            Bson::String(s) => s.trim().parse::<i64>().ok().or_else(|| crate::domain::time::parse_iso(s)),
            other => int(Some(other)),
        }
    }

    /// A boolean from a boolean, a number (0 is false) or `"true"`/`"false"`.
    pub fn boolean(v: Option<&Bson>) -> Option<bool> {
        match v? {
            Bson::Boolean(b) => Some(*b),
            Bson::String(s) => s.trim().parse().ok(),
            other => int(Some(other)).map(|n| n != 0),
        }
    }

    pub fn text(v: Option<&Bson>) -> Option<String> {
        match v? {
            Bson::String(s) | Bson::Symbol(s) => Some(s.clone()),
            Bson::Int32(n) => Some(n.to_string()),
            Bson::Int64(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn field(d: &Document, key: &str) -> Option<String> {
        text(d.get(key))
    }

    pub fn stored_event(d: &Document) -> Option<StoredEvent> {
        let metadata = match d.get("metadata") {
            None | Some(Bson::Null) => None,
            Some(m) => Some(m.clone().into_relaxed_extjson().to_string()),
        };
        Some(StoredEvent {
            // `seq`; documents written before it existed carry the sequence as `_id` only.
            seq: int(d.get("seq")).or_else(|| int(d.get("_id")))?,
            event_id: field(d, "eventId")?,
            lead_id: field(d, "leadId")?,
            event_type: field(d, "eventType")?,
            timestamp: millis(d.get("timestamp"))?,
            metadata,
            received_at: millis(d.get("receivedAt"))?,
            processed: boolean(d.get("processed")).unwrap_or(false),
            points: int(d.get("points")),
        })
    }

    pub fn lead(d: &Document) -> Option<Lead> {
        Some(Lead {
            id: field(d, "_id")?,
            score: int(d.get("score")).unwrap_or(0),
            last_event_id: field(d, "lastEventId"),
            updated_at: millis(d.get("updatedAt")).unwrap_or(0),
            last_event_at: millis(d.get("lastEventAt")),
            event_count: int(d.get("eventCount")).unwrap_or(0),
        })
    }

    pub fn history(d: &Document) -> Option<HistoryEntry> {
        Some(HistoryEntry {
            lead_id: field(d, "leadId")?,
            event_id: field(d, "eventId")?,
            event_type: field(d, "eventType")?,
            old_score: int(d.get("oldScore"))?,
            new_score: int(d.get("newScore"))?,
            delta: int(d.get("delta"))?,
            timestamp: millis(d.get("timestamp"))?,
        })
    }

    pub fn rule(d: &Document) -> Option<Rule> {
        Some(Rule {
            event_type: field(d, "eventType")?,
            points: int(d.get("points"))?,
            // A rule without the flag is active, as the old app's schema defaulted it.
            is_active: boolean(d.get("isActive")).unwrap_or(true),
            updated_at: millis(d.get("updatedAt")).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::docs::*;
    use super::*;
    use mongodb::bson::{Bson, DateTime};
    use mongodb::IndexModel;

    fn scored() -> ScoredEvent {
        ScoredEvent {
            seq: 42,
            event_id: "evt-1".into(),
            lead_id: "Lead-ÜX".into(),
            event_type: "Purchase".into(),
            timestamp: 1_000,
            points: 100,
        }
    }

    fn keys_and_options(collection: &str, name: &str) -> (Document, IndexModel) {
        let (_, model) = indexes()
            .into_iter()
            .find(|(c, m)| *c == collection && m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
            .unwrap_or_else(|| panic!("no index {name} on {collection}"));
        (model.keys.clone(), model)
    }

    #[test]
    fn indexes_back_every_query() {
        let (keys, model) = keys_and_options("events", "eventId_unique");
        assert_eq!(keys, doc! {"eventId": 1});
        assert_eq!(model.options.unwrap().unique, Some(true));
        assert_eq!(keys_and_options("events", "events_by_lead_seq").0, doc! {"leadId": 1, "seq": -1});
        assert_eq!(SUPERSEDED_INDEXES.len(), 4);
        for (collection, model) in indexes() {
            let name = model.options.and_then(|o| o.name).unwrap();
            assert!(
                !SUPERSEDED_INDEXES.contains(&(collection, name.as_str())),
                "{name} would be created, then dropped"
            );
        }
        let (keys, model) = keys_and_options("events", "queue_by_seq");
        assert_eq!(keys, doc! {"processed": 1, "seq": 1});
        assert_eq!(model.options.unwrap().partial_filter_expression, Some(doc! {"processed": false}));
        assert_eq!(keys_and_options("leads", "leaderboard_by_score_id").0, doc! {"score": -1, "leadId": 1});
        assert_eq!(
            keys_and_options("scorehistories", "lead_history").0,
            doc! {"leadId": 1, "timestamp": -1, "seq": -1}
        );
        let (keys, model) = keys_and_options("scoringrules", "eventType_unique");
        assert_eq!(keys, doc! {"eventType": 1});
        assert_eq!(model.options.unwrap().unique, Some(true));
        assert_eq!(indexes().len(), 6);
        // The queries' sorts are prefixes the indexes serve.
        assert_eq!(leads_sort(), doc! {"score": -1, "leadId": 1});
        assert_eq!(history_page("l").1, doc! {"timestamp": -1, "seq": -1});
        assert_eq!(lead_events_page("l").1, doc! {"seq": -1}, "ingest order, newest first");
    }

    #[test]
    fn no_compound_index_holds_id() {
        for (collection, model) in indexes().into_iter().chain(super::accounts::indexes()) {
            let keys: Vec<&String> = model.keys.keys().collect();
            assert!(keys.len() == 1 || !keys.iter().any(|k| *k == "_id"), "{collection}: {keys:?}");
        }
    }

    #[test]
    fn new_events_are_stored_unprocessed_with_the_sequence_as_id() {
        let e = NewEvent {
            event_id: "e1".into(),
            lead_id: "l1".into(),
            event_type: "Page View".into(),
            timestamp: 5_000,
            metadata: Some(r#"{"page":"/pricing","n":3}"#.into()),
        };
        assert_eq!(
            new_event(&e, 7, 9_000),
            doc! {
                "_id": 7_i64, "seq": 7_i64, "eventId": "e1", "leadId": "l1", "eventType": "Page View",
                "timestamp": DateTime::from_millis(5_000), "metadata": {"page": "/pricing", "n": 3_i64},
                "receivedAt": DateTime::from_millis(9_000), "processed": false, "points": Bson::Null,
            }
        );
        let back = stored_event(&new_event(&e, 7, 9_000)).unwrap();
        assert_eq!((back.seq, back.timestamp, back.received_at, back.processed), (7, 5_000, 9_000, false));
        assert_eq!(serde_json::from_str::<serde_json::Value>(back.metadata.as_deref().unwrap()).unwrap()["n"], 3);
        assert_eq!(unprocessed(), doc! {"processed": false});
        assert_eq!(still_unprocessed(7, "e1"), doc! {"_id": 7_i64, "eventId": "e1", "processed": false});
        assert_eq!(reserve_seq(500), (doc! {"_id": "events"}, doc! {"$inc": {"seq": 500_i64}}));
    }

    #[test]
    fn apply_steps_send_exactly_these_documents() {
        let e = scored();
        assert_eq!(
            history_entry(&e, 2_000),
            doc! {
                "_id": "evt-1", "eventId": "evt-1", "leadId": "Lead-ÜX", "eventType": "Purchase", "delta": 100_i64,
                "seq": 42_i64, "timestamp": DateTime::from_millis(2_000), "applied": false,
                "claimedUntil": 0_i64,
            }
        );
        assert_eq!(
            claim("evt-1", 2_000),
            (
                doc! {"_id": "evt-1", "applied": false, "claimedUntil": {"$lt": 2_000_i64}},
                doc! {"$set": {"claimedUntil": 12_000_i64}},
            )
        );
        assert_eq!(
            bump_lead(&e, 100, 2_000),
            (
                doc! {"_id": "Lead-ÜX", "pending": {"$ne": "evt-1"}},
                doc! {
                    "$inc": {"score": 100_i64, "eventCount": 1_i64},
                    "$set": {
                        "lastEventId": "evt-1", "updatedAt": DateTime::from_millis(2_000),
                        "leadId": "Lead-ÜX", "searchKey": "lead-üx",
                    },
                    "$max": {"lastEventAt": DateTime::from_millis(1_000)},
                    "$min": {"createdAt": DateTime::from_millis(2_000)},
                    "$push": {"pending": "evt-1"},
                },
            )
        );
        assert_eq!(
            history_applied("evt-1", 5, 105),
            (doc! {"_id": "evt-1"}, doc! {"$set": {"applied": true, "oldScore": 5_i64, "newScore": 105_i64}})
        );
        assert_eq!(
            release_pending("Lead-ÜX", "evt-1"),
            (doc! {"_id": "Lead-ÜX"}, doc! {"$pull": {"pending": "evt-1"}})
        );
        assert_eq!(
            mark_processed(42, 100),
            (doc! {"_id": 42_i64}, doc! {"$set": {"processed": true, "points": 100_i64}})
        );
    }

    #[test]
    fn leaderboard_filters_are_literal() {
        assert_eq!(leads_filter(&LeadQuery::default()), doc! {});
        let q = LeadQuery {
            search: Some("A.c*(1)".into()),
            min_score: Some(10),
            max_score: Some(50),
            ..Default::default()
        };
        assert_eq!(
            leads_filter(&q),
            doc! {"score": {"$gte": 10_i64, "$lte": 50_i64}, "searchKey": {"$regex": r"a\.c\*\(1\)"}}
        );
        assert_eq!(escape_regex(r"^x$|[a]{2}\d+?/ü"), r"\^x\$\|\[a\]\{2\}\\d\+\?\/ü");
        assert_eq!(escape_regex("plain123"), "plain123");
    }

    #[test]
    fn rules_upsert_by_event_type() {
        let r = RuleInput { event_type: "Webinar".into(), points: -5, is_active: false };
        let (filter, update) = upsert_rule(&r, 3_000);
        assert_eq!(filter, doc! {"eventType": "Webinar"});
        assert_eq!(
            update,
            doc! {"$set": {"points": -5_i64, "isActive": false, "updatedAt": DateTime::from_millis(3_000)}}
        );
        let seeded = merge(filter, update);
        assert_eq!(
            rule(&seeded).unwrap(),
            Rule { event_type: "Webinar".into(), points: -5, is_active: false, updated_at: 3_000 }
        );
    }

    #[test]
    fn documents_read_back_into_the_model() {
        let l = lead(&doc! {
            "_id": "l", "score": 15_i32, "lastEventId": "e", "updatedAt": DateTime::from_millis(9),
            "lastEventAt": DateTime::from_millis(8), "eventCount": 2_i64, "pending": [],
        })
        .unwrap();
        assert_eq!(
            l,
            Lead {
                id: "l".into(),
                score: 15,
                last_event_id: Some("e".into()),
                updated_at: 9,
                last_event_at: Some(8),
                event_count: 2
            }
        );
        assert!(holds(&doc! {"pending": ["a", "evt-1"]}, "evt-1"));
        assert!(!holds(&doc! {"pending": ["a"]}, "evt-1"));
        assert!(!holds(&doc! {}, "evt-1"));
        let mut h = history_entry(&scored(), 2_000);
        assert!(history(&h).is_none(), "an unapplied entry has no scores yet");
        h.extend(history_applied("evt-1", 0, 100).1.get_document("$set").unwrap().clone());
        assert_eq!(history(&h).unwrap().new_score, 100);
    }

    #[test]
    fn duplicate_key_errors_are_recognised_and_outages_are_unavailable() {
        let io = MongoError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert!(matches!(classify(io), StoreError::Unavailable(_)));
        let io = MongoError::from(std::io::Error::other("x"));
        assert!(!is_duplicate(&io));
    }
}
