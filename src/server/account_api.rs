//! REST routes for access control: first-run setup, signing in and out, users, API keys and
//! the audit log. Same service calls as the dashboard's server functions.

use super::api::{read_json, MAX_CONTROL_BODY};
use super::http::AppState;
use crate::domain::access::Principal;
use crate::domain::error::ApiError;
use crate::service::accounts::Actor;
use crate::service::sessions::{sign_in, sign_out};
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tower_sessions::Session;

type Answer = Result<Response, ApiError>;

pub async fn setup_status(State(state): State<AppState>) -> Answer {
    let needed = state.accounts.setup_needed().await?;
    Ok(Json(json!({"needed": needed && state.config.auth == super::config::AuthMode::Required})).into_response())
}

/// Creates the first admin (with the token from the log) and signs them in.
pub async fn setup(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    let user = state.accounts.setup(&raw, actor.ip).await?;
    sign_in(&session, &user).await?;
    Ok((StatusCode::CREATED, Json(json!({"username": user.info.username, "role": user.info.role}))).into_response())
}

pub async fn login(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    let user = state.accounts.login(&raw, actor.ip).await?;
    sign_in(&session, &user).await?;
    Ok(Json(json!({"username": user.info.username, "role": user.info.role})).into_response())
}

pub async fn logout(State(state): State<AppState>, Extension(actor): Extension<Actor>, session: Session) -> Answer {
    state.accounts.signed_out(&actor).await;
    sign_out(&session).await?;
    Ok(Json(json!({"message": "Signed out"})).into_response())
}

pub async fn me(Extension(actor): Extension<Actor>) -> Answer {
    Ok(match actor.principal {
        Principal::User { username, role } => Json(json!({"username": username, "role": role})).into_response(),
        Principal::Key { id, name, scopes } => {
            Json(json!({"key": {"id": id, "name": name, "scopes": scopes}})).into_response()
        }
        Principal::Open => Json(json!({"username": null, "role": "admin", "authOff": true})).into_response(),
        Principal::Anonymous => return Err(ApiError::unauthorized("not signed in")),
    })
}

pub async fn list_users(State(state): State<AppState>) -> Answer {
    Ok(Json(state.accounts.users().await?).into_response())
}

pub async fn create_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    let user = state.accounts.create_user(&raw, &actor).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

pub async fn update_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(username): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok(Json(state.accounts.update_user(&username, &raw, &actor).await?).into_response())
}

pub async fn delete_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(username): Path<String>,
) -> Answer {
    state.accounts.delete_user(&username, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_keys(State(state): State<AppState>) -> Answer {
    Ok(Json(state.accounts.keys().await?).into_response())
}

pub async fn create_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok((StatusCode::CREATED, Json(state.accounts.create_key(&raw, &actor).await?)).into_response())
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    Ok(Json(state.accounts.revoke_key(&id, &actor).await?).into_response())
}

#[derive(serde::Deserialize)]
pub struct AuditPage {
    limit: Option<String>,
    offset: Option<String>,
}

/// `?limit=` (1–500, default 50) `&offset=`; newest first.
pub async fn audit(State(state): State<AppState>, Query(page): Query<AuditPage>) -> Answer {
    let mut problems = Vec::new();
    let mut number = |name: &str, raw: Option<String>, default: usize, (min, max): (usize, usize)| match raw.as_deref()
    {
        None | Some("") => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                let problem = format!("must be a whole number from {min} to {max}, got {v:?}");
                problems.push(crate::domain::FieldError::new(name, problem));
                default
            }
        },
    };
    let limit = number("limit", page.limit, 50, (1, 500));
    let offset = number("offset", page.offset, 0, (0, 10_000_000));
    if !problems.is_empty() {
        return Err(ApiError::new(400, "Invalid query parameters", problems));
    }
    Ok(Json(state.accounts.audit(limit, offset).await?).into_response())
}
