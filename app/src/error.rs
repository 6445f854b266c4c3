//! The one error type every server function returns. Its text is shown to people, so it
//! never carries internals: server-side failures get a reference id and are logged.

use serde::{Deserialize, Serialize};
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};

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
    /// The request was understood but refused; the message says why.
    #[error("{0}")]
    Rejected(String),
    #[error("The server is busy right now. Please try again in a moment.")]
    Busy,
    /// The workspace's data is behind the running version (its migration failed or is
    /// under way): refused rather than served by code that expects the newer tables.
    #[error("This workspace is being upgraded. Please try again in a few minutes.")]
    Upgrading,
    /// A limit on how often something may be done was reached; the message says which.
    #[error("{0}")]
    TooMany(String),
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

    #[cfg(feature = "ssr")]
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 422,
            Self::InvalidCredentials | Self::Unauthenticated => 401,
            Self::NotFound => 404,
            Self::Forbidden => 403,
            Self::Rejected(_) => 409,
            Self::Busy | Self::Upgrading => 503,
            Self::TooMany(_) => 429,
            Self::BadRequest => 400,
            Self::Network | Self::Internal(_) => 500,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) | ServerFnErrorErr::Deserialization(_) => {
                // Raised before the function body runs, so give the reply its 400 here.
                #[cfg(feature = "ssr")]
                return crate::server::with_status(Self::BadRequest);
                #[cfg(not(feature = "ssr"))]
                Self::BadRequest
            }
            ServerFnErrorErr::Request(_) => Self::Network,
            other => {
                #[cfg(feature = "ssr")]
                {
                    let reference = crate::server::new_reference();
                    tracing::error!(reference, error = %other, "server function failed");
                    Self::Internal(reference)
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
