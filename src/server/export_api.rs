//! CSV exports, streamed: `GET /api/export/leads.csv` (the leaderboard's filters) and
//! `GET /api/export/leads/{id}/history.csv`. Rows go out a page at a time as the store yields
//! them (`service::export`); a store failure midway cuts the response off, so a client never
//! takes a partial file for a whole one.

use super::api::ApiError;
use super::http::AppState;
use crate::domain::export::{history_row, lead_row, HISTORY_COLUMNS, LEAD_COLUMNS};
use crate::service::{ServiceError, ServiceResult};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};

#[utoipa::path(get, path = "/api/export/leads.csv", tag = "leads",
    params(("search" = Option<String>, Query), ("minScore" = Option<i64>, Query), ("maxScore" = Option<i64>, Query), ("stage" = Option<String>, Query)),
    responses((status = 200, description = "Every matching lead, streamed, highest score first.", content_type = "text/csv", body = String),
        (status = 400, description = "A query parameter is not valid.", body = crate::domain::error::ApiError)))]
pub async fn leads_csv(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = super::api::lead_query(&params)?;
    let pages = state.service.export_leads(&query).await?;
    let rows = pages.map(|page| page.map(|leads| leads.iter().map(lead_row).collect::<Vec<_>>()));
    Ok(csv_response("leads.csv".into(), &LEAD_COLUMNS, rows))
}

#[utoipa::path(get, path = "/api/export/leads/{id}/history.csv", tag = "leads",
    params(("id" = String, Path)),
    responses((status = 200, description = "The lead's score history, newest first.", content_type = "text/csv", body = String),
        (status = 308, description = "Merged into another lead: `Location` names it.", body = crate::server::openapi::MergedLead),
        (status = 404, description = "No such lead.", body = crate::domain::error::ApiError)))]
pub async fn history_csv(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let pages = match state.service.export_history(&id).await {
        Err(ServiceError::NotFound) => {
            return Err(ApiError::field(404, "Lead not found", "id", format!("no lead with id {id:?}")))
        }
        Err(ServiceError::Merged(into)) => {
            let path = format!("/api/export/leads/{}/history.csv", crate::app::encode_component(&into));
            return Ok(super::api::merged_into(&id, &into, &path, None));
        }
        other => other?,
    };
    let rows = pages.map(|page| page.map(|entries| entries.iter().map(history_row).collect::<Vec<_>>()));
    Ok(csv_response(format!("history-{}.csv", file_name_part(&id)), &HISTORY_COLUMNS, rows))
}

/// The header row, then each page of rows as one chunk.
fn csv_response<const N: usize>(
    file_name: String,
    columns: &[&str; N],
    pages: impl Stream<Item = ServiceResult<Vec<[String; N]>>> + Send + 'static,
) -> Response {
    let header_row = stream::once(std::future::ready(records(std::iter::once(columns.map(str::to_string)))));
    let rows = pages.map(|page| match page {
        Ok(rows) => records(rows.into_iter()),
        Err(e) => {
            tracing::warn!(error = %e, "export cut off: the store failed midway");
            Err(std::io::Error::other(e.to_string()))
        }
    });
    let disposition = format!("attachment; filename=\"{file_name}\"");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(header_row.chain(rows)),
    )
        .into_response()
}

/// Rows as CSV text (RFC 4180: quoted where needed, CRLF line ends).
fn records<const N: usize>(rows: impl Iterator<Item = [String; N]>) -> Result<Bytes, std::io::Error> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for row in rows {
        writer.write_record(&row)?;
    }
    writer.into_inner().map(Bytes::from).map_err(|e| std::io::Error::other(e.to_string()))
}

/// A lead id as part of a file name: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_name_part(id: &str) -> String {
    id.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}
