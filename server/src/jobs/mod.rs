//! Background work: each job is a task spawned by `serve` that runs on a timer until the
//! process stops, logs its own failures and tries again next round. A new periodic job
//! (retention, pruning, token refresh) gets a file here and one line in `main.rs`.

pub mod audit;
pub mod fleet_catch_up;
pub mod integration_revocations;
pub mod mail;
pub mod session_cleanup;
