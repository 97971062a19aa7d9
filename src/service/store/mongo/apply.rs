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
use crate::domain::time::Millis;
use crate::domain::{ScoreChange, ScoredEvent};
use crate::service::store::{StoreError, StoreResult};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use std::collections::{HashMap, HashSet};

/// Events of one lead applied in one statement; the rest wait for the next batch. Bounds
/// `lastBatch` (about 200 bytes an entry) far below MongoDB's 16 MB document limit.
pub const MAX_PER_LEAD: usize = 1_000;
/// Serialized bytes per write command, well below the 16 MB a command document may have.
const MAX_COMMAND_BYTES: usize = 8 << 20;

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
}

impl CrashPoint {
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
    token: String,
    now: Millis,
    leads: Vec<HeldLead>,
}

struct HeldLead {
    id: String,
    score: i64,
    events: Vec<ScoredEvent>,
}

impl MongoStore {
    /// Steps 1–3: leases the leads, finishes any batch a crashed or stalled worker left
    /// unfinished on them, and keeps the events still to add.
    pub async fn lease(&self, mut events: Vec<ScoredEvent>, now: Millis) -> StoreResult<Leased> {
        let token = mongodb::bson::oid::ObjectId::new().to_hex();
        events.sort_by_key(|e| e.seq);
        let mut leads: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for e in &events {
            if seen.insert(e.lead_id.as_str()) {
                leads.push(e.lead_id.clone());
            }
        }
        let mut leased = Leased { token, now, leads: Vec::new() };
        if leads.is_empty() {
            return Ok(leased);
        }
        // 1. lease
        let (filter, update) = docs::lease(&leads, &leased.token, now);
        self.leads.update_many(filter, update).await.map_err(classify)?;
        self.crash_if(CrashPoint::Lease)?;
        // 2. read, create
        let found: Vec<Document> = self
            .leads
            .find(doc! {"_id": {"$in": &leads}})
            .projection(docs::lease_view())
            .batch_size(leads.len() as u32)
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)?;
        let mut held: HashMap<String, (i64, Vec<Entry>)> = HashMap::new();
        let mut existing = HashSet::new();
        for d in &found {
            let Some(id) = docs::text(d.get("_id")) else { continue };
            existing.insert(id.clone());
            if docs::text(d.get("leaseToken")).as_deref() == Some(leased.token.as_str()) {
                held.insert(id, (docs::int(d.get("score")).unwrap_or(0), docs::last_batch(d)));
            }
        }
        let missing: Vec<&String> = leads.iter().filter(|l| !existing.contains(*l)).collect();
        for id in self.create_leased(&missing, &leased.token, now).await? {
            held.insert(id, (0, Vec::new()));
        }
        self.crash_if(CrashPoint::Create)?;
        if held.is_empty() {
            return Ok(leased);
        }
        // 3. check, recover
        let mut seqs: Vec<i64> = events.iter().filter(|e| held.contains_key(&e.lead_id)).map(|e| e.seq).collect();
        seqs.extend(held.values().flat_map(|(_, batch)| batch.iter().map(|b| b.seq)));
        let unprocessed = self.unprocessed_of(&seqs).await?;
        let unfinished: Vec<Entry> = held
            .values()
            .flat_map(|(_, batch)| batch.iter())
            .filter(|b| unprocessed.contains(&(b.seq, b.event_id.clone())))
            .cloned()
            .collect();
        if !unfinished.is_empty() {
            tracing::info!(events = unfinished.len(), "mongodb: finishing a batch an earlier worker left half-done");
            self.record(&unfinished, CrashPoint::RecoverHistory, CrashPoint::Recover).await?;
        }
        for id in leads {
            let Some((score, batch)) = held.remove(&id) else { continue };
            let in_batch: HashSet<&str> = batch.iter().map(|b| b.event_id.as_str()).collect();
            let to_add: Vec<ScoredEvent> = events
                .iter()
                .filter(|e| e.lead_id == id && !in_batch.contains(e.event_id.as_str()))
                .filter(|e| unprocessed.contains(&(e.seq, e.event_id.clone())))
                .take(MAX_PER_LEAD)
                .cloned()
                .collect();
            leased.leads.push(HeldLead { id, score, events: to_add });
        }
        Ok(leased)
    }

    /// Steps 4–8: adds the leased events to their leads, records them, releases the leases.
    /// Returns the changes this call added (none for a lead it was fenced out of).
    pub async fn commit(&self, leased: Leased) -> StoreResult<Vec<ScoreChange>> {
        let Leased { token, now, leads } = leased;
        let held: Vec<String> = leads.iter().map(|l| l.id.clone()).collect();
        let total: usize = leads.iter().map(|l| l.events.len()).sum();
        let mut applied = Vec::new();
        if total > 0 {
            // 4. number
            let mut feed = self.reserve(FEED_COUNTER, total).await?;
            let mut batches: Vec<Vec<Entry>> = Vec::new();
            let mut statements = Vec::new();
            for lead in leads.into_iter().filter(|l| !l.events.is_empty()) {
                let mut score = lead.score;
                let entries: Vec<Entry> = lead
                    .events
                    .iter()
                    .map(|e| {
                        let old = score;
                        score += e.points;
                        feed += 1;
                        Entry {
                            lead_id: lead.id.clone(),
                            seq: e.seq,
                            event_id: e.event_id.clone(),
                            event_type: e.event_type.clone(),
                            delta: e.points,
                            old_score: old,
                            new_score: score,
                            feed_seq: feed - 1,
                            at: now,
                        }
                    })
                    .collect();
                let last_event_at = lead.events.iter().map(|e| e.timestamp).max().unwrap_or(now);
                statements.push(docs::apply_statement(&entries, &token, last_event_at));
                batches.push(entries);
            }
            self.crash_if(CrashPoint::Number)?;
            // 5. apply
            let matched = self.write_all("leads", statements, false).await?;
            if matched < batches.len() as u64 {
                // Fenced out of some leads (this call stalled past its lease): keep only the
                // leads whose `lastBatch` carries this call's token.
                let ids: Vec<String> = batches.iter().map(|b| b[0].lead_id.clone()).collect();
                let ours: HashSet<String> = self.ids_of(&self.leads, docs::applied_by(&ids, &token)).await?;
                tracing::warn!(fenced_out = ids.len() - ours.len(), "mongodb: lease lost; another worker took over");
                batches.retain(|b| ours.contains(&b[0].lead_id));
            }
            self.crash_if(CrashPoint::Apply)?;
            applied = batches.concat();
            // 6, 7. history, processed
            self.record(&applied, CrashPoint::History, CrashPoint::Processed).await?;
        }
        // 8. release
        let (filter, update) = docs::release(&held, &token);
        self.leads.update_many(filter, update).await.map_err(classify)?;
        Ok(applied
            .into_iter()
            .map(|e| ScoreChange {
                lead_id: e.lead_id,
                event_id: e.event_id,
                event_type: e.event_type,
                delta: e.delta,
                score: e.new_score,
                updated_at: e.at,
            })
            .collect())
    }

    /// Writes history entries, then processed flags, exactly as the entries say.
    async fn record(
        &self,
        entries: &[Entry],
        after_history: CrashPoint,
        after_processed: CrashPoint,
    ) -> StoreResult<()> {
        // Two workers finishing the same batch may both try to create an entry: one wins.
        self.write_all("scorehistories", entries.iter().map(docs::history_statement).collect(), true).await?;
        self.crash_if(after_history)?;
        self.write_all("events", entries.iter().map(docs::processed_statement).collect(), false).await?;
        self.crash_if(after_processed)
    }

    /// Inserts the missing leads already leased; returns those this call created.
    async fn create_leased(&self, missing: &[&String], token: &str, now: Millis) -> StoreResult<Vec<String>> {
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

    /// `(seq, eventId)` of the given events that are still unprocessed.
    async fn unprocessed_of(&self, seqs: &[i64]) -> StoreResult<HashSet<(i64, String)>> {
        let found: Vec<Document> = self
            .events
            .find(docs::still_unprocessed(seqs))
            .projection(doc! {"_id": 1, "eventId": 1})
            .batch_size(seqs.len().max(1) as u32)
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)?;
        Ok(found.iter().filter_map(|d| Some((docs::int(d.get("_id"))?, docs::text(d.get("eventId"))?))).collect())
    }

    async fn ids_of(&self, coll: &mongodb::Collection<Document>, filter: Document) -> StoreResult<HashSet<String>> {
        let found: Vec<Document> = coll
            .find(filter)
            .projection(doc! {"_id": 1})
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)?;
        Ok(found.iter().filter_map(|d| docs::text(d.get("_id"))).collect())
    }

    /// Reserves `n` consecutive numbers of a counter; returns the first.
    pub(super) async fn reserve(&self, counter: &str, n: usize) -> StoreResult<i64> {
        let (filter, update) = docs::reserve(counter, n as i64);
        let doc = self
            .counters
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After)
            .await
            .map_err(classify)?
            .ok_or_else(|| StoreError::Internal(format!("counter {counter} missing after upsert")))?;
        Ok(docs::int(doc.get("seq")).unwrap_or(n as i64) - n as i64 + 1)
    }

    /// Sends update statements in as few `update` commands as fit (the plain command every
    /// compatible server has; the driver's `bulkWrite` needs MongoDB 8). Majority and
    /// journaled: a write a failover could roll back might let an event count twice.
    /// Returns how many statements matched a document.
    async fn write_all(
        &self,
        collection: &str,
        statements: Vec<Document>,
        tolerate_duplicates: bool,
    ) -> StoreResult<u64> {
        let mut matched = 0;
        let mut chunk: Vec<Document> = Vec::new();
        let mut bytes = 0;
        let mut statements = statements.into_iter().peekable();
        while let Some(statement) = statements.next() {
            bytes += mongodb::bson::to_vec(&statement).map(|v| v.len()).unwrap_or(0);
            chunk.push(statement);
            if bytes >= MAX_COMMAND_BYTES || statements.peek().is_none() {
                let command = doc! {
                    "update": collection,
                    "updates": std::mem::take(&mut chunk),
                    "ordered": false,
                    "writeConcern": {"w": "majority", "j": true},
                };
                let reply = self.db.run_command(command).await.map_err(classify)?;
                check_write_reply(collection, &reply, tolerate_duplicates)?;
                matched += docs::int(reply.get("n")).unwrap_or(0) as u64;
                bytes = 0;
            }
        }
        Ok(matched)
    }

    fn crash_if(&self, point: CrashPoint) -> StoreResult<()> {
        let mut crash = self.crash_at.lock().unwrap();
        if *crash == Some(point) {
            *crash = None;
            return Err(StoreError::Internal(format!("simulated crash after {point:?}")));
        }
        Ok(())
    }

    /// Tests: the next `apply` stops right after `point`, as if the process had died there.
    pub fn crash_after(&self, point: CrashPoint) {
        *self.crash_at.lock().unwrap() = Some(point);
    }
}

