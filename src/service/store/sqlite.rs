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

mod accounts;
mod apply;
pub mod backup;
mod dead_letters;
mod decay;
pub mod event_keys;
mod merge;
mod rescore;
mod rules;
mod schema;
mod search;
mod webhooks;
mod writer;

use schema::{prepare_schema, SCHEMA_VERSION};

use super::{InsertOutcome, QueueStats, Queued, Store, StoreError, StoreResult};
use crate::domain::decay::DecayPage;
use crate::domain::engine::Engine;
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::rescore::RescorePage;
use crate::domain::rescore_scan::Planned;
use crate::domain::time::Millis;
use crate::domain::webhooks::{Attempt, Delivery, StoredWebhook};
use crate::domain::{DeadLetter, HistoryEntry, Lead, NewEvent, Rule, RuleDraft, RuleInput, ScoreChange, StoredEvent};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// Write jobs waiting for the writer thread at most (eight transactions' worth).
const MAX_QUEUED_JOBS: usize = 8 * writer::MAX_JOBS_PER_COMMIT;
/// Readers kept open between requests (opening one per request would parse the schema each
/// time); each caches up to `READER_CACHE_KIB`, so memory stays bounded.
const MAX_IDLE_READERS: usize = 8;
/// A reader's page cache. Small on purpose: the file's pages stay in the OS page cache anyway,
/// a query touches few pages (top 100 of an index, one lead's page), and private caches this
/// size fill within minutes, so the process's memory levels off early instead of creeping up
/// for an hour as eight 4 MB caches fill with the pages of a growing file (the soak showed it).
const READER_CACHE_KIB: i64 = 1024;

/// A page of one lead's events, newest first: its not-yet-scored events among the newest
/// `PENDING_WINDOW` in the queue (read from the queue index alone), then its scored ones from
/// the history, keyed by seq. SQLite merges the two ordered walks and stops at the page.
const LEAD_EVENTS_PAGE: &str = "SELECT e.seq, e.event_id, e.lead_id, e.event_type, e.timestamp, e.metadata, \
        e.received_at, e.processed, e.points, e.matches \
    FROM (SELECT seq FROM (SELECT seq, lead_id FROM events WHERE processed = 0 ORDER BY seq DESC LIMIT 10000) \
              WHERE lead_id = ?1 \
          UNION ALL SELECT id FROM score_history WHERE lead_id = ?1 \
          ORDER BY 1 DESC LIMIT ?2 OFFSET ?3) page \
    JOIN events e ON e.seq = page.seq ORDER BY e.seq DESC";
/// How far back into the queue a lead's page looks for unscored events. The worker drains
/// far faster than this per second, so only a deep backlog hides an event, until it is scored.
pub const PENDING_WINDOW: usize = 10_000;

const EVENT_COLUMNS: &str =
    "seq, event_id, lead_id, event_type, timestamp, metadata, received_at, processed, points, matches";
/// An event by its id: the keyed hash finds it (`events_by_key`), the id confirms it.
fn find_event() -> String {
    format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_key = ?1 AND event_id = ?2")
}
const LEAD_COLUMNS: &str = "id, score, last_event_id, updated_at, last_event_at, event_count, profile";

pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::SyncSender<writer::Job>>>,
    /// Cleared when the writer thread ends for any reason, a panic included: reads would
    /// still work, so health must ask.
    writer_alive: Arc<AtomicBool>,
    /// The file's identity (device, inode) when opened. If the path stops naming it (the file
    /// was deleted or replaced), the open connections would go on writing to an unlinked
    /// file and every later 202 would be lost at the next start: writes are refused instead.
    identity: Option<(u64, u64)>,
    readers: Arc<ReaderPool>,
    /// Why writes fail (a read-only or failing disk, a full one), as the writer learns it;
    /// `None` while they work. Reads may work meanwhile: health asks this.
    write_failure: Arc<writer::Failure>,
    /// When health last tried a write to see whether writes work again.
    last_probe: Mutex<Option<std::time::Instant>>,
    /// The file's keyed hash of event ids, which the dedupe index holds (`event_keys.rs`).
    event_keys: event_keys::EventKeys,
}

