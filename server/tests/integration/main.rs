//! Fluxi's integration tests: one binary (every extra test binary costs a link of the
//! whole app), one module per topic. Each test starts the real server on a loopback port
//! over a database of its own (`common::TestApp`); the database-only tests of the domain
//! live next to it, in `crates/core/tests/`.

mod common;

mod account_sessions;
mod accounts;
mod assistant;
mod audit;
mod connections;
mod database_tls;
mod email_change;
mod fleet;
mod fuzz;
mod integrations;
mod invitations;
mod members;
mod mfa;
mod outbox;
mod passkeys;
mod passwords;
mod pool;
mod rendering;
mod role_matrix;
mod sessions;
mod tenancy;
mod verification;
mod workspaces;
