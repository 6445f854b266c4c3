//! Security notifications: a mail to the account's own address when something changed
//! about its security, queued through the outbox in the transaction of the change (so it
//! goes out exactly when the change committed). Each says what happened, when, from
//! where (approximately), and what to do if it was not the reader. Only a mail whose
//! purpose is a link (the reset link, the link that finishes a sign-up) carries a token.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::audit::Audit;
use crate::outbox;
use crate::schema::users;
use crate::sessions::approximate_network;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    PasswordChanged,
    PasswordResetRequested,
    PasswordReset,
    TwoFactorEnabled,
    TwoFactorDisabled,
    RecoveryCodesRegenerated,
    /// Few recovery codes are left after one was used.
    RecoveryCodesLow {
        remaining: u32,
    },
    /// An authenticator code was offered a second time (someone may have seen it).
    CodeReused,
    /// A sign-in from a browser and a network that had never signed in to the account.
    NewPlace,
    /// To the current address, with the link that undoes the change.
    EmailChangeRequested,
    EmailChangeReverted,
    PasskeyAdded,
    PasskeyRemoved,
    /// A passkey's signature counter went backwards: a copy of it may be in use.
    PasskeyPossiblyCopied,
    /// To an address without an account, with the link that finishes a sign-up.
    SignUpLink,
    /// To an account's address: someone tried to sign up with it.
    SignUpAddressInUse,
    /// A connected integration's provider refused to refresh it; with the page's link.
    IntegrationNeedsReconnecting,
}

