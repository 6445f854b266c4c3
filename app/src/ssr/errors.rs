//! What each domain error means to the person: the conversions that let server
//! functions use `?`. The HTTP status follows from the resulting [`AppError`] (see
//! `crate::error`); nothing here touches the response.

use fluxi_core::accounts::credentials::ResetError;
use fluxi_core::accounts::email_change::EmailChangeError;
use fluxi_core::accounts::sign_up::ConfirmSignUpError;
use fluxi_core::accounts::verification::VerificationError;
use fluxi_core::accounts::AccountError;
use fluxi_core::mfa::MfaError;
use fluxi_core::passkeys::PasskeyError;
use fluxi_core::sessions::RevokeError;
use fluxi_core::workspaces::invitations::{AcceptError, InvitationProblem, MailLimit, INVITATIONS_PER_DAY};
use fluxi_core::workspaces::{InvalidInput, WorkspaceError};

use crate::error::{AppError, FieldError};

/// "N minutes", rounded up.
fn in_minutes(wait: time::Duration) -> String {
    let minutes = (wait.whole_seconds() + 59) / 60;
    let plural = if minutes == 1 { "" } else { "s" };
    format!("{minutes} minute{plural}")
}

fn too_many_for(message: String, wait: time::Duration) -> AppError {
    AppError::too_many(message, Some(wait.try_into().unwrap_or_default()))
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(errors) => AppError::Invalid(
                errors.into_iter().map(|e| FieldError { field: e.field().into(), message: e.to_string() }).collect(),
            ),
            AccountError::WrongCredentials => AppError::InvalidCredentials,
            AccountError::CurrentPasswordMissing => AppError::field("password", "Enter your current password."),
            AccountError::WrongCurrentPassword => AppError::field("password", "That is not your current password."),
            // Sign-in and step-up share the account's count: both guess the same password.
            AccountError::AccountThrottled(wait) => too_many_for(
                format!("Too many wrong passwords for this account. Try again in {}.", in_minutes(wait)),
                wait,
            ),
            AccountError::NetworkThrottled(wait) => too_many_for(
                format!("Too many failed sign-ins from your network. Try again in {}.", in_minutes(wait)),
                wait,
            ),
            AccountError::SignUpsThrottled { wait, overall: false } => {
                too_many_for(format!("Too many sign-ups from your network. Try again in {}.", in_minutes(wait)), wait)
            }
            AccountError::SignUpsThrottled { wait, overall: true } => {
                too_many_for(format!("Sign-ups are paused for a while. Try again in {}.", in_minutes(wait)), wait)
            }
            AccountError::Busy => AppError::Busy,
            AccountError::Unavailable(e) => {
                tracing::warn!(error = %e, "database pool exhausted or unreachable");
                AppError::Busy
            }
            AccountError::SecondFactor(e) => e.into(),
            AccountError::SecondFactorMissing => {
                AppError::field("code", "Enter the 6-digit code from your authenticator app, or a recovery code.")
            }
            AccountError::SecondFactorExpired => {
                AppError::Rejected("Your sign-in took too long. Enter your email and password again.".into())
            }
            AccountError::TooManyCodes => {
                AppError::Rejected("Too many wrong codes. Enter your email and password again.".into())
            }
            other @ (AccountError::Hashing(_) | AccountError::Database(_)) => AppError::internal(other),
        }
    }
}

impl From<MfaError> for AppError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::MalformedCode => AppError::field("code", "Enter the 6-digit code from your authenticator app."),
            MfaError::WrongCode => AppError::field(
                "code",
                "That code is not right. Check the time on your device and try the newest code.",
            ),
            MfaError::CodeAlreadyUsed => {
                AppError::field("code", "That code was already used. Wait for the next code in your app.")
            }
            MfaError::MalformedRecoveryCode => {
                AppError::field("recovery_code", "A recovery code has 10 letters and digits, like abcde-12345.")
            }
            MfaError::WrongRecoveryCode => {
                AppError::field("recovery_code", "That recovery code is not right, or it was already used.")
            }
            MfaError::AlreadyEnabled => AppError::Rejected("Two-factor authentication is already on.".into()),
            MfaError::EmailNotVerified => AppError::Rejected(
                "Confirm your email address first (the link we mailed you, or \"Send a new link\" on your account page)."
                    .into(),
            ),
            MfaError::NotEnabled => AppError::Rejected("Two-factor authentication is not on.".into()),
            MfaError::PasskeyRefused => {
                AppError::Rejected("The passkey could not be verified, or its request expired. Try again.".into())
            }
            MfaError::NoPendingEnrolment => AppError::Rejected(
                "This set-up expired or was replaced. Start again with \"Set up authenticator app\".".into(),
            ),
            other @ (MfaError::Sealed(_) | MfaError::Database(_)) => AppError::internal(other),
        }
    }
}

