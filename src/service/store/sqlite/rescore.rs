//! Rescoring on SQLite (`domain::rescore`): what a job reads, and the replay a `$rescore`
//! event's scoring does inside the writer's transaction.

use super::event_from_row;
use crate::domain::engine::{Engine, PerKey, Priced, UsageKey};
use crate::domain::limits::Per;
use crate::domain::rescore::{adjustment, difference, half_life_of, is_adjustment, replay, LeadEvents, RescorePage};
use crate::domain::rescore_scan::{plan_of, Planned, Scan};
use crate::domain::time::Millis;
use crate::domain::StoredEvent;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// New prices are handed to the writer this many events at a time (one request each).
const REPRICE_CHUNK: usize = 20_000;

/// An event's new price as stored: its seq, points and explanation.
pub type Repriced = (i64, i64, Option<String>);

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
        let (lead, field, n) = count_row(r)?;
        if let Some(&i) = at.get(&lead) {
            leads[i].usage.push((field, n));
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

/// The ingest-order pass (`domain::rescore_scan`) over one snapshot of the store: every
/// scored event in the order it was scored, credited to its lead (history's lead, so a
/// merged lead's events count for the lead it joined); then the leads in id order, each with
/// its score, applied-event count and limit counts, read from the same snapshot as the events.
/// New prices go to `emit` in chunks, in seq order, so each table page is rewritten once.
/// `None` when `emit` answers false or `stopped` says so (checked every few thousand rows):
/// nobody waits for the pass any more.
///
/// The snapshot is held for the whole pass, so the WAL cannot start over meanwhile: it grows
/// by the pages the pass rewrites (at most about the events table's size) and is copied
/// back once the pass is done.
pub fn scan(
    c: &Connection,
    engine: &Engine,
    half_life_days: Option<f64>,
    now: Millis,
    progress: &AtomicU64,
    mut emit: impl FnMut(Vec<Repriced>) -> bool,
    stopped: impl Fn() -> bool,
) -> rusqlite::Result<Option<Planned>> {
    const CHECK_EVERY: u64 = 4_096;
    let tx = c.unchecked_transaction()?;
    let leads: i64 = tx.query_row("SELECT count(*) FROM leads", [], |r| r.get(0))?;
    let mut pass = Scan::new(engine, half_life_days, leads as usize);
    let mut chunk = Vec::with_capacity(REPRICE_CHUNK);
    let (mut rows_read, mut events) = (0u64, 0u64);
    let mut stmt = tx.prepare(&format!(
        "SELECT {EVENT_COLUMNS}, h.lead_id FROM score_history h JOIN events e ON e.seq = h.id ORDER BY h.id"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        rows_read += 1;
        if rows_read % CHECK_EVERY == 0 && stopped() {
            return Ok(None);
        }
        let event = event_from_row(r)?;
        if !is_adjustment(&event.event_type) {
            events += 1;
            if events % 10_000 == 0 {
                progress.store(events, Ordering::Relaxed);
            }
        }
        if let Some(priced) = pass.add(r.get_ref(10)?.as_str()?, &event) {
            chunk.push((event.seq, priced.points, priced.matches_json()));
            if chunk.len() == REPRICE_CHUNK && !emit(std::mem::replace(&mut chunk, Vec::with_capacity(REPRICE_CHUNK))) {
                return Ok(None);
            }
        }
    }
    drop(rows);
    drop(stmt);
    progress.store(events, Ordering::Relaxed);
    if !chunk.is_empty() && !emit(chunk) {
        return Ok(None);
    }
    // Both in lead id order, so each lead's stored counts are found by walking along.
    let mut counts_stmt =
        tx.prepare("SELECT lead_id, rule_id, per, period, count FROM rule_usage WHERE count > 0 ORDER BY lead_id")?;
    let mut stored_counts = counts_stmt.query([])?;
    let mut next_count = stored_counts.next()?.map(count_row).transpose()?;
    let mut leads_stmt = tx.prepare("SELECT id, score, event_count FROM leads ORDER BY id")?;
    let mut leads = leads_stmt.query([])?;
    let mut planned = Planned { events, ..Planned::default() };
    while let Some(r) = leads.next()? {
        planned.leads += 1;
        if planned.leads % CHECK_EVERY == 0 && stopped() {
            return Ok(None);
        }
        let lead: String = r.get(0)?;
        let mut stored = Vec::new();
        while let Some((of, field, n)) = next_count.take() {
            if of > lead {
                next_count = Some((of, field, n));
                break;
            }
            if of == lead {
                stored.push((field, n));
            }
            next_count = stored_counts.next()?.map(count_row).transpose()?;
        }
        stored.sort();
        if let Some(plan) = pass.plan(&lead, r.get(1)?, r.get(2)?, &stored, now) {
            planned.plans.push((lead, plan));
        }
    }
    Ok(Some(planned))
}

/// A `rule_usage` row as its lead and `UsageKey::field`.
fn count_row(r: &rusqlite::Row) -> rusqlite::Result<(String, String, u32)> {
    let key =
        UsageKey { lead_id: r.get(0)?, rule_id: r.get(1)?, per: per_key(&r.get::<_, String>(2)?), window: r.get(3)? };
    Ok((key.lead_id.clone(), key.field(), r.get(4)?))
}

/// Stores new prices of scored events (a chunk of `scan`'s, or one lead's replay).
pub fn reprice(c: &Connection, chunk: &[Repriced]) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached("UPDATE events SET points = ?2, matches = ?3 WHERE seq = ?1 AND processed = 1")?;
    for (seq, points, matches) in chunk {
        stmt.execute(params![seq, points, matches])?;
    }
    Ok(())
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
    // A plan from an ingest-order pass holds while the lead is as the pass read it: then its
    // events are priced already, and only the score and the counts move.
    if let Some(plan) = plan_of(event) {
        let now: Option<(i64, i64)> = c
            .prepare_cached("SELECT score, event_count FROM leads WHERE id = ?1")?
            .query_row([lead], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if now == Some((plan.score, plan.event_count)) {
            let counts =
                plan.usage.iter().map(|n| (n.lead_id.as_str(), n.rule_id.as_str(), n.per.as_str(), n.window, n.count));
            replace_counts(c, lead, counts)?;
            return Ok(Some(adjustment(plan.target, plan.score)));
        }
    }
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
    let prices: Vec<Repriced> = replayed.repriced.iter().map(|(seq, p)| (*seq, p.points, p.matches_json())).collect();
    reprice(c, &prices)?;
    let counts = replayed.usage.iter().map(|(k, n)| (k.lead_id.as_str(), k.rule_id.as_str(), k.per, k.window, *n));
    replace_counts(c, lead, counts)?;
    Ok(Some(difference(&replayed, score)))
}

/// Replaces a lead's limit counts with a replay's: (lead, rule, per, window, count) each.
fn replace_counts<'a>(
    c: &Connection,
    lead: &str,
    counts: impl Iterator<Item = (&'a str, &'a str, &'a str, i64, u32)>,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM rule_usage WHERE lead_id = ?1")?.execute([lead])?;
    let mut insert = c.prepare_cached(
        "INSERT INTO rule_usage (lead_id, rule_id, per, period, count) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (lead_id, rule_id, per, period) DO UPDATE SET count = excluded.count",
    )?;
    for (lead_id, rule_id, per, window, n) in counts {
        insert.execute(params![lead_id, rule_id, per, window, n])?;
    }
    Ok(())
}
