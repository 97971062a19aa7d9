//! Server functions: the dashboard's calls into the same service layer the REST API uses.
//! Each is served only through its entry in the access policy (`server::policy`), which has
//! already checked the caller; the body finds the services and the caller in context.
//! Errors are `ApiError`s with their HTTP status, so pages can tell 401 from 403 from 503.
//! Validation problems of the older forms travel as data (`Checked`), shown beside fields.
//! Every function names its endpoint (`/rpc/<name>`): the default adds a hash of the build's
//! directory, so a WASM built in one checkout and a server built in another (a shared
//! `CARGO_TARGET_DIR` cache) would miss each other on every call.

use crate::domain::access::{ApiKeyInfo, AuditEntry, CreatedKey, Me, UserInfo};
use crate::domain::decay::DecaySettings;
use crate::domain::error::ApiError;
pub use crate::domain::intake::RawItems;
use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::rescore::{RescoreJob, RescoreStatus};
use crate::domain::rule_form::RuleForm;
use crate::domain::stages::{Stage, StageCount};
use crate::domain::webhooks::{CreatedWebhook, Delivery, Webhook};
use crate::domain::wire::JsonAnswer;
use crate::domain::{BatchReport, DeadLetterList, FieldError, Lead, LeadDetail, Rule};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
#[cfg(feature = "ssr")]
use serde_json::Value;

/// A value, or the field problems that stopped it.
pub type Checked<T> = Result<T, Vec<FieldError>>;

#[cfg(feature = "ssr")]
mod backend {
    use crate::domain::error::ApiError;
    use crate::service::accounts::Actor;
    use crate::service::{Backend, ServiceError};
    use leptos::prelude::*;

    /// The services and the caller the gate let through. No caller means the request did not
    /// come through the policy's routes: refused.
    pub fn backend() -> Result<(Backend, Actor), ApiError> {
        let backend =
            use_context::<Backend>().ok_or_else(|| fail(ApiError::new(500, "server state is missing", vec![])))?;
        let actor = use_context::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Actor>().cloned())
            .ok_or_else(|| fail(ApiError::unauthorized("this call did not pass the access policy")))?;
        Ok((backend, actor))
    }

    pub fn session() -> Result<tower_sessions::Session, ApiError> {
        use_context::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<tower_sessions::Session>().cloned())
            .ok_or_else(|| fail(ApiError::new(500, "sessions are not set up", vec![])))
    }

    /// Sets the answer's HTTP status to the error's, so the client decodes it as this error.
    pub fn fail(e: ApiError) -> ApiError {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(status) = axum::http::StatusCode::from_u16(e.status) {
                response.set_status(status);
            }
        }
        e
    }

    pub fn failure(e: ServiceError) -> ApiError {
        fail(e.into())
    }

    /// Splits validation problems (data) from failures (errors).
    pub fn checked<T>(r: Result<T, ServiceError>) -> Result<super::Checked<T>, ApiError> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(ServiceError::Invalid(problems)) => Ok(Err(problems)),
            Err(e) => Err(failure(e)),
        }
    }
}

/// Who the browser is signed in as (nobody: both fields empty).
#[server(prefix = "/rpc", endpoint = "current_user", input = Json, output = JsonAnswer)]
pub async fn current_user() -> Result<Me, ApiError> {
    use crate::domain::access::Principal;
    let (backend, actor) = backend::backend()?;
    Ok(match actor.principal {
        Principal::User { username, role } => Me { username: Some(username), role: Some(role), auth_off: false },
        _ => Me { username: None, role: None, auth_off: backend.auth_off },
    })
}

#[server(prefix = "/rpc", endpoint = "login", input = Json, output = JsonAnswer)]
pub async fn login(username: String, password: String) -> Result<Me, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = serde_json::json!({"username": username, "password": password});
    let user = backend.accounts.login(&raw, actor.ip).await.map_err(backend::failure)?;
    crate::service::sessions::sign_in(&backend::session()?, &user).await.map_err(backend::failure)?;
    Ok(Me { username: Some(user.info.username), role: Some(user.info.role), auth_off: false })
}

#[server(prefix = "/rpc", endpoint = "logout", input = Json, output = JsonAnswer)]
pub async fn logout() -> Result<(), ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.accounts.signed_out(&actor).await;
    crate::service::sessions::sign_out(&backend::session()?).await.map_err(backend::failure)
}

/// Creates the first admin with the token from the server's log, and signs them in.
#[server(prefix = "/rpc", endpoint = "setup", input = Json, output = JsonAnswer)]
pub async fn setup(token: String, username: String, password: String) -> Result<Me, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = serde_json::json!({"token": token, "username": username, "password": password});
    let user = backend.accounts.setup(&raw, actor.ip).await.map_err(backend::failure)?;
    crate::service::sessions::sign_in(&backend::session()?, &user).await.map_err(backend::failure)?;
    Ok(Me { username: Some(user.info.username), role: Some(user.info.role), auth_off: false })
}

