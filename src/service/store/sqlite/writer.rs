//! The one writer thread. It folds whatever requests are waiting into one transaction (group
//! commit: many requests share one fsync), runs each inside its own savepoint so one failing
//! request cannot undo another's rows, and learns from each commit whether writes work:
//! health reads that (`Failure`), in the order transactions happened. The WAL is copied into
//! the database file on a thread of its own (`Checkpointer`), so writes never wait for it.

use super::{classify, file_identity, unavailable};
use crate::service::store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound on requests folded into one transaction, so one commit never grows unbounded.
pub const MAX_JOBS_PER_COMMIT: usize = 512;
/// The WAL is copied into the database file once it holds this many pages (64 MB), as
/// SQLite's automatic checkpoint would (`wal_autocheckpoint`, which other connections keep).
/// Tests use a small WAL, to see checkpoints happen.
const CHECKPOINT_FRAMES: i32 = if cfg!(test) { 64 } else { 16_384 };

/// Work for the writer thread: it runs inside the shared transaction.
pub type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;
/// Delivers a job's result once the commit outcome is known.
pub type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What a job did inside the transaction.
pub struct Done {
    pub reply: Reply,
    /// Set when it failed because of the disk (full, read-only, I/O), not its data.
    pub disk_error: Option<String>,
}

/// Why writes fail right now; `None` while they work.
pub type Failure = Mutex<Option<String>>;

/// Wraps a request for the writer: `f` runs in a savepoint, `send` gets the outcome.
pub fn job<T: Send + 'static>(
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    send: impl FnOnce(StoreResult<T>) + Send + 'static,
) -> Job {
    Box::new(move |conn| {
        let result = in_savepoint(conn, f).map_err(classify);
        let disk_error = match &result {
            Err(StoreError::Unavailable(why)) => Some(why.clone()),
            _ => None,
        };
        let reply: Reply = Box::new(move |commit| {
            send(match (result, commit) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            })
        });
        Done { reply, disk_error }
    })
}

/// The writer's connection: WAL, `synchronous = FULL`. `create`: the first open may create
/// the file; a reopen must not (a removed file would come back empty).
pub fn open_writer(path: &Path, create: bool) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| unavailable(path, e))?;
    // temp_store = MEMORY: each request's savepoint journals pages it re-dirties; in a
    // temp file that doubled the bytes written per commit.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
         PRAGMA busy_timeout = 5000; PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY; \
         PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|e| unavailable(path, e))?;
    Ok(conn)
}

/// Where the thread writes: the file it opened, and that file's identity.
pub struct Target {
    pub path: PathBuf,
    pub identity: Option<(u64, u64)>,
}

pub fn run(conn: Connection, jobs: mpsc::Receiver<Job>, target: &Target, failure: &Failure) {
    let wal_frames = AtomicI32::new(0);
    // Declared after `wal_frames`, so closed before it: the WAL hook points at it.
    let mut conn = conn;
    watch_wal(&conn, &wal_frames);
    let checkpointer = Checkpointer::start(&target.path);
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
            // as unavailable (with this reason) and nothing was written.
            tracing::error!(error = %e, "sqlite: cannot begin transaction");
            *failure.lock().unwrap() = Some(e.to_string());
            drop(batch);
            reopen_after(&e, &mut conn, target, &wal_frames);
            continue;
        }
        let before = conn.total_changes();
        let mut replies = Vec::with_capacity(batch.len());
        let mut disk_error = None;
        for job in batch {
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a full disk, an I/O error): the
                // rest would each commit on their own. They are dropped unrun instead.
                *failure.lock().unwrap() = disk_error.clone().or(Some("the transaction was rolled back".into()));
                continue;
            }
            let done = job(&conn);
            disk_error = disk_error.or(done.disk_error);
            replies.push(done.reply);
        }
        let commit = if conn.is_autocommit() {
            Err(disk_error.clone().unwrap_or_else(|| "the transaction was rolled back".into()))
        } else {
            let begun = Instant::now();
            let committed = conn.execute_batch("COMMIT");
            crate::service::metrics::sqlite_commit(begun.elapsed());
            committed.map_err(|e| {
                tracing::error!(error = %e, "sqlite: commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                reopen_after(&e, &mut conn, target, &wal_frames);
                e.to_string()
            })
        };
        // Only a commit that wrote something says writes work again.
        match (&commit, &disk_error) {
            (Err(e), _) => *failure.lock().unwrap() = Some(e.clone()),
            (Ok(()), Some(e)) => *failure.lock().unwrap() = Some(e.clone()),
            (Ok(()), None) if conn.total_changes() > before => *failure.lock().unwrap() = None,
            (Ok(()), None) => {}
        }
        for reply in replies {
            reply(commit.clone());
        }
        // Asked again after each commit until the WAL starts over. It starts over only once
        // a checkpoint has copied all of it: under writes that never pause, the thread's
        // copy is always behind, so past twice the size the writer copies the rest itself
        // (little, after the thread's pass) and the next transaction starts the WAL over.
        let frames = wal_frames.load(Ordering::Relaxed);
        if frames >= CHECKPOINT_FRAMES {
            match &checkpointer {
                Some(checkpointer) if frames < 2 * CHECKPOINT_FRAMES => checkpointer.ask(),
                _ => checkpoint(&conn),
            }
        }
    }
}

