//! Backup and restore of the embedded store, and the lock that says a server is using a file.
//!
//! A backup is taken with SQLite's online backup API in a single step: one read transaction
//! copies every page, so the copy is the database as of one instant, while the server goes
//! on writing (in WAL mode readers never block the writer). A restore refuses a file a
//! running server holds, and replaces a stopped one whole, stale WAL included.

use super::SCHEMA_VERSION;
use rusqlite::{Connection, OpenFlags};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a backup or restore copied, for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    pub events: i64,
    pub leads: i64,
    pub bytes: u64,
}

/// Held by a running server for the life of the process: its database file is in use.
pub struct InUse {
    _file: File,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl InUse {
    /// Marks `db` as in use by this process, or says who holds it. (An advisory lock the OS
    /// releases when the process ends, however it ends.)
    pub fn claim(db: &Path) -> Result<Self, String> {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(db))
            .map_err(|e| format!("cannot create {}: {e}", lock_path(db).display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(format!("{} is in use by a running Leadscore server", db.display())),
            Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", lock_path(db).display())),
        }
    }
}

/// Copies the database at `db` to `to` (which must not exist) as of one instant.
pub fn backup(db: &Path, to: &Path) -> Result<Copied, String> {
    if to.exists() {
        return Err(format!("{} already exists; choose a new file", to.display()));
    }
    let source = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    source.busy_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    copy(&source, to)?;
    summarize(to)
}

/// Replaces the database at `db` with the backup `from`, unless a server is using it; an
/// existing database is only replaced with `force`.
pub fn restore(from: &Path, db: &Path, force: bool) -> Result<Copied, String> {
    let _in_use = InUse::claim(db)?;
    if db.exists() && !force {
        return Err(format!("{} exists; add --force to replace it with the backup", db.display()));
    }
    let checked = summarize(from)?;
    let staging = db.with_extension("restoring");
    let _ = std::fs::remove_file(&staging);
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", from.display()))?;
    copy(&source, &staging)?;
    // The old file's WAL and shared memory belong to the old contents: they go with it.
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    std::fs::rename(&staging, db).map_err(|e| format!("cannot move the restored file into place: {e}"))?;
    Ok(checked)
}

/// Every page of `source`, in one step (one read transaction), into a new file at `to`.
fn copy(source: &Connection, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut target = Connection::open(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let copied = (|| {
        use rusqlite::backup::{Backup, StepResult};
        let backup = Backup::new(source, &mut target).map_err(|e| e.to_string())?;
        // -1: every page in this one step, so one read transaction sees one instant.
        for _ in 0..100 {
            match backup.step(-1).map_err(|e| e.to_string())? {
                StepResult::Done => return Ok(()),
                // The source was busy starting the read: try again shortly.
                StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(50)),
                StepResult::More => {}
                _ => {}
            }
        }
        Err("the database stayed busy".to_string())
    })()
    .map_err(|e| format!("copy failed: {e}"));
    drop(target);
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}

/// Checks a copy (integrity, a schema this build knows) and counts what it holds.
fn summarize(file: &Path) -> Result<Copied, String> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if integrity != "ok" {
        return Err(format!("{} is damaged: {integrity}", file.display()));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!("{} has schema {version}, newer than this build knows ({SCHEMA_VERSION})", file.display()));
    }
    let count = |table: &str| -> Result<i64, String> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| format!("{} is not a Leadscore database: {e}", file.display()))
    };
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(Copied { events: count("events")?, leads: count("leads")?, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewEvent;
    use crate::service::store::{sqlite::SqliteStore, Store};

    #[test]
    fn a_backup_restores_into_a_new_place_and_a_held_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let store = SqliteStore::open(&db).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let events = (0..10)
            .map(|i| NewEvent {
                event_id: format!("e{i}"),
                lead_id: "l".into(),
                event_type: "Page View".into(),
                timestamp: 1,
                metadata: None,
            })
            .collect();
        rt.block_on(store.insert_events(events)).unwrap();
        let held = InUse::claim(&db).unwrap();

        let copy = dir.path().join("copy.db");
        assert_eq!(backup(&db, &copy).unwrap().events, 10, "taken while the store is open and held");
        assert!(backup(&db, &copy).unwrap_err().contains("already exists"));
        let err = restore(&copy, &db, true).unwrap_err();
        assert!(err.contains("in use by a running Leadscore server"), "{err}");
        drop(held);

        let elsewhere = dir.path().join("new").join("restored.db");
        assert_eq!(restore(&copy, &elsewhere, false).unwrap().events, 10);
        assert!(restore(&copy, &elsewhere, false).unwrap_err().contains("--force"));
        assert_eq!(restore(&copy, &elsewhere, true).unwrap().events, 10);
        let reopened = SqliteStore::open(&elsewhere).unwrap();
        assert_eq!(rt.block_on(reopened.unprocessed(100)).unwrap().events.len(), 10);

        std::fs::write(dir.path().join("junk.db"), b"not a database").unwrap();
        assert!(restore(&dir.path().join("junk.db"), &dir.path().join("x.db"), false).is_err());
    }
}
