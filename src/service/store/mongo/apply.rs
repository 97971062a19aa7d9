//! `apply` on MongoDB: every event added to its lead exactly once, with no multi-document
//! transaction (a standalone server has none), in a fixed number of round trips per batch.
//!
//! # Leases and fencing
//! A call takes a **lease** on the leads its batch touches: one `updateMany` sets a fresh
//! random token and an expiry on every lead that is free. Every later write to a lead is
//! filtered on that token, inside the same single-document update that changes it. So only
//! the holder changes a lead, the score it read after leasing is exact, and a worker that
//! stalls past its lease is **fenced out**: once another has taken the lead, the stalled
//! worker's update matches nothing. Clocks only decide when a lease may be taken over.
//!
//! # One batch, step by step (one round trip each, however many events)
//! 1. `lease` the batch's leads;
//! 2. `read` them: which this call holds, their scores, any unfinished `lastBatch`;
//!    `create` the missing ones, inserted already leased (a duplicate key: another has it);
//! 3. `check` which of the batch's events, and of each `lastBatch`, are still unprocessed;
//!    `recover` a `lastBatch` with unprocessed events: write its history entries and
//!    processed flags exactly as recorded (only after a crash or a stall);
//! 4. `number` the changes: reserve positions in the feed every instance's stream tails;
//! 5. `apply`: one update statement per lead, fenced on the token, `$inc`s the score and
//!    records the entries (delta, old and new score, feed position) as `lastBatch`;
//! 6. `history`: upsert each entry exactly as `lastBatch` recorded it;
//! 7. `processed`: flag each event;
//! 8. `release` the leases and clear `lastBatch`, fenced on the token.
//!
//! The invariant: an unprocessed event has been added to its lead iff it is in the lead's
//! `lastBatch`, and a `lastBatch` is only replaced (5) or cleared (8) once its events are
//! processed. A crash between any two steps leaves each event either not added (applied by
//! a later call) or added and recorded (finished by the lead's next holder, never added
//! again), so the history chain stays old → new and a score stays the sum of its deltas.

use super::docs::{self, Entry, FEED_COUNTER};
use super::{classify, MongoStore, DUPLICATE_KEY};
use crate::domain::engine::{Engine, Usage, UsageKey};
use crate::domain::profile::{self, traits_of, Profile};
use crate::domain::rescore::{difference, half_life_of, is_adjustment, replay, RESCORE_EVENT_TYPE};
use crate::domain::time::Millis;
use crate::domain::webhooks::{NewDelivery, Outbox};
use crate::domain::{ScoreChange, StoredEvent};
use crate::service::store::{StoreError, StoreResult};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{ReadConcern, ReadPreference, SelectionCriteria};
use mongodb::Collection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::Notify;

/// Events of one lead applied in one statement; the rest wait for the next batch. Bounds
/// `lastBatch` (about 200 bytes an entry) far below MongoDB's 16 MB document limit.
pub const MAX_PER_LEAD: usize = 1_000;
/// Serialized bytes per write command, well below the 16 MB a command document may have.
const MAX_COMMAND_BYTES: usize = 8 << 20;
/// Statements per write command, well below MongoDB's `maxWriteBatchSize` (100,000).
const MAX_COMMAND_STATEMENTS: usize = 10_000;
/// Lead ids per `$in` (each up to 1 KB: 256 characters of UTF-8).
const IDS_PER_COMMAND: usize = 2_000;
/// Event sequence numbers per `$in`.
const SEQS_PER_COMMAND: usize = 20_000;

/// Where a test makes `apply` stop as if the process had died right after that step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    Lease,
    Create,
    RecoverHistory,
    Recover,
    Number,
    Apply,
    History,
    Processed,
    /// In an identity merge (`merge.rs`), after its steps 2 to 5.
    MergeAlias,
    MergeMove,
    MergeRechain,
    MergeCounts,
    MergeScore,
}

impl CrashPoint {
    /// The points of an identity merge, in order.
    pub const MERGE: [CrashPoint; 5] =
        [Self::MergeAlias, Self::MergeMove, Self::MergeRechain, Self::MergeCounts, Self::MergeScore];

