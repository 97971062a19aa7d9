//! The dead-letter list in the embedded store, and reading the queue without letting one bad
//! row stop it.
//!
//! An event's `processed` column says where it is: 0 queued, 1 scored, 2 in the dead-letter
//! list (a `dead_letters` row says why), 3 discarded. Moving between them is one transaction.

use super::{event_from_row, SqliteStore, EVENT_COLUMNS};
use crate::domain::DeadLetter;
use crate::service::store::{Queued, StoreResult, Unreadable};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, Row};

pub const QUEUED: i64 = 0;
pub const SCORED: i64 = 1;
pub const DEAD: i64 = 2;
pub const DISCARDED: i64 = 3;

const LETTER_COLUMNS: &str = "seq, event_id, lead_id, error, attempts, dead_at, raw";

/// The oldest `limit` queued rows; a row that does not read as an event is reported, not fatal.
pub fn read_queue(c: &Connection, limit: usize) -> rusqlite::Result<Queued> {
    let mut s =
        c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE processed = 0 ORDER BY seq LIMIT ?1"))?;
    let mut rows = s.query([limit as i64])?;
    let mut queued = Queued::default();
    while let Some(row) = rows.next()? {
        match event_from_row(row) {
            Ok(event) => queued.events.push(event),
            Err(e) => queued.unreadable.push(Unreadable {
                seq: row.get(0)?,
                event_id: row.get(1).ok(),
                lead_id: row.get(2).ok(),
                error: format!("unreadable event: {e}"),
                raw: raw_row(row),
            }),
        }
    }
    Ok(queued)
}

/// A row as JSON-like text, whatever its columns hold.
fn raw_row(row: &Row) -> String {
    let stmt = row.as_ref();
    let mut fields = serde_json::Map::new();
    for i in 0..stmt.column_count() {
        let value = match row.get_ref(i) {
            Ok(ValueRef::Null) | Err(_) => serde_json::Value::Null,
            Ok(ValueRef::Integer(n)) => n.into(),
            Ok(ValueRef::Real(f)) => f.into(),
            Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned().into(),
            Ok(ValueRef::Blob(b)) => format!("<{} bytes>", b.len()).into(),
        };
        fields.insert(stmt.column_name(i).unwrap_or("?").to_string(), value);
    }
    serde_json::Value::Object(fields).to_string()
}

fn letter_from_row(r: &Row) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        event_id: r.get(1)?,
        lead_id: r.get(2)?,
        error: r.get(3)?,
        attempts: r.get(4)?,
        dead_lettered_at: r.get(5)?,
        raw: r.get(6)?,
    })
}

impl SqliteStore {
    pub(super) async fn set_aside(&self, letters: Vec<DeadLetter>) -> StoreResult<()> {
        self.write(move |c| {
            let mut take = c.prepare_cached("UPDATE events SET processed = ?2 WHERE seq = ?1 AND processed = ?3")?;
            let mut record = c.prepare_cached(&format!(
                "INSERT OR REPLACE INTO dead_letters ({LETTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?;
            for l in letters {
                if take.execute(params![l.id, DEAD, QUEUED])? == 1 {
                    record.execute(params![
                        l.id,
                        l.event_id,
                        l.lead_id,
                        l.error,
                        l.attempts,
                        l.dead_lettered_at,
                        DeadLetter::clip(l.raw)
                    ])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn list_dead_letters(&self, after: i64, limit: usize) -> StoreResult<(Vec<DeadLetter>, u64)> {
        self.read(move |c| {
            // One read transaction: the count and the page see the same moment.
            let tx = c.unchecked_transaction()?;
            let mut s = tx.prepare_cached(&format!(
                "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let letters =
                s.query_map(params![after, limit as i64], letter_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            let total = count(&tx)?;
            drop(s);
            tx.finish()?;
            Ok((letters, total))
        })
        .await
    }

    /// Ends a dead letter, moving its event to `to` (queued again, or discarded).
    pub(super) async fn end_dead_letter(&self, id: i64, to: i64) -> StoreResult<bool> {
        self.write(move |c| {
            let moved =
                c.execute("UPDATE events SET processed = ?2 WHERE seq = ?1 AND processed = ?3", params![id, to, DEAD])?;
            let removed = c.execute("DELETE FROM dead_letters WHERE seq = ?1", [id])?;
            Ok(moved + removed > 0)
        })
        .await
    }
}

pub fn count(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row("SELECT count(*) FROM dead_letters", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}
