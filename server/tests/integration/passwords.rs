//! The password: changing it (step-up, other sessions signed out), asking for a reset
//! (one answer whatever the address, limits), the reset link (single use, 30 minutes,
//! two-factor authentication still asked, every session signed out), and the security
//! notices these send.

use std::sync::Arc;

use crate::common::{mailed_token, recorded, Client, TestApp, PASSWORD};
use crate::mfa::{app_code, enrolled};
use app::error::AppError;
use app::passwords::api::ResetLinkState;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::audit::Action;
use fluxi_core::clock::Clock;
use fluxi_core::schema::outbox_emails;
use reqwest::StatusCode;
use time::Duration;

const NEW_PASSWORD: &str = "a brand new passphrase 42";

/// Delivers the mail that is due through the SMTP sink `scripts/test` starts, and returns
/// the messages the sink received for `email` (soft line breaks undone).
pub(crate) async fn delivered_to(app: &TestApp, email: &str) -> Vec<String> {
    let sink = std::env::var("FLUXI_TEST_SMTP_URL").expect("FLUXI_TEST_SMTP_URL (scripts/test starts the sink)");
    let inbox = std::env::var("FLUXI_TEST_SMTP_MESSAGES").expect("FLUXI_TEST_SMTP_MESSAGES");
    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let mailer = server::jobs::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    while server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap() > 0 {}
    let messages: serde_json::Value = reqwest::get(format!("{inbox}?to={email}")).await.unwrap().json().await.unwrap();
    messages.as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap().replace("=\r\n", "")).collect()
}

/// The subject line of each delivered message.
pub(crate) fn subjects_of(messages: &[String]) -> Vec<&str> {
    messages.iter().filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: "))).collect()
}

/// Subjects of the mails queued to `email`, oldest first.
pub(crate) async fn subjects_to(app: &TestApp, email: &str) -> Vec<String> {
    let mut conn = app.db.conn().await;
    outbox_emails::table
        .filter(outbox_emails::recipient.eq(email))
        .order(outbox_emails::created_at.asc())
        .select(outbox_emails::subject)
        .load(&mut conn)
        .await
        .unwrap()
}

/// Waits for the `after`-th reset mail to `email` (queued after the answer); its token.
pub(crate) async fn reset_token(app: &TestApp, email: &str, after: usize) -> String {
    mailed_token(app, email, "Reset your Fluxi password", "/reset-password/", after).await
}

pub(crate) async fn signed_in(c: &mut Client) -> bool {
    c.call("current_user", &[]).await.body != "null"
}

pub(crate) async fn sign_in(app: &TestApp, email: &str, password: &str) -> (Client, StatusCode) {
    let mut c = app.client();
    let status = c.call("login", &[("email", email), ("password", password)]).await.status;
    (c, status)
}

#[tokio::test]
async fn changing_the_password_asks_for_the_current_one_and_signs_out_other_sessions() {
    let app = TestApp::spawn().await;
    let mut me = app.person("Changer").await;
    let email = me.user.email.clone();
    let (mut elsewhere, status) = sign_in(&app, &email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    app.clock.advance(Duration::minutes(11));

    let res = me.client.call("change_password", &[("password", PASSWORD), ("new_password", "short")]).await;
    assert!(res.error().message_for("new_password").is_some(), "{}", res.body);
    let form = [("password", "not my password at all"), ("new_password", NEW_PASSWORD), ("sign_out_others", "on")];
    let res = me.client.call("change_password", &form).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    assert_eq!(sign_in(&app, &email, PASSWORD).await.1, StatusCode::OK, "unchanged");

    let form = [("password", PASSWORD), ("new_password", NEW_PASSWORD), ("sign_out_others", "on")];
    let res = me.client.call("change_password", &form).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut me.client).await, "this session stays");
    assert!(!signed_in(&mut elsewhere).await, "the others are signed out");
    assert_eq!(sign_in(&app, &email, PASSWORD).await.1, StatusCode::UNAUTHORIZED);
    let (mut fresh, status) = sign_in(&app, &email, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(recorded(&app, Action::PasswordChanged).await.len(), 1);
    assert_eq!(subjects_to(&app, &email).await, vec!["Your Fluxi password was changed".to_string()]);

    // Unchecked: the other sessions stay.
    app.clock.advance(Duration::minutes(11));
    let form = [("password", NEW_PASSWORD), ("new_password", PASSWORD)];
    assert_eq!(me.client.call("change_password", &form).await.status, StatusCode::OK);
    assert!(signed_in(&mut fresh).await);
    assert_eq!(app.client().call("change_password", &form).await.error(), AppError::Unauthenticated);
}

