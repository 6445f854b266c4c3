//! Sign-up, sign-in and sign-out: pages and their server functions.

pub mod api;
mod context;
mod pages;

pub use context::AuthContext;
pub use pages::{ConfirmSignUpPage, LoginPage, SignupPage};
