//! REST routes for the scoring model: the rules (list, add — or set a type's base rule, the
//! old meaning of `POST` — change, remove), the stage ladder, decay and rescoring. Same service calls as the
//! rules page.

use super::api::{read_json, MAX_CONTROL_BODY};
use super::http::AppState;
use crate::domain::error::ApiError;
use crate::service::accounts::Actor;
use crate::service::rules::Saved;
use crate::service::ServiceError;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

type Answer = Result<Response, ApiError>;

/// `GET /api/rules`
#[utoipa::path(get, path = "/api/rules", tag = "scoring",
    responses((status = 200, description = "Every rule.", body = [crate::domain::model::Rule])))]
pub async fn list(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.rules().await?).into_response())
}

/// `POST /api/rules`: 200 with the base rule for `{eventType, points, isActive}` alone (the
/// old app's upsert), else 201 with the new rule and its `id`.
#[utoipa::path(post, path = "/api/rules", tag = "scoring", request_body = crate::server::openapi::RuleBody,
    responses((status = 200, description = "The type's base rule, set (only `eventType`, `points`, `isActive` sent).", body = crate::domain::model::Rule),
        (status = 201, description = "A new rule, with its `id`.", body = crate::domain::model::Rule),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn save(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let value = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok(match state.service.save_rule(&value, &actor).await? {
        Saved::Base(rule) => Json(rule).into_response(),
        Saved::Created(rule) => (StatusCode::CREATED, Json(rule)).into_response(),
    })
}

/// `PUT /api/rules/{id}`: the whole rule, as `POST` takes it.
#[utoipa::path(put, path = "/api/rules/{id}", tag = "scoring", params(("id" = String, Path)), request_body = crate::server::openapi::RuleBody,
    responses((status = 200, description = "The rule as changed.", body = crate::domain::model::Rule),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 404, description = "No such rule.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let value = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    let rule = found(state.service.update_rule(&id, &value, &actor).await, &id)?;
    Ok(Json(rule).into_response())
}

/// `DELETE /api/rules/{id}`: 200 with the rule as it was.
#[utoipa::path(delete, path = "/api/rules/{id}", tag = "scoring", params(("id" = String, Path)),
    responses((status = 200, description = "The rule as it was.", body = crate::domain::model::Rule),
        (status = 404, description = "No such rule.", body = crate::domain::error::ApiError)))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    let rule = found(state.service.delete_rule(&id, &actor).await, &id)?;
    Ok(Json(rule).into_response())
}

/// `GET /api/stages`: the ladder, lowest first.
#[utoipa::path(get, path = "/api/stages", tag = "scoring",
    responses((status = 200, description = "The ladder, lowest first.", body = [crate::domain::stages::Stage])))]
pub async fn stages(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.stages().await?).into_response())
}

/// `PUT /api/stages`: a new ladder, `[{name, minScore}]` with rising thresholds.
#[utoipa::path(put, path = "/api/stages", tag = "scoring", request_body = Vec<crate::domain::stages::Stage>,
    responses((status = 200, description = "The new ladder.", body = [crate::domain::stages::Stage]), (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn save_stages(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let value = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok(Json(state.service.save_stages(&value, &actor).await?).into_response())
}

/// `GET /api/stages/counts`: every stage with how many leads are in it.
#[utoipa::path(get, path = "/api/stages/counts", tag = "scoring",
    responses((status = 200, description = "Every stage with how many leads are in it.", body = [crate::domain::stages::StageCount])))]
pub async fn stage_counts(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.stage_counts().await?).into_response())
}

/// `GET /api/settings/decay`: `{halfLifeDays, lastPass}`.
#[utoipa::path(get, path = "/api/settings/decay", tag = "scoring",
    responses((status = 200, description = "The half-life and the last pass.", body = crate::domain::decay::DecaySettings)))]
pub async fn decay(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.decay_settings().await?).into_response())
}

/// `PUT /api/settings/decay`: `{"halfLifeDays": 30}`, or `null` for no decay; a pass starts now.
#[utoipa::path(put, path = "/api/settings/decay", tag = "scoring", request_body = crate::server::openapi::DecayBody,
    responses((status = 200, description = "The setting; a pass starts now.", body = crate::domain::decay::DecaySettings), (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn save_decay(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let value = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    Ok(Json(state.service.save_decay(&value, &actor).await?).into_response())
}

/// `POST /api/rescore`: 202 with the job (`{id, state, processed, total, …}`), which replays
/// every stored event with the current rules in the background; the job already running, if
/// there is one.
#[utoipa::path(post, path = "/api/rescore", tag = "scoring",
    responses((status = 202, description = "The job (or the one already running); `Location` names it.", body = crate::domain::rescore::RescoreJob)))]
pub async fn start_rescore(State(state): State<AppState>, Extension(actor): Extension<Actor>) -> Answer {
    let job = state.service.start_rescore(&actor).await?;
    let location = format!("/api/rescore/{}", job.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(job)).into_response())
}

/// `GET /api/rescore/:id`: the job's state and progress.
#[utoipa::path(get, path = "/api/rescore/{id}", tag = "scoring", params(("id" = String, Path)),
    responses((status = 200, description = "The job's state and progress.", body = crate::domain::rescore::RescoreJob),
        (status = 404, description = "No such job.", body = crate::domain::error::ApiError)))]
pub async fn rescore_job(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    match state.service.rescore_job(&id).await {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Rescore job not found", "id", format!("no rescore job with id {id:?}")))
        }
        other => Ok(Json(other?).into_response()),
    }
}

fn found<T>(result: Result<T, ServiceError>, id: &str) -> Result<T, ApiError> {
    match result {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Rule not found", "id", format!("no rule with id {id:?}")))
        }
        other => Ok(other?),
    }
}
