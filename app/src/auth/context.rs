//! The account actions and the signed-in person, shared by the navigation and the pages.

use leptos::prelude::*;

use super::api::{ConfirmSignUp, CurrentUser, Login, Logout};
use crate::error::AppError;
use crate::page_data::PageData;

/// `user` refetches whenever one of the actions completes.
#[derive(Clone, Copy)]
pub struct AuthContext {
    /// "Create account" on the mailed sign-up link (`/confirm-sign-up/:token`), which signs in.
    pub confirm_sign_up: ServerAction<ConfirmSignUp>,
    pub login: ServerAction<Login>,
    pub logout: ServerAction<Logout>,
    /// The second sign-in step (`/login/mfa`).
    pub verify: ServerAction<crate::mfa::api::VerifySignIn>,
    /// "Confirm email address" (`/verify-email/:token`).
    pub verify_email: ServerAction<crate::verification::api::VerifyEmail>,
    /// "Set new password" (`/reset-password/:token`), which signs the person in.
    pub reset_password: ServerAction<crate::passwords::api::ResetPassword>,
    /// "Confirm new address" (`/confirm-email/:token`).
    pub confirm_email: ServerAction<crate::email_change::api::ConfirmEmailChange>,
    /// "Restore address and set password" (`/revert-email/:token`), which signs the person in.
    pub revert_email: ServerAction<crate::email_change::api::RevertEmailChange>,
    pub user: PageData<Result<Option<CurrentUser>, AppError>>,
}
