//! Assembles the server: store, service, worker, REST routes, Leptos pages and server
//! functions on one axum router, with a clean start and a graceful stop.

use super::admission::{limit_requests, BodyBudget, RequestLimits};
use super::config::{AuthMode, Config, Database};
use super::page_bundles::PageBundles;
use super::policy;
use super::ratelimit::RateLimiter;
use super::stream::StreamHub;
use crate::app::shell;
use crate::domain::scoring::default_rules;
use crate::service::accounts::Accounts;
use crate::service::feed;
use crate::service::now_ms;
use crate::service::sessions::{StoreSessions, COOKIE_NAME};
use crate::service::store::sqlite::backup::InUse;
use crate::service::store::{mongo::MongoStore, sqlite::SqliteStore, DynStore, Store, StoreError};
use crate::service::worker::{Publish, Worker};
use crate::service::{Backend, BatchLimits, Service};
use axum::extract::FromRef;
use axum::http::{header, HeaderValue, Method};
use axum::Router;
use leptos::prelude::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How often the live stream publishes a frame: at most 10 messages per second per client.
const STREAM_INTERVAL_MS: u64 = 100;
/// How often an instance looks for changes other instances scored (its own worker's are
/// picked up as soon as each step ends).
const FEED_POLL_MS: u64 = 250;
/// How long open requests get to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What REST handlers and the gate share. Server functions get `Backend` through context.
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub service: Arc<Service>,
    pub accounts: Arc<Accounts>,
    pub backend: Backend,
    pub config: Arc<Config>,
    /// `None` when the rate limit is off.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    pub hub: Arc<StreamHub>,
    /// Request bodies held in memory at once, all requests together.
    pub bodies: BodyBudget,
    /// Each page's WASM parts as one download; `None` unless the site was built with `--split`.
    pub page_bundles: Option<PageBundles>,
}

impl AppState {
    pub fn new(
        leptos_options: LeptosOptions,
        service: Arc<Service>,
        accounts: Arc<Accounts>,
        config: Config,
        hub: Arc<StreamHub>,
    ) -> Self {
        let rate_limiter = (config.rate_limit_per_second > 0.0)
            .then(|| Arc::new(RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst)));
        let backend =
            Backend { service: service.clone(), accounts: accounts.clone(), auth_off: config.auth == AuthMode::Off };
        let bodies = BodyBudget::new(config.max_inflight_bytes);
        let page_bundles =
            PageBundles::load(Path::new(leptos_options.site_root.as_ref()), &leptos_options.site_pkg_dir);
        Self {
            leptos_options,
            service,
            accounts,
            backend,
            config: Arc::new(config),
            rate_limiter,
            hub,
            bodies,
            page_bundles,
        }
    }
}

impl FromRef<AppState> for Arc<StreamHub> {
    fn from_ref(state: &AppState) -> Self {
        state.hub.clone()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Opens the configured store. MongoDB may be down at start: the server then starts anyway,
/// answers 503 to ingest and says why on `/api/health`, and finishes its setup (indexes)
/// by itself once the database answers.
pub async fn open_store(config: &Config) -> Result<DynStore, String> {
    match &config.database {
        Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).map_err(|e| e.to_string())?)),
        Database::Mongo(uri) => {
            let store = Arc::new(MongoStore::connect(uri).await.map_err(|e| e.to_string())?);
            let attempts = config.store_startup_attempts;
            for attempt in 1..=attempts {
                match store.prepare().await {
                    Ok(()) => return Ok(store),
                    Err(e) => {
                        tracing::warn!("MongoDB at {} not ready (attempt {attempt}/{attempts}): {e}", store.location())
                    }
                }
                if attempt < attempts {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            tracing::warn!("starting without MongoDB: ingest answers 503 until it is reachable; retrying every 5 s");
            let retry = store.clone();
            tokio::spawn(async move {
                while let Err(e) = retry.prepare().await {
                    tracing::debug!("MongoDB still unreachable: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                tracing::info!("MongoDB reachable; indexes ready");
            });
            Ok(store)
        }
    }
}

/// Seeds the default rules into an empty store; retries in the background while the store
/// is unreachable.
async fn seed_default_rules(store: DynStore) -> Result<(), String> {
    match store.seed_rules(default_rules(), now_ms()).await {
        Ok(true) => tracing::info!("seeded the default scoring rules into an empty store"),
        Ok(false) => {}
        Err(StoreError::Unavailable(_)) => {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    match store.seed_rules(default_rules(), now_ms()).await {
                        Ok(seeded) => {
                            if seeded {
                                tracing::info!("seeded the default scoring rules into an empty store");
                            }
                            break;
                        }
                        Err(e) => tracing::debug!("cannot seed rules yet: {e}"),
                    }
                }
            });
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
}

/// The policy's routes with sessions, then static files and the not-found page, all with
/// the security headers.
pub fn router(state: AppState) -> Router {
    let sessions = tower_sessions::SessionManagerLayer::new(StoreSessions(state.service.store().clone()))
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_secure(state.config.cookie_secure)
        .with_expiry(tower_sessions::Expiry::OnInactivity(time::Duration::seconds(
            state.config.session_idle_seconds as i64,
        )));
    let mut router = policy::router(&state)
        .layer(sessions)
        .fallback_service(super::assets::files(
            &state,
            leptos_axum::file_and_error_handler_with_context::<AppState, _>(leptos::nonce::provide_nonce, shell),
        ))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            RequestLimits::new(
                state.config.max_concurrent_requests,
                Duration::from_secs(state.config.request_timeout_seconds),
            ),
            limit_requests,
        ))
        .layer(axum::middleware::from_fn(super::headers::security_headers));
    if !state.config.client_origins.is_empty() {
        let origins: Vec<HeaderValue> = state.config.client_origins.iter().filter_map(|o| o.parse().ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_credentials(true)
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::HeaderName::from_static("x-api-key"),
                ]),
        );
    }
    router
}

