//! Who may do what: roles of people, scopes of API keys, the access a route needs, and the
//! validation of account input. Pure data and rules; the server builds every route from a
//! table of these (`server::policy`) and the pages use them to hide controls a role may not use.

use super::time::{iso, iso_opt, Millis};
use super::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A person's role. Each includes everything the one before it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Leaderboard, lead pages, the live stream.
    Viewer,
    /// + rules, test events, uploads.
    Editor,
    /// + users, API keys, the audit log.
    Admin,
}

/// What an API key may be used for. `admin` includes the other two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone: health, login, first-run setup.
    Public,
    /// Reading leads, rules and the live stream: a `read` key or any signed-in person.
    Read,
    /// Posting events: an `ingest` key or an editor.
    Ingest,
    /// Changing rules, test events, uploads: an editor or an `admin` key.
    Edit,
    /// Users, keys, the audit log: an admin or an `admin` key.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn grants(self, access: Access) -> bool {
        match access {
            Access::Public | Access::Read => true,
            Access::Ingest | Access::Edit => self >= Role::Editor,
            Access::Admin => self == Role::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn grants(self, access: Access) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Read => matches!(access, Access::Public | Access::Read),
            Scope::Ingest => matches!(access, Access::Public | Access::Ingest),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Whoever made a request, once their credentials were checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    Anonymous,
    /// `AUTH=off`: the old app's openness, everything allowed.
    Open,
    User {
        username: String,
        role: Role,
    },
    Key {
        id: String,
        name: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    pub fn may(&self, access: Access) -> bool {
        match self {
            Principal::Open => true,
            Principal::Anonymous => access == Access::Public,
            Principal::User { role, .. } => role.grants(access),
            Principal::Key { scopes, .. } => scopes.iter().any(|s| s.grants(access)),
        }
    }

    /// How the audit log names the principal.
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Open => "anonymous (AUTH=off)".into(),
            Principal::User { username, .. } => username.clone(),
            Principal::Key { name, id, .. } => format!("key {name} ({id})"),
        }
    }

    pub fn is_signed_in(&self) -> bool {
        !matches!(self, Principal::Anonymous)
    }
}

/// A person's account, as listed and returned (never with the password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub updated_at: Millis,
}

/// An API key as listed: never the key itself, which is shown once when it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The key's first characters, so a person can tell keys apart.
    pub prefix: String,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub created_at: Millis,
    pub created_by: String,
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<Millis>,
    #[serde(with = "iso_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<Millis>,
}

/// The answer to creating a key: its description and, this once, the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "iso")]
    #[cfg_attr(feature = "ssr", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// Who did it: a username, a key, or `anonymous` for failed logins.
    pub actor: String,
    /// `rule.update`, `key.create`, `key.revoke`, `user.create`, `user.update`, `user.delete`,
    /// `login`, `login.failed`, `logout`, `setup`.
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
}

/// Who the browser is signed in as, for the pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub username: Option<String>,
    pub role: Option<Role>,
    /// `AUTH=off`: everything is open; the pages show a banner.
    pub auth_off: bool,
}

impl Me {
    pub fn may(&self, access: Access) -> bool {
        self.auth_off || access == Access::Public || self.role.is_some_and(|r| r.grants(access))
    }
}

pub const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_BYTES: usize = 1024;

/// 1–64 characters: letters, digits and `. _ @ -`.
pub fn validate_username(field: &str, raw: Option<&Value>) -> Result<String, FieldError> {
    let s = match raw {
        Some(Value::String(s)) => s.trim(),
        None | Some(Value::Null) => return Err(FieldError::new(field, "is required")),
        Some(_) => return Err(FieldError::new(field, "must be a string")),
    };
    if s.is_empty() || s.chars().count() > 64 {
        return Err(FieldError::new(field, "must be 1 to 64 characters"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))) {
        return Err(FieldError::new(field, format!("may only hold letters, digits and . _ @ - (found {c:?})")));
    }
    Ok(s.to_string())
}