/// How often health tries a write while writes are failing.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = writer::open_writer(&path, true)?;
        let event_keys = prepare_schema(&mut conn).map_err(|e| unavailable(&path, e))?;

        // Bounded: when the writer falls this far behind, writes answer 503 rather than queue
        // without limit (request bodies are bounded before they get here, see admission.rs).
        let (tx, rx) = mpsc::sync_channel::<writer::Job>(MAX_QUEUED_JOBS);
        let writer_alive = Arc::new(AtomicBool::new(true));
        let alive = AliveWhileHeld(writer_alive.clone());
        let write_failure = Arc::new(Mutex::new(None));
        let failure = write_failure.clone();
        let target = writer::Target { path: path.clone(), identity: file_identity(&path) };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _alive = alive;
                writer::run(conn, rx, &target, &failure)
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self {
            identity: file_identity(&path),
            writer_alive,
            readers: Arc::new(ReaderPool { path: path.clone(), idle: Mutex::new(Vec::new()) }),
            path,
            writer: Mutex::new(Some(tx)),
            write_failure,
            last_probe: Mutex::new(None),
            event_keys,
        })
    }

    /// Fails while writes fail, saying why. Meanwhile, at most every `PROBE_EVERY`, a fresh
    /// connection tries a write of its own: health learns by itself when writes work again.
    async fn writable(&self) -> StoreResult<()> {
        let failing = self.write_failure.lock().unwrap().clone();
        let Some(why) = failing else { return Ok(()) };
        let due = {
            let mut last = self.last_probe.lock().unwrap();
            let due = last.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let target = writer::Target { path: self.path.clone(), identity: self.identity };
        if due && writer::probe(&target).await {
            *self.write_failure.lock().unwrap() = None;
            return Ok(());
        }
        Err(StoreError::Unavailable(format!("writes to {} fail: {why}", self.path.display())))
    }

    /// Whether the path still names the file this store opened.
    fn still_our_file(&self) -> StoreResult<()> {
        match (self.identity, file_identity(&self.path)) {
            (Some(ours), Some(now)) if ours != now => Err(StoreError::Unavailable(format!(
                "the database file {} was replaced while the server ran; restart the server",
                self.path.display()
            ))),
            (Some(_), None) => Err(StoreError::Unavailable(format!(
                "the database file {} was removed while the server ran; put it back or restart the server",
                self.path.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `f` in the writer's next transaction; resolves after that transaction committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.still_our_file()?;
        let (tx, rx) = oneshot::channel();
        let job = writer::job(f, move |outcome| drop(tx.send(outcome)));
        let sender = self.writer.lock().unwrap().clone();
        sender.ok_or_else(|| StoreError::Unavailable("store is closed".into()))?.try_send(job).map_err(
            |e| match e {
                mpsc::TrySendError::Full(_) => {
                    StoreError::Unavailable("the sqlite writer is behind; retry shortly".into())
                }
                mpsc::TrySendError::Disconnected(_) => StoreError::Unavailable("sqlite writer thread stopped".into()),
            },
        )?;
        rx.await.map_err(|_| {
            // Dropped unrun: the writer says why.
            let why = self.write_failure.lock().unwrap().clone();
            StoreError::Unavailable(why.unwrap_or_else(|| "sqlite writer thread stopped".into()))
        })?
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

/// (device, inode) of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A full disk, an I/O error or a locked file is the store being unavailable (503, retry
/// later; nothing was written), not a bug.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked | CannotOpen | ReadOnly) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}

/// Clears its flag when dropped, which a thread's locals are even when it panics.
struct AliveWhileHeld(Arc<AtomicBool>);

impl Drop for AliveWhileHeld {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
        if std::thread::panicking() {
            tracing::error!("sqlite: the writer thread died; writes fail until a restart");
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// How often a chunk of a rescore pass's prices is offered to a writer that is behind.
const REPRICE_ATTEMPTS: u32 = 600;

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
                c.execute_batch(&format!("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{READER_CACHE_KIB};"))
                    .map_err(|e| unavailable(&self.path, e))?;
                c
            }
        };
        let result = f(&conn).map_err(|e| StoreError::Internal(e.to_string()));
        let mut idle = self.idle.lock().unwrap();
        // Never back into the pool inside a transaction a failed read left open.
        if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
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
        processed: r.get::<_, i64>(7)? == dead_letters::SCORED,
        points: r.get(8)?,
        // An explanation that does not read is left out; the points stand on their own.
        matches: r.get::<_, Option<String>>(9)?.and_then(|m| crate::domain::explanation::from_text(&m)),
    })
}

/// A row that does not convert (a dead letter's, say) as `None`; other errors stay errors.
fn readable<T>(read: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    use rusqlite::Error::*;
    match read {
        Ok(v) => Ok(Some(v)),
        Err(InvalidColumnType(..) | FromSqlConversionFailure(..) | IntegralValueOutOfRange(..)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn lead_from_row(r: &Row) -> rusqlite::Result<Lead> {
    Ok(Lead {
        id: r.get(0)?,
        score: r.get(1)?,
        last_event_id: r.get(2)?,
        updated_at: r.get(3)?,
        last_event_at: r.get(4)?,
        event_count: r.get(5)?,
        // The service names the stage, from the ladder.
        stage: String::new(),
        profile: r.get::<_, Option<String>>(6)?.map(|p| crate::domain::profile::parse(Some(&p))),
    })
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

    fn memory_bytes(&self) -> Option<u64> {
        // SAFETY: a plain read of SQLite's allocation counter; no arguments, no state.
        Some(unsafe { rusqlite::ffi::sqlite3_memory_used() }.max(0) as u64)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<InsertOutcome>> {
        let received_at = now_ms();
        let keys = self.event_keys;
        self.write(move |c| {
            // One writer: nothing can insert the id between this lookup and the insert.
            let mut existing = c.prepare_cached(&find_event())?;
            let mut insert = c.prepare_cached(
                "INSERT INTO events (event_key, event_id, lead_id, event_type, timestamp, metadata, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                let key = keys.of(&e.event_id);
                let found = match existing.query_row(params![key, e.event_id], event_from_row) {
                    Err(rusqlite::Error::QueryReturnedNoRows) => None,
                    read => Some(readable(read)?),
                };
                out.push(match found {
                    Some(stored) => InsertOutcome::Duplicate(stored),
                    None => {
                        insert.execute(params![
                            key,
                            e.event_id,
                            e.lead_id,
                            e.event_type,
                            e.timestamp,
                            e.metadata,
                            received_at
                        ])?;
                        InsertOutcome::Inserted
                    }
                });
            }
            Ok(out)
        })
        .await
    }

    async fn unprocessed(&self, limit: usize) -> StoreResult<Queued> {
        self.read(move |c| dead_letters::read_queue(c, limit)).await
    }

    async fn apply(&self, events: Vec<StoredEvent>, rules: Arc<Engine>, now: Millis) -> StoreResult<Vec<ScoreChange>> {
        // Conditions (and prices no limit can change) are worked out here, on the caller's
        // thread: the writer thread is what ingest waits for.
        let prepared = events
            .iter()
            .filter(|e| e.event_type != crate::domain::rescore::RESCORE_EVENT_TYPE)
            .map(|e| (e.seq, rules.prepare(e)))
            .collect();
        self.write(move |c| apply::apply(c, &events, &prepared, &rules, now)).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        if !self.writer_alive.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("sqlite writer thread stopped".into()));
        }
        self.still_our_file()?;
        self.writable().await?;
        self.read(|c| {
            let (depth, oldest_received_at) =
                c.query_row("SELECT count(*), min(received_at) FROM events WHERE processed = 0", [], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                })?;
            Ok(QueueStats { depth, oldest_received_at, dead_letters: dead_letters::count(c)? })
        })
        .await
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> StoreResult<()> {
        self.set_aside(letters).await
    }

    async fn dead_letters(&self, after: Option<i64>, limit: usize) -> StoreResult<(Vec<DeadLetter>, u64)> {
        self.list_dead_letters(after.unwrap_or(i64::MIN), limit).await
    }

    async fn retry_dead_letter(&self, id: i64) -> StoreResult<bool> {
        self.end_dead_letter(id, dead_letters::QUEUED).await
    }

    async fn discard_dead_letter(&self, id: i64) -> StoreResult<bool> {
        self.end_dead_letter(id, dead_letters::DISCARDED).await
    }

    async fn leads(&self, query: &LeadQuery) -> StoreResult<Vec<Lead>> {
        let q = query.clone();
        self.read(move |c| {
            // Only the filters in use, so the plan is a plain walk down leads_by_score.
            let mut sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            match (q.min_score, q.max_score) {
                // One score: an equality, so an id bound below seeks within it.
                (Some(min), Some(max)) if min == max => {
                    sql.push_str(" AND score = ?");
                    args.push(min.into());
                }
                (min, max) => {
                    if let Some(min) = min {
                        sql.push_str(" AND score >= ?");
                        args.push(min.into());
                    }
                    if let Some(max) = max {
                        sql.push_str(" AND score <= ?");
                        args.push(max.into());
                    }
                }
            }
            if let Some(after) = &q.id_after {
                sql.push_str(" AND id > ?");
                args.push(after.clone().into());
            }
            if let Some(needle) = q.search_needle() {
                // A literal substring of the lowercased key, no pattern syntax (`sqlite/search.rs`).
                let (condition, value) = search::page_filter(c, &needle)?;
                sql.push_str(" AND ");
                sql.push_str(condition);
                args.push(value.into());
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

    async fn merged_into(&self, lead_id: &str) -> StoreResult<Option<String>> {
        let id = lead_id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT to_id FROM aliases WHERE from_id = ?1")?.query_row([id], |r| r.get(0)).optional()
        })
        .await
    }

    async fn history(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<HistoryEntry>> {
        let (id, limit, offset) = (lead_id.to_string(), page.history_limit as i64, page.history_offset as i64);
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT lead_id, event_id, event_type, old_score, new_score, delta, timestamp, merged_from FROM score_history \
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
                    stage_change: None,
                    merged_from: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn lead_events(&self, lead_id: &str, page: &DetailPage) -> StoreResult<Vec<StoredEvent>> {
        let (id, limit, offset) = (lead_id.to_string(), page.events_limit as i64, page.events_offset as i64);
        self.read(move |c| {
            let mut s = c.prepare_cached(LEAD_EVENTS_PAGE)?;
            let rows = s.query_map(params![id, limit, offset], event_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn rules(&self) -> StoreResult<Vec<Rule>> {
        self.read(rules::list).await
    }

    async fn upsert_rule(&self, rule: RuleInput, now: Millis) -> StoreResult<Rule> {
        self.write(move |c| rules::upsert_base(c, rule, now)).await
    }

    async fn create_rule(&self, rule: RuleDraft, now: Millis) -> StoreResult<Rule> {
        self.write(move |c| rules::create(c, rule, now)).await
    }

    async fn update_rule(&self, id: &str, rule: RuleDraft, now: Millis) -> StoreResult<Option<Rule>> {
        let id = id.to_string();
        self.write(move |c| rules::update(c, &id, rule, now)).await
    }

    async fn delete_rule(&self, id: &str) -> StoreResult<Option<Rule>> {
        let id = id.to_string();
        self.write(move |c| rules::delete(c, &id)).await
    }

    async fn seed_rules(&self, defaults: Vec<RuleInput>, now: Millis) -> StoreResult<bool> {
        self.write(move |c| rules::seed(c, defaults, now)).await
    }

    async fn setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let key = key.to_string();
        let text: Option<String> = self
            .read(move |c| {
                c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()
            })
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Internal(format!("setting does not read: {e}"))))
            .transpose()
    }

    async fn put_setting(&self, key: &str, value: serde_json::Value, now: Millis) -> StoreResult<()> {
        let key = key.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![key, value.to_string(), now])
            .map(drop)
        })
        .await
    }

    async fn decay_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<DecayPage> {
        self.read(move |c| decay::inputs(c, after.as_deref(), limit)).await
    }

    async fn adjustments_pending(&self) -> StoreResult<bool> {
        self.read(decay::pending).await
    }

    async fn webhooks(&self) -> StoreResult<Vec<StoredWebhook>> {
        self.read(webhooks::list).await
    }

    async fn create_webhook(&self, hook: StoredWebhook) -> StoreResult<()> {
        self.write(move |c| webhooks::create(c, &hook)).await
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |c| webhooks::delete(c, &id)).await
    }

    async fn claim_deliveries(&self, now: Millis, until: Millis, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.write(move |c| webhooks::claim(c, now, until, limit)).await
    }

    async fn record_attempt(&self, id: i64, held_until: Millis, attempt: Attempt) -> StoreResult<bool> {
        self.write(move |c| webhooks::record_attempt(c, id, held_until, &attempt)).await
    }

    async fn deliveries(&self, webhook_id: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        let id = webhook_id.to_string();
        self.read(move |c| webhooks::of_hook(c, &id, limit)).await
    }

    async fn redeliver(&self, webhook_id: &str, id: i64, now: Millis) -> StoreResult<bool> {
        let hook = webhook_id.to_string();
        self.write(move |c| webhooks::redeliver(c, &hook, id, now)).await
    }

    async fn prune_deliveries(&self, before: Millis) -> StoreResult<u64> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM deliveries WHERE state <> 0 AND created_at < ?1")?
                .execute([before])
                .map(|n| n as u64)
        })
        .await
    }

    async fn rescore_inputs(&self, after: Option<String>, limit: usize) -> StoreResult<RescorePage> {
        self.read(move |c| rescore::inputs(c, after.as_deref(), limit)).await
    }

    async fn rescore_scan(
        &self,
        engine: Arc<Engine>,
        half_life_days: Option<f64>,
        now: Millis,
        progress: Arc<std::sync::atomic::AtomicU64>,
    ) -> StoreResult<Option<Planned>> {
        // The pass reads on a reader connection while the writer stores the prices it has
        // found so far: two chunks in flight at most. If this call is dropped or fails, the
        // channel closes and the pass stops soon after.
        let (found, mut prices) = tokio::sync::mpsc::channel::<Vec<rescore::Repriced>>(2);
        let pool = self.readers.clone();
        let pass = tokio::task::spawn_blocking(move || {
            pool.with(|c| {
                let emit = |chunk| found.blocking_send(chunk).is_ok();
                let stopped = || found.is_closed();
                rescore::scan(c, &engine, half_life_days, now, &progress, emit, stopped)
            })
        });
        while let Some(chunk) = prices.recv().await {
            let chunk = Arc::new(chunk);
            let mut attempt = 0;
            loop {
                let mine = chunk.clone();
                match self.write(move |c| rescore::reprice(c, &mine)).await {
                    // A writer that is behind takes the chunk a moment later.
                    Err(StoreError::Unavailable(_)) if attempt < REPRICE_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => break other?,
                }
            }
        }
        let planned = pass.await.map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Some(planned.ok_or_else(|| StoreError::Internal("the rescore pass stopped early".into()))?))
    }

    async fn scored_total(&self) -> StoreResult<u64> {
        // One history row per scored event; adjustments are not replayed.
        self.read(|c| {
            c.query_row("SELECT count(*) FROM score_history WHERE event_type NOT LIKE '$%'", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn score_range(&self) -> StoreResult<Option<(i64, i64)>> {
        self.read(|c| {
            c.prepare_cached("SELECT min(score), max(score) FROM leads")?.query_row([], |r| {
                Ok(match (r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?) {
                    (Some(lo), Some(hi)) => Some((lo, hi)),
                    _ => None,
                })
            })
        })
        .await
    }

    async fn events_since(&self, since: Millis) -> StoreResult<u64> {
        self.read(move |c| {
            let mut at =
                c.prepare_cached("SELECT seq, received_at FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
            let (mut lo, mut hi): (i64, i64) =
                c.query_row("SELECT coalesce(min(seq), 0), coalesce(max(seq), -1) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            // The first position whose event arrived at or after `since` (hi + 1: none).
            hi += 1;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match at.query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Millis>(1)?))).optional()? {
                    Some((_, received)) if received >= since => hi = mid,
                    Some((seq, _)) => lo = seq + 1,
                    None => hi = mid,
                }
            }
            c.prepare_cached("SELECT count(*) FROM events WHERE seq >= ?1")?
                .query_row([lo], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn count_searched(&self, query: &LeadQuery) -> StoreResult<u64> {
        let (low, high) = (query.min_score.unwrap_or(i64::MIN), query.max_score.unwrap_or(i64::MAX));
        let (condition, value) = search::count_filter(&query.search_needle().unwrap_or_default());
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT count(*) FROM leads WHERE score >= ?1 AND score <= ?2 AND {condition}"))?
                .query_row(params![low, high, value], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn count_leads(&self, min_score: Option<i64>, max_score: Option<i64>) -> StoreResult<u64> {
        let (low, high) = (min_score.unwrap_or(i64::MIN), max_score.unwrap_or(i64::MAX));
        self.read(move |c| {
            c.prepare_cached("SELECT count(*) FROM leads WHERE score >= ?1 AND score <= ?2")?
                .query_row([low, high], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of the first release, verbatim: what a user's existing file looks like.
    const SCHEMA_1: &str = r#"
        CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, lead_id TEXT NOT NULL,
            event_type TEXT NOT NULL, timestamp INTEGER NOT NULL, metadata TEXT, received_at INTEGER NOT NULL,
            processed INTEGER NOT NULL DEFAULT 0, points INTEGER);
        CREATE INDEX events_unprocessed ON events(seq) WHERE processed = 0;
        CREATE INDEX events_by_lead ON events(lead_id, timestamp DESC, seq DESC);
        CREATE TABLE leads (id TEXT PRIMARY KEY, search_key TEXT NOT NULL, score INTEGER NOT NULL,
            last_event_id TEXT, updated_at INTEGER NOT NULL, last_event_at INTEGER,
            event_count INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX leads_by_score ON leads(score DESC, id ASC);
        CREATE TABLE score_history (id INTEGER PRIMARY KEY, lead_id TEXT NOT NULL, event_id TEXT NOT NULL,
            event_type TEXT NOT NULL, delta INTEGER NOT NULL, old_score INTEGER NOT NULL,
            new_score INTEGER NOT NULL, timestamp INTEGER NOT NULL);
        CREATE INDEX history_by_lead ON score_history(lead_id, id DESC);
        CREATE TABLE rules (event_type TEXT PRIMARY KEY, points INTEGER NOT NULL, is_active INTEGER NOT NULL,
            updated_at INTEGER NOT NULL);
        -- Two scored events (history ids numbered on their own), one still queued.
        INSERT INTO events VALUES (10, 'a', 'l', 'Purchase', 1000, NULL, 1, 1, 100);
        INSERT INTO events VALUES (11, 'b', 'l', 'Page View', 500, '{"page":"/"}', 2, 1, 5);
        INSERT INTO events VALUES (12, 'c', 'l', 'Page View', 2000, NULL, 3, 0, NULL);
        INSERT INTO score_history VALUES (1, 'l', 'a', 'Purchase', 100, 0, 100, 7);
        INSERT INTO score_history VALUES (2, 'l', 'b', 'Page View', 5, 100, 105, 8);
        INSERT INTO leads VALUES ('l', 'l', 105, 'b', 8, 1000, 2, 7);
        INSERT INTO rules VALUES ('Page View', 5, 1, 0);
    "#;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A Page View of lead `l` with this id.
    pub(super) fn event(id: &str) -> NewEvent {
        NewEvent {
            event_id: id.into(),
            lead_id: "l".into(),
            event_type: "Page View".into(),
            timestamp: 1,
            metadata: None,
        }
    }

    /// The first column of every row of `sql`.
    fn column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
        conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    }

    /// The WAL is copied into the database file while the store is open (checkpoints, on a
    /// thread of their own; every 64 pages in tests), not only when it closes.
    #[test]
    fn checkpoints_copy_the_wal_into_the_file_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let store = SqliteStore::open(&path).unwrap();
        let padding = format!("{{\"pad\": \"{}\"}}", "x".repeat(8_000));
        // Back to back, ten events of 8 KB a batch.
        let write = |batches: std::ops::Range<u32>| {
            runtime().block_on(async {
                for batch in batches {
                    let events = (0..10)
                        .map(|i| NewEvent { metadata: Some(padding.clone()), ..event(&format!("e{batch}-{i}")) })
                        .collect();
                    store.insert_events(events).await.unwrap();
                }
            })
        };
        write(0..40);
        // 3.2 MB went in; without checkpoints it would all sit in the WAL until the store closes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < 3_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stays at {} bytes",
                std::fs::metadata(&path).unwrap().len()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let stored: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM events WHERE length(metadata) > 8000", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 400, "every event is in the file");

        // Writes that never pause: the WAL still starts over, so it stays near twice its
        // checkpoint size (64 pages in tests) instead of growing with them (16 MB more).
        write(40..240);
        let wal = std::fs::metadata(dir.path().join("wal.db-wal")).unwrap().len();
        assert!(wal < 4_000_000, "the WAL grew to {wal} bytes");
        drop(store);
    }

    #[test]
    fn a_new_file_gets_the_current_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    #[test]
    fn a_schema_1_file_is_migrated_without_losing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        Connection::open(&path).unwrap().execute_batch(SCHEMA_1).unwrap();

        let store = SqliteStore::open(&path).unwrap();
        let rt = runtime();
        let page = DetailPage::default();
        let history = rt.block_on(store.history("l", &page)).unwrap();
        let summary: Vec<_> = history.iter().map(|h| (h.event_id.as_str(), h.old_score, h.new_score)).collect();
        assert_eq!(summary, [("b", 100, 105), ("a", 0, 100)]);
        let events = rt.block_on(store.lead_events("l", &page)).unwrap();
        let summary: Vec<_> = events.iter().map(|e| (e.event_id.as_str(), e.processed, e.points)).collect();
        assert_eq!(summary, [("c", false, None), ("b", true, Some(5)), ("a", true, Some(100))]);
        assert_eq!(events[1].metadata.as_deref(), Some(r#"{"page":"/"}"#));

        // The queued event is still queued and scores on top of the migrated history.
        let queued = rt.block_on(store.unprocessed(10)).unwrap().events;
        assert_eq!(queued.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["c"]);
        let rules = rt.block_on(store.rules()).unwrap();
        let migrated: Vec<_> =
            rules.iter().map(|r| (r.event_type.as_str(), r.name.as_str(), r.points, r.base)).collect();
        assert_eq!(migrated, [("Page View", "Page View", 5, true)], "each old rule is its type's base rule");
        assert_eq!(rules[0].id.len(), 16, "with an id of its own: {:?}", rules[0].id);
        let engine = Arc::new(Engine::new(&rules));
        let changes = rt.block_on(store.apply(queued, engine, 9)).unwrap();
        assert_eq!(changes.iter().map(|c| c.score).collect::<Vec<_>>(), [110]);

        // Dedupe still knows the migrated ids (now by their keyed hash), and a new one once.
        let outcomes = rt.block_on(store.insert_events(vec![event("a"), event("d"), event("d")])).unwrap();
        let seqs: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                InsertOutcome::Inserted => None,
                InsertOutcome::Duplicate(stored) => Some(stored.as_ref().unwrap().seq),
            })
            .collect();
        assert_eq!(seqs, [Some(10), None, Some(13)], "a is event 10; d is new, then a duplicate of itself");
        drop(store);

        assert_eq!(user_version(&path), SCHEMA_VERSION);
        let conn = Connection::open(&path).unwrap();
        let history_ids: Vec<i64> = column(&conn, "SELECT id FROM score_history ORDER BY id");
        assert_eq!(history_ids, [10, 11, 12], "history rows are keyed by their event's seq");
        let old_index: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'events_by_lead'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old_index, 0);
        let history_index_table: String = conn
            .query_row("SELECT tbl_name FROM sqlite_master WHERE name = 'history_by_lead'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(history_index_table, "score_history", "the index follows the new table, not the set-aside one");
        let leftovers: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('score_history_v1', 'events_v9')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(leftovers, 0);
        let event_indexes: Vec<String> =
            column(&conn, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name");
        assert_eq!(event_indexes, ["events_by_key", "events_queue"], "no index of the ids themselves any more");
    }

    /// Two ids that share a hash are two events: a hit on the key is checked against the id.
    #[test]
    fn ids_sharing_a_key_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collide.db");
        let store = SqliteStore::open(&path).unwrap();
        let shared = store.event_keys.of("x");
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO events (event_key, event_id, lead_id, event_type, timestamp, received_at) \
                 VALUES (?1, 'not-x', 'l', 'Page View', 1, 1)",
                [shared],
            )
            .unwrap();
        let rt = runtime();
        // `x` finds another id under its key: not a duplicate. Its retry is a duplicate of it.
        let outcomes = rt.block_on(store.insert_events(vec![event("x"), event("x")])).unwrap();
        let ids: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                InsertOutcome::Inserted => "inserted".to_string(),
                InsertOutcome::Duplicate(stored) => stored.as_ref().unwrap().event_id.clone(),
            })
            .collect();
        assert_eq!(ids, ["inserted", "x"]);
        let sharing: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM events WHERE event_key = ?1", [shared], |r| r.get(0))
            .unwrap();
        assert_eq!(sharing, 2, "both ids stored under the one key");
    }

    /// Without its secret a file's keys are lost: opened anyway, every redelivery would pass
    /// as new. It is refused, saying why.
    #[test]
    fn a_file_that_lost_its_event_key_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secretless.db");
        let store = SqliteStore::open(&path).unwrap();
        runtime().block_on(store.insert_events(vec![event("a")])).unwrap();
        drop(store);
        Connection::open(&path).unwrap().execute("DELETE FROM event_key_secret", []).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("event-key secret"), "{err}");
    }

    #[test]
    fn a_file_from_a_newer_release_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99; CREATE TABLE events (x);").unwrap();
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("schema version 99") && err.contains("newer Leadscore"), "{err}");
        assert_eq!(user_version(&path), 99);
    }

    #[test]
    fn lead_event_pages_walk_indexes_not_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LEAD_EVENTS_PAGE}"))
            .unwrap()
            .query_map(params!["l", 5, 0], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("COVERING INDEX events_queue"), "{plan}");
        assert!(plan.contains("history_by_lead"), "{plan}");
        assert!(plan.contains("SEARCH score_history USING COVERING INDEX history_by_lead"), "{plan}");
        assert!(!plan.lines().any(|l| l == "SCAN events" || l == "SCAN score_history"), "no full scan:\n{plan}");

        let plan: String =
            conn.query_row(&format!("EXPLAIN QUERY PLAN {}", find_event()), params![1, "x"], |r| r.get(3)).unwrap();
        assert_eq!(plan, "SEARCH events USING INDEX events_by_key (event_key=?)");
    }
}

#[cfg(test)]
mod vanished_file {
    use super::tests::event;
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_refuses_writes_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.db");
        let store = SqliteStore::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(store.insert_events(vec![event("a")])).unwrap();
        std::fs::rename(&path, dir.path().join("moved-away.db")).unwrap();
        let refused = rt.block_on(store.insert_events(vec![event("b")]));
        assert!(matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("was removed")), "{refused:?}");
        assert!(matches!(rt.block_on(store.queue_stats()), Err(StoreError::Unavailable(_))), "health says so");
        // Another file in its place is not this store's either.
        std::fs::write(&path, b"").unwrap();
        let refused = rt.block_on(store.insert_events(vec![event("c")]));
        assert!(matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("was replaced")), "{refused:?}");
        // Moved back: the same file again, writes go on.
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(dir.path().join("moved-away.db"), &path).unwrap();
        rt.block_on(store.insert_events(vec![event("d")])).unwrap();
    }
}