    pub const ALL: [CrashPoint; 8] = [
        Self::Lease,
        Self::Create,
        Self::RecoverHistory,
        Self::Recover,
        Self::Number,
        Self::Apply,
        Self::History,
        Self::Processed,
    ];
}

/// What a call holds after `lease`: its token and, per held lead, the events to add.
pub struct Leased {
    /// Events that merged a lead in (`merge.rs`): by seq, the lead and the score before.
    pub(super) merges: HashMap<i64, (String, i64)>,
    token: String,
    now: Millis,
    rules: Arc<Engine>,
    /// When the lease was taken, on this process's monotonic clock.
    started: std::time::Instant,
    leads: Vec<HeldLead>,
}

struct HeldLead {
    id: String,
    score: i64,
    /// Its profile as read under the lease (`Identify` events merge into it).
    profile: Profile,
    /// The lead's limit counts for its events' keys, read under the lease: exact.
    usage: Usage,
    events: Vec<StoredEvent>,
    /// When `events` starts with a `$rescore` event: the lead's scored events it replays.
    scored: Vec<StoredEvent>,
}

impl MongoStore {
    /// Steps 1–3: leases the leads, finishes any batch a crashed or stalled worker left
    /// unfinished on them, and keeps the events still to add.
    pub async fn lease(&self, mut events: Vec<StoredEvent>, rules: Arc<Engine>, now: Millis) -> StoreResult<Leased> {
        let token = mongodb::bson::oid::ObjectId::new().to_hex();
        events.sort_by_key(|e| e.seq);
        // The same event offered twice in one call is one event.
        events.dedup_by_key(|e| e.seq);
        let mut leads: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for e in &events {
            if seen.insert(e.lead_id.as_str()) {
                leads.push(e.lead_id.clone());
            }
        }
        let mut leased =
            Leased { merges: HashMap::new(), token, now, rules, started: std::time::Instant::now(), leads: Vec::new() };
        if leads.is_empty() {
            return Ok(leased);
        }
        // 1. lease (ids in chunks: 20,000 ids of up to 1 KB each would pass the 16 MB limit)
        for chunk in leads.chunks(IDS_PER_COMMAND) {
            let (filter, update) = docs::lease(chunk, &leased.token, now);
            self.leads.update_many(filter, update).await.map_err(classify)?;
        }
        self.checkpoint(CrashPoint::Lease).await?;
        // 2. read, create
        let mut found: Vec<Document> = Vec::with_capacity(leads.len());
        for chunk in leads.chunks(IDS_PER_COMMAND) {
            found.extend(
                self.read_fresh(&self.leads, doc! {"_id": {"$in": chunk}}, docs::lease_view(), chunk.len()).await?,
            );
        }
        let mut held: HashMap<String, (i64, Vec<Entry>, Usage, Profile)> = HashMap::new();
        // The limit counts pricing will read, by lead.
        let mut keys: HashMap<String, Vec<UsageKey>> = HashMap::new();
        for key in leased.rules.limited_keys(&events) {
            keys.entry(key.lead_id.clone()).or_default().push(key);
        }
        let mut existing = HashSet::new();
        let mut unreadable = None;
        for d in &found {
            let Some(id) = docs::text(d.get("_id")) else { continue };
            existing.insert(id.clone());
            if docs::text(d.get("leaseToken")).as_deref() == Some(leased.token.as_str()) {
                // Fail closed: a lead whose score or unfinished batch cannot be read must not
                // be guessed at (a guess could count an event twice).
                let why = |what: &str| format!("lead {id}: unreadable {what}: {d}");
                let score = match d.get("score") {
                    None => Ok(0),
                    Some(v) => docs::int(Some(v)).ok_or_else(|| why("score")),
                };
                let usage = docs::usage_of(d, keys.remove(&id).unwrap_or_default()).map_err(|e| why(&e));
                let profile = docs::profile_of(d).unwrap_or_default();
                match (score, docs::last_batch(d).map_err(|e| why(&e)), usage) {
                    (Ok(score), Ok(batch), Ok(usage)) => drop(held.insert(id, (score, batch, usage, profile))),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => drop(unreadable.get_or_insert(e)),
                }
            }
        }
        if let Some(why) = unreadable {
            // Let the leads go at once, so the worker's next try (this batch's other leads
            // without the bad one) can take them; their unfinished batches stay for it.
            for chunk in leads.chunks(IDS_PER_COMMAND) {
                let (filter, update) = docs::unlease(chunk, &leased.token);
                self.leads.update_many(filter, update).await.map_err(classify)?;
            }
            return Err(StoreError::Internal(why));
        }
        let missing: Vec<&String> = leads.iter().filter(|l| !existing.contains(*l)).collect();
        for id in self.create_leased(&missing, &leased.token, now).await? {
            held.insert(id, (0, Vec::new(), Usage::new(), Profile::new()));
        }
        self.checkpoint(CrashPoint::Create).await?;
        if held.is_empty() {
            return Ok(leased);
        }
        // 3. check, recover
        let mut seqs: Vec<i64> = events.iter().filter(|e| held.contains_key(&e.lead_id)).map(|e| e.seq).collect();
        seqs.extend(held.values().flat_map(|(_, batch, _, _)| batch.iter().map(|b| b.seq)));
        let mut unprocessed = HashSet::new();
        for chunk in seqs.chunks(SEQS_PER_COMMAND) {
            unprocessed.extend(self.unprocessed_of(chunk).await?);
        }
        let unfinished: Vec<Entry> = held
            .values()
            .flat_map(|(_, batch, _, _)| batch.iter())
            .filter(|b| unprocessed.contains(&(b.seq, b.event_id.clone())))
            .cloned()
            .collect();
        if !unfinished.is_empty() {
            tracing::info!(events = unfinished.len(), "mongodb: finishing a batch an earlier worker left half-done");
            let outbox = leased.rules.outbox().clone();
            self.record(&unfinished, &outbox, CrashPoint::RecoverHistory, CrashPoint::Recover).await?;
        }
        for id in leads {
            let Some((score, batch, usage, profile)) = held.remove(&id) else { continue };
            let in_batch: HashSet<&str> = batch.iter().map(|b| b.event_id.as_str()).collect();
            let mut to_add: Vec<StoredEvent> = events
                .iter()
                .filter(|e| e.lead_id == id && !in_batch.contains(e.event_id.as_str()))
                .filter(|e| unprocessed.contains(&(e.seq, e.event_id.clone())))
                .take(MAX_PER_LEAD)
                .cloned()
                .collect();
            // A `$rescore` replays the lead as stored: it waits for a batch of its own, where
            // it comes first, so nothing this call adds is left out of the replay.
            if let Some(i) = to_add.iter().skip(1).position(|e| e.event_type == RESCORE_EVENT_TYPE) {
                to_add.truncate(i + 1);
            }
            leased.leads.push(HeldLead { id, score, profile, usage, events: to_add, scored: Vec::new() });
        }
        let replaying: Vec<String> = leased
            .leads
            .iter()
            .filter(|l| l.events.first().is_some_and(|e| e.event_type == RESCORE_EVENT_TYPE))
            .map(|l| l.id.clone())
            .collect();
        let mut scored = HashMap::new();
        for chunk in replaying.chunks(IDS_PER_COMMAND) {
            scored.extend(self.scored_events_of(chunk).await?);
        }
        for lead in &mut leased.leads {
            lead.scored = scored.remove(&lead.id).unwrap_or_default();
        }
        Ok(leased)
    }

