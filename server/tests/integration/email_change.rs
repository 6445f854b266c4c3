//! Changing the email address: a step-up, a link to the new address opened by the owner,
//! the old address told with a link that undoes the change for 7 days (new password,
//! every session signed out), and an address another account has or may take back never
//! handed over nor revealed.

use crate::common::{self, recorded, Client, TestApp, PASSWORD};
use crate::mfa::{app_code, enrolled};
use crate::passwords::{sign_in, signed_in};
use app::email_change::api::{ChangeLinkState, RevertLinkState};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::audit::Action;
use fluxi_core::clock::Clock;
use fluxi_core::schema::{outbox_emails, users};
use reqwest::StatusCode;
use time::Duration;

const NEW_PASSWORD: &str = "a brand new passphrase 42";
const CONFIRM_SUBJECT: &str = "Confirm your new email address for Fluxi";
const NOTICE_SUBJECT: &str = "The email address of your Fluxi account is being changed";

/// (subject, body) of the mails queued to `email`, oldest first.
async fn mails_to(app: &TestApp, email: &str) -> Vec<(String, String)> {
    let mut conn = app.db.conn().await;
    outbox_emails::table
        .filter(outbox_emails::recipient.eq(email))
        .order((outbox_emails::created_at.asc(), outbox_emails::id.asc()))
        .select((outbox_emails::subject, outbox_emails::body))
        .load(&mut conn)
        .await
        .unwrap()
}

/// The token of the last link to `path` in the mails to `email` with `subject`.
async fn link_token(app: &TestApp, email: &str, subject: &str, path: &str) -> String {
    let mails = mails_to(app, email).await;
    let (_, body) =
        mails.iter().rev().find(|(s, _)| s == subject).unwrap_or_else(|| panic!("no {subject:?} to {email}"));
    let start = body.find(path).expect("link") + path.len();
    body[start..start + 64].to_string()
}

async fn stored_email(app: &TestApp, id: uuid::Uuid) -> (String, bool) {
    let mut conn = app.db.conn().await;
    let (email, verified): (String, Option<time::OffsetDateTime>) =
        users::table.find(id).select((users::email, users::email_verified_at)).first(&mut conn).await.unwrap();
    (email, verified.is_some())
}

async fn mfa_on(app: &TestApp, id: uuid::Uuid) -> bool {
    fluxi_core::mfa::is_enabled(&mut *app.db.conn().await, id).await.unwrap()
}

/// Asks for a change to `new_email` (within the step-up window, or with `password`).
async fn request_change(c: &mut Client, new_email: &str) -> crate::common::Reply {
    c.call("change_email", &[("password", PASSWORD), ("email", new_email)]).await
}

