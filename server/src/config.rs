//! Configuration from environment variables (all documented in the README, "Configuration").

use std::net::SocketAddr;
use std::time::Duration;

use fluxi_core::accounts::PasswordHasherConfig;
use fluxi_core::sessions::SessionPolicy;

/// A URL that may carry a password (database, SMTP): usable as a `&str`, but its `Debug`
/// shows `***` in place of the password, so a logged configuration leaks none.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl std::ops::Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // scheme://user:password@host… → scheme://user:***@host…
        let redacted = match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    let hidden = if userinfo.contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{hidden}@{host}")
                }
                None => self.0.clone(),
            },
            None => "***".into(),
        };
        // Query parameters can carry a password too (`?password=`).
        let redacted = match redacted.split_once('?') {
            Some((before, _)) => format!("{before}?***"),
            None => redacted,
        };
        write!(f, "{redacted:?}")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The integration providers (`FLUXI_INTEGRATIONS_CATALOGUE`, else the built-in file)
    /// with the client credentials configured for them.
    pub integrations: fluxi_core::integrations::Catalogue,
    /// The assistant's model and limits (`FLUXI_ASSISTANT_*`).
    pub assistant: fluxi_core::assistant::AssistantConfig,
    pub database_url: SecretUrl,
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
    pub smtp_url: Option<SecretUrl>,
    pub mail_from: String,
    /// Where to report a vulnerability (`FLUXI_SECURITY_CONTACT`, a `mailto:` or `https:`
    /// URI; default `mailto:security@` the base URL's host), published in
    /// `/.well-known/security.txt` (RFC 9116).
    pub security_contact: String,
    /// When that file's content must be reviewed by (`FLUXI_SECURITY_TXT_EXPIRES`, an RFC
    /// 3339 time; default 180 days after start-up).
    pub security_txt_expires: time::OffsetDateTime,
    /// `FLUXI_ENV`: `production` (the default) or `development`, which adds development
    /// helpers such as `/dev/mailbox`. Production is the default so that a deployment
    /// that forgets the variable does not publish invitation links; `scripts/run` (a
    /// local try-out on 127.0.0.1) asks for development.
    pub production: bool,
    /// Workspace schemas migrated at once by the fleet runner.
    pub fleet_concurrency: usize,
    /// Reverse proxies of ours in front of Fluxi (`FLUXI_TRUSTED_PROXIES`, default 0).
    pub trusted_proxies: usize,
    /// Workspaces one account may create in any 24 hours (`FLUXI_WORKSPACES_PER_DAY`).
    pub workspaces_per_day: u32,
    /// Invitation mail limits (`FLUXI_INVITATION_MAILS_PER_NETWORK_DAY`, default 200).
    pub invitation_policy: fluxi_core::workspaces::invitations::InvitationPolicy,
    /// Accounts created per client network and overall, per hour
    /// (`FLUXI_SIGNUPS_PER_NETWORK_HOUR`, default 20; `FLUXI_SIGNUPS_PER_HOUR`, default 1,000).
    pub sign_up_limits: fluxi_core::accounts::SignUpLimits,
    /// Key of the keyed pseudonyms (`FLUXI_PSEUDONYM_KEY`, 64 hex digits), if set; see
    /// [`Config::pseudonyms`].
    pub pseudonym_key: Option<fluxi_core::pseudonym::Pseudonymizer>,
    /// Epoch of `pseudonym_key` (`FLUXI_PSEUDONYM_EPOCH`, default 1): raise it with each new key.
    pub pseudonym_epoch: i32,
    /// Keys of earlier epochs still held, for searching older audit entries
    /// (`FLUXI_PSEUDONYM_OLD_KEYS`: `epoch:hex` entries separated by commas).
    pub pseudonym_old_keys: Vec<(i32, fluxi_core::pseudonym::Pseudonymizer)>,
    /// Ed25519 seed that signs audit checkpoints (`FLUXI_AUDIT_SIGNING_KEY`, 64 hex digits).
    pub audit_signing_key: Option<fluxi_core::audit::AuditSigner>,
    /// How long audit events are kept (`FLUXI_AUDIT_RETENTION_DAYS`, 30–3660, default 365).
    pub audit_retention: time::Duration,
    /// Minutes between signed checkpoints (`FLUXI_AUDIT_CHECKPOINT_MINUTES`, default 60).
    pub audit_checkpoint_every: Duration,
    /// File each checkpoint is appended to (`FLUXI_AUDIT_CHECKPOINT_FILE`); without it,
    /// checkpoints go to the log.
    pub audit_checkpoint_file: Option<std::path::PathBuf>,
    /// Key that seals stored secrets (`FLUXI_ENCRYPTION_KEY`, 64 hex digits), if set; see
    /// [`Config::keyring`].
    pub encryption_key: Option<fluxi_core::secrets::EncryptionKey>,
    /// Version of `encryption_key` (`FLUXI_ENCRYPTION_KEY_VERSION`, default 1): raise it
    /// with each new key, then run `server keys rotate`.
    pub encryption_key_version: i32,
    /// Earlier keys still needed to open what they sealed (`FLUXI_ENCRYPTION_OLD_KEYS`:
    /// `version:hex` entries separated by commas).
    pub encryption_old_keys: Vec<(i32, fluxi_core::secrets::EncryptionKey)>,
    /// Connection bounds (`FLUXI_MAX_CONNECTIONS`, `FLUXI_MAX_CONNECTIONS_PER_NETWORK`,
    /// `FLUXI_HEADER_READ_TIMEOUT_SECONDS`); see `crate::listen`.
    pub connection_limits: crate::listen::ConnectionLimits,
    /// Serve HTTPS with this certificate and key (`FLUXI_TLS_CERT`, `FLUXI_TLS_KEY`).
    pub tls: Option<crate::listen::TlsFiles>,
    /// Also serve plain HTTP here, redirecting to `base_url` (`FLUXI_HTTP_REDIRECT_ADDR`).
    pub http_redirect_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// The pseudonym key for serving, and whether it was made up for this process. Required
    /// in production, where pseudonyms must match across restarts and instances; in
    /// development a random key is used when none is set. (`migrate` needs none.)
    pub fn pseudonyms(&self) -> Result<(fluxi_core::pseudonym::PseudonymKeys, bool), ConfigError> {
        let keys = |key: fluxi_core::pseudonym::Pseudonymizer| {
            fluxi_core::pseudonym::PseudonymKeys::new(self.pseudonym_epoch, key, self.pseudonym_old_keys.clone())
        };
        match (&self.pseudonym_key, self.production) {
            (Some(key), _) => Ok((keys(key.clone()), false)),
            (None, false) => Ok((keys(fluxi_core::pseudonym::Pseudonymizer::random()), true)),
            (None, true) => Err(ConfigError(
                "FLUXI_PSEUDONYM_KEY is not set: production needs a fixed secret key for pseudonyms \
                 (64 hex digits, e.g. from `openssl rand -hex 32`), kept outside the database"
                    .into(),
            )),
        }
    }

    /// The audit signing key, and whether it was made up for this process: required in
    /// production (signatures must verify after a restart); random in development.
    pub fn audit_signer(&self) -> Result<(fluxi_core::audit::AuditSigner, bool), ConfigError> {
        match (&self.audit_signing_key, self.production) {
            (Some(key), _) => Ok((key.clone(), false)),
            (None, false) => Ok((fluxi_core::audit::AuditSigner::random(), true)),
            (None, true) => Err(ConfigError(
                "FLUXI_AUDIT_SIGNING_KEY is not set: production needs a fixed Ed25519 seed for audit \
                 checkpoints (64 hex digits, e.g. from `openssl rand -hex 32`), kept outside the database"
                    .into(),
            )),
        }
    }

    /// The encryption keys, and whether the key was made up for this process: required in
    /// production (sealed secrets must open after a restart); random in development, where
    /// secrets stored by an earlier process then no longer open.
    pub fn keyring(&self) -> Result<(fluxi_core::secrets::Keyring, bool), ConfigError> {
        let ring = |key: fluxi_core::secrets::EncryptionKey| {
            fluxi_core::secrets::Keyring::new(self.encryption_key_version, key, self.encryption_old_keys.clone())
        };
        match (&self.encryption_key, self.production) {
            (Some(key), _) => Ok((ring(key.clone()), false)),
            (None, false) => Ok((ring(fluxi_core::secrets::EncryptionKey::random()), true)),
            (None, true) => Err(ConfigError(
                "FLUXI_ENCRYPTION_KEY is not set: production needs a fixed key for the secrets stored in the \
                 database (64 hex digits, e.g. from `openssl rand -hex 32`), kept outside the database"
                    .into(),
            )),
        }
    }

    /// Whether `/dev/mailbox` exists: only in development, and only while mail is not
    /// delivered (with `SMTP_URL` set the mails reach their recipients, and a page listing
    /// invitation links would only be a way to read other people's mail).
    pub fn dev_mailbox(&self) -> bool {
        !self.production && self.smtp_url.is_none()
    }
}

