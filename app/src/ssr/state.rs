//! The state every server function shares, built once at start-up.

use std::sync::Arc;

use fluxi_core::accounts::{PasswordGate, PasswordHasher, SignInThrottle};
use fluxi_core::audit::{AuditSigner, Origin, RepeatFilter};
use fluxi_core::clock::SharedClock;
use fluxi_core::db::{Pool, PooledConn};
use fluxi_core::pseudonym::PseudonymKeys;
use fluxi_core::sessions::SessionPolicy;
use leptos::prelude::*;

use crate::error::AppError;

/// Everything a server function needs. Cloned into the context of every request (several
/// times), hence one `Arc` instead of a clone per field.
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

pub struct AppServices {
    pub pool: Pool,
    pub hasher: PasswordHasher,
    pub clock: SharedClock,
    pub session_policy: SessionPolicy,
    pub sign_in_throttle: SignInThrottle,
    /// An account's failed sign-ins from everywhere it has not signed in from before.
    pub elsewhere_sign_in_throttle: SignInThrottle,
    /// Accounts that may be created per client network and overall.
    pub sign_up_limits: fluxi_core::accounts::SignUpLimits,
    /// Failed sign-ins allowed per client network, across accounts (see `fluxi_core::client`).
    pub client_sign_in_throttle: SignInThrottle,
    /// How many reverse proxies of ours stand in front of Fluxi (`FLUXI_TRUSTED_PROXIES`):
    /// how many `X-Forwarded-For` entries, from the right, name the client truthfully.
    pub trusted_proxies: usize,
    pub leptos_options: LeptosOptions,
    /// Public base URL for links in mails (e.g. invitation links).
    pub base_url: String,
    /// `/.well-known/security.txt` (RFC 9116), written once at start-up from the security
    /// contact and review date in the configuration.
    pub security_txt: String,
    /// Whether the development mailbox page (`/dev/mailbox`) exists.
    pub dev_mailbox: bool,
    /// Longest a request may take before it is answered 503 (see `server::build_router`).
    pub request_timeout: std::time::Duration,
    /// Workspaces one account may create in any 24 hours (`FLUXI_WORKSPACES_PER_DAY`).
    pub workspaces_per_day: u32,
    /// Invitation lifetime and invitation-mail limits.
    pub invitation_policy: fluxi_core::workspaces::invitations::InvitationPolicy,
    /// Keyed pseudonyms for personal identifiers stored for matching only
    /// (`FLUXI_PSEUDONYM_KEY`, older epochs in `FLUXI_PSEUDONYM_OLD_KEYS`; see
    /// `fluxi_core::pseudonym`).
    pub pseudonyms: PseudonymKeys,
    /// Signs audit checkpoints, anchors and exports (`FLUXI_AUDIT_SIGNING_KEY`).
    pub audit_signer: AuditSigner,
    /// Refusals recorded once a minute per key, not per request (see `RepeatFilter`).
    pub audit_repeats: RepeatFilter,
    /// Seals the secrets stored in the database (`FLUXI_ENCRYPTION_KEY`; see
    /// `fluxi_core::secrets`).
    pub keyring: fluxi_core::secrets::Keyring,
    /// Provider catalogue, HTTP client and callback URL of the integrations vault.
    pub integrations: fluxi_core::integrations::Integrations,
    /// The workspace assistant's model, limits and the deployment's switch.
    pub assistant: fluxi_core::assistant::AssistantConfig,
}

impl AppServices {
    /// The passkey relying party of `base_url` (cheap to build: a parsed URL).
    pub fn relying_party(&self) -> Result<fluxi_core::passkeys::RelyingParty, fluxi_core::passkeys::PasskeyError> {
        fluxi_core::passkeys::RelyingParty::new(&self.base_url)
    }

    /// The rule the cleanup job deletes finished sign-in counts by: every kind of count
    /// shares one table, so rows are kept as long as the longest window needs.
    pub fn sign_in_counts_kept(&self) -> SignInThrottle {
        [self.sign_in_throttle, self.client_sign_in_throttle, self.elsewhere_sign_in_throttle]
            .into_iter()
            .max_by_key(|t| t.window)
            .unwrap_or_default()
    }

    /// What the assistant's confirmed proposals are carried out with.
    pub fn assistant_deps(&self) -> fluxi_core::assistant::proposals::ActionDeps<'_> {
        fluxi_core::assistant::proposals::ActionDeps {
            integrations: &self.integrations,
            keyring: &self.keyring,
            invitation_policy: &self.invitation_policy,
            base_url: &self.base_url,
        }
    }

    /// The password checks of sign-in and step-up, over this state.
    pub fn password_gate<'a>(&'a self, origin: &'a Origin) -> PasswordGate<'a> {
        PasswordGate {
            origin,
            repeats: &self.audit_repeats,
            pool: &self.pool,
            hasher: &self.hasher,
            account_throttle: &self.sign_in_throttle,
            network_throttle: &self.client_sign_in_throttle,
            elsewhere_throttle: &self.elsewhere_sign_in_throttle,
            pseudonyms: &self.pseudonyms,
            clock: self.clock.as_ref(),
            keyring: &self.keyring,
        }
    }
}

impl axum::extract::FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

pub fn state() -> Result<AppState, AppError> {
    use_context::<AppState>().ok_or_else(|| AppError::internal("AppState missing from context"))
}

/// A pooled connection; an exhausted or unreachable pool is "busy, try again".
pub async fn conn(state: &AppState) -> Result<PooledConn, AppError> {
    state.pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "database pool exhausted or unreachable");
        AppError::Busy
    })
}
