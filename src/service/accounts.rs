//! Accounts and credentials: first-run setup, password checks, users, API keys and the audit
//! log. REST handlers, server functions and the `leadscore user` command all come through
//! here; none of them hashes a password or touches the account tables itself.

use super::store::{CreateUser, DynStore, KeyRecord, NewAuditEntry, UserChange, UserRecord};
use super::throttle::LoginThrottle;
use super::{now_ms, ServiceError, ServiceResult};
use crate::domain::access::{
    validate_key_name, validate_password, validate_role, validate_scopes, validate_username, ApiKeyInfo, AuditEntry,
    CreatedKey, Principal, Role, Scope, UserInfo,
};
use crate::domain::FieldError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a key or account lookup is reused before the store is asked again. Revoking a key
/// or deleting a user on this instance takes effect at once; on other instances within this.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// A key's last-used time is written at most this often, not on every request.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Keys start with this, so secret scanners and people can recognise them.
const KEY_PREFIX: &str = "lsk_";

/// Who acts, from where: what the audit log records.
#[derive(Clone, Debug)]
pub struct Actor {
    pub principal: Principal,
    pub ip: Option<String>,
}

impl Actor {
    pub fn new(principal: Principal, ip: Option<String>) -> Self {
        Self { principal, ip }
    }

    /// The command line and other local tools.
    pub fn local(name: &str) -> Self {
        Self { principal: Principal::User { username: name.to_string(), role: Role::Admin }, ip: None }
    }
}

pub struct Accounts {
    store: DynStore,
    /// Keys from `API_KEYS` (by digest): every scope, never revoked.
    env_keys: HashMap<String, usize>,
    keys: Mutex<HashMap<String, (Option<ApiKeyInfo>, Instant)>>,
    touched: Mutex<HashMap<String, Instant>>,
    users: Mutex<HashMap<String, (Option<UserRecord>, Instant)>>,
    /// Once an account exists, setup is closed for good (the last admin cannot be deleted).
    has_users: AtomicBool,
    setup_token: Mutex<Option<String>>,
    throttle: LoginThrottle,
}

/// A random secret, URL-safe, `bytes` long before encoding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so timing does not leak how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Argon2id with the crate's defaults (the OWASP minimum: 19 MiB, 2 passes), off the async threads.
pub async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ServiceError::Internal(e.to_string()))?
    .map_err(ServiceError::Internal)
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A hash nobody's password matches, verified for unknown usernames so that a failed login
/// takes as long whether or not the account exists.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1l2oWCEW5TrsnkSkgnA4YqOg9KhVqL4uUs2Ng2cCjW8";

fn field(raw: &Value, name: &str) -> Option<Value> {
    raw.get(name).cloned()
}

/// Runs validators and gathers every problem, so one answer names every bad field.
fn collect<T>(problems: &mut Vec<FieldError>, r: Result<T, FieldError>) -> Option<T> {
    r.map_err(|e| problems.push(e)).ok()
}

impl Accounts {
    pub fn new(store: DynStore, env_keys: &[String]) -> Self {
        Self {
            store,
            env_keys: env_keys.iter().enumerate().map(|(i, k)| (sha256_hex(k), i + 1)).collect(),
            keys: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            has_users: AtomicBool::new(false),
            setup_token: Mutex::new(None),
            throttle: LoginThrottle::default(),
        }
    }

    /// True while no account exists: every page then leads to `/setup`.
    pub async fn setup_needed(&self) -> ServiceResult<bool> {
        if self.has_users.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let exists = self.store.count_users().await? > 0;
        if exists {
            self.has_users.store(true, Ordering::Relaxed);
            self.setup_token.lock().unwrap().take();
        }
        Ok(!exists)
    }

    /// Makes the one-time setup token (while setup is open) and returns it for the log.
    pub async fn open_setup(&self) -> ServiceResult<Option<String>> {
        if !self.setup_needed().await? {
            return Ok(None);
        }
        let mut token = self.setup_token.lock().unwrap();
        Ok(Some(token.get_or_insert_with(|| random_token(24)).clone()))
    }