/// Named variables; an empty or blank value counts as unset.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError> {
        match self.get(name) {
            Some(v) => v.trim().parse().map_err(|_| ConfigError(format!("{name}={v:?} is not a valid value"))),
            None => Ok(default),
        }
    }
}

/// The provider catalogue: a file an operator names, or the built-in one; plain-HTTP
/// loopback endpoints only with `FLUXI_INTEGRATIONS_ALLOW_LOOPBACK_HTTP=1` (tests).
fn integrations_catalogue<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<fluxi_core::integrations::Catalogue, ConfigError> {
    use fluxi_core::integrations::catalogue::{self, ClientCredentials, Transport};
    let text = match vars.get("FLUXI_INTEGRATIONS_CATALOGUE") {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("FLUXI_INTEGRATIONS_CATALOGUE: cannot read {path}: {e}")))?,
        None => catalogue::BUILT_IN.to_string(),
    };
    let transport = match vars.get("FLUXI_INTEGRATIONS_ALLOW_LOOPBACK_HTTP").as_deref() {
        Some("1") => Transport::AllowLoopbackHttp,
        _ => Transport::HttpsOnly,
    };
    fluxi_core::integrations::Catalogue::parse(&text, transport, |id| {
        let (id_var, secret_var) = catalogue::credential_variables(id);
        Some(ClientCredentials {
            client_id: vars.get(&id_var).filter(|v| !v.trim().is_empty())?,
            client_secret: zeroize::Zeroizing::new(vars.get(&secret_var).filter(|v| !v.trim().is_empty())?),
        })
    })
    .map_err(|e| ConfigError(format!("integrations catalogue: {e}")))
}

