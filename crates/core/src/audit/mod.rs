//! The security audit trail: one writer every feature records through, hash chains with
//! signed checkpoints, the admins' viewer queries, export and pruning (docs/audit.md).
//!
//! - [`Action`]: the closed list of what is recorded, with the words the viewer shows.
//! - [`Detail`]: the only extra data an event carries. It holds enums, numbers and ids,
//!   never text, so a password, token, code, secret or clear personal identifier cannot be
//!   put into it.
//! - [`Audit::record`]: records one event in one statement, on the caller's connection, so
//!   it commits or rolls back with the caller's transaction; `seal` then moves it from the
//!   inbox into its chain.
//! - `chain`: the canonical encoding and hash; `verify`: the checks of `server audit verify`.
//! - `query`: the viewer's filters and keyset pages; `maintenance`: partitions, checkpoints, pruning.

mod chain;
pub mod export;
pub mod maintenance;
pub mod query;
mod seal;
mod signing;
pub mod verify;
mod writer;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use chain::{canonical_rest, event_hash, ChainFields, GENESIS_HASH};
pub use seal::{seal_all, seal_chain, seal_round, SealReport, SEAL_BATCH};
pub use signing::{AuditSigner, BadSigningKey};
pub use writer::{Audit, Origin, RepeatFilter, ACCOUNT_CHAIN};

use crate::workspaces::Role;

/// Purposes of the pseudonyms an event stores (see `crate::pseudonym`).
pub const EMAIL_PURPOSE: &str = "audit-email";
pub const NETWORK_PURPOSE: &str = "audit-network";
pub const AGENT_PURPOSE: &str = "audit-agent";

macro_rules! actions {
    ($( $variant:ident = $name:literal, $group:ident, $words:literal; )*) => {
        /// Everything the trail records. Adding a variant needs a test that produces it
        /// (`server/tests/integration/audit.rs` checks that every one has one).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action { $( $variant, )* }

        impl Action {
            pub const ALL: &'static [Action] = &[ $( Action::$variant, )* ];

            /// The stored name, stable forever (it is part of each event's hash).
            pub fn name(self) -> &'static str {
                match self { $( Action::$variant => $name, )* }
            }
            pub fn group(self) -> ActionGroup {
                match self { $( Action::$variant => ActionGroup::$group, )* }
            }
            /// How the viewer says it.
            pub fn words(self) -> &'static str {
                match self { $( Action::$variant => $words, )* }
            }
            pub fn parse(name: &str) -> Option<Action> {
                match name { $( $name => Some(Action::$variant), )* _ => None }
            }
        }
    };
}

