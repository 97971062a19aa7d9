//! Server configuration: `Leptos.toml` (checked in, documented defaults), then `.env`, then
//! the process environment — each later source overrides the earlier one.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where the data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Mongo(String),
}

impl Database {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("DATABASE_URL sqlite:// needs a file path, e.g. sqlite://data/leadscore.db".into());
            }
            Ok(Database::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            Ok(Database::Mongo(url.to_string()))
        } else {
            Err(format!("DATABASE_URL must start with sqlite://, mongodb:// or mongodb+srv://, got {url:?}"))
        }
    }
}

/// Whether requests need credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// The default: people sign in, external systems send API keys.
    Required,
    /// The old app's openness, for local demos and migrating old senders.
    Off,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub database: Database,
    /// Origins allowed to call the API from a browser (CORS). Empty: same origin only.
    pub client_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    /// Request bodies held in memory at once (see `admission.rs`).
    pub max_inflight_bytes: usize,
    /// Requests being handled at once, and how long one may take (see `admission.rs`).
    pub max_concurrent_requests: usize,
    pub request_timeout_seconds: u64,
    pub worker_batch_size: usize,
    pub worker_idle_poll_ms: u64,
    pub worker_linger_ms: u64,
    /// Failed attempts after which the worker sets an event aside (dead-letter list).
    pub dead_letter_after: u32,
    /// Seconds between score decay passes (one also runs at start and when the setting changes).
    pub decay_interval_seconds: u64,
    /// The wait before a failed webhook delivery's first retry; it doubles each time (at
    /// most an hour) for 24 hours.
    pub webhook_retry_ms: u64,
    /// Keys with every scope, from the environment (besides keys admins create).
    pub api_keys: Vec<String>,
    pub auth: AuthMode,
    /// Session cookies only travel over https (set when served over https).
    pub cookie_secure: bool,
    /// A session ends after this long without a request…
    pub session_idle_seconds: u64,
    /// …and this long after sign-in in any case.
    pub session_max_seconds: u64,
    /// Proxies whose `X-Forwarded-For` names the real client address.
    pub trusted_proxies: Vec<IpAddr>,
    /// Requests per second per client (API key, else IP); 0 turns the limit off.
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: f64,
    /// How often to try reaching a database server at start before serving without it.
    pub store_startup_attempts: u32,
    /// A second address serving only `GET /metrics`, without credentials (for a scraper on
    /// a private network); `None`: `/metrics` is on the main port, for the `read` scope.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Reads `Leptos.toml` (or the file named by `LEADSCORE_CONFIG`), `.env` and the environment.
    pub fn load() -> Result<Self, String> {
        let _ = dotenvy::dotenv();
        let path = std::env::var("LEADSCORE_CONFIG").unwrap_or_else(|_| "Leptos.toml".into());
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => FileConfig::parse(&text).map_err(|e| format!("{path}: {e}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !Path::new(&path).is_absolute() => {
                FileConfig::default()
            }
            Err(e) => return Err(format!("cannot read {path}: {e}")),
        };
        Self::from_sources(file, |k| std::env::var(k).ok())
    }

    /// Combines the file with environment variables looked up by `env`.
    pub fn from_sources(file: FileConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let s = file.server;
        let host = match env("HOST") {
            Some(h) => h.parse().map_err(|_| format!("HOST must be an IP address, got {h:?}"))?,
            None => s.host,
        };
        let port = match env("PORT") {
            Some(p) => p.parse().map_err(|_| format!("PORT must be a number from 0 to 65535, got {p:?}"))?,
            None => s.port,
        };
        // DATABASE_URL wins; MONGO_URI / MONGODB_URI are what old deployments set.
        let url =
            env("DATABASE_URL").or_else(|| env("MONGODB_URI")).or_else(|| env("MONGO_URI")).unwrap_or(s.database_url);
        let client_url = env("CLIENT_URL").unwrap_or(s.client_url);
        let client_origins = client_url
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let number = |key: &str, default: usize| -> Result<usize, String> {
            match env(key) {
                Some(v) => v.parse().map_err(|_| format!("{key} must be a whole number, got {v:?}")),
                None => Ok(default),
            }
        };
        let list = |v: String| v.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect::<Vec<_>>();
        let api_keys = match env("API_KEYS") {
            Some(v) => list(v),
            None => file.security.api_keys.clone(),
        };
        let float = |key: &str, default: f64| -> Result<f64, String> {
            match env(key) {
                Some(v) => {
                    v.parse::<f64>().ok().filter(|f| *f >= 0.0).ok_or(format!("{key} must be a number ≥ 0, got {v:?}"))
                }
                None => Ok(default),
            }
        };
        let auth = match env("AUTH").unwrap_or(file.security.auth.clone()).to_ascii_lowercase().as_str() {
            "required" | "" => AuthMode::Required,
            "off" => AuthMode::Off,
            other => return Err(format!("AUTH must be \"required\" or \"off\", got {other:?}")),
        };
        let cookie_secure = match env("COOKIE_SECURE") {
            Some(v) => matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
            None => file.security.cookie_secure,
        };
        let trusted_proxies = match env("TRUSTED_PROXIES") {
            Some(v) => list(v),
            None => file.security.trusted_proxies.clone(),
        }
        .iter()
        .map(|p| p.parse::<IpAddr>().map_err(|_| format!("TRUSTED_PROXIES must list IP addresses, got {p:?}")))
        .collect::<Result<Vec<_>, _>>()?;
        let metrics_addr = match env("METRICS_ADDR").unwrap_or(s.metrics_addr).trim() {
            "" => None,
            a => Some(
                a.parse().map_err(|_| format!("METRICS_ADDR must be an address such as 127.0.0.1:9464, got {a:?}"))?,
            ),
        };
        let config = Config {
            metrics_addr,
            host,
            port,
            database: Database::parse(&url)?,
            client_origins,
            max_body_bytes: number("MAX_BODY_BYTES", file.ingest.max_body_bytes)?,
            max_batch_bytes: number("MAX_BATCH_BYTES", file.ingest.max_batch_bytes)?,
            max_inflight_bytes: number("MAX_INFLIGHT_BYTES", file.ingest.max_inflight_bytes)?,
            max_concurrent_requests: number("MAX_CONCURRENT_REQUESTS", file.ingest.max_concurrent_requests)?.max(1),
            request_timeout_seconds: number("REQUEST_TIMEOUT_SECONDS", file.ingest.request_timeout_seconds)?.max(1)
                as u64,
            max_batch_events: number("MAX_BATCH_EVENTS", file.ingest.max_batch_events)?,
            worker_batch_size: number("WORKER_BATCH_SIZE", file.worker.batch_size)?,
            worker_idle_poll_ms: number("WORKER_IDLE_POLL_MS", file.worker.idle_poll_ms as usize)? as u64,
            worker_linger_ms: number("WORKER_LINGER_MS", file.worker.linger_ms as usize)? as u64,
            dead_letter_after: number("DEAD_LETTER_AFTER", file.worker.dead_letter_after as usize)?.clamp(1, 1000)
                as u32,
            decay_interval_seconds: number("DECAY_INTERVAL_S", file.worker.decay_interval_s as usize)?.max(1) as u64,
            webhook_retry_ms: number("WEBHOOK_RETRY_MS", file.worker.webhook_retry_ms as usize)?.max(1) as u64,
            api_keys,
            auth,
            cookie_secure,
            session_idle_seconds: number("SESSION_IDLE_SECONDS", file.security.session_idle_seconds as usize)? as u64,
            session_max_seconds: number("SESSION_MAX_SECONDS", file.security.session_max_seconds as usize)? as u64,
            trusted_proxies,
            rate_limit_per_second: float("RATE_LIMIT_PER_SECOND", file.security.rate_limit_per_second)?,
            rate_limit_burst: float("RATE_LIMIT_BURST", file.security.rate_limit_burst)?,
            store_startup_attempts: number("STORE_STARTUP_ATTEMPTS", s.store_startup_attempts as usize)?.max(1) as u32,
        };
        if config.worker_batch_size == 0 || config.max_batch_events == 0 {
            return Err("WORKER_BATCH_SIZE and MAX_BATCH_EVENTS must be at least 1".into());
        }
        Ok(config)
    }
}

