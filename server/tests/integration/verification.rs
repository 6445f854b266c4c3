//! Email verification of accounts whose address was never proven (sign-up proves it for
//! every account created since): the mailed link, what a link that does not work says,
//! the resend limit, and invitations that wait for a verified address.

use crate::common::{self, recorded, Client, TestApp};
use app::auth::api::CurrentUser;
use app::error::AppError;
use app::verification::api::VerificationLinkState;
use fluxi_core::audit::Action;
use reqwest::StatusCode;
use time::Duration;

/// The newest verification link's token in the mail to `email`.
async fn verification_token(app: &TestApp, email: &str) -> String {
    let body = common::outbox_body_for(app, email).await;
    let start = body.find("/verify-email/").expect("verification link in mail") + "/verify-email/".len();
    body[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect()
}

/// A signed-in account whose address is not verified (as accounts from before sign-up
/// proved addresses are), optionally with a verification link mailed ("Send a new link").
pub(crate) async fn unverified(app: &TestApp, name: &str, mail_link: bool) -> (Client, String) {
    let email = format!("{}-{}@example.test", name.to_lowercase(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    fluxi_core::testing::UserBuilder::new()
        .display_name(name)
        .email(&email)
        .password(common::PASSWORD)
        .unverified()
        .create(&app.db.pool, &app.state.hasher)
        .await;
    let mut c = app.client();
    let res = c.call("login", &[("email", &email), ("password", common::PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    if mail_link {
        let res = c.call("resend_verification", &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    (c, email)
}

async fn link_state(c: &mut Client, token: &str) -> VerificationLinkState {
    let res = c.call("verification_link", &[("token", token)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    serde_json::from_str(&res.body).unwrap()
}

async fn verified(c: &mut Client) -> bool {
    let res = c.call("current_user", &[]).await;
    let user: Option<CurrentUser> = serde_json::from_str(&res.body).unwrap();
    user.expect("signed in").email_verified
}

fn rejected_with(res: &common::Reply, words: &str) -> bool {
    matches!(res.error(), AppError::Rejected(m) if m.contains(words))
}

#[tokio::test]
async fn a_verification_link_verifies_the_account_once() {
    let app = TestApp::spawn().await;
    let (mut c, email) = unverified(&app, "Vera", true).await;
    assert!(!verified(&mut c).await);
    assert!(c.get("/account").await.body.contains("Address not confirmed"), "every page shows the banner");
    let body = common::outbox_body_for(&app, &email).await;
    assert!(!body.contains("Vera"), "the mail carries nothing the account typed");
    let token = verification_token(&app, &email).await;
    assert_eq!(token.len(), 64);
    assert_eq!(recorded(&app, Action::EmailVerificationSent).await.len(), 1);

    assert_eq!(link_state(&mut c, &token).await, VerificationLinkState::Ready { email: email.clone() });
    assert!(!verified(&mut c).await, "looking at the page verifies nothing");
    let res = c.call("verify_email", &[("token", &token)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(verified(&mut c).await);
    assert!(!c.get("/account").await.body.contains("Address not confirmed"));
    assert_eq!(recorded(&app, Action::EmailVerified).await.len(), 1);

    assert_eq!(link_state(&mut c, &token).await, VerificationLinkState::AlreadyVerified);
    let again = c.call("verify_email", &[("token", &token)]).await;
    assert!(rejected_with(&again, "already verified"), "{}", again.body);
    assert_eq!(recorded(&app, Action::EmailVerified).await.len(), 1);
}

#[tokio::test]
async fn links_that_do_not_work_say_why_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (mut owner, email) = unverified(&app, "Owner", true).await;
    let (mut other, _) = unverified(&app, "Other", false).await;
    let token = verification_token(&app, &email).await;

    // Truncated, forged, mistyped.
    for bad in [&token[..63], &"ab".repeat(32), "", "../../etc/passwd", &format!("{token}0")] {
        let res = owner.call("verify_email", &[("token", bad)]).await;
        assert!(rejected_with(&res, "not valid"), "{bad:?}: {}", res.body);
        assert!(matches!(link_state(&mut owner, bad).await, VerificationLinkState::Unusable { .. }));
    }
    // Opened while signed in as someone else: refused, recorded, and not used up.
    let state = link_state(&mut other, &token).await;
    assert!(
        matches!(&state, VerificationLinkState::Unusable { message } if message.contains("another account")),
        "{state:?}"
    );
    let res = other.call("verify_email", &[("token", &token)]).await;
    assert!(rejected_with(&res, "another account"), "{}", res.body);
    assert!(!verified(&mut other).await);
    let refused = recorded(&app, Action::EmailVerificationRefused).await;
    assert!(refused.len() >= 2, "{refused:?}");
    assert!(refused.iter().all(|e| e.outcome == "denied"));
    // Signed out: asked to sign in; nothing happens.
    let mut anonymous = app.client();
    assert_eq!(link_state(&mut anonymous, &token).await, VerificationLinkState::SignedOut);
    assert_eq!(anonymous.call("verify_email", &[("token", &token)]).await.error(), AppError::Unauthenticated);
    assert!(!verified(&mut owner).await);

    // A new link replaces the old one.
    let res = owner.call("resend_verification", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let newer = verification_token(&app, &email).await;
    assert_ne!(newer, token);
    let res = owner.call("verify_email", &[("token", &token)]).await;
    assert!(rejected_with(&res, "replaced by a newer one"), "{}", res.body);
    // Expired after 24 hours.
    app.clock.advance(Duration::hours(24));
    let res = owner.call("verify_email", &[("token", &newer)]).await;
    // (The session itself expired too: sign in again first.)
    assert_eq!(res.error(), AppError::Unauthenticated);
    let mut owner = app.client();
    let res = owner.call("login", &[("email", &email), ("password", common::PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = owner.call("verify_email", &[("token", &newer)]).await;
    assert!(rejected_with(&res, "expired"), "{}", res.body);
    assert!(!verified(&mut owner).await);
    assert!(recorded(&app, Action::EmailVerified).await.is_empty());
}

#[tokio::test]
async fn one_link_used_twice_at_once_verifies_once() {
    let app = TestApp::spawn().await;
    let (c, email) = unverified(&app, "Twice", true).await;
    let token = verification_token(&app, &email).await;
    let cookie = c.session_cookie.clone();
    let tries = (0..8).map(|_| {
        let mut c = app.client();
        c.session_cookie = cookie.clone();
        let token = token.clone();
        async move { c.call("verify_email", &[("token", &token)]).await.status }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(recorded(&app, Action::EmailVerified).await.len(), 1);
}

#[tokio::test]
async fn new_links_are_limited_per_account() {
    let app = TestApp::spawn().await;
    let (mut c, email) = unverified(&app, "Resender", false).await;
    for _ in 0..3 {
        assert_eq!(c.call("resend_verification", &[]).await.status, StatusCode::OK);
    }
    let res = c.call("resend_verification", &[]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    assert_eq!(recorded(&app, Action::EmailVerificationSent).await.len(), 3);
    app.clock.advance(Duration::minutes(61));
    let mut c = app.client();
    assert_eq!(c.call("login", &[("email", &email), ("password", common::PASSWORD)]).await.status, StatusCode::OK);
    assert_eq!(c.call("resend_verification", &[]).await.status, StatusCode::OK, "a new hour");
    let token = verification_token(&app, &email).await;
    assert_eq!(c.call("verify_email", &[("token", &token)]).await.status, StatusCode::OK);
    let res = c.call("resend_verification", &[]).await;
    assert!(rejected_with(&res, "already verified"), "{}", res.body);
    assert_eq!(app.client().call("resend_verification", &[]).await.error(), AppError::Unauthenticated);
}

#[tokio::test]
async fn an_invitation_waits_for_a_verified_address() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let (mut guest, email) = unverified(&app, "Guest", true).await;
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &email), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let invitation = common::token_from(&common::outbox_body_for(&app, &email).await);

    // Signed up with the address and holding the link is not enough.
    let res = guest.call("accept_invitation", &[("token", &invitation)]).await;
    assert!(rejected_with(&res, "Confirm your email address first"), "{}", res.body);
    assert!(recorded(&app, Action::InvitationAccepted).await.is_empty());

    let verification = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use fluxi_core::schema::outbox_emails;
        let mut conn = app.db.conn().await;
        let bodies: Vec<String> = outbox_emails::table
            .filter(outbox_emails::recipient.eq(&email))
            .select(outbox_emails::body)
            .load(&mut conn)
            .await
            .unwrap();
        let body = bodies.iter().find(|b| b.contains("/verify-email/")).unwrap();
        let start = body.find("/verify-email/").unwrap() + "/verify-email/".len();
        body[start..start + 64].to_string()
    };
    assert_eq!(guest.call("verify_email", &[("token", &verification)]).await.status, StatusCode::OK);
    let res = guest.call("accept_invitation", &[("token", &invitation)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let members = owner.client.call("members_page", &[("slug", &slug)]).await;
    assert!(members.body.contains("\"email_verified\":true"), "{}", members.body);
}
