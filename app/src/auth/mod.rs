//! Sign-up, sign-in and sign-out: pages and their server functions.

pub mod api;
mod pages;

pub use pages::{LoginPage, SignupPage};
