//! Configuration from environment variables (all documented in the README).

use std::net::SocketAddr;
use std::time::Duration;

use fluxi_core::accounts::PasswordHasherConfig;
use fluxi_core::sessions::SessionPolicy;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub addr: SocketAddr,
    pub pool_size: usize,
    pub session_policy: SessionPolicy,
    pub session_cleanup_every: Duration,
    /// Longest a request may take before it is answered 503 (`FLUXI_REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout: Duration,
    pub hasher: PasswordHasherConfig,
    /// Public base URL used in links sent by mail.
    pub base_url: String,
    /// SMTP server for outgoing mail (`smtp://host:port`, `smtps://…`); none = no delivery.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// `production` hides development helpers such as `/dev/mailbox`.
    pub production: bool,
    /// Workspace schemas migrated at once by the fleet runner.
    pub fleet_concurrency: usize,
    /// Reverse proxies of ours in front of Fluxi (`FLUXI_TRUSTED_PROXIES`, default 0).
    pub trusted_proxies: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|_| ConfigError(format!("{name}={v:?} is not a valid value")))
        }
        _ => Ok(default),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = std::env::var("DATABASE_URL")
            .map_err(|_| ConfigError("DATABASE_URL is not set (scripts/run sets it for the embedded cluster)".into()))?;
        let idle: i64 = var("FLUXI_SESSION_IDLE_MINUTES", 30)?;
        let absolute: i64 = var("FLUXI_SESSION_ABSOLUTE_HOURS", 12)?;
        if idle <= 0 || absolute <= 0 {
            return Err(ConfigError("session timeouts must be positive".into()));
        }
        let default_hasher = PasswordHasherConfig::default();
        let addr: SocketAddr = var("LEPTOS_SITE_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?;
        let env_name: String = var("FLUXI_ENV", "development".to_string())?;
        let production = match env_name.as_str() {
            "production" => true,
            "development" => false,
            other => return Err(ConfigError(format!("FLUXI_ENV={other:?}: use development or production"))),
        };
        Ok(Self {
            database_url,
            addr,
            base_url: var("FLUXI_BASE_URL", format!("http://{addr}"))?,
            smtp_url: std::env::var("SMTP_URL").ok().filter(|s| !s.trim().is_empty()),
            mail_from: var("FLUXI_MAIL_FROM", "Fluxi <no-reply@fluxi.localhost>".to_string())?,
            production,
            fleet_concurrency: var("FLUXI_FLEET_CONCURRENCY", 4)?,
            trusted_proxies: var("FLUXI_TRUSTED_PROXIES", 0)?,
            pool_size: var("FLUXI_DB_POOL_SIZE", 16)?,
            session_policy: SessionPolicy {
                idle_timeout: time::Duration::minutes(idle),
                absolute_timeout: time::Duration::hours(absolute),
                ..SessionPolicy::default()
            },
            session_cleanup_every: Duration::from_secs(var("FLUXI_SESSION_CLEANUP_SECONDS", 300)?),
            request_timeout: Duration::from_secs(var("FLUXI_REQUEST_TIMEOUT_SECONDS", 30)?),
            hasher: PasswordHasherConfig {
                permits: var("FLUXI_HASH_CONCURRENCY", default_hasher.permits)?,
                max_wait: Duration::from_millis(var("FLUXI_HASH_MAX_WAIT_MS", 2000)?),
            },
        })
    }
}