/// Checkpoints on a connection and thread of their own. SQLite's automatic checkpoint runs
/// inside the commit that fills the WAL, and every write arriving meanwhile waits: in a soak
/// that was 2–3 % of the time, in stalls growing with the file (BENCHMARKS.md).
struct Checkpointer {
    asks: mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// `None` if the connection or thread cannot be had: the writer checkpoints itself.
    fn start(path: &Path) -> Option<Self> {
        let conn =
            open_writer(path, false).map_err(|e| tracing::warn!(error = %e, "sqlite: no checkpoint thread")).ok()?;
        // One ask waits at most: asks during a checkpoint fold into one more.
        let (asks, asked) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    checkpoint(&conn);
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "sqlite: no checkpoint thread"))
            .ok()?;
        Some(Self { asks })
    }

    fn ask(&self) {
        let _ = self.asks.try_send(());
    }
}

/// Has SQLite report the WAL's size in pages after each commit into `frames`. This replaces
/// the automatic checkpoint, which would run inside the commit (`Checkpointer`).
fn watch_wal(conn: &Connection, frames: &AtomicI32) {
    use rusqlite::ffi;
    use std::os::raw::{c_char, c_int, c_void};
    unsafe extern "C" fn after_commit(arg: *mut c_void, _: *mut ffi::sqlite3, _: *const c_char, pages: c_int) -> c_int {
        // SAFETY: `arg` is the `AtomicI32` given below, which outlives the connection (`run`).
        unsafe { (*(arg as *const AtomicI32)).store(pages, Ordering::Relaxed) };
        ffi::SQLITE_OK
    }
    // SAFETY: the handle is this open connection's; `frames` outlives it (see `run`).
    unsafe {
        ffi::sqlite3_wal_hook(conn.handle(), Some(after_commit), frames as *const AtomicI32 as *mut c_void);
    }
}

/// Copies the WAL into the database file without waiting for readers or the writer
/// (PASSIVE, as the automatic checkpoint does): what they still need is left for a later
/// try. A failure loses nothing (the WAL keeps the pages), so it is only logged.
fn checkpoint(conn: &Connection) {
    let begun = Instant::now();
    let done = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
    crate::service::metrics::sqlite_checkpoint(begun.elapsed());
    match done {
        Ok(()) => {}
        // The other checkpointer (thread or writer) is at it.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
        Err(e) => tracing::warn!(error = %e, "sqlite: checkpoint failed; the WAL keeps the pages"),
    }
}

pub fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    // Cached statements: a single-event request is one insert, so parsing these two for
    // every job would be most of its SQL work.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            }
            Err(e)
        }
    }
}

/// After a read-only or I/O error a connection can stay broken even once the file is
/// writable again; a fresh one sees the file as it is now, if it is still the same file.
/// (A full disk or a lock does not break the connection: it is kept.)
/// The fresh connection reports its WAL's size into `frames` too.
fn reopen_after(e: &rusqlite::Error, conn: &mut Connection, target: &Target, frames: &AtomicI32) {
    use rusqlite::ErrorCode::*;
    if !matches!(e.sqlite_error_code(), Some(ReadOnly | SystemIoFailure | CannotOpen)) {
        return;
    }
    if file_identity(&target.path) != target.identity {
        return; // removed or replaced: writes are refused (`still_our_file`), never redirected
    }
    match open_writer(&target.path, false) {
        Ok(fresh) => {
            *conn = fresh;
            watch_wal(conn, frames);
        }
        Err(e) => tracing::warn!(error = %e, "sqlite: cannot reopen the database file yet"),
    }
}

/// Whether a fresh connection can write a modest batch's worth (256 KB) to the file now,
/// in its own transaction (never one that carries real requests). Bounded in time.
pub async fn probe(target: &Target) -> bool {
    let path = target.path.clone();
    let attempt = tokio::task::spawn_blocking(move || -> StoreResult<()> {
        let conn = open_writer(&path, false)?;
        conn.execute(
            "INSERT OR REPLACE INTO write_probe (id, at, pad) VALUES (1, ?1, zeroblob(262144))",
            [chrono::Utc::now().timestamp_millis()],
        )
        .map(drop)
        .map_err(classify)
    });
    matches!(tokio::time::timeout(Duration::from_secs(5), attempt).await, Ok(Ok(Ok(()))))
}
