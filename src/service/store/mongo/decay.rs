//! What a decay pass reads from MongoDB (`domain::decay`). With no snapshot across
//! collections, a lead counts only if it is not leased (no scoring under way) both before and
//! after its events are read, with the same event count: then its score and events agree.

use super::docs;
use super::MongoStore;
use crate::domain::decay::{DecayInput, DecayPage, DECAY_EVENT_TYPE};
use crate::domain::rescore::RESCORE_EVENT_TYPE;
use crate::service::store::StoreResult;
use mongodb::bson::{doc, Document};
use std::collections::HashMap;

impl MongoStore {
    pub(super) async fn read_decay_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<DecayPage> {
        let view = doc! {"_id": 1, "score": 1, "eventCount": 1, "leaseToken": 1};
        let page = match &after {
            Some(id) => doc! {"_id": {"$gt": id}},
            None => doc! {},
        };
        let found = self.find_docs(&self.leads, (page, Some(view.clone())), doc! {"_id": 1}, 0, limit).await?;
        let next = if found.len() == limit { found.last().and_then(|d| docs::field(d, "_id")) } else { None };
        let before: HashMap<String, DecayInput> =
            found.iter().filter_map(settled).map(|l| (l.lead_id.clone(), l)).collect();
        if before.is_empty() {
            return Ok(DecayPage { inputs: Vec::new(), busy: found.len() as u64, next });
        }
        let ids: Vec<&String> = before.keys().collect();
        let filter = doc! {
            "leadId": {"$in": &ids}, "processed": true, "eventType": {"$nin": [DECAY_EVENT_TYPE, RESCORE_EVENT_TYPE]}, "points": {"$ne": 0_i64},
        };
        let view_events = doc! {"leadId": 1, "points": 1, "timestamp": 1};
        let events = self.find_docs(&self.events, (filter, Some(view_events)), doc! {}, 0, usize::MAX).await?;
        let again =
            self.find_docs(&self.leads, (doc! {"_id": {"$in": &ids}}, Some(view)), doc! {}, 0, usize::MAX).await?;
        let mut agreed: HashMap<String, DecayInput> = again
            .iter()
            .filter_map(settled)
            .filter(|l| before.get(&l.lead_id).is_some_and(|b| b.event_count == l.event_count && b.score == l.score))
            .map(|l| (l.lead_id.clone(), l))
            .collect();
        for e in &events {
            let (Some(lead), Some(points), Some(at)) =
                (docs::field(e, "leadId"), docs::int(e.get("points")), docs::millis(e.get("timestamp")))
            else {
                continue;
            };
            if let Some(input) = agreed.get_mut(&lead) {
                input.events.push((points, at));
            }
        }
        let mut inputs: Vec<DecayInput> = agreed.into_values().collect();
        inputs.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
        Ok(DecayPage { busy: (found.len() - inputs.len()) as u64, inputs, next })
    }

    pub(super) async fn decay_waiting(&self) -> StoreResult<bool> {
        let mut filter = docs::unprocessed();
        filter.insert("eventType", doc! {"$in": [DECAY_EVENT_TYPE, RESCORE_EVENT_TYPE]});
        Ok(self.events.find_one(filter).await.map_err(super::classify)?.is_some())
    }
}

/// A lead no worker holds, as a decay input without events yet.
fn settled(d: &Document) -> Option<DecayInput> {
    if d.contains_key("leaseToken") {
        return None;
    }
    Some(DecayInput {
        lead_id: docs::field(d, "_id")?,
        score: docs::int(d.get("score")).unwrap_or(0),
        event_count: docs::int(d.get("eventCount")).unwrap_or(0),
        events: Vec::new(),
    })
}