impl From<WorkspaceError> for AppError {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::NotFound => AppError::NotFound,
            WorkspaceError::Forbidden => AppError::Forbidden,
            WorkspaceError::LastOwner => AppError::Rejected("A workspace must keep at least one owner.".into()),
            WorkspaceError::NoSuchMember => AppError::Rejected("That person is not a member of this workspace.".into()),
            WorkspaceError::RoleChangedMeanwhile => {
                AppError::Rejected("That member's role changed in the meantime, so nothing was done.".into())
            }
            WorkspaceError::Invalid(input) => input.into(),
            WorkspaceError::TooManyInvitations => AppError::too_many(
                format!(
                    "This workspace has sent {INVITATIONS_PER_DAY} invitations in the last 24 hours. Try again later."
                ),
                None,
            ),
            WorkspaceError::InvitationMailLimited { which, wait } => too_many_for(
                match which {
                    MailLimit::Recipient => "This address has received several invitations today. Try again tomorrow.",
                    MailLimit::Network => "Too many invitations were sent from your network today. Try again later.",
                    MailLimit::Overall => "Invitations are paused for a while. Try again later.",
                }
                .into(),
                wait,
            ),
            WorkspaceError::Upgrading => AppError::Upgrading,
            WorkspaceError::MfaRequired => AppError::MfaRequired,
            WorkspaceError::OwnerWithoutMfa => AppError::Rejected(
                "Turn on two-factor authentication for your own account first (Account → Security).".into(),
            ),
            WorkspaceError::TooManyWorkspaces(limit) => AppError::too_many(
                format!(
                    "You have created {limit} workspaces in the last 24 hours, the most allowed. Try again tomorrow."
                ),
                None,
            ),
            other @ (WorkspaceError::Tenant(_) | WorkspaceError::Database(_)) => AppError::internal(other),
        }
    }
}

impl From<InvalidInput> for AppError {
    fn from(input: InvalidInput) -> Self {
        match input.field() {
            Some(field) => AppError::field(field, input.to_string()),
            None => AppError::Rejected(input.to_string()),
        }
    }
}

impl From<InvitationProblem> for AppError {
    fn from(problem: InvitationProblem) -> Self {
        AppError::Rejected(problem.to_string())
    }
}

impl From<AcceptError> for AppError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Problem(problem) => problem.into(),
            AcceptError::Database(e) => AppError::internal(e),
        }
    }
}

impl From<VerificationError> for AppError {
    fn from(e: VerificationError) -> Self {
        match e {
            VerificationError::AlreadyVerified | VerificationError::Link(_) => AppError::Rejected(e.to_string()),
            VerificationError::TooManyMails(wait) => too_many_for(
                format!("Several verification mails were sent in the last hour. Try again in {}.", in_minutes(wait)),
                wait,
            ),
            VerificationError::Database(e) => AppError::internal(e),
        }
    }
}

impl From<ResetError> for AppError {
    fn from(e: ResetError) -> Self {
        match e {
            ResetError::Link(problem) => AppError::Rejected(problem.to_string()),
            ResetError::NetworkLimited(wait) => too_many_for(
                format!("Too many reset requests from your network. Try again in {}.", in_minutes(wait)),
                wait,
            ),
            ResetError::Paused(wait) => too_many_for(
                format!("Password resets are paused for a while. Try again in {}.", in_minutes(wait)),
                wait,
            ),
            ResetError::Account(e) => e.into(),
        }
    }
}

impl From<ConfirmSignUpError> for AppError {
    fn from(e: ConfirmSignUpError) -> Self {
        match e {
            ConfirmSignUpError::WrongPassword => AppError::field("password", e.to_string()),
            ConfirmSignUpError::Link(_) | ConfirmSignUpError::AddressInUse => AppError::Rejected(e.to_string()),
            ConfirmSignUpError::Account(e) => e.into(),
        }
    }
}