/// At least `MIN_PASSWORD_CHARS` characters, at most 1 KB (Argon2 input stays cheap).
pub fn validate_password(field: &str, raw: Option<&Value>) -> Result<String, FieldError> {
    let s = match raw {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(FieldError::new(field, "is required")),
        Some(_) => return Err(FieldError::new(field, "must be a string")),
    };
    if s.chars().count() < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(field, format!("must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if s.len() > MAX_PASSWORD_BYTES {
        return Err(FieldError::new(field, format!("must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(s.clone())
}

pub fn validate_role(field: &str, raw: Option<&Value>) -> Result<Role, FieldError> {
    match raw {
        Some(Value::String(s)) => {
            Role::parse(s).ok_or_else(|| FieldError::new(field, format!("must be viewer, editor or admin, got {s:?}")))
        }
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(_) => Err(FieldError::new(field, "must be one of \"viewer\", \"editor\", \"admin\"")),
    }
}

/// A non-empty list of distinct scopes.
pub fn validate_scopes(field: &str, raw: Option<&Value>) -> Result<Vec<Scope>, FieldError> {
    let Some(Value::Array(items)) = raw else {
        return Err(FieldError::new(field, "must be a list of scopes: \"ingest\", \"read\", \"admin\""));
    };
    let mut scopes = Vec::new();
    for item in items {
        let scope = item.as_str().and_then(Scope::parse).ok_or_else(|| {
            FieldError::new(field, format!("unknown scope {item}; use \"ingest\", \"read\", \"admin\""))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(FieldError::new(field, "must name at least one scope"));
    }
    Ok(scopes)
}

/// A key's name: 1–100 characters of text.
pub fn validate_key_name(field: &str, raw: Option<&Value>) -> Result<String, FieldError> {
    match raw {
        Some(Value::String(s)) if !s.trim().is_empty() && s.trim().chars().count() <= 100 => {
            if s.chars().any(char::is_control) {
                Err(FieldError::new(field, "must not contain control characters"))
            } else {
                Ok(s.trim().to_string())
            }
        }
        Some(Value::String(_)) => Err(FieldError::new(field, "must be 1 to 100 characters")),
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_include_what_the_lower_ones_may() {
        use Access::*;
        let table = [
            (Role::Viewer, [true, true, false, false, false]),
            (Role::Editor, [true, true, true, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, expected) in table {
            let got: Vec<bool> = [Public, Read, Ingest, Edit, Admin].iter().map(|a| role.grants(*a)).collect();
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn scopes_grant_only_their_own_access_and_admin_grants_all() {
        use Access::*;
        let key = |scopes: Vec<Scope>| Principal::Key { id: "k".into(), name: "n".into(), scopes };
        let may = |p: &Principal| [Public, Read, Ingest, Edit, Admin].map(|a| p.may(a));
        assert_eq!(may(&key(vec![Scope::Ingest])), [true, false, true, false, false]);
        assert_eq!(may(&key(vec![Scope::Read])), [true, true, false, false, false]);
        assert_eq!(may(&key(vec![Scope::Read, Scope::Ingest])), [true, true, true, false, false]);
        assert_eq!(may(&key(vec![Scope::Admin])), [true; 5]);
        assert_eq!(may(&key(vec![])), [false; 5], "a key without scopes may do nothing, not even public routes");
        assert_eq!(may(&Principal::Anonymous), [true, false, false, false, false]);
        assert_eq!(may(&Principal::Open), [true; 5]);
    }

    #[test]
    fn account_input_errors_name_the_field() {
        assert_eq!(validate_username("username", Some(&json!(" ann.lee@x "))).unwrap(), "ann.lee@x");
        assert_eq!(validate_username("username", None).unwrap_err().problem, "is required");
        assert!(validate_username("username", Some(&json!("a b"))).unwrap_err().problem.contains("' '"));
        assert!(validate_username("username", Some(&json!("x".repeat(65)))).is_err());
        assert_eq!(validate_password("password", Some(&json!("short"))).unwrap_err().field, "password");
        assert!(validate_password("password", Some(&json!("long enough pw"))).is_ok());
        assert_eq!(validate_role("role", Some(&json!("editor"))).unwrap(), Role::Editor);
        assert!(validate_role("role", Some(&json!("root"))).unwrap_err().problem.contains("\"root\""));
        assert_eq!(
            validate_scopes("scopes", Some(&json!(["read", "read", "ingest"]))).unwrap(),
            [Scope::Read, Scope::Ingest]
        );
        assert!(validate_scopes("scopes", Some(&json!([]))).is_err());
        assert!(validate_scopes("scopes", Some(&json!(["write"]))).unwrap_err().problem.contains("write"));
        assert!(validate_key_name("name", Some(&json!("  "))).is_err());
        assert_eq!(validate_key_name("name", Some(&json!(" site "))).unwrap(), "site");
    }
}
