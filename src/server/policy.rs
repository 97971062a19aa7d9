//! The access policy, as one table: every REST route, server function and page, with the
//! access it needs. The router is built from this table and nothing else (`router`), each
//! entry behind the gate with its own rule, so a route cannot exist without a rule; the policy
//! tests walk the same table. A server function or page missing from it is not served at all.
//!
//! | Access | who has it |
//! |---|---|
//! | public | anyone |
//! | read   | any signed-in user; `read` or `admin` keys |
//! | ingest | editors, admins; `ingest` or `admin` keys |
//! | edit   | editors, admins; `admin` keys |
//! | admin  | admins; `admin` keys |

use super::gate::{gate, FirstRun, Gate, Kind, SETUP_PAGE};
use super::http::AppState;
use super::{
    account_api as accounts, api, dead_letter_api as dead_letters, export_api, metrics_api, openapi, rule_api,
    segment_api, stream, webhook_api,
};
use crate::app::server_fns::*;
use crate::app::{shell, App};
use crate::domain::access::Access::{self, *};
use crate::domain::segment::Call;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, handle_server_fns_with_context, render_app_to_stream_with_context};
use server_fn::ServerFn;

/// What serves an entry.
pub enum Serve {
    Rest(MethodRouter<AppState>),
    ServerFn,
    Page,
}

/// One row of the policy table.
pub struct Entry {
    pub method: Method,
    /// In axum's syntax (`/api/leads/{id}`).
    pub path: &'static str,
    pub access: Access,
    pub serve: Serve,
    pub first_run: FirstRun,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        match self.serve {
            Serve::Rest(_) => Kind::Rest,
            Serve::ServerFn => Kind::ServerFn,
            Serve::Page => Kind::Page,
        }
    }
}

fn rest(method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>) -> Entry {
    Entry { method, path, access, serve: Serve::Rest(handler), first_run: FirstRun::Unaffected }
}

fn server_fn<F: ServerFn>(access: Access) -> Entry {
    Entry { method: Method::POST, path: F::PATH, access, serve: Serve::ServerFn, first_run: FirstRun::Unaffected }
}

fn page(path: &'static str, access: Access) -> Entry {
    Entry { method: Method::GET, path, access, serve: Serve::Page, first_run: FirstRun::SendToSetup }
}

fn setup_page() -> Entry {
    Entry { first_run: FirstRun::SetupPage, ..page(SETUP_PAGE, Public) }
}

