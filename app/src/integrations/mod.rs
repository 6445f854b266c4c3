//! Integrations: `/w/{slug}/integrations`, where members connect third-party tools
//! (OAuth 2.0) and save API keys, and owners and admins see and disconnect everyone's.
//! The OAuth callback is an axum route (`server/src/integrations_callback.rs`).

pub mod api;
mod pages;

pub use pages::IntegrationsPage;
