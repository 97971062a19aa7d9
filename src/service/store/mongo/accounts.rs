//! Accounts, sessions, API keys and the audit log in MongoDB; mirrors `sqlite/accounts.rs`.
//!
//! Collections:
//! - `users`: `_id` = username, `role`, `passwordHash`, `sessionEpoch`, `createdAt`,
//!   `updatedAt`, `setupSlot` (unique index, see `create_user`);
//! - `sessions`: `_id` = digest of the session id, `data` (the session's JSON, as text),
//!   `expiresAt` (indexed, for the purge);
//! - `api_keys`: `_id` = key id, `hash` (unique index), `name`, `scopes` (array of strings),
//!   `prefix`, `createdAt`, `createdBy`, `lastUsedAt`, `revokedAt`;
//! - `audit_log`: `seq` (unique index; numbered from the `audit_log` document of `counters`,
//!   so several server processes never hand out the same number), `at`, `actor`, `action`,
//!   `target`, `before`/`after` (the JSON as BSON), `ip`.
//!
//! Times are BSON dates, like every other time this store writes. Documents are read
//! tolerantly: MongoDB-compatible servers may hand back numbers as any numeric type, dates as
//! numbers or strings, and arrays as comma-separated text.

use super::docs::{int as int_of, millis as millis_of, text as text_of};
use super::{classify, is_duplicate, MongoStore};
use crate::domain::access::{ApiKeyInfo, AuditEntry, Role, Scope, UserInfo};
use crate::domain::time::Millis;
use crate::service::store::accounts::*;
use crate::service::store::{StoreError, StoreResult};
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{Acknowledgment, CollectionOptions, IndexOptions, ReturnDocument, WriteConcern};
use mongodb::{Collection, IndexModel};
use serde_json::Value;

const USERS: &str = "users";
const SESSIONS: &str = "sessions";
const API_KEYS: &str = "api_keys";
const AUDIT_LOG: &str = "audit_log";
/// The `counters` document that numbers the audit log.
const AUDIT_COUNTER: &str = "audit_log";
/// The `setupSlot` of the account made by first-run setup; every other account's slot is
/// `user:<username>`, so the unique index lets exactly one setup account exist at a time.
const FIRST_SLOT: &str = "first";

/// The indexes behind the account queries, by collection (created by `MongoStore::prepare`).
/// None has `_id` in a compound key: some MongoDB-compatible servers do not support that.
pub(super) fn indexes() -> Vec<(&'static str, IndexModel)> {
    let index = |keys: Document, name: &str, unique: bool| {
        let options = IndexOptions::builder().name(name.to_string()).unique(unique.then_some(true)).build();
        IndexModel::builder().keys(keys).options(options).build()
    };
    vec![
        (USERS, index(doc! {"setupSlot": 1}, "setupSlot_unique", true)),
        (SESSIONS, index(doc! {"expiresAt": 1}, "expiresAt", false)),
        (API_KEYS, index(doc! {"hash": 1}, "hash_unique", true)),
        (AUDIT_LOG, index(doc! {"seq": -1}, "seq_unique", true)),
    ]
}

impl MongoStore {
    /// An account collection; writes are journaled like events', so an acknowledged account,
    /// revocation or audit entry survives a crash.
    fn accounts_collection(&self, name: &str) -> Collection<Document> {
        let durable = WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build();
        self.db.collection_with_options(name, CollectionOptions::builder().write_concern(durable).build())
    }