/// The table.
pub fn table() -> Vec<Entry> {
    vec![
        // External systems and scripts.
        rest(Method::GET, "/api/health", Public, get(api::health)),
        rest(Method::GET, "/metrics", Read, get(metrics_api::scrape)),
        // The API's description and its reference page.
        rest(Method::GET, openapi::SPEC, Public, get(openapi::spec)),
        rest(Method::GET, openapi::DOCS, Public, get(openapi::docs_index)),
        rest(Method::GET, openapi::DOCS_SLASH, Public, get(openapi::docs_index)),
        rest(Method::GET, openapi::DOCS_FILES, Public, get(openapi::docs_file)),
        rest(Method::POST, "/api/events", Ingest, post(api::post_event)),
        rest(Method::POST, "/api/events/batch", Ingest, post(api::post_batch)),
        // Segment's tracking API, for tracking SDKs (`domain::segment`).
        rest(Method::POST, "/v1/track", Ingest, segment_api::single(Call::Track)),
        rest(Method::POST, "/v1/identify", Ingest, segment_api::single(Call::Identify)),
        rest(Method::POST, "/v1/page", Ingest, segment_api::single(Call::Page)),
        rest(Method::POST, "/v1/screen", Ingest, segment_api::single(Call::Screen)),
        rest(Method::POST, "/v1/group", Ingest, segment_api::single(Call::Group)),
        rest(Method::POST, "/v1/alias", Ingest, segment_api::single(Call::Alias)),
        rest(Method::POST, "/v1/batch", Ingest, segment_api::batch()),
        rest(Method::GET, "/api/leads", Read, get(api::list_leads)),
        rest(Method::GET, "/api/overview", Read, get(api::overview)),
        rest(Method::GET, "/api/leads/{id}", Read, get(api::lead_detail)),
        rest(Method::GET, "/api/export/leads.csv", Read, get(export_api::leads_csv)),
        rest(Method::GET, "/api/export/leads/{id}/history.csv", Read, get(export_api::history_csv)),
        rest(Method::GET, "/api/rules", Read, get(rule_api::list)),
        rest(Method::POST, "/api/rules", Edit, post(rule_api::save)),
        rest(Method::PUT, "/api/rules/{id}", Edit, put(rule_api::update)),
        rest(Method::DELETE, "/api/rules/{id}", Edit, delete(rule_api::remove)),
        rest(Method::GET, "/api/stages", Read, get(rule_api::stages)),
        rest(Method::PUT, "/api/stages", Edit, put(rule_api::save_stages)),
        rest(Method::GET, "/api/stages/counts", Read, get(rule_api::stage_counts)),
        rest(Method::GET, "/api/settings/decay", Read, get(rule_api::decay)),
        rest(Method::PUT, "/api/settings/decay", Edit, put(rule_api::save_decay)),
        rest(Method::POST, "/api/rescore", Edit, post(rule_api::start_rescore)),
        rest(Method::GET, "/api/rescore/{id}", Read, get(rule_api::rescore_job)),
        rest(Method::GET, "/api/stream", Read, get(stream::stream_handler)),
        rest(Method::GET, "/api/dead-letters", Admin, get(dead_letters::list)),
        rest(Method::POST, "/api/dead-letters/{id}/retry", Admin, post(dead_letters::retry)),
        rest(Method::DELETE, "/api/dead-letters/{id}", Admin, delete(dead_letters::discard)),
        rest(Method::GET, "/api/webhooks", Admin, get(webhook_api::list)),
        rest(Method::POST, "/api/webhooks", Admin, post(webhook_api::create)),
        rest(Method::DELETE, "/api/webhooks/{id}", Admin, delete(webhook_api::remove)),
        rest(Method::GET, "/api/webhooks/{id}/deliveries", Admin, get(webhook_api::deliveries)),
        rest(Method::POST, "/api/webhooks/{id}/deliveries/{delivery}/redeliver", Admin, post(webhook_api::redeliver)),
        // Accounts.
        rest(Method::GET, "/api/setup", Public, get(accounts::setup_status)),
        rest(Method::POST, "/api/setup", Public, post(accounts::setup)),
        rest(Method::POST, "/api/auth/login", Public, post(accounts::login)),
        rest(Method::POST, "/api/auth/logout", Public, post(accounts::logout)),
        rest(Method::GET, "/api/auth/me", Public, get(accounts::me)),
        rest(Method::GET, "/api/users", Admin, get(accounts::list_users)),
        rest(Method::POST, "/api/users", Admin, post(accounts::create_user)),
        rest(Method::PATCH, "/api/users/{username}", Admin, patch(accounts::update_user)),
        rest(Method::DELETE, "/api/users/{username}", Admin, delete(accounts::delete_user)),
        rest(Method::GET, "/api/keys", Admin, get(accounts::list_keys)),
        rest(Method::POST, "/api/keys", Admin, post(accounts::create_key)),
        rest(Method::DELETE, "/api/keys/{id}", Admin, delete(accounts::revoke_key)),
        rest(Method::GET, "/api/audit", Admin, get(accounts::audit)),
        // The dashboard's server functions.
        server_fn::<CurrentUser>(Public),
        server_fn::<Login>(Public),
        server_fn::<Logout>(Public),
        server_fn::<Setup>(Public),
        server_fn::<FetchLeaderboard>(Read),
        server_fn::<FetchLead>(Read),
        server_fn::<FetchLeadTotal>(Read),
        server_fn::<FetchOverview>(Read),
        server_fn::<FetchRules>(Read),
        server_fn::<FetchEventTypes>(Read),
        server_fn::<SaveRule>(Edit),
        server_fn::<UpdateRule>(Edit),
        server_fn::<SetRulePoints>(Edit),
        server_fn::<DeleteRule>(Edit),
        server_fn::<FetchStageCounts>(Read),
        server_fn::<SaveStages>(Edit),
        server_fn::<FetchDecay>(Read),
        server_fn::<SaveDecay>(Edit),
        server_fn::<FetchRescore>(Read),
        server_fn::<StartRescore>(Edit),
        server_fn::<SendTestEvent>(Edit),
        server_fn::<UploadEvents>(Edit),
        server_fn::<FetchUsers>(Admin),
        server_fn::<SaveUser>(Admin),
        server_fn::<RemoveUser>(Admin),
        server_fn::<FetchKeys>(Admin),
        server_fn::<CreateKey>(Admin),
        server_fn::<RevokeKey>(Admin),
        server_fn::<FetchAudit>(Admin),
        server_fn::<FetchDeadLetters>(Admin),
        server_fn::<FetchWebhooks>(Admin),
        server_fn::<CreateWebhook>(Admin),
        server_fn::<DeleteWebhook>(Admin),
        server_fn::<FetchDeliveries>(Admin),
        server_fn::<Redeliver>(Admin),
        server_fn::<RetryDeadLetter>(Admin),
        server_fn::<DiscardDeadLetter>(Admin),
        // Pages.
        page("/", Read),
        page("/leads/{id}", Read),
        page("/rules", Read),
        page("/users", Admin),
        page("/keys", Admin),
        page("/audit", Admin),
        page("/dead-letters", Admin),
        page("/webhooks", Admin),
        page("/login", Public),
        setup_page(),
    ]
}

