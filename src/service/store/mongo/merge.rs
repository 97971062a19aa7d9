//! Identity merge on MongoDB (`domain::identity`), without multi-document transactions. Each
//! step is idempotent or guarded, so a crash at any instant leaves a merge that the event's
//! next scoring finishes, and never one applied twice:
//! 1. lease both leads, finishing any batch a crashed worker left on them;
//! 2. record `from → to` in `aliases`, with the event's id and `to`'s score before: a repeat
//!    by the same event resumes, another event's merge of `from` means it was merged already;
//! 3. move `from`'s events and history entries to `to` (`updateMany`);
//! 4. re-chain `to`'s history in ingest order (a function of its entries);
//! 5. add `from`'s counts and limit counts to `to` once (guarded by a field named for `from`
//!    in the same single-document update), then set `to`'s score to the chain's end, its
//!    profile and search key, fenced on the lease;
//! 6. delete `from` and release `to`.
//!
//! The event itself is then scored as usual (`apply`), its entry marked as the merge.

use super::apply::{CrashPoint, Tolerate};
use super::{classify, docs, MongoStore, DUPLICATE_KEY};
use crate::domain::engine::Engine;
use crate::domain::identity::rechain;
use crate::domain::profile::{self, Profile};
use crate::domain::time::Millis;
use crate::domain::StoredEvent;
use crate::service::store::StoreResult;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::ErrorKind;
use mongodb::Collection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What became of an event's merge.
pub(super) enum Merge {
    /// Done (now or by an earlier try of this event): the lead merged in and the target's
    /// score before.
    Done(String, i64),
    /// Nothing to merge: merged before by another event, or the event was scored already.
    Nothing,
    /// A lead is held by another worker: the event waits for the next step.
    Busy,
}

impl MongoStore {
    fn aliases(&self) -> Collection<Document> {
        self.db.collection("aliases")
    }

    /// The lead `lead_id` was merged into, if it was.
    pub(super) async fn alias_of(&self, lead_id: &str) -> StoreResult<Option<String>> {
        let found = self.aliases().find_one(doc! {"_id": lead_id}).await.map_err(classify)?;
        Ok(found.and_then(|d| docs::text(d.get("to"))))
    }

    /// Credits each event to the lead its own was merged into, if it was (on disk too, so the
    /// event log agrees). One read per call.
    pub(super) async fn resolve_aliases(&self, events: &mut [StoredEvent]) -> StoreResult<()> {
        // Most deployments merge rarely or never: one cheap count spares the lookups.
        if self.aliases().estimated_document_count().await.map_err(classify)? == 0 {
            return Ok(());
        }
        let mut leads: Vec<String> = events.iter().map(|e| e.lead_id.clone()).collect();
        leads.sort();
        leads.dedup();
        let mut to: HashMap<String, String> = HashMap::new();
        for chunk in leads.chunks(2_000) {
            let found = self.read_fresh(&self.aliases(), doc! {"_id": {"$in": chunk}}, doc! {"to": 1}, 16).await?;
            to.extend(found.iter().filter_map(|d| Some((docs::text(d.get("_id"))?, docs::text(d.get("to"))?))));
        }
        if to.is_empty() {
            return Ok(());
        }
        let mut moved: HashMap<String, Vec<i64>> = HashMap::new();
        for e in events.iter_mut() {
            if let Some(target) = to.get(&e.lead_id) {
                e.lead_id = target.clone();
                moved.entry(target.clone()).or_default().push(e.seq);
            }
        }
        for (target, seqs) in moved {
            let filter = doc! {"_id": {"$in": seqs}, "processed": {"$ne": true}};
            self.events.update_many(filter, doc! {"$set": {"leadId": target}}).await.map_err(classify)?;
        }
        Ok(())
    }