#[server(prefix = "/rpc", endpoint = "fetch_leaderboard", input = Json, output = JsonAnswer)]
pub async fn fetch_leaderboard(query: LeadQuery) -> Result<Vec<Lead>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.leaderboard(&query).await.map_err(backend::failure)
}

/// The dashboard's overview (`domain::overview`).
#[server(prefix = "/rpc", endpoint = "fetch_overview", input = Json, output = JsonAnswer)]
pub async fn fetch_overview() -> Result<crate::domain::overview::Overview, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.overview().await.map_err(backend::failure)
}

/// How many leads the leaderboard query matches in all.
#[server(prefix = "/rpc", endpoint = "fetch_lead_total", input = Json, output = JsonAnswer)]
pub async fn fetch_lead_total(query: LeadQuery) -> Result<u64, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.leaderboard_total(&query).await.map_err(backend::failure)
}

/// `None` for an unknown lead; a lead merged into another is that one.
#[server(prefix = "/rpc", endpoint = "fetch_lead", input = Json, output = JsonAnswer)]
pub async fn fetch_lead(id: String, page: DetailPage) -> Result<Option<LeadDetail>, ApiError> {
    use crate::service::ServiceError;
    let (backend, _) = backend::backend()?;
    let found = match backend.service.lead_detail(&id, &page).await {
        Err(ServiceError::Merged(into)) => backend.service.lead_detail(&into, &page).await,
        other => other,
    };
    match found {
        Ok(detail) => Ok(Some(detail)),
        Err(ServiceError::NotFound) => Ok(None),
        Err(e) => Err(backend::failure(e)),
    }
}

#[server(prefix = "/rpc", endpoint = "fetch_rules", input = Json, output = JsonAnswer)]
pub async fn fetch_rules() -> Result<Vec<Rule>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.rules().await.map_err(backend::failure)
}

/// What the test-event form offers (`domain::event_types`).
#[server(prefix = "/rpc", endpoint = "fetch_event_types", input = Json, output = JsonAnswer)]
pub async fn fetch_event_types() -> Result<Vec<crate::domain::event_types::EventTypeChoice>, ApiError> {
    let (backend, _) = backend::backend()?;
    let rules = backend.service.rules().await.map_err(backend::failure)?;
    Ok(crate::domain::event_types::event_type_choices(&rules))
}

/// Saves the rule form as `POST /api/rules` would: the plain form (type, points, active) sets
/// the type's base rule; with a name, conditions or a limit it adds a rule.
#[server(prefix = "/rpc", endpoint = "save_rule", input = Json, output = JsonAnswer)]
pub async fn save_rule(form: RuleForm) -> Result<Checked<Rule>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = match form.to_json() {
        Ok(raw) => raw,
        Err(problems) => return Ok(Err(problems)),
    };
    backend::checked(backend.service.save_rule(&raw, &actor).await.map(|saved| match saved {
        crate::service::rules::Saved::Base(rule) | crate::service::rules::Saved::Created(rule) => rule,
    }))
}

/// Replaces rule `id` with the form, as `PUT /api/rules/{id}`.
#[server(prefix = "/rpc", endpoint = "update_rule", input = Json, output = JsonAnswer)]
pub async fn update_rule(id: String, form: RuleForm) -> Result<Checked<Rule>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = match form.to_json() {
        Ok(raw) => raw,
        Err(problems) => return Ok(Err(problems)),
    };
    backend::checked(backend.service.update_rule(&id, &raw, &actor).await)
}

/// Sets only a rule's points (the form's text) and state; the rest stays as stored.
#[server(prefix = "/rpc", endpoint = "set_rule_points", input = Json, output = JsonAnswer)]
pub async fn set_rule_points(id: String, points: String, is_active: bool) -> Result<Checked<Rule>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let points = match crate::domain::rule_form::integer_text("points", &points) {
        Ok(p) => p,
        Err(e) => return Ok(Err(vec![e])),
    };
    backend::checked(backend.service.set_rule_points(&id, &points, is_active, &actor).await)
}

/// Removes rule `id`, as `DELETE /api/rules/{id}`; returns it as it was.
#[server(prefix = "/rpc", endpoint = "delete_rule", input = Json, output = JsonAnswer)]
pub async fn delete_rule(id: String) -> Result<Rule, ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.delete_rule(&id, &actor).await.map_err(backend::failure)
}

/// The stage ladder with how many leads are in each stage.
#[server(prefix = "/rpc", endpoint = "fetch_stage_counts", input = Json, output = JsonAnswer)]
pub async fn fetch_stage_counts() -> Result<Vec<StageCount>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.stage_counts().await.map_err(backend::failure)
}

