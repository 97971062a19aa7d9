//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
//! commit, and every ingest request queued behind it, waits while tens of MB of WAL are copied
//! into the database file and fsynced. The bigger the file, the more scattered those pages and
//! the longer the wait: the soak saw POST p99 double as the file grew. Here a thread of its own
//! copies the WAL back a little at a time with PASSIVE checkpoints, which never block the
//! writer or readers. Only a WAL past `FORCE_AT_PAGES` (readers kept it from being reset for a
//! long time) gets a RESTART checkpoint, which briefly holds writers back.

use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// How often the thread looks for WAL frames to copy back.
const EVERY: Duration = Duration::from_millis(500);
/// WAL size (in 4 KB pages, 256 MB) past which a checkpoint may hold writers back.
const FORCE_AT_PAGES: i64 = 65_536;
/// The writer's own automatic checkpoint stays on as a backstop (should this thread fail to
/// open), at a threshold this thread never lets the WAL reach.
pub const WRITER_AUTOCHECKPOINT_PAGES: i64 = 2 * FORCE_AT_PAGES;

/// Runs until the returned sender is dropped (with the store).
pub fn spawn(path: PathBuf) -> std::io::Result<mpsc::Sender<()>> {
    let (keep, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || run(&path, &stopped))?;
    Ok(keep)
}

fn run(path: &std::path::Path, stopped: &mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut last_error: Option<String> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        if conn.is_none() {
            conn = open(path).map_err(|e| report(&mut last_error, e)).ok();
        }
        let Some(c) = &conn else { continue };
        match checkpoint(c) {
            Ok(()) => last_error = None,
            // A full or failing disk: the writer reports that to health; try again later.
            Err(e) => report(&mut last_error, e),
        }
    }
}

fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")?;
    Ok(conn)
}

/// One pass: copy back what no reader still needs; force it only when the WAL is huge.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let (_busy, wal_pages, _copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if wal_pages > FORCE_AT_PAGES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// Logs an error once, not every half second while it lasts.
fn report(last: &mut Option<String>, e: rusqlite::Error) {
    let text = e.to_string();
    if last.as_deref() != Some(text.as_str()) {
        tracing::warn!(error = %text, "sqlite: background checkpoint failed; retrying");
        *last = Some(text);
    }
}
