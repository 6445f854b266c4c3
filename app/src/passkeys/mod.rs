//! Passkeys: "Passkeys" on `/account/security` (add, list, remove) and "Sign in with a
//! passkey" on `/login`. The WebAuthn ceremonies run in the browser (`browser.rs`) and
//! need JavaScript; without it the pages say so and the password path stays.

pub mod api;
#[cfg(feature = "hydrate")]
mod browser;
mod pages;

pub use pages::{PasskeySecondStep, PasskeySignIn, PasskeysSection};
