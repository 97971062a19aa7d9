//! The embedded store: one SQLite file, zero setup.
//!
//! All writes go through one writer thread that batches whatever requests are waiting into a
//! single transaction (group commit): many concurrent ingest requests share one fsync, and
//! because there is exactly one writer, `score = score + delta` never races. Each request
//! runs inside its own savepoint, so one failing request cannot undo another's rows. Reads use
//! a small pool of separate connections; WAL mode lets them run while the writer commits.
//!
//! Durability: WAL with `synchronous = FULL`, so a committed transaction (and with it every
//! 202 the API answered) survives a process crash or power loss.

use super::{InsertOutcome, QueueStats, Store, StoreError, StoreResult};
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::time::Millis;
use crate::domain::{HistoryEntry, Lead, NewEvent, Rule, RuleInput, ScoreChange, ScoredEvent, StoredEvent};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// Upper bound on requests folded into one transaction, so one commit never grows unbounded.
const MAX_JOBS_PER_COMMIT: usize = 512;
/// Readers kept open between requests (opening one per request would parse the schema each
/// time); each caches up to 4 MB, so memory stays bounded.
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    lead_id     TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    metadata    TEXT,
    received_at INTEGER NOT NULL,
    processed   INTEGER NOT NULL DEFAULT 0,
    points      INTEGER
);
CREATE INDEX IF NOT EXISTS events_unprocessed ON events(seq) WHERE processed = 0;
CREATE INDEX IF NOT EXISTS events_by_lead ON events(lead_id, timestamp DESC, seq DESC);

-- Clustered by id: one B-tree fewer to update per score change.
CREATE TABLE IF NOT EXISTS leads (
    id            TEXT PRIMARY KEY,
    search_key    TEXT NOT NULL,
    score         INTEGER NOT NULL,
    last_event_id TEXT,
    updated_at    INTEGER NOT NULL,
    last_event_at INTEGER,
    event_count   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leads_by_score ON leads(score DESC, id ASC);

-- One row per applied event; the events table's processed flag (flipped in the same
-- transaction) is what makes it once-only, so event_id needs no index of its own.
CREATE TABLE IF NOT EXISTS score_history (
    id         INTEGER PRIMARY KEY,
    lead_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event_type TEXT NOT NULL,
    delta      INTEGER NOT NULL,
    old_score  INTEGER NOT NULL,
    new_score  INTEGER NOT NULL,
    timestamp  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_lead ON score_history(lead_id, id DESC);

CREATE TABLE IF NOT EXISTS rules (
    event_type TEXT PRIMARY KEY,
    points     INTEGER NOT NULL,
    is_active  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#;

const EVENT_COLUMNS: &str = "seq, event_id, lead_id, event_type, timestamp, metadata, received_at, processed, points";
const LEAD_COLUMNS: &str = "id, score, last_event_id, updated_at, last_event_at, event_count";

/// Work for the writer thread. It runs inside the shared transaction and hands back a
/// continuation that delivers its result once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Arc<ReaderPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(&path).map_err(|e| unavailable(&path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
             PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768; \
             PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(|e| unavailable(&path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| unavailable(&path, e))?;

        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self {
            readers: Arc::new(ReaderPool { path: path.clone(), idle: Mutex::new(Vec::new()) }),
            path,
            writer: Mutex::new(Some(tx)),
        })
    }

    /// Runs `f` in the writer's next transaction; resolves after that transaction committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit| {
                let outcome = match (result, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(StoreError::Internal(e.to_string())),
                    (Ok(_), Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                };
                let _ = tx.send(outcome);
            })
        });
        let sender = self.writer.lock().unwrap().clone();
        sender
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?
            .send(job)
            .map_err(|_| StoreError::Unavailable("sqlite writer thread stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("sqlite writer thread stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f)).await.map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer thread finish its last commit and exit.
        self.writer.lock().unwrap().take();
    }
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: each caller sees the store
            // as unavailable and nothing was written.
            tracing::error!(error = %e, "sqlite: cannot begin transaction");
            drop(batch);
            continue;
        }
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, "sqlite: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = match self.idle.lock().unwrap().pop() {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| unavailable(&self.path, e))?;
                c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -4096;")
                    .map_err(|e| unavailable(&self.path, e))?;
                c
            }
        };
        let result = f(&conn).map_err(|e| StoreError::Internal(e.to_string()));
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn event_from_row(r: &Row) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        event_id: r.get(1)?,
        lead_id: r.get(2)?,
        event_type: r.get(3)?,
        timestamp: r.get(4)?,
        metadata: r.get(5)?,
        received_at: r.get(6)?,
        processed: r.get(7)?,
        points: r.get(8)?,
    })
}

