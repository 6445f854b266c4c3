//! Accounts: input rules, password hashing and the `users` queries.

mod password;
mod queries;
mod rules;

pub use password::{HashError, PasswordHasher, PasswordHasherConfig};
pub use queries::{
    create_user, find_login_by_email, find_password_hash, find_user_by_id, update_password_hash, CreateUserError,
    NewUser, StoredPasswordHash, User,
};
pub use rules::{
    is_common_password, normalize_email, validate_display_name, validate_email, validate_password,
    InputError, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
};
