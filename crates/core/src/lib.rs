//! Server-only core of Fluxi: domain rules (accounts, passwords, sessions, workspaces,
//! tenancy), the Diesel schema and the queries on it. The wasm build never compiles it.

pub mod accounts;
pub mod assistant;
pub mod audit;
pub mod client;
pub mod clock;
pub mod db;
pub mod integrations;
pub mod mfa;
pub mod notifications;
pub mod outbox;
pub mod passkeys;
pub mod pseudonym;
pub mod rate_limit;
pub mod schema;
pub mod secrets;
pub mod sessions;
pub mod tenancy;
pub mod text;
pub mod tokens;
pub mod workspaces;

#[cfg(feature = "testing")]
pub mod testing;
