//! Sessions: the Diesel-backed tower-sessions store, the sign-in state kept in it, and
//! the list of a person's signed-in sessions.

mod listing;
mod policy;
mod store;

pub use listing::{
    active_sessions, approximate_network, describe_user_agent, revoke_other_sessions, revoke_session, ActiveSession,
    RevokeError, SessionOrigin, ORIGIN_KEY,
};
pub use policy::{AuthState, SessionCheck, SessionPolicy, SignedInWith, AUTH_KEY};
pub use store::{delete_expired_sessions, end_session, session_id_hash, DieselSessionStore, SIGNED_IN_USER_KEY};
