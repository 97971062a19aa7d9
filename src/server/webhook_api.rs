//! REST routes for webhooks (admins): subscriptions, their deliveries, redeliver. Same
//! service calls as the webhooks page.

use super::api::{read_json, MAX_CONTROL_BODY};
use super::http::AppState;
use crate::domain::error::ApiError;
use crate::service::accounts::Actor;
use crate::service::ServiceError;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

type Answer = Result<Response, ApiError>;

/// `GET /api/webhooks`: every subscription, without secrets.
#[utoipa::path(get, path = "/api/webhooks", tag = "operations",
    responses((status = 200, description = "Every subscription, without secrets.", body = [crate::domain::webhooks::Webhook])))]
pub async fn list(State(state): State<AppState>) -> Answer {
    Ok(Json(state.service.webhooks().await?).into_response())
}

/// `POST /api/webhooks` `{url, events}`: 201 with the subscription and its `secret` (shown
/// this once).
#[utoipa::path(post, path = "/api/webhooks", tag = "operations", request_body = crate::server::openapi::WebhookBody,
    responses((status = 201, description = "The subscription, with its signing `secret` (shown this once).", body = crate::domain::webhooks::CreatedWebhook),
        (status = 409, description = "The most webhooks there may be exist already.", body = crate::domain::error::ApiError),
        (status = 400, description = "A field is missing or not valid: `details` names each.", body = crate::domain::error::ApiError), (status = 408, description = "The body did not arrive in time.", body = crate::domain::error::ApiError), (status = 413, description = "The body is larger than allowed.", body = crate::domain::error::ApiError), (status = 415, description = "The body is not JSON (`Content-Type`).", body = crate::domain::error::ApiError)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let value = read_json(&headers, body, MAX_CONTROL_BODY, &state.bodies).await?;
    let created = state.service.create_webhook(&value, &actor).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `DELETE /api/webhooks/{id}`: 204; its deliveries not yet sent are given up.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "operations", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its pending deliveries are given up."),
        (status = 404, description = "No such webhook.", body = crate::domain::error::ApiError)))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Answer {
    found(state.service.delete_webhook(&id, &actor).await, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/webhooks/{id}/deliveries`: the latest 200, newest first.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, description = "The latest 200 deliveries, newest first.", body = [crate::domain::webhooks::Delivery]),
        (status = 404, description = "No such webhook.", body = crate::domain::error::ApiError)))]
pub async fn deliveries(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    Ok(Json(found(state.service.webhook_deliveries(&id).await, &id)?).into_response())
}

/// `POST /api/webhooks/{id}/deliveries/{delivery}/redeliver`: 202; sent again at once.
#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{delivery}/redeliver", tag = "operations",
    params(("id" = String, Path), ("delivery" = i64, Path)),
    responses((status = 202, description = "Sent again at once, with the same payload.", body = crate::server::openapi::DoneWith),
        (status = 400, description = "The delivery id is not a number.", body = crate::domain::error::ApiError), (status = 404, description = "No such webhook or delivery.", body = crate::domain::error::ApiError)))]
pub async fn redeliver(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((id, delivery)): Path<(String, String)>,
) -> Answer {
    let number: i64 = delivery.parse().map_err(|_| {
        ApiError::field(400, "Invalid delivery id", "delivery", format!("must be a whole number, got {delivery:?}"))
    })?;
    // No such webhook names `id`; no such delivery of it, `delivery`.
    found(state.service.find_webhook(&id).await, &id)?;
    match state.service.redeliver(&id, number, &actor).await {
        Err(ServiceError::NotFound) => Err(ApiError::field(
            404,
            "Delivery not found",
            "delivery",
            format!("webhook {id:?} has no delivery {number}"),
        )),
        other => {
            other?;
            Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"message": "Delivery queued again", "id": number})))
                .into_response())
        }
    }
}

fn found<T>(result: Result<T, ServiceError>, id: &str) -> Result<T, ApiError> {
    match result {
        Err(ServiceError::NotFound) => {
            Err(ApiError::field(404, "Webhook not found", "id", format!("no webhook with id {id:?}")))
        }
        other => Ok(other?),
    }
}
