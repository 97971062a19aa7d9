//! The embedded store's layout, and how a file an older release wrote is brought up to date.

use super::event_keys::EventKeys;
use rusqlite::Connection;

/// Bumped whenever the layout changes; `prepare_schema` brings older files up to date on open.
pub const SCHEMA_VERSION: i64 = 10;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    -- Schema 10: a keyed hash of event_id, indexed for dedupe in place of the id itself
    -- (`event_keys.rs`); unique together with event_id, which `insert_events` checks.
    event_key   INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    lead_id     TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    metadata    TEXT,
    received_at INTEGER NOT NULL,
    -- 0 queued, 1 scored, 2 dead-lettered, 3 discarded (see sqlite/dead_letters.rs)
    processed   INTEGER NOT NULL DEFAULT 0,
    points      INTEGER,
    -- Schema 5: which rules matched and what each added (JSON), once scored.
    matches     TEXT
);
-- The durable queue, in ingest order. It carries lead_id so a lead's page can pick its
-- not-yet-scored events out of the queue without touching the table. There is deliberately no
-- full index of events by lead: that was a random B-tree insert per event, the single most
-- expensive write at ingest, and it grew with the data. Scored events are found through
-- score_history instead.
CREATE INDEX IF NOT EXISTS events_queue ON events(seq, lead_id) WHERE processed = 0;
-- (`events_by_key` on event_key is created after any migration has filled the table: see
-- `EVENTS_BY_KEY`.)

