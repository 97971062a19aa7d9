//! The REST API's description, OpenAPI 3.1 (`GET /api/openapi.json`), and its reference page
//! (`/api/docs`: Swagger UI, served from the binary, no CDN). Operations and shapes come from
//! the handlers' `#[utoipa::path]` and the types' `ToSchema`; who may call each route, and
//! the errors the gate answers with, come from the policy table — the description cannot
//! claim an access rule other than the one enforced.

mod shapes;

use super::policy::{self, Entry, Serve};
use crate::domain::access::Access;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::{Arc, OnceLock};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, OpenApi as Document, PathItem, RefOr, Response as Answer, ResponseBuilder};
use utoipa::OpenApi;

pub use shapes::*;

/// Routes served for people, not described: the reference page and its files.
pub const DOCS: &str = "/api/docs";
pub const DOCS_SLASH: &str = "/api/docs/";
pub const DOCS_FILES: &str = "/api/docs/{*file}";
pub const SPEC: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leadscore API",
        description = "Behavioural events in, lead scores out. Errors share one body, \
            `{error, details: [{field, problem}], status}`, naming each bad field. \
            Segment's tracking API (`/v1/*`) answers in Segment's shapes as well."
    ),
    paths(
        super::api::health,
        super::metrics_api::scrape,
        super::api::post_event,
        super::api::post_batch,
        super::segment_api::track_doc,
        super::segment_api::identify_doc,
        super::segment_api::page_doc,
        super::segment_api::screen_doc,
        super::segment_api::group_doc,
        super::segment_api::alias_doc,
        super::segment_api::batch_doc,
        super::api::list_leads,
        super::api::overview,
        super::api::lead_detail,
        super::export_api::leads_csv,
        super::export_api::history_csv,
        super::rule_api::list,
        super::rule_api::save,
        super::rule_api::update,
        super::rule_api::remove,
        super::rule_api::stages,
        super::rule_api::save_stages,
        super::rule_api::stage_counts,
        super::rule_api::decay,
        super::rule_api::save_decay,
        super::rule_api::start_rescore,
        super::rule_api::rescore_job,
        super::stream::stream_handler,
        super::dead_letter_api::list,
        super::dead_letter_api::retry,
        super::dead_letter_api::discard,
        super::webhook_api::list,
        super::webhook_api::create,
        super::webhook_api::remove,
        super::webhook_api::deliveries,
        super::webhook_api::redeliver,
        super::account_api::setup_status,
        super::account_api::setup,
        super::account_api::login,
        super::account_api::logout,
        super::account_api::me,
        super::account_api::list_users,
        super::account_api::create_user,
        super::account_api::update_user,
        super::account_api::delete_user,
        super::account_api::list_keys,
        super::account_api::create_key,
        super::account_api::revoke_key,
        super::account_api::audit,
        spec,
    ),
    tags(
        (name = "events", description = "Posting behavioural events: one, or a batch."),
        (name = "segment", description = "Segment's tracking API, for tracking SDKs: the write key as the Basic user name."),
        (name = "leads", description = "The leaderboard, a lead's history and events, exports."),
        (name = "scoring", description = "Rules, the stage ladder, decay and rescoring."),
        (name = "live", description = "The live stream of score changes (Server-Sent Events)."),
        (name = "operations", description = "Health, metrics, dead letters and webhooks."),
        (name = "accounts", description = "Setup, signing in, users, API keys and the audit log."),
    )
)]
struct ApiDoc;

/// The description: the annotated operations, with access, credentials and the gate's
/// answers filled in from the policy table.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Components::new);
    let key = "An API key (`POST /api/keys`, or one of `API_KEYS`)";
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description("X-API-Key", key))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(key)).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::service::sessions::COOKIE_NAME,
            "The dashboard's session (`POST /api/auth/login`). Writes with it must come from the \
             same site and send `Content-Type: application/json`, else 403 (cross-site request forgery).",
        ))),
    );
    components.add_security_scheme(
        "writeKey",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("An API key as the user name, the password empty: what Segment's SDKs send."))
                .build(),
        ),
    );
    for entry in policy::table() {
        if !matches!(entry.serve, Serve::Rest(_)) || !described(entry.path) {
            continue;
        }
        if let Some(operation) = doc.paths.paths.get_mut(entry.path).and_then(|item| operation(item, &entry)) {
            apply_policy(operation, &entry);
        }
    }
    doc
}

/// Whether a REST route belongs in the description (the reference page's files do not).
pub fn described(path: &str) -> bool {
    ![DOCS, DOCS_SLASH, DOCS_FILES].contains(&path)
}

fn operation<'a>(item: &'a mut PathItem, entry: &Entry) -> Option<&'a mut utoipa::openapi::path::Operation> {
    use axum::http::Method;
    match entry.method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