/// The assistant's model (`FLUXI_ASSISTANT_PROVIDER` = `openai` for any OpenAI-compatible
/// API, or `anthropic`; `FLUXI_ASSISTANT_BASE_URL`, `_MODEL`, `_API_KEY`), its bounds, and
/// the deployment's switch (`FLUXI_ASSISTANT=off`). No provider: not configured.
fn assistant<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<fluxi_core::assistant::AssistantConfig, ConfigError> {
    use fluxi_core::assistant::{AssistantConfig, AssistantLimits, ModelClient, ModelConfig, WireFormat};
    let enabled = match vars.get("FLUXI_ASSISTANT").as_deref().map(str::trim) {
        None | Some("on") => true,
        Some("off") => false,
        Some(v) => return Err(ConfigError(format!("FLUXI_ASSISTANT={v:?} must be on or off"))),
    };
    let limits = AssistantLimits {
        daily_tokens: vars.parsed("FLUXI_ASSISTANT_DAILY_TOKENS", AssistantLimits::default().daily_tokens)?,
        ..AssistantLimits::default()
    };
    let Some(provider) = vars.get("FLUXI_ASSISTANT_PROVIDER") else {
        return Ok(AssistantConfig { model: None, enabled, limits });
    };
    let format = WireFormat::parse(&provider)
        .ok_or_else(|| ConfigError(format!("FLUXI_ASSISTANT_PROVIDER={provider:?} must be openai or anthropic")))?;
    let default_base = match format {
        WireFormat::OpenAi => "https://api.openai.com/v1",
        WireFormat::Anthropic => "https://api.anthropic.com",
    };
    let raw_base = vars.get("FLUXI_ASSISTANT_BASE_URL").unwrap_or_else(|| default_base.to_string());
    let base_url =
        url::Url::parse(raw_base.trim()).map_err(|_| ConfigError("FLUXI_ASSISTANT_BASE_URL is not a URL".into()))?;
    let loopback = matches!(base_url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let loopback_allowed = vars.get("FLUXI_INTEGRATIONS_ALLOW_LOOPBACK_HTTP").as_deref() == Some("1");
    if base_url.scheme() != "https" && !(base_url.scheme() == "http" && loopback && loopback_allowed) {
        return Err(ConfigError("FLUXI_ASSISTANT_BASE_URL must use https".into()));
    }
    let model = vars
        .get("FLUXI_ASSISTANT_MODEL")
        .ok_or_else(|| ConfigError("FLUXI_ASSISTANT_MODEL is required with FLUXI_ASSISTANT_PROVIDER".into()))?;
    let api_key = vars
        .get("FLUXI_ASSISTANT_API_KEY")
        .ok_or_else(|| ConfigError("FLUXI_ASSISTANT_API_KEY is required with FLUXI_ASSISTANT_PROVIDER".into()))?;
    let max_output_tokens: u32 = vars.parsed("FLUXI_ASSISTANT_MAX_OUTPUT_TOKENS", 1024)?;
    let timeout: u64 = vars.parsed("FLUXI_ASSISTANT_TIMEOUT_SECONDS", 30)?;
    if !(16..=16_384).contains(&max_output_tokens) || !(1..=300).contains(&timeout) {
        return Err(ConfigError(
            "FLUXI_ASSISTANT_MAX_OUTPUT_TOKENS must be 16–16384 and FLUXI_ASSISTANT_TIMEOUT_SECONDS 1–300".into(),
        ));
    }
    let client = ModelClient::new(ModelConfig {
        format,
        base_url,
        model: model.trim().to_string(),
        api_key: zeroize::Zeroizing::new(api_key.trim().to_string()),
        max_output_tokens,
        timeout: Duration::from_secs(timeout),
    })
    .map_err(|_| ConfigError("the assistant's HTTP client could not be built".into()))?;
    Ok(AssistantConfig { model: Some(client), enabled, limits })
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from variables looked up by name (the process environment in
    /// production; a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        let database_url = vars.get("DATABASE_URL").ok_or_else(|| {
            ConfigError("DATABASE_URL is not set (scripts/run sets it for the embedded cluster)".into())
        })?;
        let idle: i64 = vars.parsed("FLUXI_SESSION_IDLE_MINUTES", 30)?;
        let absolute: i64 = vars.parsed("FLUXI_SESSION_ABSOLUTE_HOURS", 12)?;
        if idle <= 0 || absolute <= 0 {
            return Err(ConfigError("session timeouts must be positive".into()));
        }
        let step_up: i64 = vars.parsed("FLUXI_STEP_UP_MINUTES", 10)?;
        if !(1..=60).contains(&step_up) {
            return Err(ConfigError(format!("FLUXI_STEP_UP_MINUTES={step_up}: use 1 to 60 minutes")));
        }
        let default_hasher = PasswordHasherConfig::default();
        let addr: SocketAddr = vars.parsed("LEPTOS_SITE_ADDR", SocketAddr::from(([127, 0, 0, 1], 3000)))?;
        let env_name: String = vars.parsed("FLUXI_ENV", "production".to_string())?;
        let production = match env_name.as_str() {
            "production" => true,
            "development" => false,
            other => return Err(ConfigError(format!("FLUXI_ENV={other:?}: use development or production"))),
        };
        let pseudonym_key = vars
            .get("FLUXI_PSEUDONYM_KEY")
            .map(|hex_key| fluxi_core::pseudonym::Pseudonymizer::from_hex(&hex_key))
            .transpose()
            .map_err(|e| ConfigError(format!("FLUXI_PSEUDONYM_KEY: {e}")))?;
        let pseudonym_old_keys = vars
            .get("FLUXI_PSEUDONYM_OLD_KEYS")
            .map(|list| fluxi_core::pseudonym::PseudonymKeys::parse_older(&list))
            .transpose()
            .map_err(|_| {
                ConfigError(
                    "FLUXI_PSEUDONYM_OLD_KEYS: use epoch:key entries (key: 64 hex digits), comma-separated".into(),
                )
            })?
            .unwrap_or_default();
        let audit_signing_key = vars
            .get("FLUXI_AUDIT_SIGNING_KEY")
            .map(|hex_key| fluxi_core::audit::AuditSigner::from_hex(&hex_key))
            .transpose()
            .map_err(|e| ConfigError(format!("FLUXI_AUDIT_SIGNING_KEY: {e}")))?;
        let encryption_key = vars
            .get("FLUXI_ENCRYPTION_KEY")
            .map(|hex_key| fluxi_core::secrets::EncryptionKey::from_hex(&hex_key))
            .transpose()
            .map_err(|e| ConfigError(format!("FLUXI_ENCRYPTION_KEY: {e}")))?;
        let encryption_old_keys = vars
            .get("FLUXI_ENCRYPTION_OLD_KEYS")
            .map(|list| fluxi_core::secrets::Keyring::parse_older(&list))
            .transpose()
            .map_err(|_| {
                ConfigError(
                    "FLUXI_ENCRYPTION_OLD_KEYS: use version:key entries (key: 64 hex digits), comma-separated".into(),
                )
            })?
            .unwrap_or_default();
        let retention_days: i64 =
            vars.parsed("FLUXI_AUDIT_RETENTION_DAYS", fluxi_core::audit::maintenance::DEFAULT_RETENTION_DAYS)?;
        if !fluxi_core::audit::maintenance::RETENTION_DAYS_RANGE.contains(&retention_days) {
            return Err(ConfigError(format!(
                "FLUXI_AUDIT_RETENTION_DAYS={retention_days}: use {} to {} days",
                fluxi_core::audit::maintenance::RETENTION_DAYS_RANGE.start(),
                fluxi_core::audit::maintenance::RETENTION_DAYS_RANGE.end()
            )));
        }
        let checkpoint_minutes: u64 = vars.parsed("FLUXI_AUDIT_CHECKPOINT_MINUTES", 60)?;
        if checkpoint_minutes == 0 {
            return Err(ConfigError("FLUXI_AUDIT_CHECKPOINT_MINUTES must be at least 1".into()));
        }
        let tls = match (vars.get("FLUXI_TLS_CERT"), vars.get("FLUXI_TLS_KEY")) {
            (Some(cert), Some(key)) => {
                Some(crate::listen::TlsFiles { certificate_chain: cert.trim().into(), private_key: key.trim().into() })
            }
            (None, None) => None,
            _ => return Err(ConfigError("FLUXI_TLS_CERT and FLUXI_TLS_KEY go together: set both or neither".into())),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url: String = vars.parsed("FLUXI_BASE_URL", format!("{scheme}://{addr}"))?;
        let http_redirect_addr: Option<SocketAddr> = match vars.get("FLUXI_HTTP_REDIRECT_ADDR") {
            Some(v) => Some(
                v.trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("FLUXI_HTTP_REDIRECT_ADDR={v:?} is not a valid value")))?,
            ),
            None => None,
        };
        if http_redirect_addr.is_some() && !base_url.starts_with("https://") {
            return Err(ConfigError(
                "FLUXI_HTTP_REDIRECT_ADDR redirects to FLUXI_BASE_URL, which must be https://".into(),
            ));
        }
        let trusted_proxies: usize = vars.parsed("FLUXI_TRUSTED_PROXIES", 0)?;
        let connection_limits = {
            let default = crate::listen::ConnectionLimits::default();
            let header_seconds: u64 =
                vars.parsed("FLUXI_HEADER_READ_TIMEOUT_SECONDS", default.header_read_timeout.as_secs())?;
            let max_connections: usize = vars.parsed("FLUXI_MAX_CONNECTIONS", default.max_connections)?;
            // Behind a proxy every connection comes from the proxy: no per-network cap by default.
            let per_network_default = if trusted_proxies == 0 { default.max_per_network.unwrap_or(0) } else { 0 };
            let per_network: usize = vars.parsed("FLUXI_MAX_CONNECTIONS_PER_NETWORK", per_network_default)?;
            if header_seconds == 0 || max_connections == 0 || max_connections > u32::MAX as usize {
                return Err(ConfigError(
                    "FLUXI_HEADER_READ_TIMEOUT_SECONDS and FLUXI_MAX_CONNECTIONS must be at least 1".into(),
                ));
            }
            crate::listen::ConnectionLimits {
                header_read_timeout: Duration::from_secs(header_seconds),
                max_connections,
                max_per_network: (per_network > 0).then_some(per_network),
                ..default
            }
        };
        let security_contact = match vars.get("FLUXI_SECURITY_CONTACT") {
            Some(c) if c.starts_with("mailto:") || c.starts_with("https://") => c,
            Some(c) => {
                return Err(ConfigError(format!("FLUXI_SECURITY_CONTACT={c:?} must start with mailto: or https://")))
            }
            None => {
                let host =
                    base_url.split("://").nth(1).unwrap_or_default().split(['/', ':']).next().unwrap_or_default();
                format!("mailto:security@{host}")
            }
        };
        let security_txt_expires = match vars.get("FLUXI_SECURITY_TXT_EXPIRES") {
            Some(v) => time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339)
                .map_err(|_| ConfigError(format!("FLUXI_SECURITY_TXT_EXPIRES={v:?} is not an RFC 3339 time")))?,
            None => time::OffsetDateTime::now_utc() + time::Duration::days(180),
        };
        let smtp_url = vars.get("SMTP_URL").map(SecretUrl);
        let integrations = integrations_catalogue(&vars)?;
        let assistant = assistant(&vars)?;
        if production {
            transport::refuse_plaintext(
                &base_url,
                smtp_url.as_deref(),
                &database_url,
                vars.get("FLUXI_DB_ALLOW_PLAINTEXT").as_deref() == Some("1"),
            )?;
        }
        Ok(Self {
            integrations,
            assistant,
            connection_limits,
            tls,
            http_redirect_addr,
            encryption_key,
            encryption_key_version: vars.parsed("FLUXI_ENCRYPTION_KEY_VERSION", 1)?,
            encryption_old_keys,
            pseudonym_epoch: vars.parsed("FLUXI_PSEUDONYM_EPOCH", 1)?,
            pseudonym_old_keys,
            audit_signing_key,
            audit_retention: time::Duration::days(retention_days),
            audit_checkpoint_every: Duration::from_secs(checkpoint_minutes * 60),
            audit_checkpoint_file: vars.get("FLUXI_AUDIT_CHECKPOINT_FILE").map(std::path::PathBuf::from),
            pseudonym_key,
            database_url: SecretUrl(database_url),
            addr,
            base_url,
            smtp_url,
            mail_from: vars.parsed("FLUXI_MAIL_FROM", "Fluxi <no-reply@fluxi.localhost>".to_string())?,
            security_contact,
            security_txt_expires,
            production,
            fleet_concurrency: vars.parsed("FLUXI_FLEET_CONCURRENCY", 4)?,
            trusted_proxies,
            workspaces_per_day: vars
                .parsed("FLUXI_WORKSPACES_PER_DAY", fluxi_core::workspaces::DEFAULT_WORKSPACES_PER_DAY)?,
            pool_size: vars.parsed("FLUXI_DB_POOL_SIZE", 16)?,
            invitation_policy: {
                use fluxi_core::workspaces::invitations::InvitationPolicy;
                let default = InvitationPolicy::default();
                let per_network =
                    vars.parsed("FLUXI_INVITATION_MAILS_PER_NETWORK_DAY", default.mail_per_network.max)?;
                InvitationPolicy {
                    mail_per_network: fluxi_core::rate_limit::RateLimit::per_day(per_network),
                    ..default
                }
            },
            sign_up_limits: {
                use fluxi_core::rate_limit::RateLimit;
                let default = fluxi_core::accounts::SignUpLimits::default();
                fluxi_core::accounts::SignUpLimits {
                    per_network: RateLimit::per_hour(
                        vars.parsed("FLUXI_SIGNUPS_PER_NETWORK_HOUR", default.per_network.max)?,
                    ),
                    overall: RateLimit::per_hour(vars.parsed("FLUXI_SIGNUPS_PER_HOUR", default.overall.max)?),
                }
            },
            session_policy: SessionPolicy {
                idle_timeout: time::Duration::minutes(idle),
                absolute_timeout: time::Duration::hours(absolute),
                step_up_window: time::Duration::minutes(step_up),
                ..SessionPolicy::default()
            },
            session_cleanup_every: Duration::from_secs(vars.parsed("FLUXI_SESSION_CLEANUP_SECONDS", 300)?),
            request_timeout: Duration::from_secs(vars.parsed("FLUXI_REQUEST_TIMEOUT_SECONDS", 30)?),
            hasher: PasswordHasherConfig {
                permits: vars.parsed("FLUXI_HASH_CONCURRENCY", default_hasher.permits)?,
                max_wait: Duration::from_millis(vars.parsed("FLUXI_HASH_MAX_WAIT_MS", 2000)?),
            },
        })
    }
}

