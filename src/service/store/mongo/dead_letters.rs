//! The dead-letter list on MongoDB, and reading the queue without letting one bad document
//! stop it. Which documents are written, and in which order, is in `docs.rs` (`hold`).

use super::docs;
use super::{classify, MongoStore};

use crate::domain::DeadLetter;
use crate::service::store::{Queued, StoreResult};
use mongodb::bson::{doc, Document};
use std::collections::HashSet;

impl MongoStore {
    /// The oldest `limit` queued documents; one that does not read as an event is reported.
    pub(super) async fn read_queue(&self, limit: usize) -> StoreResult<Queued> {
        let found = self.find_docs(&self.events, (docs::unprocessed(), None), doc! {"seq": 1}, 0, limit).await?;
        let mut queued = Queued::default();
        for d in &found {
            match (docs::stored_event(d), docs::unreadable_event(d)) {
                (Some(event), _) => queued.events.push(event),
                (None, Some(bad)) => queued.unreadable.push(bad),
                // Not even its key reads: nothing can address it, so it can only be reported.
                (None, None) => tracing::error!(document = %d, "mongodb: a queued event without a readable _id"),
            }
        }
        Ok(queued)
    }

    pub(super) async fn set_aside(&self, letters: Vec<DeadLetter>) -> StoreResult<()> {
        if letters.is_empty() {
            return Ok(());
        }
        // Letters first: a crash before the events are held leaves them queued, never lost.
        for letter in &letters {
            self.dead_letters
                .replace_one(doc! {"_id": letter.id}, docs::dead_letter_doc(letter))
                .upsert(true)
                .await
                .map_err(classify)?;
        }
        // Never an event already added to its lead: it is in the lead's `lastBatch`, and the
        // lead's next holder must find it unprocessed to finish recording it.
        let recorded = self.in_last_batches(&letters).await?;
        // One update each (dead letters are few): its answer says whether the event is held
        // now, with no read that could lag behind the write.
        let mut stale = Vec::new();
        for seq in letters.iter().map(|l| l.id) {
            let (filter, update) = docs::hold(seq);
            let held = !recorded.contains(&seq)
                && self.events.update_one(filter, update).await.map_err(classify)?.matched_count == 1;
            if !held {
                stale.push(seq);
            }
        }
        // Events scored meanwhile (by another instance), or recorded in a lastBatch, were not
        // held: their letters go.
        if !stale.is_empty() {
            self.dead_letters.delete_many(doc! {"_id": {"$in": stale}}).await.map_err(classify)?;
        }
        Ok(())
    }

    /// Which of these events their leads' `lastBatch` records (read fresh, like `lease`).
    async fn in_last_batches(&self, letters: &[DeadLetter]) -> StoreResult<HashSet<i64>> {
        let leads: Vec<&str> = letters.iter().filter_map(|l| l.lead_id.as_deref()).collect();
        if leads.is_empty() {
            return Ok(HashSet::new());
        }
        let found =
            self.read_fresh(&self.leads, doc! {"_id": {"$in": leads}}, docs::lease_view(), letters.len()).await?;
        let mut recorded = HashSet::new();
        for lead in &found {
            // Unreadable: assume it records them all (the safe side: they stay queued).
            match docs::last_batch(lead) {
                Ok(entries) => recorded.extend(entries.iter().map(|e| e.seq)),
                Err(_) => recorded.extend(letters.iter().map(|l| l.id)),
            }
        }
        Ok(recorded)
    }

    /// The `_id`s of the events `filter` finds, in `seq` order, up to `limit`.
    async fn event_ids(&self, filter: Document, limit: usize) -> StoreResult<Vec<i64>> {
        let found = self.find_docs(&self.events, (filter, Some(doc! {"_id": 1})), doc! {"seq": 1}, 0, limit).await?;
        Ok(found.iter().filter_map(|d| docs::int(d.get("_id"))).collect())
    }

    /// The held events are the list; their letters say why. (A letter a crash left behind,
    /// whose event is no longer held, is never shown or counted.)
    pub(super) async fn list_dead_letters(&self, after: i64, limit: usize) -> StoreResult<(Vec<DeadLetter>, u64)> {
        // Counted first: an event set aside meanwhile is then listed too, never counted only.
        let total = self.count_dead_letters().await?;
        let held = self.event_ids(docs::held_after(after), limit).await?;
        let found =
            self.find_docs(&self.dead_letters, (doc! {"_id": {"$in": &held}}, None), doc! {}, 0, held.len()).await?;
        let mut letters: Vec<DeadLetter> = found.iter().filter_map(docs::dead_letter).collect();
        letters.sort_by_key(|l| l.id);
        Ok((letters, total.max(held.len() as u64)))
    }

    /// Ends a dead letter: its event back in the queue (`retry`) or discarded. The event
    /// first, the letter last (see `docs::hold`).
    pub(super) async fn end_dead_letter(&self, id: i64, retry: bool) -> StoreResult<bool> {
        let (filter, update) = docs::release_held(id, retry);
        let moved = self.events.update_one(filter, update).await.map_err(classify)?.modified_count;
        let removed = self.dead_letters.delete_one(doc! {"_id": id}).await.map_err(classify)?.deleted_count;
        Ok(moved + removed > 0)
    }

    pub(super) async fn count_dead_letters(&self) -> StoreResult<u64> {
        self.events.count_documents(docs::held_after(i64::MIN)).await.map_err(classify)
    }
}
