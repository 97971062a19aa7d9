//! REST routes for the dead-letter list (admins): list, retry, discard. Same service calls
//! as the dashboard's server functions.

use super::http::AppState;
use crate::domain::error::ApiError;
use crate::domain::FieldError;
use crate::service::accounts::Actor;
use crate::service::ServiceError;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

type Answer = Result<Response, ApiError>;

/// `GET /api/dead-letters?after=<id>&limit=<n>`
#[utoipa::path(get, path = "/api/dead-letters", tag = "operations",
    params(("after" = Option<i64>, Query, description = "An id from the previous page."), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "Events the worker could not score, oldest first.", body = crate::domain::model::DeadLetterList),
        (status = 400, description = "A query parameter is not valid.", body = crate::domain::error::ApiError)))]
pub async fn list(State(state): State<AppState>, Query(params): Query<Vec<(String, String)>>) -> Answer {
    let mut after = None;
    let mut limit = None;
    let mut problems = Vec::new();
    for (key, value) in &params {
        match key.as_str() {
            "after" => match value.parse::<i64>() {
                Ok(n) => after = Some(n),
                Err(_) => problems.push(FieldError::new("after", "must be a whole number (an id from the list)")),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) => limit = Some(n),
                Err(_) => problems.push(FieldError::new("limit", "must be a whole number")),
            },
            other => problems.push(FieldError::new(other, "unknown parameter; expected after or limit")),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::new(400, "Invalid query parameters", problems));
    }
    Ok(Json(state.service.dead_letters(after, limit).await?).into_response())
}

/// `POST /api/dead-letters/{id}/retry`
#[utoipa::path(post, path = "/api/dead-letters/{id}/retry", tag = "operations", params(("id" = i64, Path)),
    responses((status = 200, description = "Queued to be scored again.", body = crate::server::openapi::DoneWith),
        (status = 400, description = "The id is not a number.", body = crate::domain::error::ApiError), (status = 404, description = "No such dead letter.", body = crate::domain::error::ApiError)))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    let id = parse_id(&id)?;
    found(state.service.retry_dead_letter(id, &actor).await, id)?;
    Ok(Json(json!({"message": "Event queued again", "id": id})).into_response())
}

/// `DELETE /api/dead-letters/{id}`
#[utoipa::path(delete, path = "/api/dead-letters/{id}", tag = "operations", params(("id" = i64, Path)),
    responses((status = 200, description = "Discarded.", body = crate::server::openapi::DoneWith),
        (status = 400, description = "The id is not a number.", body = crate::domain::error::ApiError), (status = 404, description = "No such dead letter.", body = crate::domain::error::ApiError)))]
pub async fn discard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    let id = parse_id(&id)?;
    found(state.service.discard_dead_letter(id, &actor).await, id)?;
    Ok(Json(json!({"message": "Dead letter discarded", "id": id})).into_response())
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::field(400, "Invalid dead letter id", "id", format!("must be a whole number, got {id:?}"))
    })
}

fn found(result: Result<(), ServiceError>, id: i64) -> Result<(), ApiError> {
    match result {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Dead letter not found", "id", format!("no dead letter with id {id}")))
        }
        other => Ok(other?),
    }
}
