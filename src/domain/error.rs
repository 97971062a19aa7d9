//! The one error shape of every answer that is not a success, REST and server functions alike:
//! `{"error": "...", "details": [{"field", "problem"}], "status": 403}`. Server functions use
//! it as their error type, so the pages can tell "sign in again" (401) from "your role may not"
//! (403) from "try again later" (503).

use super::FieldError;
use serde::{Deserialize, Serialize};
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[error("{error}")]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    pub error: String,
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub details: Vec<FieldError>,
    /// The HTTP status; 0 when the server could not be reached at all.
    #[cfg_attr(feature = "ssr", schema(required = true))]
    #[serde(default)]
    pub status: u16,
    /// With 429 (and 503 where known): seconds until a retry may succeed; also sent as the
    /// `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>, details: Vec<FieldError>) -> Self {
        Self { status, error: error.into(), details, retry_after: None }
    }

    /// A 429: `problem` with `field`, retry in `seconds`.
    pub fn too_many(field: &str, problem: impl Into<String>, seconds: u64) -> Self {
        Self { retry_after: Some(seconds), ..Self::field(429, "Too many requests", field, problem) }
    }

    pub fn field(status: u16, error: impl Into<String>, field: &str, problem: impl Into<String>) -> Self {
        Self::new(status, error, vec![FieldError::new(field, problem)])
    }

    pub fn unauthorized(problem: impl Into<String>) -> Self {
        Self::field(401, "Unauthorized", "Authorization", problem)
    }

    pub fn forbidden(problem: impl Into<String>) -> Self {
        Self::field(403, "Forbidden", "role", problem)
    }

    pub fn invalid(details: Vec<FieldError>) -> Self {
        Self::new(400, "Validation failed", details)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, what, vec![])
    }

    /// A sentence for a person: the error and what each field's problem is.
    pub fn describe(&self) -> String {
        match self.status {
            0 => format!("Cannot reach the server ({}).", self.error),
            401 => "Your session has ended; sign in again.".into(),
            _ if self.details.is_empty() => self.error.clone(),
            _ => {
                let details: Vec<String> = self.details.iter().map(|d| format!("{} {}", d.field, d.problem)).collect();
                format!("{}: {}.", self.error, details.join("; "))
            }
        }
    }
}

impl FromServerFnError for ApiError {
    type Encoder = super::wire::JsonText;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            // The request never got an answer: offline, or the server is down.
            ServerFnErrorErr::Request(m) => ApiError::new(0, m, vec![]),
            ServerFnErrorErr::Args(m) | ServerFnErrorErr::MissingArg(m) | ServerFnErrorErr::Deserialization(m) => {
                ApiError::field(400, "Malformed request", "body", m)
            }
            ServerFnErrorErr::ServerError(m) => ApiError::new(500, m, vec![]),
            other => ApiError::new(500, other.to_string(), vec![]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_travel_as_the_rest_error_body() {
        let e = ApiError::forbidden("editors and admins only");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["error"], "Forbidden");
        assert_eq!(json["details"][0]["field"], "role");
        assert_eq!(json["status"], 403);
        assert_eq!(serde_json::from_value::<ApiError>(json).unwrap(), e);
        assert_eq!(ApiError::de(e.ser()), e, "server function encoding round-trips");
    }

    #[test]
    fn descriptions_are_sentences() {
        assert_eq!(ApiError::unauthorized("x").describe(), "Your session has ended; sign in again.");
        assert_eq!(
            ApiError::invalid(vec![FieldError::new("points", "must be an integer")]).describe(),
            "Validation failed: points must be an integer."
        );
        assert!(ApiError::new(0, "network down", vec![]).describe().starts_with("Cannot reach the server"));
    }
}
