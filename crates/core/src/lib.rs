//! Server-only core of Fluxi: domain rules (accounts, passwords, sessions),
//! the Diesel schema and the queries on it. The wasm build never compiles this crate.

pub mod accounts;
pub mod clock;
pub mod db;
pub mod schema;
pub mod sessions;

#[cfg(feature = "testing")]
pub mod testing;