impl Notice {
    fn subject(self) -> &'static str {
        match self {
            Notice::PasswordChanged => "Your Fluxi password was changed",
            Notice::PasswordResetRequested => "Reset your Fluxi password",
            Notice::PasswordReset => "Your Fluxi password was reset",
            Notice::TwoFactorEnabled => "Two-factor authentication is on for your Fluxi account",
            Notice::TwoFactorDisabled => "Two-factor authentication was turned off for your Fluxi account",
            Notice::RecoveryCodesRegenerated => "New recovery codes were made for your Fluxi account",
            Notice::RecoveryCodesLow { .. } => "Your Fluxi account is running out of recovery codes",
            Notice::CodeReused => "An authentication code for your Fluxi account was used twice",
            Notice::NewPlace => "New sign-in to your Fluxi account",
            Notice::EmailChangeRequested => "The email address of your Fluxi account is being changed",
            Notice::EmailChangeReverted => "The email address of your Fluxi account was restored",
            Notice::PasskeyAdded => "A passkey was added to your Fluxi account",
            Notice::PasskeyRemoved => "A passkey was removed from your Fluxi account",
            Notice::PasskeyPossiblyCopied => "A passkey of your Fluxi account may have been copied",
            Notice::SignUpLink => "Finish creating your Fluxi account",
            Notice::SignUpAddressInUse => "Someone tried to sign up to Fluxi with your address",
            Notice::IntegrationNeedsReconnecting => "A connected tool in Fluxi needs reconnecting",
        }
    }

    fn what(self) -> String {
        match self {
            Notice::PasswordChanged => "The password of your Fluxi account was changed.".into(),
            Notice::PasswordResetRequested => {
                "Someone asked to reset the password of your Fluxi account. To choose a new \
                 password, open this link; it works once, for 30 minutes, and signs out every \
                 session of the account:"
                    .into()
            }
            Notice::PasswordReset => "The password of your Fluxi account was reset with a link from a mail, and every \
                 session of the account was signed out."
                .into(),
            Notice::TwoFactorEnabled => {
                "Two-factor authentication was turned on: signing in now also asks for a code from \
                 an authenticator app."
                    .into()
            }
            Notice::TwoFactorDisabled => {
                "Two-factor authentication was turned off: signing in now asks for the password only.".into()
            }
            Notice::RecoveryCodesRegenerated => {
                "New recovery codes were made for your account; the old ones no longer work.".into()
            }
            Notice::RecoveryCodesLow { remaining } => format!(
                "A recovery code was used. {remaining} recovery code{} left: make new ones on \
                 the Security page so that you are not locked out.",
                if remaining == 1 { " is" } else { "s are" }
            ),
            Notice::CodeReused => {
                "An authentication code that had already been used was offered again, and refused. If \
                 you did not just sign in twice with the same code, someone may know your password and \
                 have seen a code."
                    .into()
            }
            Notice::NewPlace => "Your Fluxi account was signed in to from a browser and a network it had not been \
                 signed in from before."
                .into(),
            Notice::EmailChangeRequested => {
                "Someone signed in to your Fluxi account asked to change its email address \
                 to another one. Once the new address is confirmed, mail about the account goes \
                 there instead of here. If this was not you, open this link: for 7 days it \
                 undoes the change, signs out every session of the account and asks you for a \
                 new password:"
                    .into()
            }
            Notice::EmailChangeReverted => {
                "The email address of your Fluxi account was set back to this one with the link \
                 from our mail, the password was replaced and every session was signed out."
                    .into()
            }
            Notice::PasskeyAdded => {
                "A passkey was added to your Fluxi account: it signs in to the account without the \
                 password."
                    .into()
            }
            Notice::PasskeyRemoved => "A passkey was removed from your Fluxi account; it no longer signs in.".into(),
            Notice::PasskeyPossiblyCopied => "A sign-in to your Fluxi account with one of its passkeys was refused: \
                 the passkey's signature counter was lower than at its last use, which is what a copy of it \
                 would show."
                .into(),
            Notice::SignUpLink => "Someone asked to create a Fluxi account with this address. To finish, open \
                 this link and enter the password chosen when signing up; it works for 24 hours:"
                .into(),
            Notice::SignUpAddressInUse => "Someone tried to create a new Fluxi account with this address. It is \
                 already in use by a Fluxi account, so no new account was created and nothing changed. \
                 To sign in:"
                .into(),
            Notice::IntegrationNeedsReconnecting => "One of the tools you connected to a Fluxi workspace stopped \
                 working: its provider no longer accepts Fluxi's access (it was revoked there, or expired). \
                 Fluxi deleted the access it held. To use it again, reconnect it on the workspace's \
                 integrations page:"
                .into(),
        }
    }

    fn if_not_you(self) -> &'static str {
        match self {
            Notice::PasswordResetRequested => {
                "If you did not ask for it, ignore this mail: your password stays as it is."
            }
            Notice::EmailChangeRequested => "If you asked for the change yourself, there is nothing to do.",
            Notice::PasskeyPossiblyCopied => {
                "Remove that passkey on the Security page (\"Passkeys\") and add it again from \
                 your authenticator; if the sign-in was not you, also reset your password."
            }
            Notice::SignUpLink => {
                "If you did not ask for it, ignore this mail: no account is created without \
                 this link and that password."
            }
            Notice::IntegrationNeedsReconnecting => {
                "If you did not revoke it yourself, check the connected apps at the provider."
            }
            Notice::SignUpAddressInUse => {
                "If it was you and you forgot your password, choose a new one with \
                 \"Forgot your password?\" on the sign-in page. If it was not you, there is nothing to do."
            }
            _ => {
                "If this was not you, reset your password now (\"Forgot your password?\" on the \
                 sign-in page), then check \"Where you're signed in\" on the Security page."
            }
        }
    }
}

/// Queues `notice` to the address of `account`, in the caller's transaction. When and
/// from where come from `audit` (its clock, and its request's network, truncated).
pub async fn notify(conn: &mut AsyncPgConnection, audit: &Audit<'_>, account: Uuid, notice: Notice) -> QueryResult<()> {
    let email: String = users::table.find(account).select(users::email).first(conn).await?;
    notify_address(conn, audit, &email, notice, None).await
}

/// Queues `notice` to `email`, with `link` (for the mails whose purpose is a link).
pub async fn notify_address(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    email: &str,
    notice: Notice,
    link: Option<&str>,
) -> QueryResult<()> {
    let when = audit
        .clock
        .now()
        .format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"))
        .unwrap_or_default();
    let from = match audit.origin.network.as_deref().and_then(approximate_network) {
        Some(network) => format!("From: network {network} (approximate)"),
        None => "From: an unknown network".to_string(),
    };
    let link = link.map(|l| format!("{l}\n\n")).unwrap_or_default();
    let body = format!("{}\n\n{link}When: {when}\n{from}\n\n{}\n", notice.what(), notice.if_not_you());
    outbox::enqueue(conn, email, notice.subject(), &body).await.map(|_| ())
}
