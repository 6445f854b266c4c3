//! Sessions: the Diesel-backed tower-sessions store and the sign-in state kept in it.

mod policy;
mod store;

pub use policy::{AuthState, SessionCheck, SessionPolicy, SignedInWith, AUTH_KEY};
pub use store::{delete_expired_sessions, end_session, session_id_hash, DieselSessionStore, SIGNED_IN_USER_KEY};
