//! WAL checkpoints off the writer's path. SQLite's automatic checkpoint runs inside the commit
//! that crosses its threshold, so one request in a few thousand waited while megabytes of log
//! were copied into the database and synced: the soak's p99 doubled as the file grew. The
//! writer's connection has automatic checkpoints off (`writer::open_writer`); this thread, on a
//! connection of its own, copies the log into the database every `EVERY`, PASSIVE: it never
//! waits for, nor holds up, the writer or the readers. Should writes ever outrun it, a log past
//! `CEILING_FRAMES` gets a RESTART checkpoint instead, which waits for the writer to finish its
//! transaction, so the log cannot grow without bound. When the store is dropped, it stops.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How often the log is copied into the database.
pub const EVERY: Duration = Duration::from_millis(500);
/// Log frames (pages) past which the checkpoint waits for the writer: 128 K pages, 512 MB.
const CEILING_FRAMES: i64 = 131_072;

/// Runs until `stop`'s sender is dropped.
pub fn run(path: &Path, stop: Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut restart = false;
    loop {
        match stop.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if conn.is_none() {
            conn = open(path).map_err(|e| tracing::debug!(error = %e, "sqlite checkpoints: cannot open yet")).ok();
        }
        let Some(c) = &conn else { continue };
        let mode = if restart { "RESTART" } else { "PASSIVE" };
        match c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1)) {
            Ok(log_frames) => restart = log_frames > CEILING_FRAMES,
            Err(e) => {
                // A full disk, a file being replaced: the writer reports those; try again later
                // on a fresh connection.
                tracing::debug!(error = %e, mode, "sqlite checkpoints: failed; trying again");
                conn = None;
            }
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    // Never creates the file: a removed one stays removed (the store refuses writes then).
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0;")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_copied_in_the_background_and_the_thread_stops_with_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.db");
        let writer = super::super::writer::open_writer(&path, true).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let p = path.clone();
        let thread = std::thread::spawn(move || run(&p, stopped));
        for _ in 0..50 {
            writer.execute("INSERT INTO t VALUES (zeroblob(65536))", []).unwrap();
        }
        // The writer never checkpoints by itself (and 800 pages are far below SQLite's own
        // threshold anyway): the pages reach the database file only through the thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let reader = Connection::open(&path).unwrap();
        loop {
            let copied: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(copied, 50);
            let db_bytes = std::fs::metadata(&path).unwrap().len();
            if db_bytes > 50 * 65536 {
                break; // the pages are in the database file itself
            }
            assert!(std::time::Instant::now() < deadline, "no checkpoint within 30 s ({db_bytes} bytes)");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stop);
        thread.join().unwrap();
    }
}