/// Says at start how the server is protected. With no account yet it prints the one-time
/// setup link (like a notebook server's token), so nobody else on the network can claim it.
async fn announce_access(config: &Config, accounts: &Accounts, addr: Option<SocketAddr>) {
    if config.auth == AuthMode::Off {
        tracing::warn!(
            "AUTH=off: anyone who can reach this server may read, ingest and change rules; use only for local demos"
        );
        return;
    }
    match accounts.open_setup().await {
        Ok(Some(token)) => {
            let host = match addr {
                Some(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
                Some(a) => a.to_string(),
                None => config.addr().to_string(),
            };
            tracing::warn!("no account exists yet; create the first admin at http://{host}/setup?token={token}");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot tell whether first-run setup is needed yet"),
    }
}

/// Deletes expired sessions every hour, so the table does not grow with abandoned sign-ins.
async fn purge_expired_sessions(store: DynStore, mut stop: watch::Receiver<bool>) {
    loop {
        match store.purge_sessions(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(sessions = n, "purged expired sessions"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot purge expired sessions now"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A running server: its address and what it takes to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
    /// The embedded store's file is this server's while it runs (`leadscore restore` and a
    /// second server on the same file are refused).
    _in_use: Option<InUse>,
}

impl Running {
    /// Stops taking requests, lets open ones finish, then lets the worker finish its batch.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.worker.await;
    }

    /// Resolves when the server task ends (it only ends after `stop` or a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// Opens the store, seeds default rules into an empty one, starts the worker and serves.
/// `GET /metrics` alone, without credentials, on its own address (`METRICS_ADDR`).
async fn serve_metrics(addr: SocketAddr, state: AppState, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("METRICS_ADDR {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics");
    let app = axum::Router::new().route("/metrics", axum::routing::get(super::metrics_api::scrape)).with_state(state);
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

pub async fn launch(config: Config, leptos_options: LeptosOptions, listener: TcpListener) -> Result<Running, String> {
    crate::service::metrics::handle(); // installed before anything records
    let in_use = match &config.database {
        Database::Sqlite(path) => Some(InUse::claim(path)?),
        Database::Mongo(_) => None,
    };
    let store = open_store(&config).await?;
    seed_default_rules(store.clone()).await?;
    let service = Arc::new(Service::new(store.clone(), BatchLimits { max_events: config.max_batch_events }));
    let accounts = Arc::new(Accounts::new(store.clone(), &config.api_keys));
    announce_access(&config, &accounts, listener.local_addr().ok()).await;
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(purge_expired_sessions(store.clone(), shutdown_rx.clone()));

    let (wake, updates, state) = service.worker_handles();
    // A store several instances share feeds every instance's stream from the database.
    let publish = if store.shared_feed().is_some() {
        let tailer = Arc::new(Notify::new());
        let poll = Duration::from_millis(FEED_POLL_MS);
        tokio::spawn(feed::tail(store.clone(), updates, tailer.clone(), poll, shutdown_rx.clone()));
        Publish::Feed(tailer)
    } else {
        Publish::Direct(updates)
    };
    let worker = Worker {
        store,
        wake,
        publish,
        state,
        batch_size: config.worker_batch_size,
        idle_poll: Duration::from_millis(config.worker_idle_poll_ms),
        linger: Duration::from_millis(config.worker_linger_ms),
        dead_letter_after: config.dead_letter_after,
        suspects: Default::default(),
    };
    let worker = tokio::spawn(worker.run(shutdown_rx.clone()));
    let decay_every = Duration::from_secs(config.decay_interval_seconds);
    tokio::spawn(crate::service::decay::run(service.clone(), decay_every, shutdown_rx.clone()));
    tokio::spawn(crate::service::rescore::run(service.clone(), shutdown_rx.clone()));
    tokio::spawn(crate::service::webhooks::run(service.clone(), config.webhook_retry_ms, shutdown_rx.clone()));

    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let hub = StreamHub::new(shutdown_rx.clone());
    hub.start(service.subscribe(), service.ladder(Duration::from_secs(10)), Duration::from_millis(STREAM_INTERVAL_MS));
    let metrics_addr = config.metrics_addr;
    let state = AppState::new(leptos_options, service.clone(), accounts, config, hub);
    if let Some(addr) = metrics_addr {
        serve_metrics(addr, state.clone(), shutdown_rx.clone()).await?;
    }
    let app = router(state);
    let (mut stop, mut grace) = (shutdown_rx.clone(), shutdown_rx);
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        // Open requests get `SHUTDOWN_GRACE` to finish; a connection that never closes (a
        // client holding it idle, seen to stall a test for good) does not hold shutdown up.
        let deadline = async move {
            let _ = grace.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = serve => if let Err(e) = served {
                tracing::error!(error = %e, "server error");
            },
            _ = deadline => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open at shutdown; closing them"),
        }
    });
    Ok(Running { addr, service, shutdown, server, worker, _in_use: in_use })
}
