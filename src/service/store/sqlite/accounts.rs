//! Accounts, sessions, API keys and the audit log in the embedded store. Writes go through the
//! single writer like everything else, so "create only if no account exists" is atomic.

use super::SqliteStore;
use crate::domain::access::{ApiKeyInfo, AuditEntry, Role, Scope, UserInfo};
use crate::domain::time::Millis;
use crate::service::store::accounts::*;
use crate::service::store::StoreResult;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;

const USER_COLUMNS: &str = "username, role, password_hash, session_epoch, created_at, updated_at";
const KEY_COLUMNS: &str = "id, name, scopes, prefix, created_at, created_by, last_used_at, revoked_at";

fn user_from_row(r: &Row) -> rusqlite::Result<UserRecord> {
    let role: String = r.get(1)?;
    Ok(UserRecord {
        info: UserInfo {
            username: r.get(0)?,
            // An unknown role (written by a newer release) grants the least.
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
        },
        password_hash: r.get(2)?,
        session_epoch: r.get(3)?,
    })
}

fn scopes_to_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn key_from_row(r: &Row) -> rusqlite::Result<ApiKeyInfo> {
    let scopes: String = r.get(2)?;
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

fn json_value(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn count_users(&self) -> StoreResult<u64> {
        self.read(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)).await
    }

    async fn users(&self) -> StoreResult<Vec<UserInfo>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))?;
            let rows = s.query_map([], |r| user_from_row(r).map(|u| u.info))?;
            rows.collect()
        })
        .await
    }

    async fn user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))?
                .query_row([username], user_from_row)
                .optional()
        })
        .await
    }

    async fn create_user(&self, user: UserRecord, only_if_first: bool) -> StoreResult<CreateUser> {
        self.write(move |c| {
            if only_if_first && c.query_row("SELECT count(*) > 0 FROM users", [], |r| r.get::<_, bool>(0))? {
                return Ok(CreateUser::NotFirst);
            }
            let inserted = c.execute(
                "INSERT INTO users (username, role, password_hash, session_epoch, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(username) DO NOTHING",
                params![
                    user.info.username,
                    user.info.role.as_str(),
                    user.password_hash,
                    user.session_epoch,
                    user.info.created_at,
                    user.info.updated_at
                ],
            )?;
            Ok(if inserted == 1 { CreateUser::Created } else { CreateUser::Exists })
        })
        .await
    }

    async fn update_user(&self, username: &str, change: UserChange, now: Millis) -> StoreResult<Option<UserRecord>> {
        let username = username.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET role = coalesce(?2, role), password_hash = coalesce(?3, password_hash), \
                   session_epoch = session_epoch + (?3 IS NOT NULL), updated_at = ?4 WHERE username = ?1",
                params![username, change.role.map(Role::as_str), change.password_hash, now],
            )?;
            c.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"), [&username], user_from_row)
                .optional()
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        let username = username.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM users WHERE username = ?1", [username])? == 1)).await
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<bool> {
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO sessions (id_hash, data, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT(id_hash) DO NOTHING",
                params![session.id_hash, session.data.to_string(), session.expires_at],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn save_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sessions (id_hash, data, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
            )?
            .execute(params![session.id_hash, session.data.to_string(), session.expires_at])?;
            Ok(())
        })
        .await
    }

    async fn load_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<SessionRecord>> {
        let id_hash = id_hash.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT id_hash, data, expires_at FROM sessions WHERE id_hash = ?1 AND expires_at > ?2")?
                .query_row(params![id_hash, now], |r| {
                    let data: String = r.get(1)?;
                    Ok(SessionRecord {
                        id_hash: r.get(0)?,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        expires_at: r.get(2)?,
                    })
                })
                .optional()
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.write(move |c| c.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash]).map(|_| ())).await
    }

    async fn purge_sessions(&self, now: Millis) -> StoreResult<u64> {
        self.write(move |c| c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now]).map(|n| n as u64)).await
    }

    async fn create_key(&self, key: KeyRecord) -> StoreResult<()> {
        self.write(move |c| {
            let k = &key.info;
            c.execute(
                &format!("INSERT INTO api_keys (hash, {KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    key.hash,
                    k.id,
                    k.name,
                    scopes_to_text(&k.scopes),
                    k.prefix,
                    k.created_at,
                    k.created_by,
                    k.last_used_at,
                    k.revoked_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        self.read(|c| {
            let mut s =
                c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id"))?;
            let rows = s.query_map([], key_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyInfo>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"))?
                .query_row([hash], key_from_row)
                .optional()
        })
        .await
    }

    async fn revoke_key(&self, id: &str, now: Millis) -> StoreResult<Option<ApiKeyInfo>> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])?;
            c.query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [&id], key_from_row).optional()
        })
        .await
    }

    async fn touch_key(&self, id: &str, now: Millis) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached("UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1")?
                .execute(params![id, now])
                .map(|_| ())
        })
        .await
    }

    async fn append_audit(&self, e: NewAuditEntry) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, target, before, after, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![e.at, e.actor, e.action, e.target, json_text(&e.before), json_text(&e.after), e.ip])
            .map(|_| ())
        })
        .await
    }

    async fn audit(&self, limit: usize, offset: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT id, at, actor, action, target, before, after, ip FROM audit_log ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )?;
            let rows = s.query_map(params![limit as i64, offset as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    before: json_value(r.get(5)?),
                    after: json_value(r.get(6)?),
                    ip: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}
