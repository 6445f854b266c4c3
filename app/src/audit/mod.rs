//! The audit viewer of a workspace and the activity page of an account.

pub mod api;
mod pages;

pub use pages::{ActivityLogPage, AuditLogPage};
