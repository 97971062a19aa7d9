//! Webhook subscriptions and the delivery outbox on SQLite. Deliveries are written by
//! `apply`, in the transaction that records the score changes they tell of (`outbox`).

use crate::domain::time::Millis;
use crate::domain::webhooks::{Attempt, Delivery, DeliveryState, NewDelivery, StoredWebhook, Webhook};
use rusqlite::{params, Connection, Row};

pub fn list(c: &Connection) -> rusqlite::Result<Vec<StoredWebhook>> {
    c.prepare_cached("SELECT id, url, events, secret, created_at FROM webhooks ORDER BY created_at, id")?
        .query_map([], |r| {
            let events: String = r.get(2)?;
            Ok(StoredWebhook {
                hook: Webhook {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    created_at: r.get(4)?,
                },
                secret: r.get(3)?,
            })
        })?
        .collect()
}

pub fn create(c: &Connection, w: &StoredWebhook) -> rusqlite::Result<()> {
    let events = serde_json::to_string(&w.hook.events).unwrap_or_default();
    c.prepare_cached("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![w.hook.id, w.hook.url, events, w.secret, w.hook.created_at])
        .map(drop)
}

/// Removes the subscription; its deliveries not yet sent are given up.
pub fn delete(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    let removed = c.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?.execute([id])? == 1;
    c.prepare_cached(
        "UPDATE deliveries SET state = 2, next_at = NULL, last_error = 'webhook deleted' \
         WHERE webhook_id = ?1 AND state = 0",
    )?
    .execute(params![id])?;
    Ok(removed)
}

/// Writes deliveries to the outbox; one already there (same key) is left as it is.
pub fn outbox(c: &Connection, deliveries: &[NewDelivery]) -> rusqlite::Result<()> {
    let mut insert = c.prepare_cached(
        "INSERT INTO deliveries (key, webhook_id, kind, payload, state, attempts, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?5) ON CONFLICT(key) DO NOTHING",
    )?;
    for d in deliveries {
        insert.execute(params![d.key, d.webhook_id, d.kind, d.payload, d.created_at])?;
    }
    Ok(())
}

const COLUMNS: &str =
    "id, webhook_id, kind, state, attempts, last_status, last_error, next_at, created_at, delivered_at, payload";

fn delivery(r: &Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        kind: r.get(2)?,
        state: match r.get::<_, i64>(3)? {
            0 => DeliveryState::Pending,
            1 => DeliveryState::Delivered,
            _ => DeliveryState::Failed,
        },
        attempts: r.get(4)?,
        last_status: r.get(5)?,
        last_error: r.get(6)?,
        next_attempt_at: r.get(7)?,
        created_at: r.get(8)?,
        delivered_at: r.get(9)?,
        payload: r.get(10)?,
    })
}

/// Takes up to `limit` deliveries due at `now`, oldest first, each held until `until` (its
/// next attempt, should this sender not report back).
pub fn claim(c: &Connection, now: Millis, until: Millis, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
    let due: Vec<Delivery> = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE state = 0 AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2"
        ))?
        .query_map(params![now, limit as i64], delivery)?
        .collect::<rusqlite::Result<_>>()?;
    let mut hold = c.prepare_cached("UPDATE deliveries SET next_at = ?2 WHERE id = ?1")?;
    for d in &due {
        hold.execute(params![d.id, until])?;
    }
    Ok(due)
}

pub fn record_attempt(c: &Connection, id: i64, held_until: Millis, a: &Attempt) -> rusqlite::Result<bool> {
    let state = match a.state {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Failed => 2,
    };
    let delivered_at = (a.state == DeliveryState::Delivered).then_some(a.at);
    c.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, last_status = ?4, last_error = ?5, next_at = ?6, \
         delivered_at = coalesce(?7, delivered_at) WHERE id = ?1 AND state = 0 AND next_at = ?8",
    )?
    .execute(params![id, state, a.attempts, a.status, a.error, a.next_at, delivered_at, held_until])
    .map(|n| n == 1)
}

/// A subscription's deliveries, newest first.
pub fn of_hook(c: &Connection, webhook_id: &str, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
    c.prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2"))?
        .query_map(params![webhook_id, limit as i64], delivery)?
        .collect()
}

/// Sends a delivery again at `now`, whatever its state; false if there is none.
pub fn redeliver(c: &Connection, webhook_id: &str, id: i64, now: Millis) -> rusqlite::Result<bool> {
    let exists: bool =
        c.prepare_cached("SELECT count(*) > 0 FROM webhooks WHERE id = ?1")?.query_row([webhook_id], |r| r.get(0))?;
    Ok(exists
        && c.prepare_cached("UPDATE deliveries SET state = 0, next_at = ?3 WHERE id = ?2 AND webhook_id = ?1")?
            .execute(params![webhook_id, id, now])?
            == 1)
}
