//! Rescoring on MongoDB (`domain::rescore`): what a job reads, and the scored events a
//! `$rescore` event's replay reads under the lead's lease (`apply.rs`).

use super::{docs, MongoStore};
use crate::domain::rescore::{LeadEvents, RescorePage};
use crate::domain::StoredEvent;
use crate::service::store::StoreResult;
use mongodb::bson::doc;
use std::collections::HashMap;

impl MongoStore {
    /// A page of leads after `after` in id order with their scored events. A lead being
    /// scored as it is read is marked `busy`: its score and events may not agree.
    pub(super) async fn read_rescore_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<RescorePage> {
        let page = match &after {
            Some(id) => doc! {"_id": {"$gt": id}},
            None => doc! {},
        };
        let view = doc! {"_id": 1, "score": 1, "leaseToken": 1, "usage": 1};
        let found = self.find_docs(&self.leads, (page, Some(view)), doc! {"_id": 1}, 0, limit).await?;
        let next = if found.len() == limit { found.last().and_then(|d| docs::field(d, "_id")) } else { None };
        let mut leads: Vec<LeadEvents> = found
            .iter()
            .filter_map(|d| {
                Some(LeadEvents {
                    lead_id: docs::field(d, "_id")?,
                    score: docs::int(d.get("score")).unwrap_or(0),
                    events: Vec::new(),
                    usage: docs::all_usage(d),
                    busy: d.contains_key("leaseToken"),
                })
            })
            .collect();
        let ids: Vec<String> = leads.iter().map(|l| l.lead_id.clone()).collect();
        let mut events = self.scored_events_of(&ids).await?;
        for lead in &mut leads {
            lead.events = events.remove(&lead.lead_id).unwrap_or_default();
        }
        Ok(RescorePage { leads, next })
    }

    /// The scored events of these leads, each lead's in ingest order, as the primary has them.
    pub(super) async fn scored_events_of(&self, leads: &[String]) -> StoreResult<HashMap<String, Vec<StoredEvent>>> {
        let mut by_lead: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        if leads.is_empty() {
            return Ok(by_lead);
        }
        let filter = doc! {"leadId": {"$in": leads}, "processed": true};
        // From the primary, majority committed: a replay that missed a scored event would
        // set the score without it, for good.
        for d in self.read_fresh(&self.events, filter, doc! {}, leads.len() * 8).await? {
            if let Some(e) = docs::stored_event(&d) {
                by_lead.entry(e.lead_id.clone()).or_default().push(e);
            }
        }
        for events in by_lead.values_mut() {
            events.sort_by_key(|e| e.seq);
        }
        Ok(by_lead)
    }

    /// Scored events (history entries), for a job's progress total.
    pub(super) async fn count_scored(&self) -> StoreResult<u64> {
        self.history.estimated_document_count().await.map_err(super::classify)
    }
}
