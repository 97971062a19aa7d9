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

#[utoipa::path(get, path = "/api/setup", tag = "accounts",
    responses((status = 200, description = "Whether the first admin still has to be made.", body = crate::server::openapi::SetupStatus)))]
pub async fn setup_status(State(state): State<AppState>) -> Answer {
    let needed = state.accounts.setup_needed().await?;
    Ok(Json(json!({"needed": needed && state.config.auth == super::config::AuthMode::Required})).into_response())
}

/// Creates the first admin (with the token from the log) and signs them in.
#[utoipa::path(post, path = "/api/setup", tag = "accounts", request_body = crate::server::openapi::SetupBody,
    responses((status = 201, description = "The first admin, signed in (a session cookie is set).", body = crate::server::openapi::SignedIn),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError),
        (status = 401, description = "The token is missing or wrong.", body = crate::domain::error::ApiError),
        (status = 409, description = "Setup was done already.", body = crate::domain::error::ApiError),
        (status = 429, description = "Too many tries.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
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

#[utoipa::path(post, path = "/api/auth/login", tag = "accounts", request_body = crate::server::openapi::LoginBody,
    responses((status = 200, description = "Signed in: a session cookie is set.", body = crate::server::openapi::SignedIn),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 401, description = "Wrong user name or password.", body = crate::domain::error::ApiError),
        (status = 429, description = "Locked for a while after failed tries.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
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

#[utoipa::path(post, path = "/api/auth/logout", tag = "accounts",
    responses((status = 200, description = "Signed out.", body = crate::server::openapi::Done)))]
pub async fn logout(State(state): State<AppState>, Extension(actor): Extension<Actor>, session: Session) -> Answer {
    state.accounts.signed_out(&actor).await;
    sign_out(&session).await?;
    Ok(Json(json!({"message": "Signed out"})).into_response())
}

#[utoipa::path(get, path = "/api/auth/me", tag = "accounts",
    responses((status = 200, description = "Who is calling.", body = crate::server::openapi::Me),
        (status = 401, description = "Not signed in.", body = crate::domain::error::ApiError)))]
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

#[utoipa::path(get, path = "/api/users", tag = "accounts",
    responses((status = 200, description = "Every user.", body = [crate::domain::access::UserInfo])))]
pub async fn list_users(State(state): State<AppState>) -> Answer {
    Ok(Json(state.accounts.users().await?).into_response())
}

#[utoipa::path(post, path = "/api/users", tag = "accounts", request_body = crate::server::openapi::UserBody,
    responses((status = 201, description = "The user.", body = crate::domain::access::UserInfo),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 409, description = "The user name is taken.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
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

#[utoipa::path(patch, path = "/api/users/{username}", tag = "accounts", params(("username" = String, Path)),
    request_body = crate::server::openapi::UserChange,
    responses((status = 200, description = "The user as changed; a new password ends their sessions.", body = crate::domain::access::UserInfo),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 404, description = "No such user.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
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

#[utoipa::path(delete, path = "/api/users/{username}", tag = "accounts", params(("username" = String, Path)),
    responses((status = 204, description = "Deleted; their sessions end."),
        (status = 403, description = "The last admin cannot be deleted.", body = crate::domain::error::ApiError), (status = 404, description = "No such user.", body = crate::domain::error::ApiError)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(username): Path<String>,
) -> Answer {
    state.accounts.delete_user(&username, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/keys", tag = "accounts",
    responses((status = 200, description = "Every API key, without the key itself.", body = [crate::domain::access::ApiKeyInfo])))]
pub async fn list_keys(State(state): State<AppState>) -> Answer {
    Ok(Json(state.accounts.keys().await?).into_response())
}

#[utoipa::path(post, path = "/api/keys", tag = "accounts", request_body = crate::server::openapi::KeyBody,
    responses((status = 201, description = "The key, with the `key` itself (shown this once).", body = crate::domain::access::CreatedKey),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let raw = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok((StatusCode::CREATED, Json(state.accounts.create_key(&raw, &actor).await?)).into_response())
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, description = "The key, revoked.", body = crate::domain::access::ApiKeyInfo),
        (status = 404, description = "No such key.", body = crate::domain::error::ApiError)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    Ok(Json(state.accounts.revoke_key(&id, &actor).await?).into_response())
}

/// `?limit=` (1–500, default 50) `&offset=`; newest first.
#[utoipa::path(get, path = "/api/audit", tag = "accounts",
    params(("limit" = Option<u32>, Query, description = "1–500, default 50."), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "Newest first.", body = [crate::domain::access::AuditEntry]),
        (status = 400, description = "A query parameter is not valid.", body = crate::domain::error::ApiError)))]
pub async fn audit(State(state): State<AppState>, Query(params): Query<Vec<(String, String)>>) -> Answer {
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
    // The last value of each (a list of pairs, so a repeated parameter is no 400 without a body).
    let last = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let limit = number("limit", last("limit"), 50, (1, 500));
    let offset = number("offset", last("offset"), 0, (0, 10_000_000));
    if !problems.is_empty() {
        return Err(ApiError::new(400, "Invalid query parameters", problems));
    }
    Ok(Json(state.accounts.audit(limit, offset).await?).into_response())
}
