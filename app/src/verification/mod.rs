//! Email verification: `/verify-email/:token`, the banner shown to unverified accounts,
//! and "Send a new link" on `/account`.

pub mod api;
mod pages;

pub use pages::{ResendVerificationForm, VerifyEmailBanner, VerifyEmailPage};
