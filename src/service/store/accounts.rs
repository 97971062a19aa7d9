//! What the store keeps for access control: people, their sessions, API keys and the audit
//! log. In the active store (SQLite tables or MongoDB collections), so every instance of the
//! server sees the same accounts and a session outlives a restart.
//!
//! Secrets never reach the store in the clear: passwords as Argon2id hashes, session ids and
//! API keys as SHA-256 digests (both are 256-bit random values, so a fast digest is enough).

use super::StoreResult;
use crate::domain::access::{ApiKeyInfo, AuditEntry, Role, UserInfo};
use crate::domain::time::Millis;
use async_trait::async_trait;
use serde_json::Value;

/// A person's account with its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub info: UserInfo,
    /// Argon2id, in the PHC string format.
    pub password_hash: String,
    /// Bumped when the password changes: sessions signed in before that are no longer valid.
    pub session_epoch: i64,
}

/// A change to an account; `None` leaves that part as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateUser {
    Created,
    /// That username is taken.
    Exists,
    /// `only_if_first` was set and some account already exists.
    NotFirst,
}

/// A server-side session, keyed by the digest of the id its cookie carries.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub id_hash: String,
    /// The session's data (tower-sessions' map), as JSON.
    pub data: Value,
    pub expires_at: Millis,
}

/// An API key's stored form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub info: ApiKeyInfo,
    /// SHA-256 of the key, hex.
    pub hash: String,
}

/// An audit event before the store numbers it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// How many accounts exist (0 means first-run setup is open).
    async fn count_users(&self) -> StoreResult<u64>;
    /// Every account, by username.
    async fn users(&self) -> StoreResult<Vec<UserInfo>>;
    async fn user(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// With `only_if_first`, creates the account only while no account exists at all, atomically,
    /// so two concurrent first-run setups cannot both succeed.
    async fn create_user(&self, user: UserRecord, only_if_first: bool) -> StoreResult<CreateUser>;
    /// Applies `change`; a new password bumps the session epoch. `None` for an unknown username.
    async fn update_user(&self, username: &str, change: UserChange, now: Millis) -> StoreResult<Option<UserRecord>>;
    async fn delete_user(&self, username: &str) -> StoreResult<bool>;

    /// Stores a new session; false (nothing written) if that id is already taken.
    async fn create_session(&self, session: SessionRecord) -> StoreResult<bool>;
    /// Creates or replaces a session.
    async fn save_session(&self, session: SessionRecord) -> StoreResult<()>;
    /// The session, if it exists and has not expired at `now`.
    async fn load_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn purge_sessions(&self, now: Millis) -> StoreResult<u64>;

    async fn create_key(&self, key: KeyRecord) -> StoreResult<()>;
    /// Every key, newest first, revoked ones included.
    async fn keys(&self) -> StoreResult<Vec<ApiKeyInfo>>;
    /// The key with this digest, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyInfo>>;
    /// Marks a key revoked (once); returns it, or `None` for an unknown id.
    async fn revoke_key(&self, id: &str, now: Millis) -> StoreResult<Option<ApiKeyInfo>>;
    async fn touch_key(&self, id: &str, now: Millis) -> StoreResult<()>;

    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()>;
    /// Newest first.
    async fn audit(&self, limit: usize, offset: usize) -> StoreResult<Vec<AuditEntry>>;
}