#[tokio::test]
async fn asking_for_a_reset_answers_the_same_whether_or_not_the_account_exists() {
    let app = TestApp::spawn().await;
    let known = app.person("Known").await.user.email;
    let unknown = "nobody-at-all@example.test";
    let mut c = app.client();
    let a = c.post_form("request_password_reset", "/forgot-password", &[("email", &known)]).await;
    let b = c.post_form("request_password_reset", "/forgot-password", &[("email", unknown)]).await;
    assert_eq!((a.status, a.location()), (b.status, b.location()));
    assert_eq!(a.body, b.body);
    assert_eq!(a.location(), Some("/forgot-password?sent=1"));
    reset_token(&app, &known, 0).await;
    assert!(subjects_to(&app, unknown).await.is_empty());
    // Both are recorded; the unknown one as failed, with no account.
    let requested = recorded(&app, Action::PasswordResetRequested).await;
    for _ in 0..100 {
        if requested.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let requested = recorded(&app, Action::PasswordResetRequested).await;
    assert!(requested.iter().any(|e| e.account_id.is_none() && e.outcome == "failed"), "{requested:?}");
    // Malformed addresses are refused alike.
    let res = c.call("request_password_reset", &[("email", "not an address")]).await;
    assert!(res.error().message_for("email").is_some(), "{}", res.body);

    // Timing: the answer does not wait for the lookup. Medians over many tries, interleaved.
    let (mut known_ms, mut unknown_ms) = (Vec::new(), Vec::new());
    for i in 0..20 {
        // A new hour each round: the network's limit is not what is measured.
        app.clock.advance(Duration::minutes(61));
        for (email, times) in [(known.as_str(), &mut known_ms), (unknown, &mut unknown_ms)] {
            let started = std::time::Instant::now();
            let res = c.call("request_password_reset", &[("email", email)]).await;
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(res.status, StatusCode::OK, "try {i}: {}", res.body);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = median(&mut known_ms) / median(&mut unknown_ms);
    assert!((0.5..2.0).contains(&ratio), "known/unknown answer time ratio {ratio:.2}");
}

#[tokio::test]
async fn reset_requests_are_limited_per_network_and_mails_per_account() {
    let app = TestApp::spawn().await;
    let email = app.person("Limited").await.user.email;
    let mut c = app.client();
    for i in 0..20 {
        let res = c.call("request_password_reset", &[("email", &email)]).await;
        assert_eq!(res.status, StatusCode::OK, "request {i}: {}", res.body);
    }
    let res = c.call("request_password_reset", &[("email", &email)]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    // Three mails an hour reach the account; the rest are dropped without saying so.
    reset_token(&app, &email, 2).await;
    for _ in 0..200 {
        if recorded(&app, Action::PasswordResetRequested).await.len() >= 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(subjects_to(&app, &email).await.len(), 3);
}

#[tokio::test]
async fn a_reset_link_works_once_signs_out_everywhere_and_signs_in_here() {
    let app = TestApp::spawn().await;
    let me = app.person("Resetter").await;
    let email = me.user.email.clone();
    let (mut other, _) = sign_in(&app, &email, PASSWORD).await;
    let mut c = app.client();
    c.call("request_password_reset", &[("email", &email)]).await;
    let token = reset_token(&app, &email, 0).await;
    // A second request (anyone's) does not void the first link...
    app.client().call("request_password_reset", &[("email", &email)]).await;
    let second = reset_token(&app, &email, 1).await;

    let state: ResetLinkState = serde_json::from_str(&c.call("reset_link", &[("token", &token)]).await.body).unwrap();
    assert_eq!(state, ResetLinkState::Usable { mfa: false });
    // A weak password: refused, the link still works.
    let res = c.call("reset_password", &[("token", &token), ("new_password", "password")]).await;
    assert!(res.error().message_for("new_password").is_some(), "{}", res.body);
    let res = c.call("reset_password", &[("token", &token), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut c).await, "signed in on this device");
    let mut old = me.client;
    assert!(!signed_in(&mut old).await && !signed_in(&mut other).await, "every other session ended");
    assert_eq!(sign_in(&app, &email, PASSWORD).await.1, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(&app, &email, NEW_PASSWORD).await.1, StatusCode::OK);
    assert_eq!(recorded(&app, Action::PasswordResetCompleted).await.len(), 1);
    let notices: Vec<String> =
        subjects_to(&app, &email).await.into_iter().filter(|s| s == "Your Fluxi password was reset").collect();
    assert_eq!(notices.len(), 1);

    // ...but using one voids the others.
    let res = app.client().call("reset_password", &[("token", &second), ("new_password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("replaced")), "{}", res.body);
    // Used: says so, changes nothing.
    let res =
        app.client().call("reset_password", &[("token", &token), ("new_password", "yet another passphrase")]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("already been used")), "{}", res.body);
    // Forged and truncated links.
    for bad in [&token[..40], &"0".repeat(64), "x"] {
        let res = app.client().call("reset_password", &[("token", bad), ("new_password", NEW_PASSWORD)]).await;
        assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("not valid")), "{bad}: {}", res.body);
    }
    // Replaced, used, and the made-up ones once (from one network).
    assert_eq!(recorded(&app, Action::PasswordResetRefused).await.len(), 3);
    assert_eq!(sign_in(&app, &email, NEW_PASSWORD).await.1, StatusCode::OK);

    // Expired after 30 minutes.
    c.call("request_password_reset", &[("email", &email)]).await;
    let late = reset_token(&app, &email, 2).await;
    app.clock.advance(Duration::minutes(30));
    let res = app.client().call("reset_password", &[("token", &late), ("new_password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired")), "{}", res.body);
}

#[tokio::test]
async fn one_reset_link_used_at_once_from_many_browsers_works_once() {
    let app = TestApp::spawn().await;
    let email = app.person("Racer").await.user.email;
    app.client().call("request_password_reset", &[("email", &email)]).await;
    let token = reset_token(&app, &email, 0).await;
    let tries = (0..6).map(|i| {
        let mut c = app.client();
        let token = token.clone();
        async move {
            let password = format!("{NEW_PASSWORD} number {i}");
            c.call("reset_password", &[("token", &token), ("new_password", &password)]).await.status
        }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(recorded(&app, Action::PasswordResetCompleted).await.len(), 1);
}

#[tokio::test]
async fn with_two_factor_on_a_reset_still_needs_a_code() {
    let app = TestApp::spawn().await;
    let (person, key, recovery) = enrolled(&app, "Guarded").await;
    let email = person.user.email.clone();
    app.client().call("request_password_reset", &[("email", &email)]).await;
    let token = reset_token(&app, &email, 0).await;
    let mut c = app.client();
    let state: ResetLinkState = serde_json::from_str(&c.call("reset_link", &[("token", &token)]).await.body).unwrap();
    assert_eq!(state, ResetLinkState::Usable { mfa: true });

    let res = c.call("reset_password", &[("token", &token), ("new_password", NEW_PASSWORD)]).await;
    assert!(res.error().message_for("code").is_some(), "{}", res.body);
    let res = c.call("reset_password", &[("token", &token), ("new_password", NEW_PASSWORD), ("code", "000000")]).await;
    assert!(res.error().message_for("code").is_some(), "{}", res.body);
    assert_eq!(sign_in(&app, &email, PASSWORD).await.1, StatusCode::OK, "nothing changed");

    let code = app_code(&key, app.clock.now());
    let res = c.call("reset_password", &[("token", &token), ("new_password", NEW_PASSWORD), ("code", &code)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut c).await);
    // A recovery code works too (for a second reset).
    app.clock.advance(Duration::minutes(1));
    app.client().call("request_password_reset", &[("email", &email)]).await;
    let again = reset_token(&app, &email, 1).await;
    let form = [("token", again.as_str()), ("new_password", PASSWORD), ("code", recovery[0].as_str())];
    assert_eq!(app.client().call("reset_password", &form).await.status, StatusCode::OK);
}

/// Read from the SMTP sink: each notice arrives once, says when and from where, and
/// carries no link.
#[tokio::test]
async fn each_security_notice_is_mailed_once() {
    let app = TestApp::spawn().await;
    let (mut person, key, _) = enrolled(&app, "Noticed").await;
    let email = person.user.email.clone();
    let code = app_code(&key, app.clock.now());
    let res = person.client.call("regenerate_recovery_codes", &[("password", PASSWORD), ("code", &code)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Within the step-up window: no password asked again.
    let form = [("password", ""), ("new_password", NEW_PASSWORD), ("sign_out_others", "on")];
    assert_eq!(person.client.call("change_password", &form).await.status, StatusCode::OK);
    assert_eq!(person.client.call("disable_two_factor", &[("password", "")]).await.status, StatusCode::OK);

    let messages = delivered_to(&app, &email).await;
    assert_eq!(
        subjects_of(&messages),
        vec![
            "Two-factor authentication is on for your Fluxi account",
            "New recovery codes were made for your Fluxi account",
            "Your Fluxi password was changed",
            "Two-factor authentication was turned off for your Fluxi account",
        ]
    );
    for m in &messages {
        assert!(m.contains("When: ") && m.contains("From: network 127.0.0.0/24 (approximate)"), "{m}");
        assert!(m.contains("If this was not you"), "{m}");
        assert!(!m.contains("/reset-password/") && !m.contains("/verify-email/"), "no link in a notice: {m}");
    }
}

/// A sign-in waiting for its code when the password is reset cannot finish with the old
/// password.
#[tokio::test]
async fn a_reset_ends_sign_ins_waiting_for_their_code() {
    let app = TestApp::spawn().await;
    let (person, key, _) = enrolled(&app, "Waiting").await;
    let email = person.user.email.clone();
    let mut thief = app.client();
    let res = thief.call("login", &[("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/login/mfa"), "{}", res.body);

    app.client().call("request_password_reset", &[("email", &email)]).await;
    let token = reset_token(&app, &email, 0).await;
    let code = app_code(&key, app.clock.now());
    let form = [("token", token.as_str()), ("new_password", NEW_PASSWORD), ("code", code.as_str())];
    assert_eq!(app.client().call("reset_password", &form).await.status, StatusCode::OK);

    app.clock.advance(Duration::seconds(30));
    let code = app_code(&key, app.clock.now());
    let res = thief.call("verify_sign_in", &[("code", &code)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("took too long")), "{}", res.body);
    assert!(!signed_in(&mut thief).await);
}

/// Two-factor authentication waits for a confirmed address (else someone who signed up
/// with another person's address could keep it with their own second factor).
#[tokio::test]
async fn two_factor_set_up_waits_for_a_confirmed_address() {
    let app = TestApp::spawn().await;
    let (mut c, _) = crate::verification::unverified(&app, "Early", false).await;
    let res = c.call("start_totp_setup", &[]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("Confirm your email address")), "{}", res.body);
}

/// Requests in the owner's name from networks the account does not know cannot use up the
/// mails the owner asks for from their own network.
#[tokio::test]
async fn requests_from_elsewhere_cannot_use_up_the_owners_reset_mails() {
    use reqwest::header::{ACCEPT, CONTENT_TYPE};
    let app = TestApp::spawn_with(crate::common::Options { trusted_proxies: 1, ..Default::default() }).await;
    // The fixture account has signed in from 127.0.0.1 (no forwarded header: the peer).
    let email = app.person("Owner").await.user.email;
    for network in 1..=5 {
        for _ in 0..3 {
            let mut c = app.client();
            let req = c
                .http()
                .post(c.url("/api/request_password_reset"))
                .header("x-forwarded-for", format!("198.51.100.{network}"))
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(crate::common::encode(&[("email", &email)]));
            assert_eq!(c.raw(req).await.status, StatusCode::OK);
        }
    }
    // 10 of those 15 were mailed; the rest dropped.
    reset_token(&app, &email, 9).await;
    for _ in 0..200 {
        if recorded(&app, Action::PasswordResetRequested).await.len() >= 15 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(subjects_to(&app, &email).await.len(), 10);
    // The owner, from their own network, still gets one.
    app.client().call("request_password_reset", &[("email", &email)]).await;
    reset_token(&app, &email, 10).await;
}