    async fn all_docs(
        coll: &Collection<Document>,
        filter: Document,
        sort: Document,
        skip: usize,
        limit: Option<usize>,
    ) -> StoreResult<Vec<Document>> {
        // In MongoDB a limit of 0 means "no limit".
        let limit = limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX));
        coll.find(filter)
            .sort(sort)
            .skip(skip as u64)
            .limit(limit)
            .await
            .map_err(classify)?
            .try_collect()
            .await
            .map_err(classify)
    }

    /// The next audit number: an atomic `$inc` on one `counters` document, so it is unique and
    /// increasing across every server process.
    async fn next_audit_seq(&self) -> StoreResult<i64> {
        for _ in 0..3 {
            let counter = self
                .counters
                .find_one_and_update(doc! {"_id": AUDIT_COUNTER}, doc! {"$inc": {"seq": 1_i64}})
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match counter {
                Ok(Some(c)) => {
                    return int_of(c.get("seq"))
                        .ok_or_else(|| StoreError::Internal(format!("audit counter without a number: {c}")));
                }
                Ok(None) => {}
                // Two processes created the counter at the same instant: the other one won; again.
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Internal("could not number the audit entry".into()))
    }
}

/// Parses documents, skipping (and logging) any that cannot be read at all.
fn parse_all<T>(docs: Vec<Document>, what: &str, parse: fn(&Document) -> Option<T>) -> Vec<T> {
    docs.iter()
        .filter_map(|d| {
            let parsed = parse(d);
            if parsed.is_none() {
                tracing::warn!(collection = what, document = %d, "mongodb: skipped an unreadable document");
            }
            parsed
        })
        .collect()
}

#[async_trait]
impl AccountStore for MongoStore {
    async fn count_users(&self) -> StoreResult<u64> {
        self.accounts_collection(USERS).count_documents(doc! {}).await.map_err(classify)
    }

    async fn users(&self) -> StoreResult<Vec<UserInfo>> {
        let docs = Self::all_docs(&self.accounts_collection(USERS), doc! {}, doc! {"_id": 1}, 0, None).await?;
        Ok(parse_all(docs, USERS, user_from).into_iter().map(|u| u.info).collect())
    }

