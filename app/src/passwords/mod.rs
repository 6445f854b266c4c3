//! The password: "Change password" on `/account/security`, `/forgot-password` and
//! `/reset-password/:token`.

pub mod api;
mod pages;

pub use pages::{ChangePasswordSection, ForgotPasswordPage, ResetPasswordPage};
