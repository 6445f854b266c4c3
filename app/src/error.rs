//! The one error type every server function returns. Its text is shown to people, so it
//! never carries internals: server-side failures get a reference id and are logged.
//!
//! Its HTTP status and `Retry-After` are decided here ([`AppError::status`],
//! [`AppError::retry_after_seconds`]) and applied in one place, where server-function
//! responses leave the server (`server::server_fns`). This module depends on nothing else
//! in the crate.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// A message for one form field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// Input broke one or more rules; each message belongs next to its field.
    #[error("Please correct the highlighted fields.")]
    Invalid(Vec<FieldError>),
    #[error("Incorrect email or password.")]
    InvalidCredentials,
    #[error("Please sign in to continue.")]
    Unauthenticated,
    /// Also what non-members get for an existing workspace: existence is not revealed.
    #[error("Not found.")]
    NotFound,
    #[error("Your role does not allow this.")]
    Forbidden,
    /// The workspace requires two-factor authentication and the caller has none.
    #[error("This workspace requires two-factor authentication. Turn it on for your account to continue.")]
    MfaRequired,
    /// The request was understood but refused; the message says why.
    #[error("{0}")]
    Rejected(String),
    #[error("The server is busy right now. Please try again in a moment.")]
    Busy,
    /// The workspace's data is behind the running version (its migration failed or is
    /// under way): refused rather than served by code that expects the newer tables.
    #[error("This workspace is being upgraded. Please try again in a few minutes.")]
    Upgrading,
    /// A limit on how often something may be done was reached; the message says which,
    /// and `retry_after_seconds` (when known) when to try again.
    #[error("{message}")]
    TooMany { message: String, retry_after_seconds: Option<u64> },
    #[error("The request was malformed or incomplete.")]
    BadRequest,
    #[error("Could not reach the server. Check your connection and try again.")]
    Network,
    #[error("Something went wrong on our side (reference {0}). Please try again.")]
    Internal(String),
}

impl AppError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError { field: field.into(), message: message.into() }])
    }

    /// The message for `field`, if this error concerns it.
    pub fn message_for(&self, field: &str) -> Option<String> {
        match self {
            Self::Invalid(errors) => errors.iter().find(|e| e.field == field).map(|e| e.message.clone()),
            _ => None,
        }
    }

    /// The message shown above the form (for errors not tied to one field).
    pub fn form_message(&self) -> Option<String> {
        match self {
            Self::Invalid(_) => None,
            other => Some(other.to_string()),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 422,
            Self::InvalidCredentials | Self::Unauthenticated => 401,
            Self::NotFound => 404,
            Self::Forbidden | Self::MfaRequired => 403,
            Self::Rejected(_) => 409,
            Self::Busy | Self::Upgrading => 503,
            Self::TooMany { .. } => 429,
            Self::BadRequest => 400,
            Self::Network | Self::Internal(_) => 500,
        }
    }

    /// When a client should try again, for the statuses that say "later".
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::Busy => Some(2),
            Self::Upgrading => Some(60),
            Self::TooMany { retry_after_seconds, .. } => *retry_after_seconds,
            _ => None,
        }
    }

    /// "Too many tries": `wait` is rounded up to whole seconds, at least one.
    pub fn too_many(message: impl Into<String>, wait: Option<std::time::Duration>) -> Self {
        let retry_after_seconds = wait.map(|w| (w.as_secs() + u64::from(w.subsec_nanos() > 0)).max(1));
        Self::TooMany { message: message.into(), retry_after_seconds }
    }

    /// An unexpected failure: logged with a fresh reference, which is all the person sees.
    #[cfg(feature = "ssr")]
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        tracing::error!(reference, %error, "internal error");
        Self::Internal(reference)
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) | ServerFnErrorErr::Deserialization(_) => {
                Self::BadRequest
            }
            ServerFnErrorErr::Request(_) => Self::Network,
            other => {
                #[cfg(feature = "ssr")]
                {
                    Self::internal(format_args!("server function failed: {other}"))
                }
                #[cfg(not(feature = "ssr"))]
                {
                    let _ = other;
                    Self::Internal("client".into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AppError;
    use std::time::Duration;

    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (AppError::field("email", "Bad"), 422),
            (AppError::InvalidCredentials, 401),
            (AppError::Unauthenticated, 401),
            (AppError::NotFound, 404),
            (AppError::Forbidden, 403),
            (AppError::Rejected("No".into()), 409),
            (AppError::Busy, 503),
            (AppError::Upgrading, 503),
            (AppError::too_many("Slow down", None), 429),
            (AppError::BadRequest, 400),
            (AppError::Network, 500),
            (AppError::Internal("ref".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(AppError::too_many("x", Some(Duration::from_millis(900_001))).retry_after_seconds(), Some(901));
        assert_eq!(AppError::too_many("x", Some(Duration::from_secs(900))).retry_after_seconds(), Some(900));
        assert_eq!(AppError::too_many("x", Some(Duration::ZERO)).retry_after_seconds(), Some(1), "at least one");
        assert_eq!(AppError::too_many("x", None).retry_after_seconds(), None);
        assert_eq!(AppError::Busy.retry_after_seconds(), Some(2));
        assert_eq!(AppError::Upgrading.retry_after_seconds(), Some(60));
        assert_eq!(AppError::NotFound.retry_after_seconds(), None);
    }
}
