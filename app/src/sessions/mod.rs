//! "Where you're signed in" on `/account/security`: the person's signed-in sessions, and
//! signing them out.

pub mod api;
mod pages;

pub use pages::SessionsSection;