    /// Steps 4–8: adds the leased events to their leads, records them, releases the leases.
    /// Returns the changes this call added (none for a lead it was fenced out of).
    pub async fn commit(&self, leased: Leased) -> StoreResult<Vec<ScoreChange>> {
        let Leased { merges, token, now, rules, started, leads } = leased;
        let held: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
        let total: usize = leads.iter().map(|l| l.events.len()).sum();
        let mut applied = Vec::new();
        let mut refused: Option<String> = None;
        if total > 0 {
            // 4. number
            let mut feed = self.reserve(FEED_COUNTER, total).await?;
            let mut batches: Vec<Vec<Entry>> = Vec::new();
            let mut statements = Vec::new();
            // New points and explanations of replayed events (`$rescore`).
            let mut repriced = Vec::new();
            for lead in leads.into_iter().filter(|l| !l.events.is_empty()) {
                // Priced here, under the lease, in queue order: the counts read are exact, and
                // the statement below moves them together with the score.
                let mut usage = lead.usage.clone();
                let mut replaced = false;
                let mut score = lead.score;
                let mut entries = Vec::with_capacity(lead.events.len());
                for e in &lead.events {
                    let priced = if e.event_type == RESCORE_EVENT_TYPE {
                        // First in its batch (`lease`): a replay of the lead as stored, whose
                        // counts replace the lead's.
                        let replayed = replay(&rules, &lead.scored, half_life_of(e), e.timestamp);
                        let of_lead = replayed
                            .repriced
                            .iter()
                            .map(|(seq, p)| (lead.id.clone(), docs::reprice_statement(*seq, p)));
                        repriced.extend(of_lead);
                        usage = replayed.usage.clone();
                        replaced = true;
                        difference(&replayed, score)
                    } else {
                        rules.price(e, &mut usage)
                    };
                    let old = score;
                    score += priced.points;
                    feed += 1;
                    entries.push(Entry {
                        merged: merges.get(&e.seq).cloned(),
                        lead_id: lead.id.clone(),
                        seq: e.seq,
                        event_id: e.event_id.clone(),
                        event_type: e.event_type.clone(),
                        delta: priced.points,
                        old_score: old,
                        new_score: score,
                        feed_seq: feed - 1,
                        at: now,
                        matches: priced.matches,
                    });
                }
                let counts = if replaced {
                    let mut all: Vec<_> = usage.into_iter().collect();
                    all.sort();
                    docs::Counts::Replace(all)
                } else {
                    let mut used: Vec<_> = usage
                        .into_iter()
                        .filter_map(|(key, n)| {
                            let before = lead.usage.get(&key).copied().unwrap_or(0);
                            (n > before).then(|| (key, n - before))
                        })
                        .collect();
                    used.sort();
                    docs::Counts::Add(used)
                };
                let last_event_at =
                    lead.events.iter().filter(|e| !is_adjustment(&e.event_type)).map(|e| e.timestamp).max();
                let traits: Vec<Profile> = lead.events.iter().filter_map(traits_of).collect();
                let profile = traits.iter().fold(lead.profile.clone(), |p, t| profile::merged(p, t));
                let update = docs::ProfileUpdate {
                    search_key: profile::search_key(&lead.id, &profile),
                    profile: (!traits.is_empty()).then(|| serde_json::Value::Object(profile).to_string()),
                };
                statements.push(docs::apply_statement(&entries, &counts, &token, last_event_at, update));
                batches.push(entries);
            }
            // Before the leads move: a crash in between leaves the `$rescore` queued, and its
            // next replay writes the same. Only for leads still held (the lease renewed
            // first): a worker that stalled past its lease must not rewrite events another
            // has replayed since.
            if !repriced.is_empty() {
                let replaying: Vec<String> =
                    repriced.iter().map(|(lead, _)| lead.clone()).collect::<HashSet<_>>().into_iter().collect();
                let mut still_ours = HashSet::new();
                for chunk in replaying.chunks(IDS_PER_COMMAND) {
                    let (filter, update) = docs::renew(chunk, &token, now + started.elapsed().as_millis() as Millis);
                    self.leads.update_many(filter.clone(), update).await.map_err(classify)?;
                    still_ours.extend(self.ids_of(&self.leads, filter, chunk.len()).await?);
                }
                let writes =
                    repriced.into_iter().filter(|(lead, _)| still_ours.contains(lead)).map(|(_, w)| w).collect();
                self.write_all("events", writes, Tolerate::Nothing).await?;
            }
            self.checkpoint(CrashPoint::Number).await?;
            // A slow server: extend the lease before it runs out, so other workers do not take
            // the leads over (and fence this call out) again and again. Fenced like the rest.
            let elapsed = started.elapsed().as_millis() as Millis;
            if elapsed > docs::LEASE_MS / 3 {
                for chunk in held.chunks(IDS_PER_COMMAND) {
                    let (filter, update) = docs::renew(chunk, &token, now + elapsed);
                    self.leads.update_many(filter, update).await.map_err(classify)?;
                }
            }
            // 5. apply. A statement one lead's document refuses (a legacy `score` that is not
            // a number, say) must not hold the other leads back: they are finished, and the
            // call then fails so the worker can single out the refused lead's events.
            let written = self.write_all("leads", statements, Tolerate::PerStatement).await?;
            for (index, error) in &written.failed {
                tracing::error!(lead = %batches[*index][0].lead_id, %error, "mongodb: cannot add a batch to this lead");
                refused.get_or_insert_with(|| format!("lead {}: {error}", batches[*index][0].lead_id));
            }
            if written.matched < batches.len() as u64 {
                // Fenced out of some leads (this call stalled past its lease), or refused:
                // keep only the leads whose `lastBatch` carries this call's token.
                let ids: Vec<String> = batches.iter().map(|b| b[0].lead_id.clone()).collect();
                let mut ours = HashSet::new();
                for chunk in ids.chunks(IDS_PER_COMMAND) {
                    ours.extend(self.ids_of(&self.leads, docs::applied_by(chunk, &token), chunk.len()).await?);
                }
                tracing::warn!(fenced_out = ids.len() - ours.len(), "mongodb: lease lost; another worker took over");
                batches.retain(|b| ours.contains(&b[0].lead_id));
            }
            self.checkpoint(CrashPoint::Apply).await?;
            applied = batches.concat();
            // 6, 7. history, processed
            self.record(&applied, rules.outbox(), CrashPoint::History, CrashPoint::Processed).await?;
        }
        // 8. release
        for chunk in held.chunks(IDS_PER_COMMAND) {
            let (filter, update) = docs::release(chunk, &token);
            self.leads.update_many(filter, update).await.map_err(classify)?;
        }
        if let Some(why) = refused {
            return Err(StoreError::Internal(format!("the store refused an update: {why}")));
        }
        Ok(applied
            .into_iter()
            .map(|e| ScoreChange {
                lead_id: e.lead_id,
                event_id: e.event_id,
                event_type: e.event_type,
                delta: e.delta,
                score: e.new_score,
                updated_at: e.at,
                merged_from: e.merged.map(|(from, _)| from),
            })
            .collect())
    }