fn apply_policy(operation: &mut utoipa::openapi::path::Operation, entry: &Entry) {
    let access = entry.access;
    let note = format!("\n\n**Access: `{}`** — {}.", access_name(access), who(access));
    let description = operation.description.get_or_insert_with(String::new);
    description.push_str(&note);
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, answer: Answer| {
        responses.entry(status.to_string()).or_insert(RefOr::T(answer));
    };
    if access == Access::Public {
        operation.security = Some(vec![SecurityRequirement::default()]);
        if entry.method != axum::http::Method::GET {
            add("403", error("A cross-site request, or one with a session cookie and a body that is not JSON."));
        }
    } else {
        let role = access_name(access);
        let schemes = ["apiKey", "bearer", "writeKey", "session"];
        operation.security =
            Some(schemes.into_iter().map(|s| SecurityRequirement::new(s, [role.to_string()])).collect());
        add("401", error("No credentials, or ones that are not valid (`field`: `Authorization`)."));
        add("403", error("Signed in or keyed, but without this access; or a cross-site write with a session cookie."));
    }
    if policy::rate_limited(entry) {
        add("429", error("Too many requests from this caller; `Retry-After` says when to try again."));
    }
    add("503", error("The store is unreachable, the server is busy, or the request took too long; `Retry-After` says when to try again."));
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Read => "read",
        Access::Ingest => "ingest",
        Access::Edit => "edit",
        Access::Admin => "admin",
    }
}

fn who(access: Access) -> &'static str {
    match access {
        Access::Public => "anyone",
        Access::Read => "any signed-in user; `read` or `admin` keys",
        Access::Ingest => "editors and admins; `ingest` or `admin` keys",
        Access::Edit => "editors and admins; `admin` keys",
        Access::Admin => "admins; `admin` keys",
    }
}

/// A response with the error body.
pub fn error(description: &str) -> Answer {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
                .build(),
        )
        .build()
}

fn spec_json() -> &'static str {
    static SPEC_JSON: OnceLock<String> = OnceLock::new();
    SPEC_JSON.get_or_init(|| document().to_pretty_json().expect("the description serializes"))
}

/// This description.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of every REST route.", content_type = "application/json", body = Object)))]
pub async fn spec() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec_json()).into_response()
}

/// The reference page's short addresses: to its page, beside the files it loads.
pub async fn docs_index() -> Response {
    Redirect::permanent("/api/docs/index.html").into_response()
}

/// Swagger UI's files, from the binary. Its own CSP: its scripts are files of ours, but it
/// styles elements inline and draws icons from `data:` URLs.
pub async fn docs_file(Path(file): Path<String>) -> Response {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from(SPEC).try_it_out_enabled(true)));
    match utoipa_swagger_ui::serve(&file, config.clone()) {
        Ok(Some(found)) => {
            let mut response = ([(header::CONTENT_TYPE, found.content_type)], found.bytes.to_vec()).into_response();
            response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
            response
        }
        Ok(None) => super::api::ApiError::new(404, "No such file", vec![]).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the API reference page's files");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rest_route_of_the_policy_is_described_with_its_method_and_access() {
        let doc = document();
        let mut described_routes = 0;
        for entry in policy::table() {
            if !matches!(entry.serve, Serve::Rest(_)) || !described(entry.path) {
                continue;
            }
            let item = doc.paths.paths.get(entry.path).unwrap_or_else(|| panic!("{} is not described", entry.path));
            let mut item = item.clone();
            let op = operation(&mut item, &entry)
                .unwrap_or_else(|| panic!("{} {} is not described", entry.method, entry.path));
            let security = op.security.as_ref().expect("every operation says who may call it");
            let text = serde_json::to_string(security).unwrap();
            if entry.access == Access::Public {
                assert_eq!(text, "[{}]", "{} {} is public", entry.method, entry.path);
            } else {
                assert!(
                    text.contains(&format!("[\"{}\"]", access_name(entry.access))),
                    "{} {}: {text}",
                    entry.method,
                    entry.path
                );
                assert!(op.responses.responses.contains_key("401") && op.responses.responses.contains_key("403"));
            }
            described_routes += 1;
        }
        // …and nothing is described that the router does not serve.
        let operations: usize = doc
            .paths
            .paths
            .values()
            .map(|i| [&i.get, &i.post, &i.put, &i.patch, &i.delete].iter().filter(|o| o.is_some()).count())
            .sum();
        assert_eq!(operations, described_routes);
        assert!(described_routes > 40);
    }

    #[test]
    fn the_description_is_openapi_3_1_and_every_reference_resolves() {
        let json: serde_json::Value = serde_json::from_str(spec_json()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = json["components"]["schemas"].as_object().unwrap();
        let text = spec_json();
        for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "{name} is referenced but not defined");
        }
    }
}