actions! {
    SignUpRequested = "account.sign_up_requested", Accounts, "Asked to sign up with this address";
    SignUpAddressInUse = "account.sign_up_address_in_use", Accounts, "Someone tried to sign up with the account's address";
    SignUpRefused = "account.sign_up_refused", Accounts, "Sign-up link refused";
    SignedUp = "account.signed_up", Accounts, "Signed up";
    EmailVerificationSent = "account.email_verification_sent", Accounts, "Verification mail sent";
    EmailVerified = "account.email_verified", Accounts, "Verified their email address";
    EmailVerificationRefused = "account.email_verification_refused", Accounts, "Email verification link refused";
    PasswordChanged = "account.password_changed", Accounts, "Changed their password";
    PasswordResetRequested = "account.password_reset_requested", Accounts, "Password reset link requested";
    PasswordResetCompleted = "account.password_reset", Accounts, "Reset their password with a mailed link";
    PasswordResetRefused = "account.password_reset_refused", Accounts, "Password reset link refused";
    EmailChangeRequested = "account.email_change_requested", Accounts, "Asked to change their email address";
    EmailChanged = "account.email_changed", Accounts, "Changed their email address";
    EmailChangeRefused = "account.email_change_refused", Accounts, "Email change link refused";
    EmailChangeReverted = "account.email_change_reverted", Accounts, "Undid a change of their email address";
    SignInSucceeded = "sign_in.succeeded", SignIn, "Signed in";
    SignInFailed = "sign_in.failed", SignIn, "Sign-in failed";
    SignInThrottledAccount = "sign_in.throttled_account", SignIn, "Sign-in refused: too many tries for the account";
    SignInThrottledNetwork = "sign_in.throttled_network", SignIn, "Sign-in refused: too many tries from the network";
    SignedOut = "session.signed_out", Sessions, "Signed out";
    SessionExpired = "session.expired", Sessions, "Session expired";
    SessionRevoked = "session.revoked", Sessions, "Session revoked";
    StepUpFailed = "step_up.failed", SignIn, "Identity confirmation failed";
    StepUpSucceeded = "step_up.succeeded", SignIn, "Confirmed their identity";
    WorkspaceCreated = "workspace.created", Workspace, "Created the workspace";
    WorkspaceDeleted = "workspace.deleted", Workspace, "Deleted the workspace";
    WorkspaceAccessDenied = "workspace.access_denied", Workspace, "Tried to open the workspace without being a member";
    WorkspaceMigrationFailed = "workspace.migration_failed", Workspace, "Workspace upgrade failed";
    WorkspaceMfaPolicyChanged = "workspace.mfa_policy_changed", Workspace, "Changed whether two-factor authentication is required";
    InvitationSent = "invitation.sent", Invitations, "Sent an invitation";
    InvitationReplaced = "invitation.replaced", Invitations, "Replaced an invitation with a new link";
    InvitationRevoked = "invitation.revoked", Invitations, "Revoked an invitation";
    InvitationAccepted = "invitation.accepted", Invitations, "Accepted an invitation";
    InvitationMailGivenUp = "invitation.mail_given_up", Invitations, "Invitation mail could not be delivered";
    RoleChanged = "member.role_changed", Members, "Changed a member's role";
    MemberRemoved = "member.removed", Members, "Removed a member";
    MemberLeft = "member.left", Members, "Left the workspace";
    OwnershipTransferred = "member.ownership_transferred", Members, "Transferred ownership";
    AuditViewed = "audit.viewed", Audit, "Viewed the audit log";
    AuditExported = "audit.exported", Audit, "Exported the audit log";
    AuditPruned = "audit.pruned", Audit, "Pruned audit events past retention";
    MfaEnabled = "mfa.enabled", TwoFactor, "Turned on two-factor authentication";
    MfaDisabled = "mfa.disabled", TwoFactor, "Turned off two-factor authentication";
    MfaCodeAccepted = "mfa.code_accepted", TwoFactor, "Authentication code accepted";
    MfaCodeFailed = "mfa.code_failed", TwoFactor, "Wrong authentication code";
    MfaCodeReplayed = "mfa.code_replayed", TwoFactor, "Authentication code refused: already used";
    RecoveryCodeUsed = "mfa.recovery_code_used", TwoFactor, "Used a recovery code";
    RecoveryCodesRegenerated = "mfa.recovery_codes_regenerated", TwoFactor, "Made new recovery codes";
    PasskeyAdded = "passkey.added", TwoFactor, "Added a passkey";
    PasskeyRemoved = "passkey.removed", TwoFactor, "Removed a passkey";
    PasskeyRefused = "passkey.refused", TwoFactor, "Passkey refused";
    PasskeyPossiblyCopied = "passkey.possibly_copied", TwoFactor, "Passkey refused: it may have been copied";
    IntegrationConnected = "integration.connected", Integrations, "Connected an integration";
    IntegrationConnectRefused = "integration.connect_refused", Integrations, "Integration connection refused";
    IntegrationRefreshFailed = "integration.refresh_failed", Integrations, "Integration needs reconnecting: the provider refused to refresh it";
    IntegrationDisconnected = "integration.disconnected", Integrations, "Disconnected an integration";
    IntegrationRevoked = "integration.revoked", Integrations, "Integration access revoked at the provider";
    IntegrationRevocationFailed = "integration.revocation_failed", Integrations, "Revoking integration access at the provider failed; retrying";
    IntegrationRevocationGivenUp = "integration.revocation_given_up", Integrations, "Gave up revoking integration access at the provider";
    IntegrationRevocationSkipped = "integration.revocation_skipped", Integrations, "Left integration access at the provider: the same account is connected elsewhere";
    IntegrationKeySaved = "integration.key_saved", Integrations, "Saved an API key";
    IntegrationKeyReplaced = "integration.key_replaced", Integrations, "Replaced an API key";
    IntegrationKeyDeleted = "integration.key_deleted", Integrations, "Deleted an API key";
    SecretsRotated = "secrets.rotated", Accounts, "Stored secrets moved to the current encryption key";
    AssistantAsked = "assistant.asked", Assistant, "Asked the assistant";
    AssistantAnswered = "assistant.answered", Assistant, "The assistant answered";
    AssistantInputBlocked = "assistant.input_blocked", Assistant, "Assistant message blocked: it looked like an attack on the assistant";
    AssistantContentFlagged = "assistant.content_flagged", Assistant, "Text the assistant read was flagged as a possible injection";
    AssistantProposed = "assistant.proposed", Assistant, "The assistant proposed an action";
    AssistantToolRefused = "assistant.tool_refused", Assistant, "Refused what the assistant asked to do";
    AssistantProposalExecuted = "assistant.proposal_executed", Assistant, "Confirmed an action the assistant proposed";
    AssistantProposalDismissed = "assistant.proposal_dismissed", Assistant, "Dismissed an action the assistant proposed";
    AssistantProposalFailed = "assistant.proposal_failed", Assistant, "An action the assistant proposed could not be carried out";
    AssistantConfirmRefused = "assistant.confirm_refused", Assistant, "Confirming an action the assistant proposed was refused";
    AssistantOutputRedacted = "assistant.output_redacted", Assistant, "Removed links, images, secrets or instructions from an assistant answer";
    AssistantRateLimited = "assistant.rate_limited", Assistant, "Assistant use refused: a limit was reached";
    AssistantProviderFailed = "assistant.provider_failed", Assistant, "The AI provider did not answer";
    AssistantAlertRaised = "assistant.alert_raised", Assistant, "Alert: many blocked assistant messages or refused proposals";
    AssistantEnabled = "assistant.enabled", Assistant, "Turned the assistant on";
    AssistantDisabled = "assistant.disabled", Assistant, "Turned the assistant off";
}

