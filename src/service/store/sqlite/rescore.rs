//! Rescoring on SQLite (`domain::rescore`): what a job reads, and the replay a `$rescore`
//! event's scoring does inside the writer's transaction.

use super::event_from_row;
use crate::domain::engine::{Engine, PerKey, Priced, UsageKey};
use crate::domain::limits::Per;
use crate::domain::rescore::{difference, half_life_of, replay, LeadEvents, RescorePage};
use crate::domain::StoredEvent;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// The columns `event_from_row` reads, for events joined from history (`e`).
const EVENT_COLUMNS: &str =
    "e.seq, e.event_id, e.lead_id, e.event_type, e.timestamp, e.metadata, e.received_at, e.processed, e.points, e.matches";

/// A page of leads after `after` in id order with their scored events, in one transaction.
pub fn inputs(c: &Connection, after: Option<&str>, limit: usize) -> rusqlite::Result<RescorePage> {
    let tx = c.unchecked_transaction()?;
    let mut leads: Vec<LeadEvents> = tx
        .prepare_cached("SELECT id, score FROM leads WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(params![after.unwrap_or(""), limit as i64], |r| {
            Ok(LeadEvents { lead_id: r.get(0)?, score: r.get(1)?, events: Vec::new(), usage: Vec::new(), busy: false })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (Some(first), Some(last)) = (leads.first(), leads.last()) else { return Ok(RescorePage::default()) };
    let (first, last) = (first.lead_id.clone(), last.lead_id.clone());
    let at: HashMap<String, usize> = leads.iter().enumerate().map(|(i, l)| (l.lead_id.clone(), i)).collect();
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM score_history h JOIN events e ON e.seq = h.id \
         WHERE h.lead_id >= ?1 AND h.lead_id <= ?2"
    ))?;
    let mut rows = stmt.query(params![first, last])?;
    while let Some(r) = rows.next()? {
        let event = event_from_row(r)?;
        if let Some(&i) = at.get(&event.lead_id) {
            leads[i].events.push(event);
        }
    }
    drop(rows);
    let mut stmt = tx.prepare_cached(
        "SELECT lead_id, rule_id, per, period, count FROM rule_usage WHERE lead_id >= ?1 AND lead_id <= ?2 AND count > 0",
    )?;
    let mut rows = stmt.query(params![first, last])?;
    while let Some(r) = rows.next()? {
        let key = UsageKey {
            lead_id: r.get(0)?,
            rule_id: r.get(1)?,
            per: per_key(&r.get::<_, String>(2)?),
            window: r.get(3)?,
        };
        if let Some(&i) = at.get(&key.lead_id) {
            leads[i].usage.push((key.field(), r.get(4)?));
        }
    }
    drop(rows);
    for lead in &mut leads {
        lead.events.sort_by_key(|e| e.seq);
        lead.usage.sort();
    }
    let next = (leads.len() == limit).then_some(last);
    Ok(RescorePage { leads, next })
}

/// A stored window name as the key part `Per::as_str` gives (an unknown one kept as is only
/// in spirit: it cannot match any rule, so it reads as a count the replay would not leave).
fn per_key(stored: &str) -> PerKey {
    Per::ALL.into_iter().map(Per::as_str).find(|p| *p == stored).unwrap_or("unknown")
}

/// Scores a queued `$rescore` event: replays its lead's scored events with `engine`, stores
/// their new points and explanations and the lead's new limit counts, and returns the
/// event's own price (the difference to the score). `None` if it was already scored. Runs in
/// the writer's transaction after the batch so far is written, so it reads the lead as is.
pub fn replay_lead(c: &Connection, event: &StoredEvent, engine: &Engine) -> rusqlite::Result<Option<Priced>> {
    let queued: Option<i64> = c
        .prepare_cached("SELECT processed FROM events WHERE seq = ?1")?
        .query_row([event.seq], |r| r.get(0))
        .optional()?;
    if queued != Some(0) {
        return Ok(None);
    }
    let lead = event.lead_id.as_str();
    let score: i64 = c
        .prepare_cached("SELECT score FROM leads WHERE id = ?1")?
        .query_row([lead], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut events: Vec<StoredEvent> = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM score_history h JOIN events e ON e.seq = h.id WHERE h.lead_id = ?1"
        ))?
        .query_map([lead], event_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    events.sort_by_key(|e| e.seq);
    let replayed = replay(engine, &events, half_life_of(event), event.timestamp);
    let mut reprice = c.prepare_cached("UPDATE events SET points = ?2, matches = ?3 WHERE seq = ?1")?;
    for (seq, priced) in &replayed.repriced {
        reprice.execute(params![seq, priced.points, priced.matches_json()])?;
    }
    c.prepare_cached("DELETE FROM rule_usage WHERE lead_id = ?1")?.execute([lead])?;
    let mut count =
        c.prepare_cached("INSERT INTO rule_usage (lead_id, rule_id, per, period, count) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (key, n) in &replayed.usage {
        count.execute(params![key.lead_id, key.rule_id, key.per, key.window, n])?;
    }
    Ok(Some(difference(&replayed, score)))
}
