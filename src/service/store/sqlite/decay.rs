//! What a decay pass reads from the embedded store (`domain::decay`).

use super::dead_letters::QUEUED;
use crate::domain::decay::{DecayInput, DecayPage, DECAY_EVENT_TYPE};
use crate::domain::rescore::RESCORE_EVENT_TYPE;
use rusqlite::{params, Connection};
use std::collections::HashMap;

/// A page of leads in id order with their scored events' points and times, read in one
/// transaction, so every score agrees with its events. (The writer is the only one to score,
/// and a lead's score moves in the same transaction as its events' flags.)
pub fn inputs(c: &Connection, after: Option<&str>, limit: usize) -> rusqlite::Result<DecayPage> {
    let tx = c.unchecked_transaction()?;
    let mut leads: Vec<DecayInput> = tx
        .prepare_cached("SELECT id, score, event_count FROM leads WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(params![after.unwrap_or(""), limit as i64], |r| {
            Ok(DecayInput { lead_id: r.get(0)?, score: r.get(1)?, event_count: r.get(2)?, events: Vec::new() })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (Some(first), Some(last)) = (leads.first(), leads.last()) else { return Ok(DecayPage::default()) };
    let (first, last) = (first.lead_id.clone(), last.lead_id.clone());
    // The history index walks the page's leads; each entry joins its event by seq.
    let mut stmt = tx.prepare_cached(
        "SELECT h.lead_id, e.points, e.timestamp FROM score_history h JOIN events e ON e.seq = h.id \
         WHERE h.lead_id >= ?1 AND h.lead_id <= ?2 AND e.event_type NOT IN (?3, ?4) AND e.points <> 0",
    )?;
    let mut rows = stmt.query(params![first, last, DECAY_EVENT_TYPE, RESCORE_EVENT_TYPE])?;
    let at: HashMap<String, usize> = leads.iter().enumerate().map(|(i, l)| (l.lead_id.clone(), i)).collect();
    while let Some(r) = rows.next()? {
        if let Some(&i) = at.get(&r.get::<_, String>(0)?) {
            leads[i].events.push((r.get(1)?, r.get(2)?));
        }
    }
    drop(rows);
    let next = (leads.len() == limit).then_some(last);
    Ok(DecayPage { inputs: leads, busy: 0, next })
}

/// Whether an adjustment (decay or rescore) is still queued (read from the queue's partial index).
pub fn pending(c: &Connection) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS(SELECT 1 FROM events WHERE processed = ?1 AND event_type IN (?2, ?3))")?
        .query_row(params![QUEUED, DECAY_EVENT_TYPE, RESCORE_EVENT_TYPE], |r| r.get(0))
}