/// Stored by its name.
impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Action::parse(&name).ok_or_else(|| serde::de::Error::custom("unknown action"))
    }
}

/// Groups the viewer's "Action" filter offers besides single actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionGroup {
    Accounts,
    SignIn,
    Sessions,
    Workspace,
    Invitations,
    Members,
    Audit,
    TwoFactor,
    Integrations,
    Assistant,
}

impl ActionGroup {
    pub const ALL: &'static [ActionGroup] = &[
        ActionGroup::SignIn,
        ActionGroup::TwoFactor,
        ActionGroup::Sessions,
        ActionGroup::Accounts,
        ActionGroup::Workspace,
        ActionGroup::Members,
        ActionGroup::Invitations,
        ActionGroup::Integrations,
        ActionGroup::Assistant,
        ActionGroup::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionGroup::Accounts => "accounts",
            ActionGroup::SignIn => "sign_in",
            ActionGroup::Sessions => "sessions",
            ActionGroup::Workspace => "workspace",
            ActionGroup::Invitations => "invitations",
            ActionGroup::Members => "members",
            ActionGroup::Audit => "audit",
            ActionGroup::TwoFactor => "two_factor",
            ActionGroup::Integrations => "integrations",
            ActionGroup::Assistant => "assistant",
        }
    }
    pub fn words(self) -> &'static str {
        match self {
            ActionGroup::Accounts => "Account",
            ActionGroup::SignIn => "Sign-in",
            ActionGroup::Sessions => "Sessions",
            ActionGroup::Workspace => "Workspace",
            ActionGroup::Invitations => "Invitations",
            ActionGroup::Members => "Members",
            ActionGroup::Audit => "Audit log",
            ActionGroup::TwoFactor => "Two-factor authentication",
            ActionGroup::Integrations => "Integrations",
            ActionGroup::Assistant => "Assistant",
        }
    }
    pub fn parse(name: &str) -> Option<ActionGroup> {
        Self::ALL.iter().copied().find(|g| g.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Denied,
    Failed,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[Outcome::Succeeded, Outcome::Denied, Outcome::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
    pub fn parse(name: &str) -> Option<Outcome> {
        Self::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// The background jobs that act on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemJob {
    SessionCleanup,
    MailWorker,
    FleetMigrator,
    AuditMaintenance,
    IntegrationRevoker,
    IntegrationRefresher,
    /// `server keys rotate`, run by an operator.
    KeyRotation,
    /// `server assistant off|on`, run by an operator.
    AssistantSwitch,
}

/// Who did it. An email is given in clear and stored only as a pseudonym.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    User {
        id: Uuid,
        email_normalized: &'a str,
    },
    /// Not signed in; for a sign-in, the email that was tried (if any).
    Anonymous {
        email_normalized: Option<&'a str>,
    },
    System(SystemJob),
}

impl Actor<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Actor::User { .. } => "user",
            Actor::Anonymous { .. } => "anonymous",
            Actor::System(SystemJob::SessionCleanup) => "system:session_cleanup",
            Actor::System(SystemJob::MailWorker) => "system:mail_worker",
            Actor::System(SystemJob::FleetMigrator) => "system:fleet_migrator",
            Actor::System(SystemJob::AuditMaintenance) => "system:audit_maintenance",
            Actor::System(SystemJob::IntegrationRevoker) => "system:integration_revoker",
            Actor::System(SystemJob::IntegrationRefresher) => "system:integration_refresher",
            Actor::System(SystemJob::KeyRotation) => "system:key_rotation",
            Actor::System(SystemJob::AssistantSwitch) => "system:assistant_switch",
        }
    }
}