fn lead_from_row(r: &Row) -> rusqlite::Result<Lead> {
    Ok(Lead {
        id: r.get(0)?,
        score: r.get(1)?,
        last_event_id: r.get(2)?,
        updated_at: r.get(3)?,
        last_event_at: r.get(4)?,
        event_count: r.get(5)?,
    })
}

fn rule_from_row(r: &Row) -> rusqlite::Result<Rule> {
    Ok(Rule { event_type: r.get(0)?, points: r.get(1)?, is_active: r.get(2)?, updated_at: r.get(3)? })
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<InsertOutcome>> {
        let received_at = now_ms();
        self.write(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO events (event_id, lead_id, event_type, timestamp, metadata, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(event_id) DO NOTHING",
            )?;
            let mut existing = c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"))?;
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                let inserted = insert.execute(params![
                    e.event_id,
                    e.lead_id,
                    e.event_type,
                    e.timestamp,
                    e.metadata,
                    received_at
                ])?;
                out.push(if inserted == 1 {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::Duplicate(existing.query_row([&e.event_id], event_from_row)?)
                });
            }
            Ok(out)
        })
        .await
    }

    async fn unprocessed(&self, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE processed = 0 ORDER BY seq LIMIT ?1"
            ))?;
            let rows = s.query_map([limit as i64], event_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn apply(&self, events: Vec<ScoredEvent>, now: Millis) -> StoreResult<Vec<ScoreChange>> {
        self.write(move |c| {
            // The processed flag is the guard: only the call that flips it applies the points,
            // and the flag, the lead and the history rows commit together or not at all.
            let mut claim = c.prepare_cached("UPDATE events SET processed = 1, points = ?2 WHERE seq = ?1 AND processed = 0")?;
            let mut claimed = Vec::with_capacity(events.len());
            for e in events {
                if claim.execute(params![e.seq, e.points])? == 1 {
                    claimed.push(e);
                }
            }
            // One read and one write per lead, however many of its events are in the batch.
            let mut by_lead: Vec<(String, Vec<ScoredEvent>)> = Vec::new();
            let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            for e in claimed {
                match index.get(&e.lead_id) {
                    Some(&i) => by_lead[i].1.push(e),
                    None => {
                        index.insert(e.lead_id.clone(), by_lead.len());
                        by_lead.push((e.lead_id.clone(), vec![e]));
                    }
                }
            }
            let mut current = c.prepare_cached("SELECT score FROM leads WHERE id = ?1")?;
            let mut history = c.prepare_cached(
                "INSERT INTO score_history (lead_id, event_id, event_type, delta, old_score, new_score, timestamp) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut save = c.prepare_cached(
                "INSERT INTO leads (id, search_key, score, last_event_id, updated_at, last_event_at, event_count, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5) \
                 ON CONFLICT(id) DO UPDATE SET score = excluded.score, last_event_id = excluded.last_event_id, \
                   updated_at = excluded.updated_at, last_event_at = max(coalesce(last_event_at, 0), excluded.last_event_at), \
                   event_count = event_count + excluded.event_count",
            )?;
            let mut changes = Vec::new();
            for (lead_id, events) in by_lead {
                // Safe to read then write: this thread is the only writer.
                let mut score: i64 = current.query_row([&lead_id], |r| r.get(0)).optional()?.unwrap_or(0);
                let mut last_event_at = i64::MIN;
                for e in &events {
                    let old = score;
                    score += e.points;
                    last_event_at = last_event_at.max(e.timestamp);
                    history.execute(params![lead_id, e.event_id, e.event_type, e.points, old, score, now])?;
                    changes.push(ScoreChange {
                        lead_id: lead_id.clone(),
                        event_id: e.event_id.clone(),
                        event_type: e.event_type.clone(),
                        delta: e.points,
                        score,
                        updated_at: now,
                    });
                }
                let last = events.last().map(|e| e.event_id.as_str());
                save.execute(params![lead_id, lead_id.to_lowercase(), score, last, now, last_event_at, events.len() as i64])?;
            }
            Ok(changes)
        })
        .await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.read(|c| {
            c.query_row("SELECT count(*), min(received_at) FROM events WHERE processed = 0", [], |r| {
                Ok(QueueStats { depth: r.get::<_, i64>(0)? as u64, oldest_received_at: r.get(1)? })
            })
        })
        .await
    }

    async fn leads(&self, query: &LeadQuery) -> StoreResult<Vec<Lead>> {
        let q = query.clone();
        self.read(move |c| {
            // Only the filters in use, so the plan is a plain walk down leads_by_score.
            let mut sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(min) = q.min_score {
                sql.push_str(" AND score >= ?");
                args.push(min.into());
            }
            if let Some(max) = q.max_score {
                sql.push_str(" AND score <= ?");
                args.push(max.into());
            }
            if let Some(needle) = q.search_needle() {
                // instr() on a lowercased copy of the id: a literal substring test, no pattern syntax.
                sql.push_str(" AND instr(search_key, ?) > 0");
                args.push(needle.into());
            }
            sql.push_str(" ORDER BY score DESC, id ASC LIMIT ? OFFSET ?");
            args.push((q.limit as i64).into());
            args.push((q.offset as i64).into());
            let mut s = c.prepare_cached(&sql)?;
            let rows = s.query_map(rusqlite::params_from_iter(args), lead_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn lead(&self, lead_id: &str) -> StoreResult<Option<Lead>> {
        let id = lead_id.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = ?1"))?
                .query_row([id], lead_from_row)
                .optional()
        })
        .await
    }

    async fn history(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<HistoryEntry>> {
        let (id, limit, offset) = (lead_id.to_string(), page.history_limit as i64, page.history_offset as i64);
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT lead_id, event_id, event_type, old_score, new_score, delta, timestamp FROM score_history \
                 WHERE lead_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let rows = s.query_map(params![id, limit, offset], |r| {
                Ok(HistoryEntry {
                    lead_id: r.get(0)?,
                    event_id: r.get(1)?,
                    event_type: r.get(2)?,
                    old_score: r.get(3)?,
                    new_score: r.get(4)?,
                    delta: r.get(5)?,
                    timestamp: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn lead_events(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<StoredEvent>> {
        let (id, limit, offset) = (lead_id.to_string(), page.events_limit as i64, page.events_offset as i64);
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE lead_id = ?1 \
                 ORDER BY timestamp DESC, seq DESC LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = s.query_map(params![id, limit, offset], event_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn rules(&self) -> StoreResult<Vec<Rule>> {
        self.read(|c| {
            let mut s =
                c.prepare_cached("SELECT event_type, points, is_active, updated_at FROM rules ORDER BY event_type")?;
            let rows = s.query_map([], rule_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn upsert_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO rules (event_type, points, is_active, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(event_type) DO UPDATE SET points = excluded.points, is_active = excluded.is_active, \
                   updated_at = excluded.updated_at \
                 RETURNING event_type, points, is_active, updated_at",
            )?
            .query_row(params![rule.event_type, rule.points, rule.is_active, now], rule_from_row)
        })
        .await
    }

    async fn seed_rules(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool> {
        self.write(move |c| {
            let count: i64 = c.query_row("SELECT count(*) FROM rules", [], |r| r.get(0))?;
            if count > 0 {
                return Ok(false);
            }
            let mut s = c.prepare_cached(
                "INSERT INTO rules (event_type, points, is_active, updated_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in defaults {
                s.execute(params![r.event_type, r.points, r.is_active, now])?;
            }
            Ok(true)
        })
        .await
    }
}
