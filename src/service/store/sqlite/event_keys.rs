//! How an event is found by its `eventId` for dedupe (schema 10). The ids tracking SDKs send
//! are random UUIDs, so a B-tree of the ids themselves takes each insert at a random place,
//! and every commit rewrites most of its pages: ~45 bytes an entry. The events table indexes a
//! 64-bit keyed hash of the id instead (~17 bytes an entry: a third of the pages to rewrite)
//! and compares the id itself on a hit, so two ids with one hash stay two events.
//!
//! The hash is SipHash-1-3 keyed with a secret made for each database file, so ids cannot be
//! crafted to share a key (which would turn each lookup into a walk over all of them); the
//! secret travels with the file (backups included). Not `std`'s hasher: its algorithm may
//! change between Rust releases, and these keys are on disk.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

#[derive(Clone, Copy)]
pub struct EventKeys {
    k0: u64,
    k1: u64,
}

impl EventKeys {
    /// The file's secret, if it has one.
    pub fn load(c: &Connection) -> rusqlite::Result<Option<Self>> {
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS event_key_secret (id INTEGER PRIMARY KEY CHECK (id = 1), \
             k0 INTEGER NOT NULL, k1 INTEGER NOT NULL);",
        )?;
        c.query_row("SELECT k0, k1 FROM event_key_secret WHERE id = 1", [], |r| {
            Ok(Self { k0: r.get::<_, i64>(0)? as u64, k1: r.get::<_, i64>(1)? as u64 })
        })
        .optional()
    }

    /// A new secret for the file (inside the caller's transaction).
    pub fn create(c: &Connection) -> rusqlite::Result<Self> {
        let (k0, k1): (u64, u64) = (rand::random(), rand::random());
        c.execute("INSERT INTO event_key_secret (id, k0, k1) VALUES (1, ?1, ?2)", [k0 as i64, k1 as i64])?;
        Ok(Self { k0, k1 })
    }

    /// The file's secret, made if it has none.
    pub fn load_or_create(c: &Connection) -> rusqlite::Result<Self> {
        match Self::load(c)? {
            Some(keys) => Ok(keys),
            None => Self::create(c),
        }
    }

    /// The index key of an event id. A numbered id (`numbered`) is keyed by its series'
    /// hash with the number in the low 32 bits: a rescore's million adjustments, numbered in
    /// the order they are inserted, then fill one stretch of the index in order instead of
    /// rewriting pages all over it (ten times the time). The id is still compared in full on
    /// a hit, and within a series each key has one such id (series share a stretch only when
    /// their keyed hashes share 32 bits), so crafted ids gain nothing.
    pub fn of(&self, event_id: &str) -> i64 {
        match numbered(event_id) {
            Some((series, n)) => ((self.hash(series) & !0xFFFF_FFFF) | n as u64) as i64,
            None => self.hash(event_id) as i64,
        }
    }

    fn hash(&self, text: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(text.as_bytes());
        h.finish()
    }

    /// `event_key(id)` in SQL on this connection, for the migration that fills the column.
    pub fn register(&self, c: &Connection) -> rusqlite::Result<()> {
        let keys = *self;
        c.create_scalar_function(
            "event_key",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| Ok(keys.of(&ctx.get::<String>(0)?)),
        )
    }
}

/// `$rescore:<series>#<n>` (`domain::rescore_scan::planned_event`): the series (lowercase hex
/// digits and dots) and the number, written without leading zeros, below 2^32.
fn numbered(event_id: &str) -> Option<(&str, u32)> {
    let rest = event_id.strip_prefix("$rescore:")?;
    let (series, n) = rest.split_once('#')?;
    let series_ok = !series.is_empty() && series.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'.'));
    let n_ok =
        !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    if !(series_ok && n_ok) {
        return None;
    }
    Some((&event_id[..event_id.len() - n.len() - 1], n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_keeps_its_secret_and_files_differ() {
        let a = Connection::open_in_memory().unwrap();
        let first = EventKeys::load_or_create(&a).unwrap();
        let again = EventKeys::load_or_create(&a).unwrap();
        assert_eq!(first.of("evt-1"), again.of("evt-1"), "the same file, the same keys");
        assert_ne!(first.of("evt-1"), first.of("evt-2"));
        let b = Connection::open_in_memory().unwrap();
        let other = EventKeys::load_or_create(&b).unwrap();
        assert_ne!(first.of("evt-1"), other.of("evt-1"), "another file, another secret");
    }

    #[test]
    fn numbered_ids_are_keyed_in_order_and_one_to_one() {
        let c = Connection::open_in_memory().unwrap();
        let keys = EventKeys::load_or_create(&c).unwrap();
        let (a, b) = (keys.of("$rescore:19ab.7f#41"), keys.of("$rescore:19ab.7f#42"));
        assert_eq!(b, a + 1, "consecutive numbers, consecutive keys");
        assert_ne!(keys.of("$rescore:19ab.7e#42") >> 32, b >> 32, "another series, another stretch");
        for unnumbered in
            ["$rescore:19ab.7f#042", "$rescore:19ab:lead-1", "$rescore:19ab#", "$rescore:ZZ#1", "$rescore:#1"]
        {
            assert_eq!(numbered(unnumbered), None, "{unnumbered}");
            assert_eq!(keys.of(unnumbered) as u64, keys.hash(unnumbered), "{unnumbered}");
        }
        assert_eq!(numbered("$rescore:ab.1#4294967295"), Some(("$rescore:ab.1", u32::MAX)));
        assert_eq!(numbered("$rescore:ab.1#4294967296"), None, "beyond 32 bits");
    }

    #[test]
    fn sql_computes_the_same_key() {
        let c = Connection::open_in_memory().unwrap();
        let keys = EventKeys::load_or_create(&c).unwrap();
        keys.register(&c).unwrap();
        let in_sql: i64 = c.query_row("SELECT event_key('ünïcode-id')", [], |r| r.get(0)).unwrap();
        assert_eq!(in_sql, keys.of("ünïcode-id"));
    }

    /// SipHash-1-3 as published (key 00..0f; values from an independent implementation checked
    /// against the reference vectors), so a dependency update that changed the hash, and
    /// with it every key on disk, fails here rather than silently admitting duplicates.
    #[test]
    fn the_hash_is_sip_1_3() {
        let keys = EventKeys { k0: 0x0706050403020100, k1: 0x0f0e0d0c0b0a0908 };
        assert_eq!(keys.of("") as u64, 0xabac0158050fc4dc);
        assert_eq!(keys.of("evt-1001") as u64, 0xbebb5b679a7bd584);
        let bytes: Vec<u8> = (0..15).collect();
        assert_eq!(keys.of(std::str::from_utf8(&bytes).unwrap()) as u64, 0xd320d86d2a519956);
    }
}
