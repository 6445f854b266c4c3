//! Server-side context of the app's server functions and pages (compiled only with
//! `ssr`): the shared state, the signed-in person, what the request says about its
//! client, form flashes, step-up, the page CSP, and the conversions of domain errors into
//! [`AppError`](crate::error::AppError).

mod csp;
mod errors;
mod flash;
mod request;
mod session;
mod state;
mod step_up;

pub use csp::set_page_csp;
pub use flash::{flash_cookie, take_flash, StoredFlash};
pub use request::{
    accepts_html, after_answer, audit_as, audit_with, client_network, client_network_of, device, origin, origin_of,
    remember_device, set_passkey_ceremony, take_passkey_ceremony, RequestId,
};
pub use session::{
    adopt_sessions_epoch, current_user, end_session, forget_cached_user, note_second_factor, require_user, session,
    signed_in_with, start_session, step_up_fresh, workspace_access, RequestCache,
};
pub use state::{conn, state, AppServices, AppState};
pub use step_up::{check_link_second_factor, step_up, step_up_now};