impl From<EmailChangeError> for AppError {
    fn from(e: EmailChangeError) -> Self {
        match e {
            EmailChangeError::SameAddress => AppError::field("email", e.to_string()),
            EmailChangeError::AddressTaken | EmailChangeError::Link(_) => AppError::Rejected(e.to_string()),
            EmailChangeError::SignedOut => AppError::Unauthenticated,
            EmailChangeError::TooManyRequests(wait) => too_many_for(
                format!(
                    "Several changes of address were asked for in the last hour. Try again in {}.",
                    in_minutes(wait)
                ),
                wait,
            ),
            EmailChangeError::Account(e) => e.into(),
        }
    }
}

impl From<PasskeyError> for AppError {
    fn from(e: PasskeyError) -> Self {
        match e {
            PasskeyError::NameMissing | PasskeyError::NameTooLong | PasskeyError::NameInvalid => {
                AppError::field("name", e.to_string())
            }
            PasskeyError::TooMany
            | PasskeyError::AlreadyRegistered
            | PasskeyError::NoChallenge
            | PasskeyError::Refused
            | PasskeyError::NotFound
            | PasskeyError::Unavailable => AppError::Rejected(e.to_string()),
            PasskeyError::Config(_) => AppError::internal(e),
            PasskeyError::Database(e) => AppError::internal(e),
        }
    }
}

impl From<RevokeError> for AppError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NotFound | RevokeError::Current | RevokeError::StepUpNeeded => {
                AppError::Rejected(e.to_string())
            }
            RevokeError::Database(e) => AppError::internal(e),
        }
    }
}

impl From<fluxi_core::integrations::IntegrationError> for AppError {
    fn from(e: fluxi_core::integrations::IntegrationError) -> Self {
        use fluxi_core::integrations::IntegrationError as E;
        match e {
            E::UnknownProvider | E::NotFound => AppError::NotFound,
            E::NotConfigured => AppError::Rejected("Not configured by your administrator.".into()),
            E::WrongKind(how) => AppError::Rejected(format!("This provider is connected with {how}.")),
            E::InvalidKey => AppError::field(
                "api_key",
                "That does not look like an API key for this provider: check that you copied all of it.",
            ),
            E::NeedsReconnecting => AppError::Rejected("This connection needs reconnecting.".into()),
            E::ProviderUnavailable => {
                AppError::Rejected("The provider could not be reached. Try again in a few minutes.".into())
            }
            E::TooManyAttempts => AppError::too_many(
                "You have started many connections in the last 10 minutes. Finish one, or try again later.",
                None,
            ),
            E::Throttled(wait) => too_many_for(
                "You have asked Fluxi to contact providers many times in the last hour. Try again later.".into(),
                wait,
            ),
            E::Workspace(w) => w.into(),
            other @ (E::Misconfigured(_) | E::Sealed(_)) => AppError::internal(other),
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<fluxi_core::assistant::AssistantError> for AppError {
    fn from(e: fluxi_core::assistant::AssistantError) -> Self {
        use fluxi_core::assistant::{AssistantError as E, LimitKind};
        match e {
            E::Unavailable(why) => AppError::Rejected(why.words().into()),
            E::EmptyMessage | E::MessageTooLong => AppError::field("message", e.to_string()),
            E::Limited { which, wait } => too_many_for(
                match which {
                    LimitKind::PersonMessages => format!(
                        "You have sent the assistant many messages in the last few minutes. Try again in {}.",
                        in_minutes(wait)
                    ),
                    LimitKind::WorkspaceMessages => format!(
                        "This workspace has sent the assistant many messages in the last hour. Try again in {}.",
                        in_minutes(wait)
                    ),
                    LimitKind::DailyTokens => format!(
                        "This workspace has used its daily allowance for the assistant. It renews in {}.",
                        in_minutes(wait)
                    ),
                    LimitKind::PersonExecutions | LimitKind::WorkspaceExecutions => format!(
                        "Many actions proposed by the assistant were carried out in the last hour. Try again in {}.",
                        in_minutes(wait)
                    ),
                },
                wait,
            ),
            E::ProposalNotFound => AppError::NotFound,
            E::ProposalDecided | E::ProposalExpired | E::ProposalOutdated => AppError::Rejected(e.to_string()),
            E::StepUpRequired => AppError::field("password", "Enter your password to confirm this action."),
            E::Busy => AppError::Busy,
            E::Workspace(w) => w.into(),
            E::Integration(i) => i.into(),
            E::Database(d) => AppError::internal(d),
        }
    }
}
