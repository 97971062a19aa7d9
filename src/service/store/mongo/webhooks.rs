//! Webhook subscriptions (`webhooks`) and the delivery outbox (`deliveries`, numbered from
//! the `deliveries` counter) on MongoDB. Deliveries are written by `apply` with the history
//! entries they tell of (`apply.rs`, `record`).

use super::{classify, docs, MongoStore};
use crate::domain::time::Millis;
use crate::domain::webhooks::{Attempt, Delivery, DeliveryState, NewDelivery, StoredWebhook, Webhook};
use crate::service::store::StoreResult;
use mongodb::bson::{doc, Bson, DateTime, Document};

pub const DELIVERY_COUNTER: &str = "deliveries";

/// A delivery as inserted into the outbox; the unique `key` index keeps one per key,
/// whoever inserts it again. (A plain insert, not an upsert with `$setOnInsert`, which not
/// every compatible server takes with an `_id`: the stand-in answers "JSON path error".)
pub fn outbox_document(d: &NewDelivery, id: i64) -> Document {
    doc! {
        "_id": id, "key": &d.key, "webhookId": &d.webhook_id, "kind": &d.kind, "payload": &d.payload,
        "state": 0_i32, "attempts": 0_i32, "nextAt": d.created_at, "createdAt": d.created_at,
    }
}

fn state_code(s: DeliveryState) -> i32 {
    match s {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Failed => 2,
    }
}

fn delivery(d: &Document) -> Option<Delivery> {
    Some(Delivery {
        id: docs::int(d.get("_id"))?,
        webhook_id: docs::text(d.get("webhookId"))?,
        kind: docs::text(d.get("kind"))?,
        state: match docs::int(d.get("state"))? {
            0 => DeliveryState::Pending,
            1 => DeliveryState::Delivered,
            _ => DeliveryState::Failed,
        },
        attempts: docs::int(d.get("attempts")).unwrap_or(0) as u32,
        last_status: docs::int(d.get("lastStatus")).and_then(|s| u16::try_from(s).ok()),
        last_error: docs::text(d.get("lastError")),
        next_attempt_at: docs::int(d.get("nextAt")),
        created_at: docs::int(d.get("createdAt")).unwrap_or(0),
        delivered_at: docs::int(d.get("deliveredAt")),
        payload: docs::text(d.get("payload"))?,
    })
}

fn webhook(d: &Document) -> Option<StoredWebhook> {
    let events = d.get_array("events").ok()?.iter().filter_map(|e| e.as_str().map(str::to_string)).collect();
    Some(StoredWebhook {
        hook: Webhook {
            id: docs::text(d.get("_id"))?,
            url: docs::text(d.get("url"))?,
            events,
            created_at: docs::millis(d.get("createdAt"))?,
        },
        secret: docs::text(d.get("secret"))?,
    })
}

impl MongoStore {
    pub(super) async fn list_webhooks(&self) -> StoreResult<Vec<StoredWebhook>> {
        let found = self
            .find_docs(&self.db.collection("webhooks"), (doc! {}, None), doc! {"createdAt": 1, "_id": 1}, 0, 0)
            .await?;
        Ok(found.iter().filter_map(webhook).collect())
    }

    pub(super) async fn insert_webhook(&self, w: &StoredWebhook) -> StoreResult<()> {
        let d = doc! {
            "_id": &w.hook.id, "url": &w.hook.url, "events": &w.hook.events, "secret": &w.secret,
            "createdAt": DateTime::from_millis(w.hook.created_at),
        };
        self.db.collection::<Document>("webhooks").insert_one(d).await.map_err(classify).map(drop)
    }

    pub(super) async fn remove_webhook(&self, id: &str) -> StoreResult<bool> {
        let removed =
            self.db.collection::<Document>("webhooks").delete_one(doc! {"_id": id}).await.map_err(classify)?;
        self.deliveries_coll()
            .update_many(
                doc! {"webhookId": id, "state": 0_i32},
                doc! {"$set": {"state": 2_i32, "lastError": "webhook deleted"}, "$unset": {"nextAt": ""}},
            )
            .await
            .map_err(classify)?;
        Ok(removed.deleted_count == 1)
    }

    fn deliveries_coll(&self) -> mongodb::Collection<Document> {
        self.db.collection("deliveries")
    }

    /// The due ones, each taken only if no other sender took it first (its `nextAt` moved).
    pub(super) async fn claim_due(&self, now: Millis, until: Millis, limit: usize) -> StoreResult<Vec<Delivery>> {
        let filter = doc! {"state": 0_i32, "nextAt": {"$lte": now}};
        let due =
            self.find_docs(&self.deliveries_coll(), (filter, None), doc! {"nextAt": 1, "_id": 1}, 0, limit).await?;
        let mut claimed = Vec::new();
        for d in due.iter().filter_map(delivery) {
            let taken = self
                .deliveries_coll()
                .update_one(
                    doc! {"_id": d.id, "state": 0_i32, "nextAt": d.next_attempt_at.unwrap_or(0)},
                    doc! {"$set": {"nextAt": until}},
                )
                .await
                .map_err(classify)?;
            if taken.matched_count == 1 {
                claimed.push(d);
            }
        }
        Ok(claimed)
    }

    pub(super) async fn write_attempt(&self, id: i64, held_until: Millis, a: &Attempt) -> StoreResult<bool> {
        let mut set = doc! {"state": state_code(a.state), "attempts": i64::from(a.attempts)};
        let mut unset = Document::new();
        let mut put = |key: &str, v: Option<Bson>| match v {
            Some(v) => drop(set.insert(key, v)),
            None => drop(unset.insert(key, "")),
        };
        put("lastStatus", a.status.map(|s| Bson::Int32(i32::from(s))));
        put("lastError", a.error.clone().map(Bson::String));
        put("nextAt", a.next_at.map(Bson::Int64));
        if a.state == DeliveryState::Delivered {
            set.insert("deliveredAt", a.at);
        }
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let still_held = doc! {"_id": id, "state": 0_i32, "nextAt": held_until};
        Ok(self.deliveries_coll().update_one(still_held, update).await.map_err(classify)?.matched_count == 1)
    }

    pub(super) async fn deliveries_of(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let filter = doc! {"webhookId": webhook_id};
        let newest = doc! {"createdAt": -1, "_id": -1};
        let found = self.find_docs(&self.deliveries_coll(), (filter, None), newest, 0, limit).await?;
        Ok(found.iter().filter_map(delivery).collect())
    }

    pub(super) async fn prune_done(&self, before: Millis) -> StoreResult<u64> {
        let filter = doc! {"state": {"$in": [1_i32, 2_i32]}, "createdAt": {"$lt": before}};
        Ok(self.deliveries_coll().delete_many(filter).await.map_err(classify)?.deleted_count)
    }

    pub(super) async fn deliver_again(&self, webhook_id: &str, id: i64, now: Millis) -> StoreResult<bool> {
        let exists =
            self.db.collection::<Document>("webhooks").find_one(doc! {"_id": webhook_id}).await.map_err(classify)?;
        if exists.is_none() {
            return Ok(false);
        }
        let r = self
            .deliveries_coll()
            .update_one(doc! {"_id": id, "webhookId": webhook_id}, doc! {"$set": {"state": 0_i32, "nextAt": now}})
            .await
            .map_err(classify)?;
        Ok(r.matched_count == 1)
    }
}