    async fn user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let found = self.accounts_collection(USERS).find_one(doc! {"_id": username}).await.map_err(classify)?;
        Ok(found.as_ref().and_then(user_from))
    }

    /// First-run setup without transactions: every account carries a `setupSlot` under a
    /// unique index, `"first"` for the account setup creates and `user:<username>` for the
    /// rest. So the insert itself is the atomic step: of two concurrent setups (in any number
    /// of processes) only one can hold the `"first"` slot, the other gets duplicate key 11000
    /// and answers `NotFirst`. Unlike a separate marker document, nothing is left behind by a
    /// crash between two writes, and deleting that account later frees the slot again, so
    /// setup reopens exactly when no account exists, as in SQLite. An account created at the
    /// same instant by other means (an admin key) is caught by counting after the insert.
    async fn create_user(&self, user: UserRecord, only_if_first: bool) -> StoreResult<CreateUser> {
        let users = self.accounts_collection(USERS);
        if only_if_first && users.count_documents(doc! {}).await.map_err(classify)? > 0 {
            return Ok(CreateUser::NotFirst);
        }
        match users.insert_one(user_doc(&user, only_if_first)).await {
            Ok(_) => {}
            // The username is taken, or (setup) the first slot is: either way an account exists.
            Err(e) if is_duplicate(&e) => {
                return Ok(if only_if_first { CreateUser::NotFirst } else { CreateUser::Exists });
            }
            Err(e) => return Err(classify(e)),
        }
        if only_if_first && users.count_documents(doc! {}).await.map_err(classify)? > 1 {
            // Someone else's account appeared between the count and the insert: setup loses.
            users.delete_one(doc! {"_id": &user.info.username, "setupSlot": FIRST_SLOT}).await.map_err(classify)?;
            return Ok(CreateUser::NotFirst);
        }
        Ok(CreateUser::Created)
    }

    async fn update_user(&self, username: &str, change: UserChange, now: Millis) -> StoreResult<Option<UserRecord>> {
        let updated = self
            .accounts_collection(USERS)
            .find_one_and_update(doc! {"_id": username}, user_update(&change, now))
            .return_document(ReturnDocument::After)
            .await
            .map_err(classify)?;
        Ok(updated.as_ref().and_then(user_from))
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        let deleted = self.accounts_collection(USERS).delete_one(doc! {"_id": username}).await.map_err(classify)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<bool> {
        match self.accounts_collection(SESSIONS).insert_one(session_doc(&session)).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    async fn save_session(&self, session: SessionRecord) -> StoreResult<()> {
        let sessions = self.accounts_collection(SESSIONS);
        let replacement = session_doc(&session);
        // Two upserts of a new id at the same instant: one inserts, the other sees 11000 and,
        // retried, replaces.
        for attempt in 0..2 {
            match sessions.replace_one(doc! {"_id": &session.id_hash}, &replacement).upsert(true).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && is_duplicate(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    async fn load_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<SessionRecord>> {
        let found = self
            .accounts_collection(SESSIONS)
            .find_one(doc! {"_id": id_hash, "expiresAt": {"$gt": now}})
            .await
            .map_err(classify)?;
        Ok(found.as_ref().and_then(session_from))
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.accounts_collection(SESSIONS).delete_one(doc! {"_id": id_hash}).await.map(|_| ()).map_err(classify)
    }

    async fn purge_sessions(&self, now: Millis) -> StoreResult<u64> {
        let deleted = self
            .accounts_collection(SESSIONS)
            .delete_many(doc! {"expiresAt": {"$lte": now}})
            .await
            .map_err(classify)?;
        Ok(deleted.deleted_count)
    }

    async fn create_key(&self, key: KeyRecord) -> StoreResult<()> {
        self.accounts_collection(API_KEYS).insert_one(key_doc(&key)).await.map(|_| ()).map_err(classify)
    }

    async fn keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        let sort = doc! {"createdAt": -1, "_id": 1};
        let docs = Self::all_docs(&self.accounts_collection(API_KEYS), doc! {}, sort, 0, None).await?;
        Ok(parse_all(docs, API_KEYS, key_from))
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyInfo>> {
        let found = self.accounts_collection(API_KEYS).find_one(doc! {"hash": hash}).await.map_err(classify)?;
        Ok(found.as_ref().and_then(key_from))
    }

    async fn revoke_key(&self, id: &str, now: Millis) -> StoreResult<Option<ApiKeyInfo>> {
        let keys = self.accounts_collection(API_KEYS);
        // `revokedAt: null` matches a missing field too: only the first revocation sets it.
        keys.update_one(
            doc! {"_id": id, "revokedAt": Bson::Null},
            doc! {"$set": {"revokedAt": DateTime::from_millis(now)}},
        )
        .await
        .map_err(classify)?;
        let found = keys.find_one(doc! {"_id": id}).await.map_err(classify)?;
        Ok(found.as_ref().and_then(key_from))
    }

    async fn touch_key(&self, id: &str, now: Millis) -> StoreResult<()> {
        self.accounts_collection(API_KEYS)
            .update_one(doc! {"_id": id}, doc! {"$max": {"lastUsedAt": DateTime::from_millis(now)}})
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        let seq = self.next_audit_seq().await?;
        self.accounts_collection(AUDIT_LOG).insert_one(audit_doc(seq, &entry)).await.map(|_| ()).map_err(classify)
    }

    async fn audit(&self, limit: usize, offset: usize) -> StoreResult<Vec<AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let coll = self.accounts_collection(AUDIT_LOG);
        let docs = Self::all_docs(&coll, doc! {}, doc! {"seq": -1}, offset, Some(limit)).await?;
        Ok(parse_all(docs, AUDIT_LOG, audit_from))
    }
}

// ---- documents written ----

fn date(ms: Millis) -> Bson {
    Bson::DateTime(DateTime::from_millis(ms))
}

fn opt_date(ms: Option<Millis>) -> Bson {
    ms.map_or(Bson::Null, date)
}

fn user_doc(user: &UserRecord, first: bool) -> Document {
    let u = &user.info;
    let slot = if first { FIRST_SLOT.to_string() } else { format!("user:{}", u.username) };
    doc! {
        "_id": &u.username,
        "role": u.role.as_str(),
        "passwordHash": &user.password_hash,
        "sessionEpoch": user.session_epoch,
        "createdAt": date(u.created_at),
        "updatedAt": date(u.updated_at),
        "setupSlot": slot,
    }
}

/// Sets what changes and `updatedAt`; a new password bumps the session epoch.
fn user_update(change: &UserChange, now: Millis) -> Document {
    let mut set = doc! {"updatedAt": date(now)};
    if let Some(role) = change.role {
        set.insert("role", role.as_str());
    }
    if let Some(hash) = &change.password_hash {
        set.insert("passwordHash", hash.as_str());
    }
    let mut update = doc! {"$set": set};
    if change.password_hash.is_some() {
        update.insert("$inc", doc! {"sessionEpoch": 1_i64});
    }
    update
}

/// The session's data is kept as JSON text, as in SQLite: its keys need not be valid BSON
/// field names and its numbers come back exactly as they went in.
fn session_doc(s: &SessionRecord) -> Document {
    // Epoch milliseconds, not a BSON date: the expiry is only ever compared, and numbers
    // compare the same on every MongoDB-compatible server (the test stand-in does not
    // compare dates with $gt/$lte).
    doc! {"_id": &s.id_hash, "data": s.data.to_string(), "expiresAt": s.expires_at}
}

fn key_doc(key: &KeyRecord) -> Document {
    let k = &key.info;
    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
    doc! {
        "_id": &k.id,
        "hash": &key.hash,
        "name": &k.name,
        "scopes": scopes,
        "prefix": &k.prefix,
        "createdAt": date(k.created_at),
        "createdBy": &k.created_by,
        "lastUsedAt": opt_date(k.last_used_at),
        "revokedAt": opt_date(k.revoked_at),
    }
}

fn audit_doc(seq: i64, e: &NewAuditEntry) -> Document {
    let mut d = doc! {
        "seq": seq,
        "at": date(e.at),
        "actor": &e.actor,
        "action": &e.action,
        "target": &e.target,
        "ip": e.ip.as_deref().map_or(Bson::Null, |ip| Bson::String(ip.to_string())),
    };
    put_json(&mut d, "before", e.before.as_ref());
    put_json(&mut d, "after", e.after.as_ref());
    d
}

/// Stores JSON as BSON; the rare value BSON cannot hold (an integer above `i64::MAX`) goes
/// to `<key>Json` as text instead. `None` leaves both out.
fn put_json(d: &mut Document, key: &str, v: Option<&Value>) {
    let Some(v) = v else { return };
    match mongodb::bson::to_bson(v) {
        Ok(b) => {
            d.insert(key, b);
        }
        Err(_) => {
            d.insert(format!("{key}Json"), v.to_string());
        }
    }
}

// ---- documents read ----

/// A list of strings from an array, an array sent as a document (`{"0": …}`), JSON array
/// text, or comma-separated text.
fn texts_of(v: Option<&Bson>) -> Vec<String> {
    match v {
        Some(Bson::Array(items)) => items.iter().filter_map(|b| text_of(Some(b))).collect(),
        Some(Bson::Document(d)) => d.values().filter_map(|b| text_of(Some(b))).collect(),
        Some(Bson::String(s)) if s.trim_start().starts_with('[') => serde_json::from_str::<Vec<Value>>(s)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Bson::String(s)) => s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn json_of(d: &Document, key: &str) -> Option<Value> {
    match d.get(key) {
        Some(b) => Some(b.clone().into_relaxed_extjson()),
        None => text_of(d.get(&format!("{key}Json"))).and_then(|t| serde_json::from_str(&t).ok()),
    }
}

fn user_from(d: &Document) -> Option<UserRecord> {
    Some(UserRecord {
        info: UserInfo {
            username: text_of(d.get("_id"))?,
            // An unknown role (written by a newer release) grants the least.
            role: text_of(d.get("role")).and_then(|r| Role::parse(r.trim())).unwrap_or(Role::Viewer),
            created_at: millis_of(d.get("createdAt")).unwrap_or(0),
            updated_at: millis_of(d.get("updatedAt")).unwrap_or(0),
        },
        password_hash: text_of(d.get("passwordHash")).unwrap_or_default(),
        session_epoch: int_of(d.get("sessionEpoch")).unwrap_or(0),
    })
}

fn session_from(d: &Document) -> Option<SessionRecord> {
    let data = match d.get("data") {
        Some(Bson::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(Bson::Null) | None => Value::Null,
        // Written as a document by some other tool: take it as it is.
        Some(other) => other.clone().into_relaxed_extjson(),
    };
    Some(SessionRecord { id_hash: text_of(d.get("_id"))?, data, expires_at: millis_of(d.get("expiresAt"))? })
}

fn key_from(d: &Document) -> Option<ApiKeyInfo> {
    Some(ApiKeyInfo {
        id: text_of(d.get("_id"))?,
        name: text_of(d.get("name")).unwrap_or_default(),
        // Unknown scopes (a newer release's) are skipped: they grant nothing here.
        scopes: texts_of(d.get("scopes")).iter().filter_map(|s| Scope::parse(s.trim())).collect(),
        prefix: text_of(d.get("prefix")).unwrap_or_default(),
        created_at: millis_of(d.get("createdAt")).unwrap_or(0),
        created_by: text_of(d.get("createdBy")).unwrap_or_default(),
        last_used_at: millis_of(d.get("lastUsedAt")),
        revoked_at: millis_of(d.get("revokedAt")),
    })
}

fn audit_from(d: &Document) -> Option<AuditEntry> {
    Some(AuditEntry {
        id: int_of(d.get("seq"))?,
        at: millis_of(d.get("at")).unwrap_or(0),
        actor: text_of(d.get("actor")).unwrap_or_default(),
        action: text_of(d.get("action")).unwrap_or_default(),
        target: text_of(d.get("target")).unwrap_or_default(),
        before: json_of(d, "before"),
        after: json_of(d, "after"),
        ip: text_of(d.get("ip")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            info: UserInfo { username: name.into(), role: Role::Editor, created_at: 5, updated_at: 6 },
            password_hash: "$argon2id$x".into(),
            session_epoch: 2,
        }
    }

    #[test]
    fn account_indexes_never_put_id_in_a_key() {
        let all = indexes();
        assert_eq!(all.len(), 4);
        for (collection, model) in &all {
            assert!(!model.keys.contains_key("_id"), "{collection}: _id in an index key");
        }
        let find = |c: &str| all.iter().find(|(coll, _)| *coll == c).map(|(_, m)| m.clone()).unwrap();
        assert_eq!(find(API_KEYS).keys, doc! {"hash": 1});
        assert_eq!(find(API_KEYS).options.unwrap().unique, Some(true));
        assert_eq!(find(USERS).keys, doc! {"setupSlot": 1});
        assert_eq!(find(USERS).options.unwrap().unique, Some(true));
        assert_eq!(find(SESSIONS).keys, doc! {"expiresAt": 1});
        assert_eq!(find(SESSIONS).options.unwrap().unique, None);
        assert_eq!(find(AUDIT_LOG).keys, doc! {"seq": -1});
    }

    #[test]
    fn users_round_trip_and_only_setup_takes_the_first_slot() {
        let d = user_doc(&user("ann"), true);
        assert_eq!(d.get_str("setupSlot").unwrap(), "first");
        assert_eq!(user_doc(&user("ann"), false).get_str("setupSlot").unwrap(), "user:ann");
        assert_eq!(user_from(&d).unwrap(), user("ann"));
    }

    #[test]
    fn only_a_new_password_bumps_the_epoch() {
        let change = UserChange { role: Some(Role::Admin), password_hash: None };
        assert_eq!(user_update(&change, 9), doc! {"$set": {"updatedAt": date(9), "role": "admin"}});
        let change = UserChange { role: None, password_hash: Some("h".into()) };
        assert_eq!(
            user_update(&change, 9),
            doc! {"$set": {"updatedAt": date(9), "passwordHash": "h"}, "$inc": {"sessionEpoch": 1_i64}}
        );
    }

    #[test]
    fn documents_are_read_tolerantly() {
        let d = doc! {
            "_id": "bob", "role": "superuser", "sessionEpoch": 3.0_f64,
            "createdAt": "2024-01-02T03:04:05.678Z", "updatedAt": 7_i32,
        };
        let u = user_from(&d).unwrap();
        assert_eq!(u.info.role, Role::Viewer, "an unknown role grants the least");
        assert_eq!((u.session_epoch, u.info.updated_at, u.password_hash.as_str()), (3, 7, ""));
        assert_eq!(u.info.created_at, crate::domain::time::parse_iso("2024-01-02T03:04:05.678Z").unwrap());
        assert_eq!(millis_of(Some(&Bson::String("1700000000000".into()))), Some(1_700_000_000_000));
        assert_eq!(millis_of(Some(&Bson::Int64(4))), Some(4));
        assert_eq!(millis_of(Some(&Bson::Null)), None);
        assert_eq!(int_of(Some(&Bson::Boolean(true))), Some(1));
        assert_eq!(texts_of(Some(&Bson::String("read, ingest".into()))), ["read", "ingest"]);
        assert_eq!(texts_of(Some(&Bson::String(r#"["admin"]"#.into()))), ["admin"]);
        let k = key_from(&doc! {"_id": "k1", "scopes": ["read", "write", "admin"], "lastUsedAt": Bson::Null}).unwrap();
        assert_eq!(k.scopes, [Scope::Read, Scope::Admin], "unknown scopes are skipped");
        assert_eq!((k.last_used_at, k.revoked_at), (None, None));
        assert!(user_from(&doc! {"role": "admin"}).is_none(), "no username");
    }

    #[test]
    fn keys_sessions_and_audit_round_trip() {
        let key = KeyRecord {
            info: ApiKeyInfo {
                id: "k1".into(),
                name: "site".into(),
                scopes: vec![Scope::Ingest, Scope::Read],
                prefix: "lsk_ab".into(),
                created_at: 10,
                created_by: "ann".into(),
                last_used_at: None,
                revoked_at: Some(12),
            },
            hash: "ff".into(),
        };
        let d = key_doc(&key);
        assert_eq!(d.get_array("scopes").unwrap(), &vec![Bson::from("ingest"), Bson::from("read")]);
        assert_eq!(key_from(&d).unwrap(), key.info);

        let s = SessionRecord { id_hash: "h".into(), data: json!({"user": "ann", "n": 1}), expires_at: 99 };
        assert_eq!(session_from(&session_doc(&s)).unwrap(), s);

        let e = NewAuditEntry {
            at: 3,
            actor: "ann".into(),
            action: "rule.update".into(),
            target: "Purchase".into(),
            before: Some(json!({"points": 100, "ratio": 1.5, "tags": ["a"], "none": null})),
            after: Some(json!({"big": u64::MAX})),
            ip: None,
        };
        let d = audit_doc(7, &e);
        assert!(d.contains_key("before") && !d.contains_key("after") && d.contains_key("afterJson"));
        let back = audit_from(&d).unwrap();
        assert_eq!((back.id, back.at, back.ip), (7, 3, None));
        assert_eq!((back.before, back.after), (e.before, e.after));
        let bare = audit_doc(8, &NewAuditEntry { before: None, after: None, ..e });
        assert_eq!((audit_from(&bare).unwrap().before, audit_from(&bare).unwrap().after), (None, None));
    }
}