/// What the action was done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    None,
    Account(Uuid),
    Workspace(Uuid),
    Member(Uuid),
    Invitation(Uuid),
    /// An integration connection (or API key).
    Connection(Uuid),
    AuditLog,
}

impl Target {
    pub fn kind(self) -> &'static str {
        match self {
            Target::None => "none",
            Target::Account(_) => "account",
            Target::Workspace(_) => "workspace",
            Target::Member(_) => "member",
            Target::Invitation(_) => "invitation",
            Target::Connection(_) => "integration",
            Target::AuditLog => "audit_log",
        }
    }
    pub fn id(self) -> Option<Uuid> {
        match self {
            Target::Account(id)
            | Target::Workspace(id)
            | Target::Member(id)
            | Target::Invitation(id)
            | Target::Connection(id) => Some(id),
            Target::None | Target::AuditLog => None,
        }
    }
}

/// Export formats, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Csv,
    JsonLines,
}

/// The filter an audit read used, as recorded: which kinds of filter, not what was typed
/// (an actor filter is often an email address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FilterUsed {
    pub action: bool,
    pub actor: bool,
    pub dates: bool,
    pub outcome: bool,
}

/// The small typed detail of an event. No variant holds a `String`: the type admits no
/// free text, so nothing secret or personal can be slipped into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detail {
    None,
    /// A role was given (invitation) or is held.
    Role {
        role: Role,
    },
    RoleChange {
        from: Role,
        to: Role,
    },
    /// Refused by a throttle for this long.
    Throttled {
        retry_after_seconds: u64,
    },
    /// A sign-in failure: whether the email belongs to an account.
    SignInFailure {
        known_account: bool,
    },
    /// A step-up for this workspace action failed.
    StepUp {
        for_action: Action,
    },
    /// The permission or rule that refused the action.
    Refused {
        reason: Refusal,
    },
    MailGivenUp {
        attempts: u32,
    },
    AuditRead {
        filter: FilterUsed,
        rows: u64,
    },
    AuditExport {
        filter: FilterUsed,
        format: ExportFormat,
    },
    Pruned {
        events: u64,
        chains: u64,
        periods: u32,
    },
    SessionsEnded {
        count: u64,
    },
    /// Which second factor was checked.
    SecondFactor {
        method: SecondFactorMethod,
    },
    /// Whether the workspace now requires two-factor authentication.
    MfaPolicy {
        required: bool,
    },
    /// Recovery codes left after a use or a regeneration.
    RecoveryCodes {
        remaining: u32,
    },
    /// A sign-up link given another password than the one chosen at sign-up.
    WrongPassword,
    /// The address belongs to an account (or is held for one's undo link).
    AddressInUse,
    /// Why a mailed link (verification, reset) did nothing.
    Link {
        problem: crate::accounts::LinkProblem,
    },
    /// Which provider (an id from the catalogue, never typed text).
    Integration {
        provider: crate::integrations::ProviderId,
    },
    ConnectRefused {
        provider: Option<crate::integrations::ProviderId>,
        reason: crate::integrations::connect::ConnectRefusal,
    },
    /// A connection removed, and where its revocation at the provider stands.
    Disconnected {
        provider: crate::integrations::ProviderId,
        revocation: crate::integrations::Revocation,
    },
    /// Secrets moved to the current key by a rotation pass, and those that did not open.
    Rotation {
        resealed: u64,
        failed: u64,
    },
    /// One assistant question: model calls and tokens; whether flagged text was involved.
    AssistantTurn {
        rounds: u8,
        input_tokens: u64,
        output_tokens: u64,
        flagged: bool,
    },
    /// The input screen's decision on a message (never the message).
    Screened {
        category: Option<crate::assistant::screen::Category>,
        score: u8,
    },
    /// Workspace text the assistant read (or the question) that the screen flagged.
    ContentFlagged {
        source: crate::assistant::spotlight::Source,
        category: Option<crate::assistant::screen::Category>,
    },
    /// A tool call or proposal of the assistant, and why it was refused, if it was.
    AssistantTool {
        tool: Option<crate::assistant::tools::Tool>,
        refusal: Option<crate::assistant::tools::ToolRefusal>,
        sensitive: bool,
        after_flagged: bool,
        /// The proposal it was (or became).
        proposal: Option<Uuid>,
    },
    /// What the output guard removed from an answer.
    OutputRedacted {
        removed: Vec<crate::assistant::output::Removed>,
    },
    AssistantLimit {
        limit: crate::assistant::LimitKind,
        retry_after_seconds: u64,
    },
    ModelFailed {
        error: crate::assistant::ModelError,
    },
    /// Blocked messages and refused proposals counted in the alert's window.
    AssistantAlert {
        events: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactorMethod {
    AuthenticatorApp,
    RecoveryCode,
    Passkey,
}

/// Why an action was refused, in the words of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Role,
    LastOwner,
    NotAMember,
    /// The workspace requires two-factor authentication; the caller has none.
    MfaRequired,
}

