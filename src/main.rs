#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    use leadscore::server::{config::Config, http};
    use leptos::prelude::get_configuration;
    use tracing_subscriber::EnvFilter;

    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return leadscore::server::cli::run(config, &args).await;
    }
    // Where the built JS/WASM/CSS live; cargo-leptos passes these in LEPTOS_* variables.
    let leptos_options = match get_configuration(None) {
        Ok(c) => leadscore::server::assets::with_built_names(c.leptos_options),
        Err(e) => {
            tracing::error!("leptos configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.addr()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.addr());
            return std::process::ExitCode::from(1);
        }
    };
    let database = format!("{:?}", config.database);
    let mut running = match http::launch(config, leptos_options, listener).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let store = running.service.store();
    tracing::info!(store = store.backend(), location = %store.location(), "opened store ({database})");
    tracing::info!("listening on http://{}", running.addr);
    tokio::spawn(leadscore::server::memory::return_freed_memory(std::time::Duration::from_secs(60)));

    let signalled = tokio::select! {
        _ = shutdown_signal() => true,
        _ = running.wait() => false,
    };
    if signalled {
        tracing::info!("shutting down: finishing requests and the batch in flight");
        running.stop().await;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(feature = "ssr")]
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(not(feature = "ssr"))]
pub fn main() {
    // The client entry point is `hydrate` in lib.rs.
}