/// What production refuses to start with: traffic that would cross a network in clear.
/// Each URL is parsed the way its client parses it (the WHATWG URL parser for the site,
/// lettre's for SMTP, tokio-postgres' for the database), so no spelling passes the check
/// here and connects elsewhere there.
mod transport {
    use super::ConfigError;

    /// Loopback only: traffic that never leaves the machine. (Non-special schemes such as
    /// `smtp:` leave IP addresses unparsed, as names.)
    fn is_loopback_host(host: &url::Host<&str>) -> bool {
        match host {
            url::Host::Domain(name) => is_loopback_name(name),
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        }
    }

    fn is_loopback_name(name: &str) -> bool {
        let name = name.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        // Only `localhost` itself: other `*.localhost` names go to the resolver, which need
        // not keep them on this machine.
        name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn url_is_loopback(url: &url::Url) -> bool {
        url.host().is_some_and(|host| is_loopback_host(&host))
    }

    /// Every place tokio-postgres may connect to (each host, each `hostaddr`) is a Unix
    /// socket or a loopback address.
    fn database_is_local(config: &tokio_postgres::Config) -> bool {
        let hosts_local = config.get_hosts().iter().all(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => is_loopback_name(name),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        });
        hosts_local && config.get_hostaddrs().iter().all(|ip| ip.is_loopback())
    }

