//! Server-side sessions: `tower-sessions` handles the cookie, id cycling and expiry; the
//! records live in the active store (so every instance sees them and they survive restarts),
//! keyed by a SHA-256 digest of the id so a copy of the database holds no usable session.
//!
//! A session is valid while (1) its record has not expired (idle timeout, refreshed at most
//! once a minute), (2) it is younger than the absolute lifetime, and (3) the account still
//! exists with the password it had at sign-in.

use super::accounts::{sha256_hex, Accounts};
use super::store::{DynStore, SessionRecord, UserRecord};
use super::{now_ms, ServiceError, ServiceResult};
use crate::domain::access::UserInfo;
use crate::domain::time::Millis;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{Error as SessionError, Result as SessionResult, SessionStore};
use tower_sessions::Session;

pub const COOKIE_NAME: &str = "leadscore_session";
const SIGNED_IN: &str = "signedIn";
const SEEN_AT: &str = "seenAt";
/// The idle timer is pushed forward at most this often, so browsing is not a write per request.
const REFRESH_EVERY_MS: Millis = 60_000;

/// What a session remembers about who signed in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    username: String,
    /// The account's session epoch at sign-in; a password change bumps it.
    epoch: i64,
    at: Millis,
}

#[derive(Clone)]
pub struct StoreSessions(pub DynStore);

impl std::fmt::Debug for StoreSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSessions")
    }
}

fn to_record(r: &Record) -> SessionResult<SessionRecord> {
    Ok(SessionRecord {
        id_hash: sha256_hex(&r.id.to_string()),
        data: serde_json::to_value(&r.data).map_err(|e| SessionError::Encode(e.to_string()))?,
        expires_at: (r.expiry_date.unix_timestamp_nanos() / 1_000_000) as Millis,
    })
}

fn backend(e: impl std::fmt::Display) -> SessionError {
    SessionError::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for StoreSessions {
    async fn create(&self, record: &mut Record) -> SessionResult<()> {
        // A fresh random id collides with an existing one essentially never; if it does, draw again.
        for _ in 0..8 {
            if self.0.create_session(to_record(record)?).await.map_err(backend)? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(SessionError::Backend("could not draw an unused session id".into()))
    }

    async fn save(&self, record: &Record) -> SessionResult<()> {
        self.0.save_session(to_record(record)?).await.map_err(backend)
    }

    async fn load(&self, id: &Id) -> SessionResult<Option<Record>> {
        let Some(stored) = self.0.load_session(&sha256_hex(&id.to_string()), now_ms()).await.map_err(backend)? else {
            return Ok(None);
        };
        let data = serde_json::from_value(stored.data).map_err(|e| SessionError::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp_nanos(stored.expires_at as i128 * 1_000_000)
            .map_err(|e| SessionError::Decode(e.to_string()))?;
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> SessionResult<()> {
        self.0.delete_session(&sha256_hex(&id.to_string())).await.map_err(backend)
    }
}

fn session_error(e: tower_sessions::session::Error) -> ServiceError {
    ServiceError::Unavailable(format!("session store: {e}"))
}

/// Starts a signed-in session under a new id (the old id, if any, stops working).
pub async fn sign_in(session: &Session, user: &UserRecord) -> ServiceResult<()> {
    session.cycle_id().await.map_err(session_error)?;
    let now = now_ms();
    let signed_in = SignedIn { username: user.info.username.clone(), epoch: user.session_epoch, at: now };
    session.insert(SIGNED_IN, signed_in).await.map_err(session_error)?;
    session.insert(SEEN_AT, now).await.map_err(session_error)
}

/// Ends the session: its record is deleted and the cookie removed.
pub async fn sign_out(session: &Session) -> ServiceResult<()> {
    session.flush().await.map_err(session_error)
}

/// The account signed in on this session, if the session is still valid; an invalid one is
/// ended on the spot.
pub async fn signed_in_user(
    session: &Session,
    accounts: &Accounts,
    max_age_ms: Millis,
) -> ServiceResult<Option<UserInfo>> {
    let Some(signed_in) = session.get::<SignedIn>(SIGNED_IN).await.map_err(session_error)? else {
        return Ok(None);
    };
    let now = now_ms();
    let user = if now - signed_in.at > max_age_ms {
        None
    } else {
        accounts.session_user(&signed_in.username, signed_in.epoch).await?
    };
    if user.is_none() {
        sign_out(session).await?;
        return Ok(None);
    }
    let seen: Millis = session.get(SEEN_AT).await.map_err(session_error)?.unwrap_or(0);
    if now - seen > REFRESH_EVERY_MS {
        session.insert(SEEN_AT, now).await.map_err(session_error)?;
    }
    Ok(user)
}