/// The shape of `Leptos.toml`. Every key is optional; defaults below.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub ingest: IngestSection,
    pub worker: WorkerSection,
    pub security: SecuritySection,
}

impl FileConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub host: IpAddr,
    pub port: u16,
    pub database_url: String,
    pub client_url: String,
    pub store_startup_attempts: u32,
    pub metrics_addr: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 5001,
            database_url: "sqlite://data/leadscore.db".into(),
            client_url: String::new(),
            store_startup_attempts: 5,
            metrics_addr: String::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    pub max_inflight_bytes: usize,
    pub max_concurrent_requests: usize,
    pub request_timeout_seconds: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch_bytes: 5 * 1024 * 1024,
            max_batch_events: 5000,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_concurrent_requests: 1024,
            request_timeout_seconds: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    pub batch_size: usize,
    pub idle_poll_ms: u64,
    pub linger_ms: u64,
    pub dead_letter_after: u32,
    pub decay_interval_s: u64,
    pub webhook_retry_ms: u64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            batch_size: 20000,
            idle_poll_ms: 1000,
            linger_ms: 20,
            dead_letter_after: 5,
            decay_interval_s: 3600,
            webhook_retry_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    pub auth: String,
    pub api_keys: Vec<String>,
    pub cookie_secure: bool,
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
    pub trusted_proxies: Vec<String>,
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: f64,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            auth: "required".into(),
            api_keys: Vec::new(),
            cookie_secure: false,
            session_idle_seconds: 8 * 3600,
            session_max_seconds: 7 * 24 * 3600,
            trusted_proxies: Vec::new(),
            rate_limit_per_second: 1000.0,
            rate_limit_burst: 2000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_checked_in_leptos_toml_parses_and_matches_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Leptos.toml")).unwrap();
        let file = FileConfig::parse(&text).unwrap();
        let c = Config::from_sources(file, env(&[])).unwrap();
        assert_eq!(c.port, 5001);
        assert_eq!(c.database, Database::Sqlite("data/leadscore.db".into()));
        assert_eq!((c.max_body_bytes, c.max_batch_bytes, c.max_batch_events), (1 << 20, 5 << 20, 5000));
        assert!(c.client_origins.is_empty());
        assert!(c.api_keys.is_empty());
        assert_eq!(c.auth, AuthMode::Required, "credentials are required unless turned off");
        assert!(!c.cookie_secure && c.trusted_proxies.is_empty());
        assert_eq!((c.session_idle_seconds, c.session_max_seconds), (8 * 3600, 7 * 24 * 3600));
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (1000.0, 2000.0));
        assert_eq!(c.worker_batch_size, WorkerSection::default().batch_size);
        assert_eq!(c.worker_linger_ms, WorkerSection::default().linger_ms);
    }

    #[test]
    fn api_keys_and_rate_limits_from_the_environment() {
        let c = Config::from_sources(
            FileConfig::default(),
            env(&[("API_KEYS", "k1, k2,,"), ("RATE_LIMIT_PER_SECOND", "0"), ("RATE_LIMIT_BURST", "5")]),
        )
        .unwrap();
        assert_eq!(c.api_keys, ["k1", "k2"]);
        assert_eq!((c.rate_limit_per_second, c.rate_limit_burst), (0.0, 5.0));
        let err = Config::from_sources(FileConfig::default(), env(&[("RATE_LIMIT_PER_SECOND", "-1")])).unwrap_err();
        assert!(err.starts_with("RATE_LIMIT_PER_SECOND"), "{err}");
    }

    #[test]
    fn auth_settings_from_the_environment() {
        let c = Config::from_sources(
            FileConfig::default(),
            env(&[("AUTH", "off"), ("COOKIE_SECURE", "true"), ("TRUSTED_PROXIES", "10.0.0.1, ::1")]),
        )
        .unwrap();
        assert_eq!(c.auth, AuthMode::Off);
        assert!(c.cookie_secure);
        assert_eq!(c.trusted_proxies.len(), 2);
        let err = Config::from_sources(FileConfig::default(), env(&[("AUTH", "maybe")])).unwrap_err();
        assert!(err.starts_with("AUTH"), "{err}");
        let err = Config::from_sources(FileConfig::default(), env(&[("TRUSTED_PROXIES", "proxy.local")])).unwrap_err();
        assert!(err.starts_with("TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = Config::from_sources(
            FileConfig::default(),
            env(&[("PORT", "8080"), ("HOST", "0.0.0.0"), ("CLIENT_URL", "http://a.example/, http://b.example")]),
        )
        .unwrap();
        assert_eq!(c.addr().to_string(), "0.0.0.0:8080");
        assert_eq!(c.client_origins, ["http://a.example", "http://b.example"]);
    }

    #[test]
    fn mongo_aliases_of_old_deployments_are_honoured() {
        let c = Config::from_sources(FileConfig::default(), env(&[("MONGO_URI", "mongodb://db:27017/leads")])).unwrap();
        assert_eq!(c.database, Database::Mongo("mongodb://db:27017/leads".into()));
        let c = Config::from_sources(
            FileConfig::default(),
            env(&[("MONGO_URI", "mongodb://old"), ("DATABASE_URL", "sqlite://x.db")]),
        )
        .unwrap();
        assert_eq!(c.database, Database::Sqlite("x.db".into()), "DATABASE_URL wins");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Config::from_sources(FileConfig::default(), env(&[("PORT", "http")])).unwrap_err();
        assert!(err.starts_with("PORT"), "{err}");
        let err = Config::from_sources(FileConfig::default(), env(&[("DATABASE_URL", "postgres://x")])).unwrap_err();
        assert!(err.starts_with("DATABASE_URL"), "{err}");
        assert!(FileConfig::parse("[server]\nprot = 1").unwrap_err().contains("prot"));
    }
}