#[cfg(test)]
mod writer_health {
    use super::*;

    #[test]
    fn a_writer_thread_that_died_makes_the_store_unavailable_not_silently_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("dead.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(rt.block_on(store.queue_stats()).is_ok());
        // A bug in a write job panics on the writer thread.
        let outcome = rt.block_on(store.write(|_| -> rusqlite::Result<()> { panic!("a bug in a write job") }));
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
        // The caller hears of it as the thread unwinds, a moment before the thread is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let health = loop {
            let health = rt.block_on(store.queue_stats());
            if health.is_err() || std::time::Instant::now() > deadline {
                break health;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(
            matches!(&health, Err(StoreError::Unavailable(m)) if m.contains("writer thread stopped")),
            "reads still work, but health must not say ok: {health:?}"
        );
    }
}

#[cfg(test)]
mod pending_window {
    use super::*;

    #[test]
    fn the_page_query_uses_the_documented_window() {
        assert!(LEAD_EVENTS_PAGE.contains(&format!("LIMIT {PENDING_WINDOW})")));
    }

    #[test]
    fn an_event_deep_in_the_queue_shows_once_scored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("window.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ev = |id: String, lead: &str| NewEvent {
            event_id: id,
            lead_id: lead.into(),
            event_type: "Page View".into(),
            timestamp: 1,
            metadata: None,
        };
        let mut batch = vec![ev("deep".into(), "x")];
        batch.extend((0..PENDING_WINDOW).map(|i| ev(format!("e{i}"), "crowd")));
        rt.block_on(store.insert_events(batch)).unwrap();
        let page = DetailPage::default();
        assert!(rt.block_on(store.lead_events("x", &page)).unwrap().is_empty(), "behind the window");

        rt.block_on(store.insert_events(vec![ev("recent".into(), "x")])).unwrap();
        let ids = |v: Vec<StoredEvent>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(rt.block_on(store.lead_events("x", &page)).unwrap()), ["recent"]);

        let queued = rt.block_on(store.unprocessed(1)).unwrap().events;
        assert_eq!(queued[0].event_id, "deep");
        rt.block_on(store.seed_rules(crate::domain::scoring::default_rules(), 0)).unwrap();
        let engine = Arc::new(Engine::new(&rt.block_on(store.rules()).unwrap()));
        rt.block_on(store.apply(queued, engine, 2)).unwrap();
        assert_eq!(ids(rt.block_on(store.lead_events("x", &page)).unwrap()), ["recent", "deep"]);
    }
}
