//! Server functions: the dashboard's calls into the same service layer the REST API uses.
//! Validation problems travel as data (`Checked`), so forms show them beside their fields;
//! anything else (server unreachable, store down) is a `ServerFnError` with a readable text.

use crate::domain::query::{DetailPage, LeadQuery};
use crate::domain::{BatchReport, FieldError, Lead, LeadDetail, Rule};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde_json::Value;

/// A value, or the field problems that stopped it.
pub type Checked<T> = Result<T, Vec<FieldError>>;

#[cfg(feature = "ssr")]
mod backend {
    use crate::server::http::AppState;
    use crate::server::service::{Service, ServiceError};
    use leptos::prelude::*;
    use std::sync::Arc;

    pub fn service() -> Result<Arc<Service>, ServerFnError> {
        use_context::<AppState>()
            .map(|s| s.service.clone())
            .ok_or_else(|| ServerFnError::new("server state is missing"))
    }

    /// Errors that are not about the input become a message for the page.
    pub fn failure(e: ServiceError) -> ServerFnError {
        match e {
            ServiceError::Unavailable(_) => {
                ServerFnError::new("The database is unavailable right now; try again shortly.")
            }
            ServiceError::NotFound => ServerFnError::new("Not found."),
            ServiceError::Invalid(d) => ServerFnError::new(format!("Invalid input: {d:?}")),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "server function failed");
                ServerFnError::new("Something went wrong on the server; it has been logged.")
            }
        }
    }

    /// Splits validation problems (data) from failures (errors).
    pub fn checked<T>(r: Result<T, ServiceError>) -> Result<super::Checked<T>, ServerFnError> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(ServiceError::Invalid(problems)) => Ok(Err(problems)),
            Err(e) => Err(failure(e)),
        }
    }
}

#[server(prefix = "/rpc", input = Json)]
pub async fn fetch_leaderboard(query: LeadQuery) -> Result<Vec<Lead>, ServerFnError> {
    backend::service()?.leaderboard(&query).await.map_err(backend::failure)
}

/// `None` for an unknown lead.
#[server(prefix = "/rpc", input = Json)]
pub async fn fetch_lead(id: String, page: DetailPage) -> Result<Option<LeadDetail>, ServerFnError> {
    use crate::server::service::ServiceError;
    match backend::service()?.lead_detail(&id, &page).await {
        Ok(detail) => Ok(Some(detail)),
        Err(ServiceError::NotFound) => Ok(None),
        Err(e) => Err(backend::failure(e)),
    }
}

#[server(prefix = "/rpc", input = Json)]
pub async fn fetch_rules() -> Result<Vec<Rule>, ServerFnError> {
    backend::service()?.rules().await.map_err(backend::failure)
}

/// Creates or updates a rule. `points` is the form's text, so a non-number is a field error.
#[server(prefix = "/rpc", input = Json)]
pub async fn save_rule(event_type: String, points: String, is_active: bool) -> Result<Checked<Rule>, ServerFnError> {
    let points = match points.trim().parse::<i64>() {
        Ok(p) => Value::from(p),
        Err(_) if points.trim().is_empty() => Value::Null,
        Err(_) => {
            return Ok(Err(vec![FieldError::new("points", format!("must be an integer, got {:?}", points.trim()))]));
        }
    };
    let raw = serde_json::json!({"eventType": event_type, "points": points, "isActive": is_active});
    backend::checked(backend::service()?.upsert_rule(&raw).await)
}

/// Sends one event from the dashboard's test form; the server stamps id and time.
/// Returns the new event's id.
#[server(prefix = "/rpc", input = Json)]
pub async fn send_test_event(
    lead_id: String,
    event_type: String,
    metadata: String,
) -> Result<Checked<String>, ServerFnError> {
    use crate::server::service::IngestOutcome;
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
    Ok(match backend::checked(backend::service()?.ingest_one(&raw).await)? {
        Ok(IngestOutcome::Accepted { event_id }) => Ok(event_id),
        Ok(IngestOutcome::Duplicate(_)) => Err(vec![FieldError::new("eventId", "was already received")]),
        Err(problems) => Err(problems),
    })
}

/// One chunk of an uploaded file, as a batch.
#[server(prefix = "/rpc", input = Json)]
pub async fn upload_events(events: Vec<Value>) -> Result<Checked<BatchReport>, ServerFnError> {
    backend::checked(backend::service()?.ingest_batch(&events).await)
}

/// A readable sentence for a failed server call.
pub fn describe(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(m) => m.clone(),
        ServerFnError::Request(m) => format!("Cannot reach the server ({m})."),
        other => other.to_string(),
    }
}