/// The decay setting and what its last pass did, as `GET /api/settings/decay`.
#[server(prefix = "/rpc", endpoint = "fetch_decay", input = Json, output = JsonAnswer)]
pub async fn fetch_decay() -> Result<DecaySettings, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.decay_settings().await.map_err(backend::failure)
}

/// Sets the half-life, as `PUT /api/settings/decay`. `half_life` is the form's text: empty
/// turns decay off.
#[server(prefix = "/rpc", endpoint = "save_decay", input = Json, output = JsonAnswer)]
pub async fn save_decay(half_life: String) -> Result<Checked<DecaySettings>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let text = half_life.trim();
    let days = match text.parse::<f64>() {
        _ if text.is_empty() => Value::Null,
        Ok(d) if d.is_finite() => Value::from(d),
        _ => {
            return Ok(Err(vec![FieldError::new(
                "halfLifeDays",
                format!("must be a number of days (empty: no decay), got {text:?}"),
            )]))
        }
    };
    backend::checked(backend.service.save_decay(&serde_json::json!({"halfLifeDays": days}), &actor).await)
}

/// The latest rescore job and whether the rules changed since it started.
#[server(prefix = "/rpc", endpoint = "fetch_rescore", input = Json, output = JsonAnswer)]
pub async fn fetch_rescore() -> Result<RescoreStatus, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.rescore_status().await.map_err(backend::failure)
}

/// Starts a rescore of every lead, as `POST /api/rescore` (or answers the one running).
#[server(prefix = "/rpc", endpoint = "start_rescore", input = Json, output = JsonAnswer)]
pub async fn start_rescore() -> Result<RescoreJob, ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.start_rescore(&actor).await.map_err(backend::failure)
}

/// Replaces the stage ladder, as `PUT /api/stages`. `min_score` is the form's text.
#[server(prefix = "/rpc", endpoint = "save_stages", input = Json, output = JsonAnswer)]
pub async fn save_stages(stages: Vec<(String, String)>) -> Result<Checked<Vec<Stage>>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let mut problems = Vec::new();
    let raw: Vec<Value> = stages
        .iter()
        .enumerate()
        .map(|(i, (name, min))| {
            let min =
                crate::domain::rule_form::integer_text(format!("stages[{i}].minScore"), min).unwrap_or_else(|e| {
                    problems.push(e);
                    Value::Null
                });
            serde_json::json!({"name": name, "minScore": min})
        })
        .collect();
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    backend::checked(backend.service.save_stages(&Value::Array(raw), &actor).await)
}

/// Sends one event from the dashboard's test form; the server stamps id and time.
/// Returns the new event's id.
#[server(prefix = "/rpc", endpoint = "send_test_event", input = Json, output = JsonAnswer)]
pub async fn send_test_event(
    lead_id: String,
    event_type: String,
    metadata: String,
) -> Result<Checked<String>, ApiError> {
    use crate::service::IngestOutcome;
    let (backend, _) = backend::backend()?;
    let metadata = if metadata.trim().is_empty() {
        Value::Null
    } else {
        match serde_json::from_str::<Value>(&metadata) {
            Ok(v) => v,
            Err(e) => return Ok(Err(vec![FieldError::new("metadata", format!("is not valid JSON: {e}"))])),
        }
    };
    let now = chrono::Utc::now();
    let event_id = format!("ui_{}_{:08x}", now.timestamp_millis(), now.timestamp_subsec_nanos() ^ std::process::id());
    let raw = serde_json::json!({
        "eventId": event_id, "leadId": lead_id, "eventType": event_type,
        "timestamp": crate::domain::time::to_iso(now.timestamp_millis()), "metadata": metadata,
    });
    use crate::service::metrics::ingested;
    Ok(match backend::checked(backend.service.ingest_one(&raw).await)? {
        Ok(IngestOutcome::Accepted { event_id }) => {
            ingested("/rpc/send_test_event", 1, 0, 0);
            Ok(event_id)
        }
        Ok(IngestOutcome::Duplicate(_)) => Err(vec![FieldError::new("eventId", "was already received")]),
        Err(problems) => {
            ingested("/rpc/send_test_event", 0, 0, 1);
            Err(problems)
        }
    })
}

/// One chunk of an uploaded file, as a batch (read in bounded memory, like `/api/events/batch`).
#[server(prefix = "/rpc", endpoint = "upload_events", input = Json, output = JsonAnswer)]
pub async fn upload_events(events: RawItems) -> Result<Checked<BatchReport>, ApiError> {
    let (backend, _) = backend::backend()?;
    let items = events.check(crate::service::now_ms());
    let checked = backend::checked(backend.service.ingest_checked_batch(items).await)?;
    if let Ok(report) = &checked {
        crate::service::metrics::ingested_batch("/rpc/upload_events", report);
    }
    Ok(checked)
}