/// A write command answers `ok: 1` even when statements failed: they are in `writeErrors`.
fn check_write_reply(collection: &str, reply: &Document, tolerate_duplicates: bool) -> StoreResult<()> {
    if let Ok(e) = reply.get_document("writeConcernError") {
        return Err(StoreError::Unavailable(format!("{collection}: write concern not met: {e}")));
    }
    let errors = reply.get_array("writeErrors").map(|a| a.as_slice()).unwrap_or(&[]);
    let fatal = errors.iter().filter_map(Bson::as_document).find(|e| {
        let code = docs::int(e.get("code")).unwrap_or(0);
        !(tolerate_duplicates && code == i64::from(DUPLICATE_KEY))
    });
    match fatal {
        Some(e) => Err(StoreError::Internal(format!("{collection}: write failed: {e}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replies_fail_on_statement_errors_but_may_tolerate_duplicates() {
        assert!(check_write_reply("c", &doc! {"ok": 1, "n": 3}, false).is_ok());
        let dup = doc! {"ok": 1, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"}]};
        assert!(check_write_reply("c", &dup, true).is_ok());
        assert!(check_write_reply("c", &dup, false).is_err());
        let other = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 11000}, {"index": 1, "code": 2}]};
        assert!(check_write_reply("c", &other, true).is_err());
        let wc = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "waiting"}};
        assert!(matches!(check_write_reply("c", &wc, true), Err(StoreError::Unavailable(_))));
    }
}
