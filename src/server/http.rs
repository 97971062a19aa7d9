//! Assembles the server: store, service, worker, REST routes, Leptos pages and server
//! functions on one axum router, with a clean start and a graceful stop.

use super::config::{Config, Database};
use super::guard::{self, RateLimiter};
use super::service::{BatchLimits, Service};
use super::store::{mongo::MongoStore, sqlite::SqliteStore, DynStore, Store, StoreError};
use super::stream::StreamHub;
use super::worker::Worker;
use super::{api, service::now_ms};
use crate::app::{shell, App};
use crate::domain::scoring::default_rules;
use axum::extract::FromRef;
use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How often the live stream publishes a frame: at most 10 messages per second per client.
const STREAM_INTERVAL_MS: u64 = 100;

/// Shared by REST handlers and server functions (which get it from Leptos context).
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub service: Arc<Service>,
    pub config: Arc<Config>,
    /// `None` when the rate limit is off.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    pub hub: Arc<StreamHub>,
}

impl AppState {
    pub fn new(leptos_options: LeptosOptions, service: Arc<Service>, config: Config, hub: Arc<StreamHub>) -> Self {
        let rate_limiter = (config.rate_limit_per_second > 0.0)
            .then(|| Arc::new(RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst)));
        Self { leptos_options, service, config: Arc::new(config), rate_limiter, hub }
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

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let leptos_options = state.leptos_options.clone();
    let mut router = api::routes()
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .leptos_routes(&state, routes, move || shell(leptos_options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .with_state(state.clone());
    if !state.config.client_origins.is_empty() {
        let origins: Vec<HeaderValue> = state.config.client_origins.iter().filter_map(|o| o.parse().ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::HeaderName::from_static("x-api-key"),
                ]),
        );
    }
    router
}

/// A running server: its address and what it takes to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
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
pub async fn launch(config: Config, leptos_options: LeptosOptions, listener: TcpListener) -> Result<Running, String> {
    let store = open_store(&config).await?;
    seed_default_rules(store.clone()).await?;
    let service = Arc::new(Service::new(store.clone(), BatchLimits { max_events: config.max_batch_events }));
    let (shutdown, shutdown_rx) = watch::channel(false);

    let (wake, updates, heartbeat) = service.worker_handles();
    let worker = Worker {
        store,
        wake,
        updates,
        heartbeat,
        batch_size: config.worker_batch_size,
        idle_poll: Duration::from_millis(config.worker_idle_poll_ms),
        linger: Duration::from_millis(config.worker_linger_ms),
    };
    let worker = tokio::spawn(worker.run(shutdown_rx.clone()));

    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let hub = StreamHub::new(shutdown_rx.clone());
    hub.start(service.subscribe(), Duration::from_millis(STREAM_INTERVAL_MS));
    let state = AppState::new(leptos_options, service.clone(), config, hub);
    let app = router(state);
    let mut stop = shutdown_rx;
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server error");
        }
    });
    Ok(Running { addr, service, shutdown, server, worker })
}