    /// Writes history entries and webhook deliveries, then processed flags, exactly as the
    /// entries say. Until an entry's event is flagged, a crash leaves it in its lead's
    /// `lastBatch`, and its next holder records it again: deliveries are upserted by key, so
    /// none is lost and none written twice.
    pub(super) async fn record(
        &self,
        entries: &[Entry],
        outbox: &Outbox,
        after_history: CrashPoint,
        after_processed: CrashPoint,
    ) -> StoreResult<()> {
        // Two workers finishing the same batch may both try to create an entry: one wins.
        let history = entries.iter().map(docs::history_statement).collect();
        self.write_all("scorehistories", history, Tolerate::Duplicates).await?;
        let deliveries: Vec<NewDelivery> = entries
            .iter()
            .flat_map(|e| {
                // A merge's entry tells of the whole move, from the score before the merge.
                let old = e.merged.as_ref().map_or(e.old_score, |(_, before)| *before);
                outbox.deliveries(&e.lead_id, old, e.new_score, &e.event_id, e.at)
            })
            .collect();
        if !deliveries.is_empty() {
            let first = self.reserve(super::webhooks::DELIVERY_COUNTER, deliveries.len()).await?;
            let documents: Vec<Document> =
                deliveries.iter().zip(first..).map(|(d, id)| super::webhooks::outbox_document(d, id)).collect();
            let command = doc! {
                "insert": "deliveries", "documents": documents, "ordered": false,
                "writeConcern": {"w": "majority", "j": true},
            };
            let reply = self.db.run_command(command).await.map_err(classify)?;
            // Written before (a recovered batch): the key is taken, which is what we want.
            write_errors("deliveries", &reply, Tolerate::Duplicates)?;
        }
        self.checkpoint(after_history).await?;
        self.write_all("events", entries.iter().map(docs::processed_statement).collect(), Tolerate::Nothing).await?;
        self.checkpoint(after_processed).await
    }