    /// lettre's reading of an SMTP URL: implicit TLS (`smtps`), or STARTTLS required — the
    /// first `tls` parameter, the one lettre uses, says `required`.
    fn smtp_uses_tls(smtp: &url::Url) -> bool {
        smtp.scheme() == "smtps"
            || (smtp.scheme() == "smtp"
                && smtp.query_pairs().find(|(name, _)| name == "tls").is_some_and(|(_, value)| value == "required"))
    }

    /// In production: the site must be `https://` (people sign in there), SMTP must use TLS
    /// (invitation links are bearer tokens), and a database on another machine must be
    /// reached over verified TLS (`sslmode=require` or stricter; `prefer` can be stripped
    /// by someone in the middle) unless `allow_plaintext_db`. Loopback is exempt: its traffic never
    /// leaves the host. Errors name the setting, never its secret parts.
    pub(super) fn refuse_plaintext(
        base_url: &str,
        smtp_url: Option<&str>,
        database_url: &str,
        allow_plaintext_db: bool,
    ) -> Result<(), ConfigError> {
        let site = url::Url::parse(base_url).map_err(|_| ConfigError("FLUXI_BASE_URL is not a valid URL".into()))?;
        if site.scheme() != "https" && !(site.scheme() == "http" && url_is_loopback(&site)) {
            return Err(ConfigError(
                "FLUXI_BASE_URL must start with https:// in production (terminate TLS here with FLUXI_TLS_CERT and \
                 FLUXI_TLS_KEY, or in a proxy in front)"
                    .into(),
            ));
        }
        if let Some(smtp) = smtp_url {
            let smtp = url::Url::parse(smtp).map_err(|_| ConfigError("SMTP_URL is not a valid URL".into()))?;
            if !smtp_uses_tls(&smtp) && !url_is_loopback(&smtp) {
                return Err(ConfigError(
                    "SMTP_URL must use TLS in production: smtps://… or smtp://…?tls=required".into(),
                ));
            }
        }
        // Read as the connection will be (`fluxi_core::db::DbTarget`), by the same function.
        let database =
            fluxi_core::db::read_database_url(database_url).map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
        if database.tls != fluxi_core::db::DbTls::Required
            && !allow_plaintext_db
            && !database_is_local(&database.config)
        {
            return Err(ConfigError(
                "DATABASE_URL must use TLS to reach another machine in production: add sslmode=verify-full \
                 (and sslrootcert=/path/to/ca.pem unless its certificate chains to a public root), or set \
                 FLUXI_DB_ALLOW_PLAINTEXT=1 on a network you trust"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const DB: (&str, &str) = ("DATABASE_URL", "postgres://app@127.0.0.1/fluxi");
    const KEY: (&str, &str) =
        ("FLUXI_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");

    #[test]
    fn debug_output_shows_no_secret() {
        let audit = ("FLUXI_AUDIT_SIGNING_KEY", "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100");
        let sealing = ("FLUXI_ENCRYPTION_KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0");
        let c = config(&[
            ("DATABASE_URL", "postgres://app:db-hunter2@db.internal:5432/fluxi?sslmode=require&password=q-hunter2"),
            ("SMTP_URL", "smtps://mailer:smtp-hunter2@smtp.example.test:465"),
            ("FLUXI_DB_ALLOW_PLAINTEXT", "1"),
            KEY,
            audit,
            sealing,
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["db-hunter2", "q-hunter2", "smtp-hunter2", KEY.1, audit.1, sealing.1] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://app:***@db.internal:5432/fluxi?***"), "{shown}");
        assert_eq!(
            &*c.database_url,
            "postgres://app:db-hunter2@db.internal:5432/fluxi?sslmode=require&password=q-hunter2"
        );
    }

    #[test]
    fn production_is_the_default_and_has_no_mailbox() {
        let c = config(&[DB, KEY]).unwrap();
        assert!(c.production);
        assert!(!c.dev_mailbox());
        assert!(config(&[DB, KEY, ("FLUXI_ENV", "  ")]).unwrap().production, "blank counts as unset");
    }

    #[test]
    fn the_mailbox_exists_only_in_development_without_smtp() {
        assert!(config(&[DB, ("FLUXI_ENV", "development")]).unwrap().dev_mailbox());
        let with_smtp = config(&[DB, ("FLUXI_ENV", "development"), ("SMTP_URL", "smtp://127.0.0.1:2525")]).unwrap();
        assert!(!with_smtp.production && !with_smtp.dev_mailbox());
        assert!(!config(&[DB, KEY, ("FLUXI_ENV", "production")]).unwrap().dev_mailbox());
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let err = config(&[DB, ("FLUXI_ENV", "staging")]).unwrap_err().to_string();
        assert!(err.contains("FLUXI_ENV") && err.contains("staging"), "{err}");
        let err = config(&[DB, KEY, ("FLUXI_DB_POOL_SIZE", "many")]).unwrap_err().to_string();
        assert!(err.contains("FLUXI_DB_POOL_SIZE=\"many\""), "{err}");
        assert!(config(&[]).unwrap_err().to_string().contains("DATABASE_URL is not set"));
    }

    #[test]
    fn production_needs_a_pseudonym_key_and_development_makes_one_up() {
        let err = config(&[DB]).unwrap().pseudonyms().unwrap_err().to_string();
        assert!(err.contains("FLUXI_PSEUDONYM_KEY is not set"), "{err}");
        let err = config(&[DB, ("FLUXI_PSEUDONYM_KEY", "not hex")]).unwrap_err().to_string();
        assert!(
            err.contains("FLUXI_PSEUDONYM_KEY") && err.contains("64 hexadecimal digits") && !err.contains("not hex"),
            "{err}"
        );
        let (fixed, ephemeral) = config(&[DB, KEY]).unwrap().pseudonyms().unwrap();
        assert!(!ephemeral);
        let (again, _) = config(&[DB, KEY]).unwrap().pseudonyms().unwrap();
        assert_eq!(
            fixed.current().pseudonym("p", "v"),
            again.current().pseudonym("p", "v"),
            "the same key, the same pseudonyms"
        );
        let (dev, ephemeral) = config(&[DB, ("FLUXI_ENV", "development")]).unwrap().pseudonyms().unwrap();
        assert!(ephemeral);
        assert_ne!(dev.current().pseudonym("p", "v"), fixed.current().pseudonym("p", "v"));
    }

    #[test]
    fn audit_settings_are_checked() {
        let err = config(&[DB, KEY]).unwrap().audit_signer().unwrap_err().to_string();
        assert!(err.contains("FLUXI_AUDIT_SIGNING_KEY is not set"), "{err}");
        let (_, ephemeral) = config(&[DB, ("FLUXI_ENV", "development")]).unwrap().audit_signer().unwrap();
        assert!(ephemeral);
        let err = config(&[DB, ("FLUXI_AUDIT_RETENTION_DAYS", "5")]).unwrap_err().to_string();
        assert!(err.contains("FLUXI_AUDIT_RETENTION_DAYS=5"), "{err}");
        let seeded = config(&[DB, KEY, ("FLUXI_AUDIT_SIGNING_KEY", KEY.1)]).unwrap();
        assert!(!seeded.audit_signer().unwrap().1);
        let rotated =
            config(&[DB, KEY, ("FLUXI_PSEUDONYM_EPOCH", "2"), ("FLUXI_PSEUDONYM_OLD_KEYS", &format!("1:{}", KEY.1))])
                .unwrap()
                .pseudonyms()
                .unwrap()
                .0;
        assert_eq!(rotated.current_epoch(), 2);
        assert_eq!(rotated.in_every_epoch("p", "v").len(), 2);
        assert!(config(&[DB, ("FLUXI_PSEUDONYM_OLD_KEYS", "nope")]).is_err());
    }

    #[test]
    fn the_step_up_window_is_configurable_within_bounds() {
        assert_eq!(config(&[DB, KEY]).unwrap().session_policy.step_up_window, time::Duration::minutes(10));
        let five = config(&[DB, KEY, ("FLUXI_STEP_UP_MINUTES", "5")]).unwrap();
        assert_eq!(five.session_policy.step_up_window, time::Duration::minutes(5));
        for bad in ["0", "61", "-1", "soon"] {
            assert!(config(&[DB, KEY, ("FLUXI_STEP_UP_MINUTES", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn production_refuses_clear_text_across_a_network() {
        let site = ("FLUXI_BASE_URL", "https://fluxi.example.com");
        assert!(config(&[DB, KEY, site]).is_ok());
        assert!(config(&[DB, KEY, ("FLUXI_BASE_URL", "http://localhost:3000")]).is_ok(), "loopback");
        assert!(config(&[("DATABASE_URL", "postgres://app@db.localhost/fluxi"), KEY]).is_err(), "resolved by DNS");
        assert!(config(&[DB, KEY, ("FLUXI_BASE_URL", "HTTPS://Fluxi.Example.com")]).is_ok(), "any case");
        assert!(
            config(&[DB, KEY, ("FLUXI_BASE_URL", "http://evil.example\\@127.0.0.1")]).is_err(),
            "browsers go to evil.example"
        );
        let err = config(&[DB, KEY, ("FLUXI_BASE_URL", "http://fluxi.example.com")]).unwrap_err().to_string();
        assert!(err.contains("FLUXI_BASE_URL must start with https://"), "{err}");
        let dev = [DB, ("FLUXI_ENV", "development"), ("FLUXI_BASE_URL", "http://fluxi.example.com")];
        assert!(config(&dev).is_ok(), "development allows it");

        for ok in
            ["smtps://mailer:pw@smtp.example.com", "smtp://smtp.example.com:587?tls=required", "smtp://127.0.0.1:2525"]
        {
            assert!(config(&[DB, KEY, site, ("SMTP_URL", ok)]).is_ok(), "{ok}");
        }
        for bad in [
            "smtp://mailer:hunter2@smtp.example.com",
            "smtp://smtp.example.com?tls=opportunistic",
            "smtp://smtp.example.com:587?tls=opportunistic&tls=required",
            "smtp://smtp.example.com#?tls=required",
        ] {
            let err = config(&[DB, KEY, site, ("SMTP_URL", bad)]).unwrap_err().to_string();
            assert!(err.contains("SMTP_URL must use TLS") && !err.contains("hunter2"), "{err}");
        }

        for local in [
            "postgres://app:pw@localhost/fluxi",
            "postgres://app:pw@[::1]:5433/fluxi",
            "postgres:///fluxi?host=/var/run/postgresql",
            "postgres://app@/fluxi",
        ] {
            assert!(config(&[("DATABASE_URL", local), KEY, site]).is_ok(), "{local}");
        }
        let remote = ("DATABASE_URL", "postgres://app:hunter2@db.internal:5432/fluxi");
        let err = config(&[remote, KEY, site]).unwrap_err().to_string();
        assert!(err.contains("FLUXI_DB_ALLOW_PLAINTEXT") && !err.contains("hunter2"), "{err}");
        assert!(config(&[remote, KEY, site, ("FLUXI_DB_ALLOW_PLAINTEXT", "1")]).is_ok());
        // Verified TLS makes another machine fine; `prefer` (strippable) or `disable` do not.
        for tls in
            ["sslmode=require", "sslmode=verify-full&sslrootcert=/etc/ca.pem", "sslmode=prefer&sslmode=verify-ca"]
        {
            let url = format!("postgres://app:hunter2@db.internal:5432/fluxi?{tls}");
            assert!(config(&[("DATABASE_URL", &url), KEY, site]).is_ok(), "{url}");
        }
        for plain in [
            "postgres://app:hunter2@db.internal/fluxi?sslmode=prefer",
            "postgres://app:hunter2@db.internal/fluxi?sslmode=verify-full&sslmode=disable",
            "host=db.internal user=app sslmode=prefer",
            "host=db.internal user=app sslmode=require sslmode=disable",
        ] {
            let err = config(&[("DATABASE_URL", plain), KEY, site]).unwrap_err().to_string();
            assert!(err.contains("must use TLS") && !err.contains("hunter2"), "{plain}: {err}");
        }
        assert!(config(&[("DATABASE_URL", "host=db.internal user=app sslmode=require"), KEY, site]).is_ok());
        let err = config(&[("DATABASE_URL", "postgres://app:hunter2@db.internal/fluxi?sslmode=verify"), KEY, site])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode must be") && !err.contains("hunter2"), "{err}");
        // Spellings that tokio-postgres reads as (also) another machine.
        for sneaky in [
            "postgres://app:pw@db.internal/fluxi?host=127.0.0.1",
            "postgres://app:pw@localhost:5432,db.example.com:5432/fluxi",
            "postgres:///fluxi?hostaddr=203.0.113.5",
            "postgres://localhost/fluxi?hostaddr=203.0.113.5",
            "host=db.example.com user=app dbname=fluxi",
            "postgres:///fluxi?host=/tmp&host=db.example.com",
            "postgres:///fluxi?h%6fst=db.example.com",
            "postgres://localhost/?@db.example.com/fluxi?user=app",
        ] {
            assert!(config(&[("DATABASE_URL", sneaky), KEY, site]).is_err(), "{sneaky}");
        }
        assert!(config(&[("DATABASE_URL", "host=/var/run/postgresql dbname=fluxi"), KEY, site]).is_ok());
    }

    #[test]
    fn tls_and_connection_settings() {
        let default = config(&[DB, KEY]).unwrap();
        assert_eq!(default.connection_limits, crate::listen::ConnectionLimits::default());
        assert!(default.tls.is_none() && default.http_redirect_addr.is_none());
        let tls = [DB, KEY, ("FLUXI_TLS_CERT", "/etc/fluxi/chain.pem"), ("FLUXI_TLS_KEY", "/etc/fluxi/key.pem")];
        let with_tls = config(&tls).unwrap();
        assert!(with_tls.base_url.starts_with("https://"), "{}", with_tls.base_url);
        assert_eq!(with_tls.tls.unwrap().private_key, std::path::PathBuf::from("/etc/fluxi/key.pem"));
        let err = config(&[DB, KEY, ("FLUXI_TLS_CERT", "/etc/fluxi/chain.pem")]).unwrap_err().to_string();
        assert!(err.contains("set both or neither"), "{err}");
        let redirect = [tls[0], tls[1], tls[2], tls[3], ("FLUXI_HTTP_REDIRECT_ADDR", "0.0.0.0:80")];
        assert_eq!(config(&redirect).unwrap().http_redirect_addr, Some("0.0.0.0:80".parse().unwrap()));
        let err = config(&[DB, KEY, ("FLUXI_HTTP_REDIRECT_ADDR", "0.0.0.0:80")]).unwrap_err().to_string();
        assert!(err.contains("must be https://"), "{err}");

        let behind_proxy = config(&[DB, KEY, ("FLUXI_TRUSTED_PROXIES", "1")]).unwrap();
        assert_eq!(behind_proxy.connection_limits.max_per_network, None, "every connection is the proxy's");
        let tuned = config(&[
            DB,
            KEY,
            ("FLUXI_HEADER_READ_TIMEOUT_SECONDS", "5"),
            ("FLUXI_MAX_CONNECTIONS", "100"),
            ("FLUXI_MAX_CONNECTIONS_PER_NETWORK", "10"),
        ])
        .unwrap();
        assert_eq!(
            tuned.connection_limits,
            crate::listen::ConnectionLimits {
                header_read_timeout: Duration::from_secs(5),
                max_connections: 100,
                max_per_network: Some(10),
                ..crate::listen::ConnectionLimits::default()
            }
        );
        assert!(config(&[DB, KEY, ("FLUXI_HEADER_READ_TIMEOUT_SECONDS", "0")]).is_err());
    }
}
