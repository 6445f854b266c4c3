//! Two-factor authentication: the second step of signing in and the account's security
//! page.

pub mod api;
mod pages;

pub use pages::{SecondStepPage, SecurityPage};