/// One event, before the writer adds time, chain position, request and pseudonyms.
#[derive(Debug, Clone)]
pub struct Event {
    /// The chain that holds it: the workspace's, or [`ACCOUNT_CHAIN`].
    pub chain: Uuid,
    pub workspace: Option<Uuid>,
    /// For account-level events, whose account (shown on their activity page).
    pub account: Option<Uuid>,
    pub action: Action,
    pub target: Target,
    pub outcome: Outcome,
    pub detail: Detail,
}

impl Event {
    /// An event of a workspace's trail.
    pub fn workspace(workspace: Uuid, action: Action, target: Target, outcome: Outcome, detail: Detail) -> Self {
        Self { chain: workspace, workspace: Some(workspace), account: None, action, target, outcome, detail }
    }

    /// An account-level event; `account` is whose activity it belongs to, if anyone's.
    pub fn account(account: Option<Uuid>, action: Action, outcome: Outcome, detail: Detail) -> Self {
        Self {
            chain: ACCOUNT_CHAIN,
            workspace: None,
            account,
            action,
            target: account.map(Target::Account).unwrap_or(Target::None),
            outcome,
            detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid filter: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.name()), "{} twice", a.name());
            assert_eq!(Action::parse(a.name()), Some(*a));
            assert!(ActionGroup::ALL.contains(&a.group()));
        }
        assert_eq!(Action::parse("nope"), None);
    }

    #[test]
    fn details_serialize_without_free_text() {
        let d = Detail::RoleChange { from: Role::Member, to: Role::Admin };
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"type":"role_change","from":"member","to":"admin"}"#);
    }
}