    /// Merges lead `from` into `event`'s lead (steps 1–6 above).
    pub(super) async fn merge(
        &self,
        event: &StoredEvent,
        from: &str,
        rules: &Engine,
        now: Millis,
    ) -> StoreResult<Merge> {
        if self.unprocessed_of(&[event.seq]).await?.is_empty() {
            return Ok(Merge::Nothing);
        }
        let to = event.lead_id.as_str();
        let leads = &self.leads;
        // 1. lease both, and finish what a crashed worker left on them
        let token = mongodb::bson::oid::ObjectId::new().to_hex();
        let both = vec![to.to_string(), from.to_string()];
        let (filter, update) = docs::lease(&both, &token, now);
        leads.update_many(filter, update).await.map_err(classify)?;
        let found = self.read_fresh(leads, doc! {"_id": {"$in": &both}}, doc! {}, 2).await?;
        let doc_of = |id: &str| found.iter().find(|d| docs::text(d.get("_id")).as_deref() == Some(id)).cloned();
        let (target, source) = (doc_of(to), doc_of(from));
        let held = |d: &Option<Document>| {
            d.as_ref().is_none_or(|d| docs::text(d.get("leaseToken")).as_deref() == Some(&token))
        };
        if !held(&target) || !held(&source) {
            self.release(&both, &token).await?;
            return Ok(Merge::Busy);
        }
        for d in target.iter().chain(source.iter()) {
            self.finish_last_batch(d, rules).await?;
        }
        if target.is_none() {
            self.create_leased(&[&to.to_string()], &token, now).await?;
        }
        let score_before = target.as_ref().and_then(|d| docs::int(d.get("score"))).unwrap_or(0);

        // 2. the alias, or what an earlier try (or another event) left
        let alias = doc! {"_id": from, "to": to, "eventId": &event.event_id, "scoreBefore": score_before,
        "mergedAt": DateTime::from_millis(now)};
        let score_before = match self.aliases().insert_one(alias).await {
            Ok(_) => score_before,
            Err(e) if matches!(e.kind.as_ref(), ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY) =>
            {
                let earlier = self.aliases().find_one(doc! {"_id": from}).await.map_err(classify)?.unwrap_or_default();
                if docs::text(earlier.get("eventId")).as_deref() != Some(event.event_id.as_str()) {
                    self.release(&both, &token).await?;
                    return Ok(Merge::Nothing);
                }
                docs::int(earlier.get("scoreBefore")).unwrap_or(score_before)
            }
            Err(e) => return Err(classify(e)),
        };
        self.aliases().update_many(doc! {"to": from}, doc! {"$set": {"to": to}}).await.map_err(classify)?;
        self.checkpoint(CrashPoint::MergeAlias).await?;

        // 3. move
        let moving = doc! {"$set": {"leadId": to}};
        self.events.update_many(doc! {"leadId": from}, moving.clone()).await.map_err(classify)?;
        self.history.update_many(doc! {"leadId": from}, moving).await.map_err(classify)?;
        self.checkpoint(CrashPoint::MergeMove).await?;

        // 4. re-chain. A lead's history lists by feed position, which within one lead follows
        // ingest order: the merged entries take the two leads' positions in ingest order
        // (the same positions, so the live feed sees nothing new).
        let projection = doc! {"seq": 1, "delta": 1, "oldScore": 1, "newScore": 1, "feedSeq": 1};
        let entries = self.read_fresh(&self.history, doc! {"leadId": to}, projection, 64).await?;
        let mut entries: Vec<(Bson, i64, i64, (i64, i64, i64))> = entries
            .iter()
            .map(|d| {
                let n = |k: &str| docs::int(d.get(k)).unwrap_or(0);
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                (id, n("seq"), n("delta"), (n("oldScore"), n("newScore"), n("feedSeq")))
            })
            .collect();
        entries.sort_by_key(|e| e.1);
        let chained = rechain(entries.iter().map(|e| e.2));
        let score = chained.last().map_or(0, |(_, new)| *new);
        let mut positions: Vec<i64> = entries.iter().map(|e| e.3 .2).collect();
        positions.sort_unstable();
        let rewrites: Vec<Document> = entries
            .iter()
            .zip(chained.iter().zip(positions))
            .filter(|(e, ((old, new), feed))| e.3 != (*old, *new, *feed))
            .map(|(e, ((old, new), feed))| {
                doc! {"q": {"_id": e.0.clone()}, "u": {"$set": {"oldScore": old, "newScore": new, "feedSeq": feed}}}
            })
            .collect();
        self.write_all("scorehistories", rewrites, Tolerate::Nothing).await?;
        self.checkpoint(CrashPoint::MergeRechain).await?;

        // 5. counts once, then the score and profile (fenced)
        let guard = format!("merged.{}", digest(from));
        if let Some(source) = &source {
            let mut inc = doc! {"eventCount": docs::int(source.get("eventCount")).unwrap_or(0)};
            for (field, n) in docs::all_usage(source) {
                inc.insert(format!("usage.{field}"), i64::from(n));
            }
            let mut update = doc! {"$inc": inc, "$set": {&guard: true}};
            if let Some(at) = source.get("lastEventAt").filter(|v| !matches!(v, Bson::Null)) {
                update.insert("$max", doc! {"lastEventAt": at.clone()});
            }
            let q = doc! {"_id": to, "leaseToken": &token, &guard: {"$exists": false}};
            leads.update_one(q, update).await.map_err(classify)?;
        }
        self.checkpoint(CrashPoint::MergeCounts).await?;
        let target_profile = target.as_ref().and_then(docs::profile_of).unwrap_or_default();
        let source_profile = source.as_ref().and_then(docs::profile_of).unwrap_or_default();
        let merged: Profile = profile::merged(source_profile, &target_profile);
        let mut set = doc! {"score": score, "searchKey": profile::search_key(to, &merged), "leadId": to,
        "updatedAt": DateTime::from_millis(now)};
        if !merged.is_empty() {
            set.insert("profile", serde_json::Value::Object(merged).to_string());
        }
        let fenced = leads
            .update_one(doc! {"_id": to, "leaseToken": &token}, doc! {"$set": set, "$unset": {"lastBatch": ""}})
            .await
            .map_err(classify)?;
        if fenced.matched_count == 0 {
            // The lease ran out and another worker holds the lead: the steps so far stand,
            // and the next try finishes them.
            return Ok(Merge::Busy);
        }
        self.checkpoint(CrashPoint::MergeScore).await?;

        // 6. the merged lead is gone
        leads.delete_one(doc! {"_id": from, "leaseToken": &token}).await.map_err(classify)?;
        self.release(&both, &token).await?;
        Ok(Merge::Done(from.to_string(), score_before))
    }

    async fn release(&self, leads: &[String], token: &str) -> StoreResult<()> {
        let (filter, update) = docs::unlease(leads, token);
        self.leads.update_many(filter, update).await.map_err(classify)?;
        Ok(())
    }
}

/// A field name standing for a lead id (ids may hold dots and dollars).
fn digest(id: &str) -> String {
    Sha256::digest(id.as_bytes())[..12].iter().map(|b| format!("{b:02x}")).collect()
}