/// What server functions and page renders find in context: the services and the settings
/// the pages need. (The caller, an `Actor`, travels in the request's extensions.)
pub fn provide_backend(state: &AppState) {
    provide_context(state.backend.clone());
    if let Some(preloads) = state.page_bundles.as_ref().and_then(|bundles| bundles.preloads()) {
        provide_context(crate::app::PagePreloads(preloads));
    }
}

/// Whether the caller's rate limit applies: to everything but public REST reads (health, the
/// API's description), which monitors and tools poll.
pub fn rate_limited(entry: &Entry) -> bool {
    !(entry.access == Public && entry.method == Method::GET && entry.kind() == Kind::Rest)
}

/// Every route of the table, each behind the gate with its entry's rule.
pub fn router(state: &AppState) -> Router<AppState> {
    let pages = generate_route_list(App);
    let mut router = Router::new();
    for entry in table() {
        let rule = Gate {
            state: state.clone(),
            access: entry.access,
            kind: entry.kind(),
            first_run: entry.first_run,
            rate_limited: rate_limited(&entry),
        };
        let layer = from_fn_with_state(rule, gate);
        let handler: MethodRouter<AppState> = match entry.serve {
            Serve::Rest(handler) => handler,
            Serve::ServerFn => post(rpc).layer(super::assets::compression()),
            Serve::Page => {
                if !pages.iter().any(|p| p.path() == entry.path) {
                    tracing::error!(path = entry.path, "the policy names a page the app does not have");
                }
                let state = state.clone();
                let options = state.leptos_options.clone();
                get(render_app_to_stream_with_context(
                    move || {
                        provide_backend(&state);
                        leptos::nonce::provide_nonce();
                    },
                    move || shell(options.clone()),
                ))
                .layer(super::assets::compression())
            }
        };
        let timed = from_fn_with_state(entry.path, metrics_api::timed);
        router = router.route(entry.path, handler.route_layer(layer).route_layer(timed));
    }
    router
        .route("/api/{*rest}", axum::routing::any(api::unknown_route))
        .route("/v1/{*rest}", axum::routing::any(api::unknown_route))
}

async fn rpc(State(state): State<AppState>, request: Request<Body>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A server function's arguments are bounded like a batch body: the largest (an upload
    // chunk) is one.
    let (parts, body) = request.into_parts();
    let (bytes, _room) = match api::read_bytes(&parts.headers, body, state.config.max_batch_bytes, &state.bodies).await
    {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = handle_server_fns_with_context(move || provide_backend(&state), request).await.into_response();
    with_error_status(response).await
}

/// A server function's error travels as an `ApiError` body, but server_fn answers every
/// error with 500: give the response the status the error carries (400 for malformed
/// arguments, 403, 429…), so proxies, logs and other clients see what happened.
async fn with_error_status(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    if response.status() != axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<crate::domain::error::ApiError>(&bytes) {
        if let Ok(status) = axum::http::StatusCode::from_u16(error.status) {
            if status.is_client_error() || status.is_server_error() {
                parts.status = status;
            }
        }
    }
    axum::response::Response::from_parts(parts, Body::from(bytes))
}