#[tokio::test]
async fn a_new_address_needs_a_step_up_and_its_link_opened_by_the_owner() {
    let app = TestApp::spawn().await;
    let mut me = app.person("Mover").await;
    let old = me.user.email.clone();
    let new = format!("moved-{old}");
    app.clock.advance(Duration::minutes(11));

    // Bad input and a wrong password: refused, nothing sent.
    let res = me.client.call("change_email", &[("password", PASSWORD), ("email", "not an address")]).await;
    assert!(res.error().message_for("email").is_some(), "{}", res.body);
    let res = me.client.call("change_email", &[("password", "not my password at all"), ("email", &new)]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    let res = me.client.call("change_email", &[("password", PASSWORD), ("email", &old.to_uppercase())]).await;
    assert!(matches!(res.error().message_for("email"), Some(m) if m.contains("already your")), "{}", res.body);
    assert!(mails_to(&app, &new).await.is_empty());
    assert_eq!(
        app.client().call("change_email", &[("password", PASSWORD), ("email", &new)]).await.error(),
        AppError::Unauthenticated
    );

    let res = request_change(&mut me.client, &new).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(stored_email(&app, me.user.id).await.0, old, "the old address stays until confirmed");
    let token = link_token(&app, &new, CONFIRM_SUBJECT, "/confirm-email/").await;
    let revert = link_token(&app, &old, NOTICE_SUBJECT, "/revert-email/").await;
    assert_ne!(token, revert);
    assert_eq!(recorded(&app, Action::EmailChangeRequested).await.len(), 1);

    // Signed out: asked to sign in. Another account: refused, recorded, not used up.
    let state: ChangeLinkState =
        serde_json::from_str(&app.client().call("email_change_link", &[("token", &token)]).await.body).unwrap();
    assert_eq!(state, ChangeLinkState::SignedOut);
    let mut stranger = app.person("Stranger").await;
    let res = stranger.client.call("confirm_email_change", &[("token", &token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("another account")), "{}", res.body);
    let state: ChangeLinkState =
        serde_json::from_str(&stranger.client.call("email_change_link", &[("token", &token)]).await.body).unwrap();
    assert!(matches!(state, ChangeLinkState::Unusable { .. }), "{state:?}");
    assert_eq!(recorded(&app, Action::EmailChangeRefused).await.len(), 2);
    assert_eq!(stored_email(&app, stranger.user.id).await.0, stranger.user.email);

    let state: ChangeLinkState =
        serde_json::from_str(&me.client.call("email_change_link", &[("token", &token)]).await.body).unwrap();
    assert_eq!(state, ChangeLinkState::Ready { new_email: new.clone() });
    let res = me.client.call("confirm_email_change", &[("token", &token)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(stored_email(&app, me.user.id).await, (new.clone(), true), "changed and confirmed");
    assert!(signed_in(&mut me.client).await);
    assert_eq!(sign_in(&app, &old, PASSWORD).await.1, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&app, &new, PASSWORD).await.1, StatusCode::OK);
    assert_eq!(recorded(&app, Action::EmailChanged).await.len(), 1);

    // Used, forged, truncated: a clear refusal, nothing changed.
    for bad in [token.as_str(), &token[..40], &"0".repeat(64)] {
        let res = me.client.call("confirm_email_change", &[("token", bad)]).await;
        assert!(matches!(res.error(), AppError::Rejected(_)), "{bad}: {}", res.body);
    }
    assert_eq!(stored_email(&app, me.user.id).await.0, new);
    let notices: Vec<_> = mails_to(&app, &old).await.into_iter().filter(|(s, _)| s == NOTICE_SUBJECT).collect();
    assert_eq!(notices.len(), 1, "the old address is told once");
}

#[tokio::test]
async fn a_confirm_link_expires_and_a_newer_request_replaces_it() {
    let app = TestApp::spawn().await;
    let mut me = app.person("Waiter").await;
    let first = format!("first-{}", me.user.email);
    let second = format!("second-{}", me.user.email);
    assert_eq!(request_change(&mut me.client, &first).await.status, StatusCode::OK);
    let token = link_token(&app, &first, CONFIRM_SUBJECT, "/confirm-email/").await;
    assert_eq!(request_change(&mut me.client, &second).await.status, StatusCode::OK);
    let res = me.client.call("confirm_email_change", &[("token", &token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("replaced")), "{}", res.body);
    let token = link_token(&app, &second, CONFIRM_SUBJECT, "/confirm-email/").await;
    app.clock.advance(Duration::hours(24));
    let (mut me_again, _) = sign_in(&app, &me.user.email, PASSWORD).await;
    let res = me_again.call("confirm_email_change", &[("token", &token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired")), "{}", res.body);
    assert_eq!(stored_email(&app, me.user.id).await.0, me.user.email);

    // Three requests an hour.
    for _ in 0..3 {
        let res = request_change(&mut me_again, &first).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    let res = request_change(&mut me_again, &first).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
}

#[tokio::test]
async fn the_old_address_undoes_the_change_signs_out_everywhere_and_sets_a_new_password() {
    let app = TestApp::spawn().await;
    let mut intruder = app.person("Victim").await;
    let old = intruder.user.email.clone();
    let elsewhere = format!("intruder-{old}");
    let (mut owner, _) = sign_in(&app, &old, PASSWORD).await;
    assert_eq!(request_change(&mut intruder.client, &elsewhere).await.status, StatusCode::OK);
    let token = link_token(&app, &elsewhere, CONFIRM_SUBJECT, "/confirm-email/").await;
    assert_eq!(intruder.client.call("confirm_email_change", &[("token", &token)]).await.status, StatusCode::OK);
    app.clock.advance(Duration::minutes(2));
    // Taken over: the intruder sets up an authenticator of their own, after the request.
    crate::mfa::enrol(&app, &mut intruder.client).await;
    assert!(mfa_on(&app, intruder.user.id).await);

    // The old address still holds the way back, and nobody may sign up with it meanwhile.
    let res =
        app.client().call("signup", &[("display_name", "Squatter"), ("email", &old), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "the same answer as for any address: {}", res.body);
    common::mailed_body(&app, &old, "Someone tried to sign up to Fluxi with your address", 0).await;
    assert!(!mails_to(&app, &old).await.iter().any(|(_, body)| body.contains("/confirm-sign-up/")), "no sign-up link");
    let tried = recorded(&app, Action::SignUpAddressInUse).await;
    assert_eq!(tried[0].account_id, Some(intruder.user.id), "in the activity of the account holding the address");
    let revert = link_token(&app, &old, NOTICE_SUBJECT, "/revert-email/").await;
    let mut c = app.client();
    let state: RevertLinkState =
        serde_json::from_str(&c.call("revert_email_link", &[("token", &revert)]).await.body).unwrap();
    assert_eq!(state, RevertLinkState::Usable { mfa: false }, "the intruder's authenticator is not asked for");
    let res = c.call("revert_email_change", &[("token", &revert), ("new_password", "password")]).await;
    assert!(res.error().message_for("new_password").is_some(), "{}", res.body);
    assert!(signed_in(&mut intruder.client).await && signed_in(&mut owner).await);
    let res = c.call("revert_email_change", &[("token", &revert), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    assert!(signed_in(&mut c).await, "signed in here");
    assert!(!signed_in(&mut intruder.client).await && !signed_in(&mut owner).await, "every other session ended");
    assert_eq!(stored_email(&app, intruder.user.id).await, (old.clone(), true));
    assert!(!mfa_on(&app, intruder.user.id).await, "removed");
    assert_eq!(sign_in(&app, &elsewhere, PASSWORD).await.1, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&app, &old, PASSWORD).await.1, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&app, &old, NEW_PASSWORD).await.1, StatusCode::OK);
    assert_eq!(recorded(&app, Action::EmailChangeReverted).await.len(), 1);
    let restored: Vec<_> = mails_to(&app, &old)
        .await
        .into_iter()
        .filter(|(s, _)| s == "The email address of your Fluxi account was restored")
        .collect();
    assert_eq!(restored.len(), 1);
    assert!(!restored[0].1.contains("/revert-email/"), "no link in the notice");

    // Once only.
    let res = app.client().call("revert_email_change", &[("token", &revert), ("new_password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("already been used")), "{}", res.body);
    assert!(!recorded(&app, Action::EmailChangeRefused).await.is_empty());
}

/// Signs in with the password and a code from `key`.
async fn sign_in_with_code(app: &TestApp, email: &str, password: &str, key: &str) -> Client {
    let (mut c, status) = sign_in(app, email, password).await;
    assert_eq!(status, StatusCode::OK);
    let res = c.call("verify_sign_in", &[("code", &app_code(key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    c
}

#[tokio::test]
async fn the_undo_link_lasts_seven_days_and_asks_for_the_owners_long_standing_code() {
    let app = TestApp::spawn().await;
    let (me, key, _) = enrolled(&app, "Careful").await;
    let old = me.user.email.clone();
    let new = format!("new-{old}");
    // An authenticator of a week's standing is the owner's.
    app.clock.advance(fluxi_core::accounts::email_change::OWNERS_FACTOR_AGE + Duration::days(1));
    let mut me = sign_in_with_code(&app, &old, PASSWORD, &key).await;
    app.clock.advance(Duration::seconds(31));
    let code = app_code(&key, app.clock.now());
    let res = me.call("change_email", &[("password", PASSWORD), ("code", &code), ("email", &new)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let revert = link_token(&app, &old, NOTICE_SUBJECT, "/revert-email/").await;
    let mut c = app.client();
    let state: RevertLinkState =
        serde_json::from_str(&c.call("revert_email_link", &[("token", &revert)]).await.body).unwrap();
    assert_eq!(state, RevertLinkState::Usable { mfa: true });
    // Only the mailbox: not enough.
    let res = c.call("revert_email_change", &[("token", &revert), ("new_password", NEW_PASSWORD)]).await;
    assert!(res.error().message_for("code").is_some(), "{}", res.body);
    let form = [("token", revert.as_str()), ("new_password", NEW_PASSWORD), ("code", "000000")];
    assert!(c.call("revert_email_change", &form).await.error().message_for("code").is_some());
    assert!(signed_in(&mut me).await, "nothing changed");
    app.clock.advance(Duration::minutes(1));
    let code = app_code(&key, app.clock.now());
    let form = [("token", revert.as_str()), ("new_password", NEW_PASSWORD), ("code", code.as_str())];
    assert_eq!(c.call("revert_email_change", &form).await.status, StatusCode::OK);
    assert!(mfa_on(&app, me_id(&app, &old).await).await, "the owner's stays");
    // The pending change went with it.
    let token = link_token(&app, &new, CONFIRM_SUBJECT, "/confirm-email/").await;
    let res = c.call("confirm_email_change", &[("token", &token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("replaced")), "{}", res.body);

    // After 7 days an undo link no longer works.
    app.clock.advance(Duration::minutes(11));
    let code = app_code(&key, app.clock.now());
    let res = c.call("change_email", &[("password", NEW_PASSWORD), ("code", &code), ("email", &new)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let late = link_token(&app, &old, NOTICE_SUBJECT, "/revert-email/").await;
    app.clock.advance(Duration::days(7) - Duration::minutes(1));
    let state: RevertLinkState =
        serde_json::from_str(&app.client().call("revert_email_link", &[("token", &late)]).await.body).unwrap();
    assert_eq!(state, RevertLinkState::Usable { mfa: true });
    app.clock.advance(Duration::minutes(1));
    let state: RevertLinkState =
        serde_json::from_str(&app.client().call("revert_email_link", &[("token", &late)]).await.body).unwrap();
    assert!(matches!(state, RevertLinkState::Unusable { message } if message.contains("expired")));
}

async fn me_id(app: &TestApp, email: &str) -> uuid::Uuid {
    let mut conn = app.db.conn().await;
    users::table.filter(users::email.eq(email)).select(users::id).first(&mut conn).await.unwrap()
}

#[tokio::test]
async fn an_intruder_cannot_void_the_owners_undo_or_hide_behind_a_fresh_authenticator() {
    let app = TestApp::spawn().await;
    let mut intruder = app.person("Owner").await;
    let owners = intruder.user.email.clone();
    let theirs = format!("theirs-{owners}");
    let other = format!("other-{owners}");
    // With the password: an authenticator of their own first, then the move.
    let (key, _) = crate::mfa::enrol(&app, &mut intruder.client).await;
    let res = intruder.client.call("change_email", &[("password", PASSWORD), ("email", &theirs)]).await;
    assert!(res.error().message_for("code").is_some(), "{}", res.body);
    let code = app_code(&key, app.clock.now());
    let res =
        intruder.client.call("change_email", &[("password", PASSWORD), ("code", &code), ("email", &theirs)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let token = link_token(&app, &theirs, CONFIRM_SUBJECT, "/confirm-email/").await;
    assert_eq!(intruder.client.call("confirm_email_change", &[("token", &token)]).await.status, StatusCode::OK);
    // A second move: its undo link goes to their own mailbox, and they use it.
    app.clock.advance(Duration::minutes(2));
    assert_eq!(request_change(&mut intruder.client, &other).await.status, StatusCode::OK);
    let their_undo = link_token(&app, &theirs, NOTICE_SUBJECT, "/revert-email/").await;
    let form = [("token", their_undo.as_str()), ("new_password", "the intruders passphrase 1")];
    let res = app.client().call("revert_email_change", &form).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    // The owner's undo still works, asks for no code (that authenticator is too new to be
    // the owner's) and removes it.
    let owners_undo = link_token(&app, &owners, NOTICE_SUBJECT, "/revert-email/").await;
    let mut c = app.client();
    let state: RevertLinkState =
        serde_json::from_str(&c.call("revert_email_link", &[("token", &owners_undo)]).await.body).unwrap();
    assert_eq!(state, RevertLinkState::Usable { mfa: false });
    let res = c.call("revert_email_change", &[("token", &owners_undo), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(stored_email(&app, intruder.user.id).await, (owners.clone(), true));
    assert!(!mfa_on(&app, intruder.user.id).await);
    assert_eq!(sign_in(&app, &owners, NEW_PASSWORD).await.1, StatusCode::OK);
}

#[tokio::test]
async fn an_unconfirmed_address_gets_no_way_into_the_account() {
    let app = TestApp::spawn().await;
    // An account whose address was never proven (from before sign-up proved addresses).
    let typo = format!("typo-{}@example.test", uuid::Uuid::new_v4().simple());
    fluxi_core::testing::UserBuilder::new()
        .email(&typo)
        .password(PASSWORD)
        .unverified()
        .create(&app.db.pool, &app.state.hasher)
        .await;
    let (mut c, status) = sign_in(&app, &typo, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let right = format!("right-{typo}");
    assert_eq!(request_change(&mut c, &right).await.status, StatusCode::OK);
    link_token(&app, &right, CONFIRM_SUBJECT, "/confirm-email/").await;
    assert!(!mails_to(&app, &typo).await.iter().any(|(s, _)| s == NOTICE_SUBJECT), "no undo link to the stranger");
    // Nor is the address held: its owner can sign up with it once the account moved.
    let token = link_token(&app, &right, CONFIRM_SUBJECT, "/confirm-email/").await;
    assert_eq!(c.call("confirm_email_change", &[("token", &token)]).await.status, StatusCode::OK);
    let res = app.client().call("signup", &[("display_name", "Tom"), ("email", &typo), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    common::sign_up_token(&app, &typo, 0).await;
}

/// A sign-up that waited while its address went to an account, and then became held by
/// that account's undo link, creates nothing.
#[tokio::test]
async fn a_sign_up_for_an_address_that_became_held_creates_nothing() {
    let app = TestApp::spawn().await;
    let mut mover = app.person("Mover").await;
    let wanted = format!("wanted-{}", mover.user.email);
    let mut c = app.client();
    let res = c.call("signup", &[("display_name", "Waiting"), ("email", &wanted), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let sign_up = common::sign_up_token(&app, &wanted, 0).await;
    for address in [wanted.clone(), format!("next-{wanted}")] {
        assert_eq!(request_change(&mut mover.client, &address).await.status, StatusCode::OK);
        let token = link_token(&app, &address, CONFIRM_SUBJECT, "/confirm-email/").await;
        assert_eq!(mover.client.call("confirm_email_change", &[("token", &token)]).await.status, StatusCode::OK);
    }
    let res = c.call("confirm_sign_up", &[("token", &sign_up), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("exists already")), "{}", res.body);
    assert!(c.session_cookie.is_none());
    let accounts: i64 = users::table
        .filter(users::email_normalized.eq(&wanted))
        .count()
        .get_result(&mut app.db.conn().await)
        .await
        .unwrap();
    assert_eq!(accounts, 0);
}

#[tokio::test]
async fn an_address_of_another_account_is_neither_taken_nor_revealed() {
    let app = TestApp::spawn().await;
    let mut me = app.person("Curious").await;
    let other = app.person("Holder").await.user.email;
    let free = format!("free-{}", me.user.email);
    let taken = request_change(&mut me.client, &other).await;
    let open = request_change(&mut me.client, &free).await;
    assert_eq!((taken.status, taken.location(), &taken.body), (open.status, open.location(), &open.body));
    let to_other = mails_to(&app, &other).await;
    assert_eq!(to_other.len(), 1, "{to_other:?}");
    assert_eq!(to_other[0].0, "Your address was not moved to another Fluxi account");
    assert!(!to_other[0].1.contains("/confirm-email/"), "no link");

    // An address held by another account's undo link cannot be moved to either.
    let mut mover = app.person("Leaver").await;
    let held = mover.user.email.clone();
    assert_eq!(request_change(&mut mover.client, &format!("gone-{held}")).await.status, StatusCode::OK);
    let token = link_token(&app, &format!("gone-{held}"), CONFIRM_SUBJECT, "/confirm-email/").await;
    assert_eq!(mover.client.call("confirm_email_change", &[("token", &token)]).await.status, StatusCode::OK);
    assert_eq!(request_change(&mut me.client, &held).await.status, StatusCode::OK);
    assert!(!mails_to(&app, &held).await.iter().any(|(s, _)| s == CONFIRM_SUBJECT));
    // The address freed meanwhile after a request: the confirm link says so.
    let mut third = app.person("Third").await;
    let wanted = format!("wanted-{}", third.user.email);
    assert_eq!(request_change(&mut third.client, &wanted).await.status, StatusCode::OK);
    let token = link_token(&app, &wanted, CONFIRM_SUBJECT, "/confirm-email/").await;
    let mut quick = app.client();
    let res = quick.call("signup", &[("display_name", "Quick"), ("email", &wanted), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = common::finish_sign_up(&app, &mut quick, &wanted, PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = third.client.call("confirm_email_change", &[("token", &token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("Another account")), "{}", res.body);
    assert_eq!(stored_email(&app, third.user.id).await.0, third.user.email);
}

/// A change asked for by a session that every session's sign-out (an undo, a reset) ended
/// while the request waited is refused under the account's lock: nothing is mailed.
#[tokio::test]
async fn a_change_from_a_session_signed_out_meanwhile_is_refused() {
    use fluxi_core::accounts::email_change::{request_email_change, EmailChangeError};
    let app = TestApp::spawn().await;
    let me = app.person("Stale Session").await;
    let as_loaded = me.user.clone();
    let mut conn = app.db.conn().await;
    // The undo committing first: every session of the account signed out.
    diesel::update(users::table.find(me.user.id))
        .set(users::sessions_epoch.eq(users::sessions_epoch + 1))
        .execute(&mut conn)
        .await
        .unwrap();
    let audit = fluxi_core::testing::audit_as(&as_loaded);
    let result = request_email_change(&mut conn, &audit, &as_loaded, "elsewhere@example.test", "http://x").await;
    assert!(matches!(result, Err(EmailChangeError::SignedOut)), "{result:?}");
    let mailed: i64 = outbox_emails::table
        .filter(outbox_emails::recipient.eq("elsewhere@example.test"))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(mailed, 0);
    assert!(recorded(&app, Action::EmailChangeRequested).await.is_empty());
    // The session as it is now may.
    let now_loaded = fluxi_core::accounts::find_user_by_id(&mut conn, me.user.id).await.unwrap().unwrap();
    let audit = fluxi_core::testing::audit_as(&now_loaded);
    request_email_change(&mut conn, &audit, &now_loaded, "elsewhere@example.test", "http://x").await.unwrap();
}
