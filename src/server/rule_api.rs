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
pub async fn list(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.rules().await?).into_response())
}

/// `POST /api/rules`: 200 with the base rule for `{eventType, points, isActive}` alone (the
/// old app's upsert), else 201 with the new rule and its `id`.
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
pub async fn remove(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    let rule = found(state.service.delete_rule(&id, &actor).await, &id)?;
    Ok(Json(rule).into_response())
}

/// `GET /api/stages`: the ladder, lowest first.
pub async fn stages(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.stages().await?).into_response())
}

/// `PUT /api/stages`: a new ladder, `[{name, minScore}]` with rising thresholds.
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
pub async fn stage_counts(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.stage_counts().await?).into_response())
}

/// `GET /api/settings/decay`: `{halfLifeDays, lastPass}`.
pub async fn decay(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.decay_settings().await?).into_response())
}

/// `PUT /api/settings/decay`: `{"halfLifeDays": 30}`, or `null` for no decay; a pass starts now.
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
pub async fn start_rescore(State(state): State<AppState>, Extension(actor): Extension<Actor>) -> Answer {
    let job = state.service.start_rescore(&actor).await?;
    let location = format!("/api/rescore/{}", job.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(job)).into_response())
}

/// `GET /api/rescore/:id`: the job's state and progress.
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