    /// Inserts the missing leads already leased; returns those this call created.
    pub(super) async fn create_leased(
        &self,
        missing: &[&String],
        token: &str,
        now: Millis,
    ) -> StoreResult<Vec<String>> {
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let new: Vec<Document> = missing.iter().map(|id| docs::new_lead(id, token, now)).collect();
        let taken: HashSet<usize> = match self.leads.insert_many(new).ordered(false).await {
            Ok(_) => HashSet::new(),
            Err(err) => match err.kind.as_ref() {
                ErrorKind::InsertMany(f) if f.write_concern_error.is_none() => {
                    let errors = f.write_errors.clone().unwrap_or_default();
                    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
                        return Err(StoreError::Internal(format!("creating a lead failed: {}", other.message)));
                    }
                    errors.iter().map(|w| w.index).collect()
                }
                _ => return Err(classify(err)),
            },
        };
        Ok(missing.iter().enumerate().filter(|(i, _)| !taken.contains(i)).map(|(_, id)| (*id).clone()).collect())
    }

    /// Finishes the batch a crashed or stalled worker left on this lead: its `lastBatch`
    /// entries whose events are still unprocessed are recorded as they stand.
    pub(super) async fn finish_last_batch(&self, lead: &Document, rules: &Engine) -> StoreResult<()> {
        let batch = docs::last_batch(lead).map_err(StoreError::Internal)?;
        if batch.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = batch.iter().map(|b| b.seq).collect();
        let unprocessed = self.unprocessed_of(&seqs).await?;
        let unfinished: Vec<Entry> =
            batch.into_iter().filter(|b| unprocessed.contains(&(b.seq, b.event_id.clone()))).collect();
        if !unfinished.is_empty() {
            let outbox = rules.outbox().clone();
            self.record(&unfinished, &outbox, CrashPoint::RecoverHistory, CrashPoint::Recover).await?;
        }
        Ok(())
    }

    /// `(seq, eventId)` of the given events that are still unprocessed.
    pub(super) async fn unprocessed_of(&self, seqs: &[i64]) -> StoreResult<HashSet<(i64, String)>> {
        let projection = doc! {"_id": 1, "eventId": 1};
        let found = self.read_fresh(&self.events, docs::still_unprocessed(seqs), projection, seqs.len()).await?;
        Ok(found.iter().filter_map(|d| Some((docs::int(d.get("_id"))?, docs::text(d.get("eventId"))?))).collect())
    }

    async fn ids_of(&self, coll: &Collection<Document>, filter: Document, n: usize) -> StoreResult<HashSet<String>> {
        let found = self.read_fresh(coll, filter, doc! {"_id": 1}, n).await?;
        Ok(found.iter().filter_map(|d| docs::text(d.get("_id"))).collect())
    }

    /// A read that must see every write acknowledged before it: from the primary, majority
    /// committed, whatever read preference the URI asks for (a lagging secondary could show
    /// an event as unprocessed after another worker applied it).
    pub(super) async fn read_fresh(
        &self,
        coll: &Collection<Document>,
        filter: Document,
        projection: Document,
        expected: usize,
    ) -> StoreResult<Vec<Document>> {
        coll.find(filter)
            .projection(projection)
            .batch_size(expected.clamp(1, 10_000) as u32)
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .read_concern(ReadConcern::majority())
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)
    }

    /// Sends update statements in as few `update` commands as fit (the plain command every
    /// compatible server has; the driver's `bulkWrite` needs MongoDB 8). Majority and
    /// journaled: a write a failover could roll back might let an event count twice.
    pub(super) async fn write_all(
        &self,
        collection: &str,
        statements: Vec<Document>,
        tolerate: Tolerate,
    ) -> StoreResult<Written> {
        let mut written = Written::default();
        let mut chunk: Vec<Document> = Vec::new();
        let (mut bytes, mut offset) = (0, 0);
        let mut statements = statements.into_iter().peekable();
        while let Some(statement) = statements.next() {
            bytes += mongodb::bson::to_vec(&statement).map(|v| v.len()).unwrap_or(0);
            chunk.push(statement);
            if bytes >= MAX_COMMAND_BYTES || chunk.len() >= MAX_COMMAND_STATEMENTS || statements.peek().is_none() {
                let sent = chunk.len();
                let command = doc! {
                    "update": collection,
                    "updates": std::mem::take(&mut chunk),
                    "ordered": false,
                    "writeConcern": {"w": "majority", "j": true},
                };
                let reply = self.db.run_command(command).await.map_err(classify)?;
                for (index, error) in write_errors(collection, &reply, tolerate)? {
                    written.failed.push((offset + index, error));
                }
                written.matched += docs::int(reply.get("n")).unwrap_or(0) as u64;
                offset += sent;
                bytes = 0;
            }
        }
        Ok(written)
    }

    /// Where tests stop or pause `apply`; nothing happens unless a test armed this point.
    pub(super) async fn checkpoint(&self, point: CrashPoint) -> StoreResult<()> {
        {
            let mut crash = self.crash_at.lock().unwrap();
            if *crash == Some(point) {
                *crash = None;
                return Err(StoreError::Internal(format!("simulated crash after {point:?}")));
            }
        }
        let pause = {
            let mut pause = self.pause_at.lock().unwrap();
            match pause.as_ref() {
                Some((at, _, _)) if *at == point => pause.take(),
                _ => None,
            }
        };
        if let Some((_, reached, resume)) = pause {
            reached.notify_one();
            resume.notified().await;
        }
        Ok(())
    }

    /// Tests: a collection to write to behind the store's back (a damaged document, say).
    pub fn raw_collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Tests: the next `apply` stops right after `point`, as if the process had died there.
    pub fn crash_after(&self, point: CrashPoint) {
        *self.crash_at.lock().unwrap() = Some(point);
    }

    /// Tests: the next `apply` that reaches `point` signals the first `Notify` and waits for
    /// the second, as a process the OS stopped (or a long GC pause) would.
    pub fn pause_after(&self, point: CrashPoint) -> (Arc<Notify>, Arc<Notify>) {
        let (reached, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *self.pause_at.lock().unwrap() = Some((point, reached.clone(), resume.clone()));
        (reached, resume)
    }
}