#[server(prefix = "/rpc", endpoint = "fetch_users", input = Json, output = JsonAnswer)]
pub async fn fetch_users() -> Result<Vec<UserInfo>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.accounts.users().await.map_err(backend::failure)
}

/// Creates an account (`create`) or changes one's role and, if given, password.
#[server(prefix = "/rpc", endpoint = "save_user", input = Json, output = JsonAnswer)]
pub async fn save_user(username: String, role: String, password: String, create: bool) -> Result<UserInfo, ApiError> {
    let (backend, actor) = backend::backend()?;
    let mut raw = serde_json::json!({"username": username, "role": role});
    if create || !password.is_empty() {
        raw["password"] = Value::String(password);
    }
    let result = if create {
        backend.accounts.create_user(&raw, &actor).await
    } else {
        backend.accounts.update_user(&username, &raw, &actor).await
    };
    result.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "remove_user", input = Json, output = JsonAnswer)]
pub async fn remove_user(username: String) -> Result<(), ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.accounts.delete_user(&username, &actor).await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "fetch_keys", input = Json, output = JsonAnswer)]
pub async fn fetch_keys() -> Result<Vec<ApiKeyInfo>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.accounts.keys().await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "create_key", input = Json, output = JsonAnswer)]
pub async fn create_key(name: String, scopes: Vec<String>) -> Result<CreatedKey, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = serde_json::json!({"name": name, "scopes": scopes});
    backend.accounts.create_key(&raw, &actor).await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "revoke_key", input = Json, output = JsonAnswer)]
pub async fn revoke_key(id: String) -> Result<ApiKeyInfo, ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.accounts.revoke_key(&id, &actor).await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "fetch_audit", input = Json, output = JsonAnswer)]
pub async fn fetch_audit(offset: usize) -> Result<Vec<AuditEntry>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.accounts.audit(50, offset).await.map_err(backend::failure)
}

/// A page of the dead-letter list, from the event after `after` on.
#[server(prefix = "/rpc", endpoint = "fetch_dead_letters", input = Json, output = JsonAnswer)]
pub async fn fetch_dead_letters(after: Option<i64>) -> Result<DeadLetterList, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.dead_letters(after, Some(DEAD_LETTER_PAGE)).await.map_err(backend::failure)
}

/// Every webhook subscription (no secrets).
#[server(prefix = "/rpc", endpoint = "fetch_webhooks", input = Json, output = JsonAnswer)]
pub async fn fetch_webhooks() -> Result<Vec<Webhook>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.webhooks().await.map_err(backend::failure)
}

/// Adds a subscription, as `POST /api/webhooks`; the answer carries its secret, once.
#[server(prefix = "/rpc", endpoint = "create_webhook", input = Json, output = JsonAnswer)]
pub async fn create_webhook(url: String, events: Vec<String>) -> Result<Checked<CreatedWebhook>, ApiError> {
    let (backend, actor) = backend::backend()?;
    let raw = serde_json::json!({"url": url, "events": events});
    backend::checked(backend.service.create_webhook(&raw, &actor).await)
}

#[server(prefix = "/rpc", endpoint = "delete_webhook", input = Json, output = JsonAnswer)]
pub async fn delete_webhook(id: String) -> Result<Webhook, ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.delete_webhook(&id, &actor).await.map_err(backend::failure)
}

/// A subscription's latest deliveries, newest first.
#[server(prefix = "/rpc", endpoint = "fetch_deliveries", input = Json, output = JsonAnswer)]
pub async fn fetch_deliveries(id: String) -> Result<Vec<Delivery>, ApiError> {
    let (backend, _) = backend::backend()?;
    backend.service.webhook_deliveries(&id).await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "redeliver", input = Json, output = JsonAnswer)]
pub async fn redeliver(id: String, delivery: i64) -> Result<(), ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.redeliver(&id, delivery, &actor).await.map_err(backend::failure)
}

/// Dead letters the admin page shows at once.
pub const DEAD_LETTER_PAGE: usize = 50;

#[server(prefix = "/rpc", endpoint = "retry_dead_letter", input = Json, output = JsonAnswer)]
pub async fn retry_dead_letter(id: i64) -> Result<(), ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.retry_dead_letter(id, &actor).await.map_err(backend::failure)
}

#[server(prefix = "/rpc", endpoint = "discard_dead_letter", input = Json, output = JsonAnswer)]
pub async fn discard_dead_letter(id: i64) -> Result<(), ApiError> {
    let (backend, actor) = backend::backend()?;
    backend.service.discard_dead_letter(id, &actor).await.map_err(backend::failure)
}

/// A readable sentence for a failed server call.
pub fn describe(e: &ApiError) -> String {
    e.describe()
}
