//! Accounts: input rules, password hashing, sign-in throttling and the `users` queries.

pub mod credentials;
pub mod email_change;
pub mod familiar;
pub mod links;
mod password;
mod queries;
mod rules;
mod sign_in;
pub mod sign_up;
mod throttle;
pub mod verification;

pub use links::{LinkProblem, LinkPurpose};
pub use password::{HashError, PasswordHasher, PasswordHasherConfig};
pub use queries::{
    create_user, find_login_by_email, find_password_hash, find_user_by_id, lock_account,
    replace_password_hash_if_unchanged, update_password_hash, CreateUserError, NewUser, StoredPasswordHash, User,
};
pub use rules::{
    is_common_password, normalize_email, validate_display_name, validate_email, validate_password, InputError,
    EMAIL_MAX_CHARS, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
};
pub use sign_in::{AccountError, PasswordGate, PendingSecondFactor, Place, SecondFactor, SignInOutcome, StepUpFor};
pub use sign_up::{SignUpFrom, SignUpLimits};
pub use throttle::{
    clear_failed_sign_ins, client_sign_in_key, conclude_failure, conclude_locked_failure,
    delete_stale_sign_in_failures, record_failed_sign_in, refund_attempt, reserve_attempt, reserve_attempts,
    reserve_locked, sign_in_key, FailedSignIns, SignInThrottle,
};