-- Clustered by id: one B-tree fewer to update per score change.
CREATE TABLE IF NOT EXISTS leads (
    id            TEXT PRIMARY KEY,
    search_key    TEXT NOT NULL,
    score         INTEGER NOT NULL,
    last_event_id TEXT,
    updated_at    INTEGER NOT NULL,
    last_event_at INTEGER,
    event_count   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    -- Schema 8: the traits of its Identify events (JSON), once it has any.
    profile       TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leads_by_score ON leads(score DESC, id ASC);

-- Schema 9: a trigram index of the leads' search keys (id, email, name, company), so that a
-- search of 3 characters or more finds its leads without reading them all (`sqlite/search.rs`).
-- `leads` has no rowid, so each lead gets a document number here; the index holds no text of
-- its own (contentless). Case sensitive: keys and searches are lowercased already, so it
-- compares exactly as instr() does. Kept in step by `search::reindex` once per transaction
-- (schema 10; schema 9 used triggers, whose per-row statement journals slowed scoring tenfold).
CREATE TABLE IF NOT EXISTS lead_search_ids (doc INTEGER PRIMARY KEY, lead_id TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS lead_search
    USING fts5(search_key, content = '', contentless_delete = 1, tokenize = 'trigram case_sensitive 1');
DROP TRIGGER IF EXISTS lead_search_insert;
DROP TRIGGER IF EXISTS lead_search_update;
DROP TRIGGER IF EXISTS lead_search_delete;

-- One row per applied event, keyed by the event's seq: the worker applies in seq order, so
-- this appends, and `id` joins back to the event (metadata, timestamp) for a lead's event log.
-- The events table's processed flag (flipped in the same transaction) makes it once-only.
CREATE TABLE IF NOT EXISTS score_history (
    id         INTEGER PRIMARY KEY,
    lead_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event_type TEXT NOT NULL,
    delta      INTEGER NOT NULL,
    old_score  INTEGER NOT NULL,
    new_score  INTEGER NOT NULL,
    timestamp  INTEGER NOT NULL,
    -- Schema 8: the lead this change merged in (identity merge), if it did.
    merged_from TEXT
);
CREATE INDEX IF NOT EXISTS history_by_lead ON score_history(lead_id, id DESC);

-- Schema 8: leads merged into others (identity merge): events for `from_id` are credited to
-- `to_id`, and a read of it is sent there. Chains are kept flat (no `to_id` is a `from_id`).
CREATE TABLE IF NOT EXISTS aliases (
    from_id   TEXT PRIMARY KEY,
    to_id     TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    merged_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_target ON aliases(to_id);

-- Schema 5: several rules per event type, with conditions (JSON) and an optional limit.
-- `base` marks the type's base rule, the one the old `POST /api/rules` upserts: one per type.
CREATE TABLE IF NOT EXISTS rules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    points      INTEGER NOT NULL,
    is_active   INTEGER NOT NULL,
    conditions  TEXT NOT NULL DEFAULT '[]',
    limit_count INTEGER,
    limit_per   TEXT,
    base        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rules_base ON rules(event_type) WHERE base = 1;
-- Schema 6: settings the service keeps (the stage ladder), as JSON.
CREATE TABLE IF NOT EXISTS settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
-- How many events each limited rule has scored per lead and window (`apply.rs`).
CREATE TABLE IF NOT EXISTS rule_usage (
    lead_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    per     TEXT NOT NULL,
    period  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (lead_id, rule_id, per, period)
) WITHOUT ROWID;

-- Schema 3: access control (see accounts.rs). New tables only, so a schema 2 file is brought
-- up to date by creating them.
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    session_epoch INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash    TEXT PRIMARY KEY,
    data       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE TABLE IF NOT EXISTS audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after  TEXT,
    ip     TEXT
);

-- Schema 4: one row health rewrites to learn whether writes work again after they failed.
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, pad BLOB);
-- Events the worker set aside (their `processed` is 2) and why.
CREATE TABLE IF NOT EXISTS dead_letters (
    seq      INTEGER PRIMARY KEY,
    event_id TEXT,
    lead_id  TEXT,
    error    TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at  INTEGER NOT NULL,
    raw      TEXT NOT NULL
);

-- Schema 7: webhook subscriptions, and the outbox of their deliveries (`sqlite/webhooks.rs`).
CREATE TABLE IF NOT EXISTS webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- state: 0 pending (sent at next_at), 1 delivered, 2 failed (given up).
CREATE TABLE IF NOT EXISTS deliveries (
    id           INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    webhook_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER,
    last_error   TEXT,
    next_at      INTEGER,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_at) WHERE state = 0;
CREATE INDEX IF NOT EXISTS deliveries_by_hook ON deliveries(webhook_id, id DESC);
"#;

/// Schema 1 (the first release) kept a full `events_by_lead` index and numbered history rows
/// on their own. Its history table and indexes are set aside, `SCHEMA` creates the current
/// ones, and the rows come back renumbered by event seq; the old index goes.
const MIGRATE_1_TO_2_SET_ASIDE: &str = r#"
ALTER TABLE score_history RENAME TO score_history_v1;
DROP INDEX IF EXISTS history_by_lead;
DROP INDEX IF EXISTS events_by_lead;
DROP INDEX IF EXISTS events_unprocessed;
"#;
const MIGRATE_1_TO_2_MOVE_BACK: &str = r#"
INSERT INTO score_history (id, lead_id, event_id, event_type, delta, old_score, new_score, timestamp)
    SELECT e.seq, h.lead_id, h.event_id, h.event_type, h.delta, h.old_score, h.new_score, h.timestamp
    FROM score_history_v1 h JOIN events e ON e.event_id = h.event_id ORDER BY h.id;
DROP TABLE score_history_v1;
"#;

/// Schema 4 and before: one rule per event type, keyed by it. The table is set aside before
/// `SCHEMA` creates the new one, and each old rule comes back as its type's base rule.
const MIGRATE_TO_5_SET_ASIDE: &str = "ALTER TABLE rules RENAME TO rules_v4;";
const MIGRATE_TO_5_MOVE_BACK: &str = r#"
INSERT INTO rules (id, name, event_type, points, is_active, base, created_at, updated_at)
    SELECT lower(hex(randomblob(8))), event_type, event_type, points, is_active, 1, updated_at, updated_at
    FROM rules_v4 ORDER BY event_type;
DROP TABLE rules_v4;
"#;

/// The dedupe index (schema 10). Created after the events of an older file are back, so the
/// copy appends and the index is built once, sorted, instead of taking a random insert per event.
const EVENTS_BY_KEY: &str = "CREATE INDEX IF NOT EXISTS events_by_key ON events(event_key);";

/// Schema 9 and before: a UNIQUE index of the event ids themselves, which only a new table
/// can drop. The events are set aside before `SCHEMA` creates the new table, and come back
/// with the same seq and their keys (`event_key()` is registered from `EventKeys`).
const MIGRATE_TO_10_SET_ASIDE: &str = "ALTER TABLE events RENAME TO events_v9; DROP INDEX IF EXISTS events_queue;";
const MIGRATE_TO_10_MOVE_BACK: &str = r#"
INSERT INTO events (seq, event_key, event_id, lead_id, event_type, timestamp, metadata, received_at, processed, points, matches)
    SELECT seq, event_key(event_id), event_id, lead_id, event_type, timestamp, metadata, received_at, processed, points, matches
    FROM events_v9 ORDER BY seq;
DROP TABLE events_v9;
"#;

/// Schema 9: every lead a file already holds, into the search index.
const INDEX_EXISTING_LEADS: &str = r#"
INSERT OR IGNORE INTO lead_search_ids (lead_id) SELECT id FROM leads ORDER BY id;
INSERT INTO lead_search (rowid, search_key)
    SELECT i.doc, l.search_key FROM lead_search_ids i JOIN leads l ON l.id = i.lead_id;
"#;

/// Creates the schema, or brings a file written by an older release up to date, in one
/// transaction: a crash mid-migration leaves the file as it was. Returns the file's event keys.
pub fn prepare_schema(conn: &mut Connection) -> Result<EventKeys, String> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the file has schema version {version}, written by a newer Leadscore; this build knows up to {SCHEMA_VERSION}"
        ));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
    let has_events: bool = tx
        .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    // Schema 1 never set user_version: version 0 with tables present means schema 1.
    let from_schema_1 = version < 2 && has_events;
    let history_before = if from_schema_1 { Some(rows(&tx, "score_history")?) } else { None };
    if from_schema_1 {
        tx.execute_batch(MIGRATE_1_TO_2_SET_ASIDE).map_err(|e| format!("migrating schema 1 to 2: {e}"))?;
    }
    let has_column = |table: &str, column: &str| -> Result<bool, String> {
        tx.query_row("SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| r.get(0))
            .map_err(|e| e.to_string())
    };
    let rules_before_5 = has_column("rules", "event_type")? && !has_column("rules", "id")?;
    if rules_before_5 {
        tx.execute_batch(MIGRATE_TO_5_SET_ASIDE).map_err(|e| format!("migrating rules to schema 5: {e}"))?;
    }
    if has_events && !has_column("events", "matches")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN matches TEXT;")
            .map_err(|e| format!("migrating events to schema 5: {e}"))?;
    }
    // Tables an older file has (and a schema-1 file has set aside just above).
    let lacks = |table: &str, column: &str| -> Result<bool, String> {
        let exists: bool = tx
            .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })
            .map_err(|e| e.to_string())?;
        Ok(exists && !has_column(table, column)?)
    };
    if lacks("leads", "profile")? {
        tx.execute_batch("ALTER TABLE leads ADD COLUMN profile TEXT;")
            .map_err(|e| format!("migrating leads to schema 8: {e}"))?;
    }
    if lacks("score_history", "merged_from")? {
        tx.execute_batch("ALTER TABLE score_history ADD COLUMN merged_from TEXT;")
            .map_err(|e| format!("migrating score_history to schema 8: {e}"))?;
    }
    let events_before_10 = if has_events && !has_column("events", "event_key")? {
        let count = rows(&tx, "events")?;
        tx.execute_batch(MIGRATE_TO_10_SET_ASIDE).map_err(|e| format!("migrating events to schema 10: {e}"))?;
        Some(count)
    } else {
        None
    };
    tx.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
    let keys = match EventKeys::load(&tx).map_err(|e| e.to_string())? {
        Some(keys) => keys,
        // Every stored event's key was made with the lost secret: a new one would let every
        // redelivery through as new. Refused, not papered over.
        None if version >= 10 && has_events && rows(&tx, "events")? > 0 => {
            return Err("the file's event-key secret (table event_key_secret) is missing; \
                        restore the file from a backup"
                .into())
        }
        None => EventKeys::create(&tx).map_err(|e| e.to_string())?,
    };
    if let Some(before) = events_before_10 {
        // First, so the schema-1 history below can join its events by id.
        keys.register(&tx).map_err(|e| e.to_string())?;
        let after = move_back(&tx, MIGRATE_TO_10_MOVE_BACK, "events", before, "events to schema 10")?;
        tracing::info!(events = after, "sqlite: events migrated to schema 10 (indexed by keyed hash)");
    }
    tx.execute_batch(EVENTS_BY_KEY).map_err(|e| e.to_string())?;
    if version < 9 {
        // The search index of the leads an older file already has.
        tx.execute_batch(INDEX_EXISTING_LEADS).map_err(|e| format!("migrating leads to schema 9: {e}"))?;
    }
    if rules_before_5 {
        tx.execute_batch(MIGRATE_TO_5_MOVE_BACK).map_err(|e| format!("migrating rules to schema 5: {e}"))?;
        tracing::info!("sqlite: rules migrated to schema 5 (each is its event type's base rule)");
    }
    if let Some(before) = history_before {
        let after = move_back(&tx, MIGRATE_1_TO_2_MOVE_BACK, "score_history", before, "schema 1 to 2")?;
        tracing::info!(history_rows = after, "sqlite: migrated schema 1 to 2");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok(keys)
}

/// Rows in `table`.
fn rows(c: &Connection, table: &str) -> Result<i64, String> {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(|e| e.to_string())
}

/// Runs a migration's move-back of rows set aside, and fails (the transaction rolls back,
/// leaving the file as it was) unless `table` then holds all `before` of them.
fn move_back(c: &Connection, sql: &str, table: &str, before: i64, what: &str) -> Result<i64, String> {
    c.execute_batch(sql).map_err(|e| format!("migrating {what}: {e}"))?;
    let after = rows(c, table)?;
    if after != before {
        return Err(format!("migrating {what} would keep {after} of {before} {table} rows; file left unchanged"));
    }
    Ok(after)
}