/// Which statement errors a write may live with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tolerate {
    Nothing,
    /// Duplicate keys: two workers finishing the same batch both create an entry; one wins.
    Duplicates,
    /// Any: each failed statement is reported back with its index.
    PerStatement,
}

#[derive(Debug, Default)]
pub(super) struct Written {
    /// Statements that matched a document.
    matched: u64,
    /// Statements refused, by index, with the server's error (`Tolerate::PerStatement`).
    failed: Vec<(usize, String)>,
}

/// A write command answers `ok: 1` even when statements failed: they are in `writeErrors`.
/// Returns the failures `tolerate` leaves to the caller; the rest are an error.
fn write_errors(collection: &str, reply: &Document, tolerate: Tolerate) -> StoreResult<Vec<(usize, String)>> {
    if let Ok(e) = reply.get_document("writeConcernError") {
        return Err(StoreError::Unavailable(format!("{collection}: write concern not met: {e}")));
    }
    let mut failed = Vec::new();
    for e in reply.get_array("writeErrors").map(|a| a.as_slice()).unwrap_or(&[]).iter().filter_map(Bson::as_document) {
        let code = docs::int(e.get("code")).unwrap_or(0);
        match tolerate {
            Tolerate::Duplicates if code == i64::from(DUPLICATE_KEY) => {}
            Tolerate::PerStatement => failed.push((docs::int(e.get("index")).unwrap_or(0) as usize, e.to_string())),
            _ => return Err(StoreError::Internal(format!("{collection}: write failed: {e}"))),
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replies_fail_on_statement_errors_unless_tolerated() {
        assert_eq!(write_errors("c", &doc! {"ok": 1, "n": 3}, Tolerate::Nothing).unwrap(), []);
        let dup = doc! {"ok": 1, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"}]};
        assert_eq!(write_errors("c", &dup, Tolerate::Duplicates).unwrap(), []);
        assert!(write_errors("c", &dup, Tolerate::Nothing).is_err());
        let other = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 11000}, {"index": 3, "code": 14}]};
        assert!(write_errors("c", &other, Tolerate::Duplicates).is_err());
        let each = write_errors("c", &other, Tolerate::PerStatement).unwrap();
        assert_eq!(each.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 3]);
        let wc = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "waiting"}};
        assert!(matches!(write_errors("c", &wc, Tolerate::PerStatement), Err(StoreError::Unavailable(_))));
    }
}