    /// Creates the first admin, given the token from the server's log; returns the account
    /// so the caller can sign it in.
    pub async fn setup(&self, raw: &Value, ip: Option<String>) -> ServiceResult<UserRecord> {
        let mut problems = Vec::new();
        let token = raw.get("token").and_then(Value::as_str).unwrap_or("").to_string();
        let username = collect(&mut problems, validate_username("username", raw.get("username")));
        let password = collect(&mut problems, validate_password("password", raw.get("password")));
        let expected = self.setup_token.lock().unwrap().clone();
        let done = || ServiceError::Conflict(FieldError::new("body", "setup is already done; sign in instead"));
        if !self.setup_needed().await? {
            return Err(done());
        }
        if token.is_empty() || !expected.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
            return Err(ServiceError::Unauthorized(FieldError::new(
                "token",
                "is missing or wrong; use the setup link the server printed in its log",
            )));
        }
        let (Some(username), Some(password)) = (username, password) else {
            return Err(ServiceError::Invalid(problems));
        };
        let now = now_ms();
        let record = UserRecord {
            info: UserInfo { username: username.clone(), role: Role::Admin, created_at: now, updated_at: now },
            password_hash: hash_password(password).await?,
            session_epoch: 0,
        };
        match self.store.create_user(record.clone(), true).await? {
            CreateUser::Created => {}
            _ => return Err(done()),
        }
        self.has_users.store(true, Ordering::Relaxed);
        self.setup_token.lock().unwrap().take();
        let actor = Actor { principal: Principal::User { username: username.clone(), role: Role::Admin }, ip };
        self.audit_event(&actor, "setup", &username, None, Some(json!({"role": "admin"}))).await;
        Ok(record)
    }

    /// Checks a username and password: `Unauthorized` for wrong credentials (audited),
    /// `TooManyRequests` after repeated failures for the account or the address.
    pub async fn login(&self, raw: &Value, ip: Option<String>) -> ServiceResult<UserRecord> {
        let username = raw.get("username").and_then(Value::as_str).map(str::trim).unwrap_or("").to_string();
        let password = raw.get("password").and_then(Value::as_str).unwrap_or("").to_string();
        let mut problems = Vec::new();
        if username.is_empty() {
            problems.push(FieldError::new("username", "is required"));
        }
        if password.is_empty() {
            problems.push(FieldError::new("password", "is required"));
        }
        if !problems.is_empty() {
            return Err(ServiceError::Invalid(problems));
        }
        let names = [format!("user:{username}"), format!("ip:{}", ip.as_deref().unwrap_or("unknown"))];
        self.throttle.check(&names, Instant::now()).map_err(ServiceError::TooManyRequests)?;
        let user = self.store.user(&username).await?;
        let hash = user.as_ref().map_or(DUMMY_HASH.to_string(), |u| u.password_hash.clone());
        let verified = verify_password(password, hash).await;
        let actor = Actor { principal: Principal::Anonymous, ip };
        match user.filter(|_| verified) {
            Some(user) => {
                self.throttle.succeeded(&names[0]);
                let principal = Principal::User { username: username.clone(), role: user.info.role };
                self.audit_event(&Actor { principal, ..actor }, "login", &username, None, None).await;
                Ok(user)
            }
            None => {
                self.throttle.failed(&names, Instant::now());
                self.audit_event(&actor, "login.failed", &username, None, None).await;
                Err(ServiceError::Unauthorized(FieldError::new("Authorization", "username or password is wrong")))
            }
        }
    }

    /// The account behind a session, if it still exists and the password has not changed
    /// since the session signed in.
    pub async fn session_user(&self, username: &str, epoch: i64) -> ServiceResult<Option<UserInfo>> {
        let cached = self.users.lock().unwrap().get(username).filter(|(_, at)| at.elapsed() < CACHE_TTL).cloned();
        let record = match cached {
            Some((record, _)) => record,
            None => {
                let record = self.store.user(username).await?;
                let mut users = self.users.lock().unwrap();
                if users.len() > 10_000 {
                    users.clear();
                }
                users.insert(username.to_string(), (record.clone(), Instant::now()));
                record
            }
        };
        Ok(record.filter(|r| r.session_epoch == epoch).map(|r| r.info))
    }

    /// The principal an API key stands for; `None` for an unknown or revoked key.
    pub async fn authenticate_key(&self, key: &str) -> ServiceResult<Option<Principal>> {
        let hash = sha256_hex(key);
        if let Some(n) = self.env_keys.get(&hash) {
            return Ok(Some(Principal::Key {
                id: format!("env-{n}"),
                name: format!("API_KEYS #{n}"),
                scopes: Scope::ALL.to_vec(),
            }));
        }
        if !key.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let cached = self.keys.lock().unwrap().get(&hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).cloned();
        let info = match cached {
            Some((info, _)) => info,
            None => {
                let info = self.store.key_by_hash(&hash).await?;
                let mut keys = self.keys.lock().unwrap();
                if keys.len() > 10_000 {
                    keys.clear();
                }
                keys.insert(hash, (info.clone(), Instant::now()));
                info
            }
        };
        let Some(info) = info.filter(|k| k.revoked_at.is_none()) else { return Ok(None) };
        self.touch(&info.id).await;
        Ok(Some(Principal::Key { id: info.id, name: info.name, scopes: info.scopes }))
    }

    async fn touch(&self, id: &str) {
        {
            let mut touched = self.touched.lock().unwrap();
            if touched.get(id).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(id.to_string(), Instant::now());
        }
        if let Err(e) = self.store.touch_key(id, now_ms()).await {
            tracing::warn!(error = %e, key = id, "cannot record when the key was last used");
        }
    }

    /// Records a sign-out (the session itself is ended by `sessions::sign_out`).
    pub async fn signed_out(&self, actor: &Actor) {
        if let Principal::User { username, .. } = &actor.principal {
            self.audit_event(actor, "logout", username, None, None).await;
        }
    }

    pub async fn users(&self) -> ServiceResult<Vec<UserInfo>> {
        Ok(self.store.users().await?)
    }

    pub async fn create_user(&self, raw: &Value, actor: &Actor) -> ServiceResult<UserInfo> {
        let mut problems = Vec::new();
        let username = collect(&mut problems, validate_username("username", raw.get("username")));
        let password = collect(&mut problems, validate_password("password", raw.get("password")));
        let role = collect(&mut problems, validate_role("role", raw.get("role")));
        let (Some(username), Some(password), Some(role)) = (username, password, role) else {
            return Err(ServiceError::Invalid(problems));
        };
        let now = now_ms();
        let record = UserRecord {
            info: UserInfo { username: username.clone(), role, created_at: now, updated_at: now },
            password_hash: hash_password(password).await?,
            session_epoch: 0,
        };
        match self.store.create_user(record.clone(), false).await? {
            CreateUser::Created => {}
            _ => return Err(ServiceError::Conflict(FieldError::new("username", format!("{username:?} is taken")))),
        }
        self.has_users.store(true, Ordering::Relaxed);
        self.setup_token.lock().unwrap().take();
        self.audit_event(actor, "user.create", &username, None, Some(json!({"role": role}))).await;
        Ok(record.info)
    }

    /// Changes a role and/or password (`{role?, password?}`). The last admin keeps its role.
    pub async fn update_user(&self, username: &str, raw: &Value, actor: &Actor) -> ServiceResult<UserInfo> {
        let mut problems = Vec::new();
        let role = field(raw, "role").map(|r| validate_role("role", Some(&r))).transpose();
        let role = collect(&mut problems, role).flatten();
        let password = field(raw, "password").map(|p| validate_password("password", Some(&p))).transpose();
        let password = collect(&mut problems, password).flatten();
        if !problems.is_empty() {
            return Err(ServiceError::Invalid(problems));
        }
        if role.is_none() && password.is_none() {
            return Err(ServiceError::Invalid(vec![FieldError::new("body", "give a role, a password or both")]));
        }
        let before = self.store.user(username).await?.ok_or(ServiceError::NotFound)?;
        if before.info.role == Role::Admin && role.is_some_and(|r| r != Role::Admin) {
            self.keep_an_admin(username).await?;
        }
        let password_hash = match password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let changed_password = password_hash.is_some();
        let after = self
            .store
            .update_user(username, UserChange { role, password_hash }, now_ms())
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.users.lock().unwrap().remove(username);
        let mut after_json = json!({"role": after.info.role});
        if changed_password {
            after_json["password"] = json!("changed");
        }
        self.audit_event(actor, "user.update", username, Some(json!({"role": before.info.role})), Some(after_json))
            .await;
        Ok(after.info)
    }

    pub async fn delete_user(&self, username: &str, actor: &Actor) -> ServiceResult<()> {
        let before = self.store.user(username).await?.ok_or(ServiceError::NotFound)?;
        if before.info.role == Role::Admin {
            self.keep_an_admin(username).await?;
        }
        if !self.store.delete_user(username).await? {
            return Err(ServiceError::NotFound);
        }
        self.users.lock().unwrap().remove(username);
        self.audit_event(actor, "user.delete", username, Some(json!({"role": before.info.role})), None).await;
        Ok(())
    }

    async fn keep_an_admin(&self, leaving: &str) -> ServiceResult<()> {
        let admins = self.store.users().await?.into_iter().filter(|u| u.role == Role::Admin && u.username != leaving);
        if admins.count() == 0 {
            return Err(ServiceError::Forbidden(format!(
                "{leaving:?} is the last admin; make another user admin first"
            )));
        }
        Ok(())
    }

    pub async fn keys(&self) -> ServiceResult<Vec<ApiKeyInfo>> {
        Ok(self.store.keys().await?)
    }

    /// Creates a key from `{name, scopes}`; the answer carries the key this once.
    pub async fn create_key(&self, raw: &Value, actor: &Actor) -> ServiceResult<CreatedKey> {
        let mut problems = Vec::new();
        let name = collect(&mut problems, validate_key_name("name", raw.get("name")));
        let scopes = collect(&mut problems, validate_scopes("scopes", raw.get("scopes")));
        let (Some(name), Some(scopes)) = (name, scopes) else {
            return Err(ServiceError::Invalid(problems));
        };
        let key = format!("{KEY_PREFIX}{}", random_token(32));
        let info = ApiKeyInfo {
            id: random_token(9),
            name,
            scopes,
            prefix: key.chars().take(KEY_PREFIX.len() + 6).collect(),
            created_at: now_ms(),
            created_by: actor.principal.actor(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.create_key(KeyRecord { info: info.clone(), hash: sha256_hex(&key) }).await?;
        let after = json!({"name": info.name, "scopes": info.scopes, "prefix": info.prefix});
        self.audit_event(actor, "key.create", &info.id, None, Some(after)).await;
        Ok(CreatedKey { info, key })
    }

    pub async fn revoke_key(&self, id: &str, actor: &Actor) -> ServiceResult<ApiKeyInfo> {
        let info = self.store.revoke_key(id, now_ms()).await?.ok_or(ServiceError::NotFound)?;
        self.keys.lock().unwrap().retain(|_, (k, _)| k.as_ref().is_none_or(|k| k.id != id));
        let before = json!({"name": info.name, "scopes": info.scopes});
        self.audit_event(actor, "key.revoke", id, Some(before), Some(json!({"revoked": true}))).await;
        Ok(info)
    }

    pub async fn audit(&self, limit: usize, offset: usize) -> ServiceResult<Vec<AuditEntry>> {
        Ok(self.store.audit(limit, offset).await?)
    }

    /// Appends to the audit log. A failure is logged, not raised: the change itself happened.
    pub async fn audit_event(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: action.to_string(),
            target: target.to_string(),
            before,
            after,
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, action, target, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hashes_are_argon2id_and_verify() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), hash).await);
        assert!(PasswordHash::new(DUMMY_HASH).is_ok(), "the dummy hash parses, so unknown users cost a full verify");
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
