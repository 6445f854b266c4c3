//! Changing the email address: "Email address" on `/account/security`,
//! `/confirm-email/:token` (the link to the new address) and `/revert-email/:token` (the
//! link to the old one).

pub mod api;
mod pages;

pub use pages::{ChangeEmailSection, ConfirmEmailPage, RevertEmailPage};
