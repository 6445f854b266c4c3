//! Sign-up, sign-in and sign-out rules, over real HTTP against real PostgreSQL.

use crate::common::{self, TestApp, PASSWORD};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::schema::users;
use reqwest::StatusCode;

async fn user_count(app: &TestApp) -> i64 {
    let mut conn = app.db.conn().await;
    users::table.count().get_result(&mut conn).await.unwrap()
}

/// The sign-ups waiting for their link, once `expected` are there (they are stored after
/// the answer) or after 10 s.
async fn pending_sign_ups(app: &TestApp, expected: i64) -> i64 {
    let mut count = 0;
    for _ in 0..500 {
        let mut conn = app.db.conn().await;
        count = fluxi_core::schema::pending_sign_ups::table.count().get_result(&mut conn).await.unwrap();
        if count == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    count
}

fn field_message(err: &AppError, field: &str) -> String {
    err.message_for(field).unwrap_or_else(|| panic!("no error for {field}: {err:?}"))
}

/// Signing up mails a link; the link and the password chosen at sign-up create the
/// account — its address proven — and sign in. Before that there is no account at all.
#[tokio::test]
async fn sign_up_mails_a_link_that_creates_a_verified_account() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res = c
        .call(
            "signup",
            &[("display_name", "  Ada Lovelace "), ("email", "  Ada@Example.TEST "), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/signup?sent=1"));
    assert!(c.session_cookie.is_none(), "nobody is signed in by the form");
    let token = common::sign_up_token(&app, "Ada@Example.TEST", 0).await;
    assert_eq!(user_count(&app).await, 0, "no account before the link");
    let mail = common::outbox_body_for(&app, "Ada@Example.TEST").await;
    assert!(!mail.contains("Ada Lovelace"), "the mail carries nothing the sign-up typed: {mail}");
    assert!(c.get("/signup?sent=1").await.body.contains("Check your email"));

    let page = c.get(&format!("/confirm-sign-up/{token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Ada@Example.TEST") && page.body.contains("Create account"), "{}", page.body);
    // Whoever reads the mailbox cannot finish a sign-up without its password.
    let res = c.call("confirm_sign_up", &[("token", &token), ("password", "someone else's guess")]).await;
    assert!(field_message(&res.error(), "password").contains("not the password you chose"), "{}", res.body);
    assert_eq!(user_count(&app).await, 0);
    assert!(c.session_cookie.is_none());
    let res = c.call("confirm_sign_up", &[("token", &token), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/account"));
    assert!(c.session_cookie.is_some());

    let page = c.get("/account").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Ada Lovelace"), "{}", page.body);
    assert!(page.body.contains("Ada@Example.TEST"));
    assert!(page.body.contains("Sign out"));
    assert!(!page.body.contains("Send a new link"), "the address is verified: no banner");

    // Stored trimmed, normalized for comparison, verified; the pending sign-up is gone.
    let mut conn = app.db.conn().await;
    let (email, norm, name, verified): (String, String, String, Option<time::OffsetDateTime>) = users::table
        .select((users::email, users::email_normalized, users::display_name, users::email_verified_at))
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (email.as_str(), norm.as_str(), name.as_str()),
        ("Ada@Example.TEST", "ada@example.test", "Ada Lovelace")
    );
    assert!(verified.is_some());
    let pending: i64 = fluxi_core::schema::pending_sign_ups::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(pending, 0);
    // The link worked once.
    let res = app.client().call("confirm_sign_up", &[("token", &token), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("not valid")), "{}", res.body);
    assert_eq!(user_count(&app).await, 1);
}

/// Each password given with a link counts before it is checked: parallel guesses by
/// someone who reads the mailbox get at most five checks, then the link is dead.
#[tokio::test]
async fn a_sign_up_link_allows_five_password_tries() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res =
        c.call("signup", &[("display_name", "Tries"), ("email", "tries@example.test"), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let token = common::sign_up_token(&app, "tries@example.test", 0).await;
    let before = app.state.hasher.verifications();
    let guesses =
        (0..20).map(|i| {
            let mut c = app.client();
            let token = token.clone();
            async move {
                c.call("confirm_sign_up", &[("token", &token), ("password", &format!("guess number {i:02}"))]).await
            }
        });
    let replies = futures::future::join_all(guesses).await;
    assert_eq!(app.state.hasher.verifications() - before, 5, "five passwords checked");
    let dead = replies.iter().filter(|r| matches!(r.error(), AppError::Rejected(m) if m.contains("too many times")));
    assert_eq!(dead.count(), 15);
    // The right password is now refused too, and the page says why.
    let res = c.call("confirm_sign_up", &[("token", &token), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert!(c.get(&format!("/confirm-sign-up/{token}")).await.body.contains("Sign up again"));
    assert_eq!(user_count(&app).await, 0);
    let refused = common::recorded(&app, fluxi_core::audit::Action::SignUpRefused).await;
    assert_eq!(refused.len(), 21, "every refusal recorded");
}

/// A sign-up link expires after 24 hours, and the clean-up job removes what it held.
#[tokio::test]
async fn a_sign_up_link_expires() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    c.call("signup", &[("display_name", "Late"), ("email", "late@example.test"), ("password", PASSWORD)]).await;
    let token = common::sign_up_token(&app, "late@example.test", 0).await;
    app.clock.advance(time::Duration::hours(24));
    let res = c.call("confirm_sign_up", &[("token", &token), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired")), "{}", res.body);
    assert_eq!(user_count(&app).await, 0);
    let mut conn = app.db.conn().await;
    let now = app.clock.now();
    use fluxi_core::accounts::sign_up::delete_expired_sign_ups;
    use fluxi_core::clock::Clock;
    assert_eq!(delete_expired_sign_ups(&mut conn, now - time::Duration::days(1)).await.unwrap(), 0, "kept a day");
    assert_eq!(delete_expired_sign_ups(&mut conn, now + time::Duration::days(1)).await.unwrap(), 1);
}

/// Links we never issued are refused, and recorded once per network and repeat window:
/// anyone can send them as fast as they like.
#[tokio::test]
async fn made_up_mailed_links_do_not_flood_the_trail() {
    use fluxi_core::audit::Action;
    let app = TestApp::spawn().await;
    // Links anyone can try without an account: sign-up, password reset, undoing an address change.
    let links = [
        ("confirm_sign_up", "password", Action::SignUpRefused),
        ("reset_password", "new_password", Action::PasswordResetRefused),
        ("revert_email_change", "new_password", Action::EmailChangeRefused),
    ];
    for (function, password_field, action) in links {
        let before = common::recorded(&app, action).await.len();
        for i in 0..10 {
            let token = format!("{i:02}").repeat(32);
            let res = app.client().call(function, &[("token", &token), (password_field, PASSWORD)]).await;
            assert!(
                matches!(res.error(), AppError::Rejected(m) if m.contains("not valid")),
                "{function}: {}",
                res.body
            );
        }
        let res = app.client().call(function, &[("token", "../x"), (password_field, PASSWORD)]).await;
        assert!(matches!(res.error(), AppError::Rejected(_)), "{function}: {}", res.body);
        assert_eq!(common::recorded(&app, action).await.len(), before + 1, "{function}: once per network");
    }
}

#[tokio::test]
async fn stored_hash_is_argon2id_with_owasp_parameters() {
    let app = TestApp::spawn().await;
    app.signed_up("Hash").await;
    let mut conn = app.db.conn().await;
    let phc: String = users::table.select(users::password_hash).first(&mut conn).await.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(!phc.contains(PASSWORD));
}

/// Signing up with an address that has an account answers exactly like a new address
/// (same status, redirect, body, and the same work: a password hash), creates nothing,
/// and tells the owner — on their address and in their own activity.
#[tokio::test]
async fn sign_up_with_a_taken_address_answers_the_same_and_tells_the_owner() {
    use fluxi_core::audit::Action;
    let app = TestApp::spawn().await;
    let mut owner = app.person("First").await;
    let email = owner.user.email.clone();
    let mut c = app.client();
    let taken = format!("  {} ", email.to_uppercase());
    let taken = c.call("signup", &[("display_name", "Second"), ("email", &taken), ("password", PASSWORD)]).await;
    let fresh = "someone-new@example.test";
    let fresh = c.call("signup", &[("display_name", "Second"), ("email", fresh), ("password", PASSWORD)]).await;
    assert_eq!(taken.status, StatusCode::OK, "{}", taken.body);
    assert_eq!((taken.status, taken.location(), &taken.body), (fresh.status, fresh.location(), &fresh.body));
    let body = common::mailed_body(&app, &email, "Someone tried to sign up to Fluxi with your address", 0).await;
    assert!(body.contains("/login"), "{body}");
    assert!(c.session_cookie.is_none(), "a sign-up signs nobody in");
    assert_eq!(user_count(&app).await, 1);
    assert!(!body.contains("/confirm-sign-up/") && !body.contains("Second"), "no link, no stranger's words: {body}");
    let attempts = common::recorded(&app, Action::SignUpAddressInUse).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].account_id, Some(owner.user.id), "on the owner's own activity");
    let page = owner.client.get("/account/activity").await;
    assert!(page.body.contains("Someone tried to sign up with the account"), "{}", page.body);

    // The same work either way: medians of a few sign-ups, compared as a ratio.
    async fn median(app: &TestApp, email: &str) -> f64 {
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut c = app.client();
            let t = std::time::Instant::now();
            let res = c.call("signup", &[("display_name", "Timer"), ("email", email), ("password", PASSWORD)]).await;
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(res.status, StatusCode::OK);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        times[2]
    }
    let known = median(&app, &email).await;
    let unknown = median(&app, "nobody-yet@example.test").await;
    let ratio = unknown / known;
    assert!((0.5..2.0).contains(&ratio), "new address took {unknown:.4}s vs taken {known:.4}s");
}

/// Several sign-ups may wait for one address; the first confirmed wins, the others (and
/// the same link twice at once) then create nothing.
#[tokio::test]
async fn concurrent_confirmations_create_one_account() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    for (i, email) in ["race@example.test", "RACE@example.test", "Race@Example.test"].iter().enumerate() {
        let res =
            app.client().call("signup", &[("display_name", "Racer"), ("email", email), ("password", PASSWORD)]).await;
        assert_eq!(res.status, StatusCode::OK);
        tokens.push(common::sign_up_token(&app, email, 0).await);
        assert_eq!(tokens.len(), i + 1);
    }
    tokens.push(tokens[0].clone());
    let calls = tokens.iter().map(|token| {
        let mut c = app.client();
        async move { c.call("confirm_sign_up", &[("token", token), ("password", PASSWORD)]).await }
    });
    let replies = futures::future::join_all(calls).await;
    let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    let exists = |r: &&common::Reply| matches!(r.error(), AppError::Rejected(m) if m.contains("exists already"));
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert!(matches!(r.error(), AppError::Rejected(_)), "{}", r.body);
    }
    assert!(replies.iter().filter(|r| r.status != StatusCode::OK).filter(exists).count() >= 2, "the other sign-ups");
    assert_eq!(user_count(&app).await, 1);
}

/// The sign-up link carries where the sign-up started (an invitation), so nothing of it
/// is stored; only same-site paths survive, at both ends.
#[tokio::test]
async fn the_sign_up_link_brings_the_person_back_where_they_started() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let next = format!("/invite/{}", "ab".repeat(32));
    let form =
        [("display_name", "Invited"), ("email", "invited@example.test"), ("password", PASSWORD), ("next", &next)];
    assert_eq!(c.call("signup", &form).await.status, StatusCode::OK);
    let body = common::mailed_body(&app, "invited@example.test", "Finish creating your Fluxi account", 0).await;
    let link = body.lines().find(|l| l.contains("/confirm-sign-up/")).unwrap().trim().to_string();
    assert!(link.ends_with(&format!("?next=%2Finvite%2F{}", "ab".repeat(32))), "{link}");
    let path = &link[link.find("/confirm-sign-up/").unwrap()..];
    let page = c.get(path).await;
    assert!(page.body.contains(&format!("name=\"next\" value=\"{next}\"")), "{}", page.body);
    let token = common::sign_up_token(&app, "invited@example.test", 0).await;
    let res = c.call("confirm_sign_up", &[("token", &token), ("password", PASSWORD), ("next", &next)]).await;
    assert_eq!(res.location(), Some(next.as_str()));

    // Another site's address is dropped when signing up, and when confirming.
    let form = [
        ("display_name", "E"),
        ("email", "elsewhere@example.test"),
        ("password", PASSWORD),
        ("next", "//evil.example/"),
    ];
    assert_eq!(c.call("signup", &form).await.status, StatusCode::OK);
    let body = common::mailed_body(&app, "elsewhere@example.test", "Finish creating your Fluxi account", 0).await;
    assert!(!body.contains("next=") && !body.contains("evil"), "{body}");
    let token = common::sign_up_token(&app, "elsewhere@example.test", 0).await;
    let res = app
        .client()
        .call("confirm_sign_up", &[("token", &token), ("password", PASSWORD), ("next", "https://evil.example/")])
        .await;
    assert_eq!(res.location(), Some("/account"));
}

/// Signing up with one address again and again does not fill its mailbox.
#[tokio::test]
async fn sign_up_mails_to_one_address_are_capped() {
    let app = TestApp::spawn_with(common::Options { trusted_proxies: 1, ..Default::default() }).await;
    let owner = app.person("Owner").await;
    let sign_up = |email: &str, network: &str| {
        let c = app.client();
        let req = c
            .http()
            .post(c.url("/api/signup"))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", network)
            .body(common::encode(&[("display_name", "A"), ("email", email), ("password", PASSWORD)]));
        async move { c.http().execute(req.build().unwrap()).await.unwrap().status() }
    };
    // Three mails an hour per address and network; ten per address from everywhere.
    for network in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        for _ in 0..4 {
            assert_eq!(sign_up("again@example.test", network).await, StatusCode::OK, "the answer never changes");
        }
    }
    for _ in 0..4 {
        assert_eq!(sign_up(&owner.user.email, "198.51.100.1").await, StatusCode::OK);
    }
    let requested = || async {
        common::recorded(&app, fluxi_core::audit::Action::SignUpRequested).await.len()
            + common::recorded(&app, fluxi_core::audit::Action::SignUpAddressInUse).await.len()
    };
    for _ in 0..500 {
        if requested().await == 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(requested().await, 20, "every attempt recorded");
    assert_eq!(crate::passwords::subjects_to(&app, "again@example.test").await.len(), 10);
    let to_owner = crate::passwords::subjects_to(&app, &owner.user.email).await;
    assert_eq!(to_owner.iter().filter(|s| s.starts_with("Someone tried")).count(), 3, "{to_owner:?}");
    let capped = common::recorded(&app, fluxi_core::audit::Action::SignUpRequested).await;
    let on_owner = capped.iter().filter(|e| e.account_id == Some(owner.user.id)).count();
    assert_eq!(on_owner, 1, "the owner sees the attempt that was not mailed too");
}

#[tokio::test]
async fn each_password_rule_has_its_own_message() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let cases: [(&str, &str); 4] = [
        ("", "Enter your password."),
        ("short pass", "at least 12 characters"),
        (&"x".repeat(129), "at most 128 characters"),
        ("1qaz2wsx3edc", "too common"),
    ];
    for (password, expected) in cases {
        let res = c.call("signup", &[("display_name", "P"), ("email", "p@example.test"), ("password", password)]).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        let msg = field_message(&res.error(), "password");
        assert!(msg.contains(expected), "{password:?}: {msg}");
    }
    // Any Unicode, no composition rules, no truncation: 128 emoji are fine, and a
    // password differing only in its 128th character is a different password.
    let long = "🔑".repeat(127) + "a";
    let res = c.call("signup", &[("display_name", "U"), ("email", "u@example.test"), ("password", &long)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = common::finish_sign_up(&app, &mut c, "u@example.test", &long).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let mut other = app.client();
    let wrong = "🔑".repeat(127) + "b";
    let res = other.call("login", &[("email", "u@example.test"), ("password", &wrong)]).await;
    assert_eq!(res.error(), AppError::InvalidCredentials);
    let res = other.call("login", &[("email", "u@example.test"), ("password", &long)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(user_count(&app).await, 1);
}

#[tokio::test]
async fn invalid_fields_are_reported_together_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res = c.call("signup", &[("display_name", "   "), ("email", "not-an-email"), ("password", "short")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let err = res.error();
    assert_eq!(field_message(&err, "display_name"), "Enter your display name.");
    assert!(field_message(&err, "email").contains("valid email"));
    assert!(field_message(&err, "password").contains("at least 12"));
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn malformed_missing_and_oversized_input_get_clear_errors() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    // Missing field.
    let res = c.call("signup", &[("display_name", "A"), ("email", "a@example.test")]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    assert_eq!(res.error(), AppError::BadRequest);
    // Not form-encoded at all.
    let req =
        c.http().post(c.url("/api/login")).header("content-type", "application/x-www-form-urlencoded").body("%%%\u{0}");
    let res = c.raw(req).await;
    assert!(res.status.is_client_error(), "{:?}", res.status);
    // 1 MB field: refused before it is parsed, with a readable message.
    let big = "a".repeat(1024 * 1024);
    let res = c.call("signup", &[("display_name", &big), ("email", "b@example.test"), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(res.body.contains("too large"));
    for h in ["content-security-policy", "x-content-type-options", "x-frame-options", "strict-transport-security"] {
        assert!(res.headers.contains_key(h), "the 413 lacks {h}");
    }
    // Too long but under the body limit: a field error.
    let res = c
        .call("signup", &[("display_name", &"n".repeat(101)), ("email", "b@example.test"), ("password", PASSWORD)])
        .await;
    assert!(field_message(&res.error(), "display_name").contains("at most 100"));
    assert_eq!(user_count(&app).await, 0);
    // Nothing leaked any internals.
    assert!(!res.body.to_lowercase().contains("diesel") && !res.body.contains("panicked"));
}

/// Control characters and characters that disguise text are refused in every field of
/// every form, before any rule or query sees them; names and emails are stored composed.
#[tokio::test]
async fn control_and_invisible_characters_are_refused_and_text_is_composed() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let refused = |res: &common::Reply, field: &str| {
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(field_message(&res.error(), field).contains("invisible characters"), "{}", res.body);
    };
    let res = c.call("login", &[("email", "ada\0@example.test"), ("password", PASSWORD)]).await;
    refused(&res, "email");
    for name in ["Ada\u{202E}nimda", "Ad\u{200B}a", "Ada\nLovelace", "Ada\u{7}"] {
        let res =
            c.call("signup", &[("display_name", name), ("email", "ada@example.test"), ("password", PASSWORD)]).await;
        refused(&res, "display_name");
    }
    assert_eq!(user_count(&app).await, 0, "nothing written");
    // Without JavaScript: back to the form, with the message, the bad value not echoed.
    let res = c
        .post_form(
            "signup",
            "/signup",
            &[("display_name", "Ad\u{2066}a"), ("email", "a@example.test"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status, StatusCode::FOUND);
    let page = c.get("/signup").await;
    assert!(page.body.contains("invisible characters"), "{}", page.body);
    assert!(!page.body.contains('\u{2066}'));
    // Decomposed input is stored composed, and signs in however it is typed.
    let (decomposed, composed) = ("Zoe\u{308}", "Zo\u{eb}");
    let email = format!("{decomposed}@example.test");
    let res = c.call("signup", &[("display_name", decomposed), ("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = common::finish_sign_up(&app, &mut c, &format!("{composed}@example.test"), PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let mut conn = app.db.conn().await;
    let (name, stored): (String, String) =
        users::table.select((users::display_name, users::email_normalized)).first(&mut conn).await.unwrap();
    assert_eq!(name, composed);
    assert_eq!(stored, format!("{}@example.test", composed.to_lowercase()));
    let res =
        app.client().call("login", &[("email", &format!("{composed}@example.test")), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    // Sixteen wrong tries on one account: throttling (tested below) would step in.
    let app = TestApp::spawn_with(common::Options {
        sign_in_throttle: fluxi_core::accounts::SignInThrottle { max_failures: 1000, ..Default::default() },
        ..Default::default()
    })
    .await;
    let (_, email) = app.signed_up("Known").await;
    let mut c = app.client();
    let wrong = c.call("login", &[("email", &email), ("password", "not the right password")]).await;
    let unknown = c.call("login", &[("email", "nobody@example.test"), ("password", "not the right password")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.error(), AppError::InvalidCredentials);
    assert!(c.session_cookie.is_none());

    // Similar timing: both paths run a full Argon2 verification. Medians of a few runs,
    // compared as a ratio so the machine's speed does not matter.
    async fn median(c: &mut common::Client, email: &str) -> f64 {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = std::time::Instant::now();
            c.call("login", &[("email", email), ("password", "not the right password")]).await;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        times[3]
    }
    let known = median(&mut c, &email).await;
    let unknown = median(&mut c, "nobody@example.test").await;
    let ratio = unknown / known;
    assert!((0.5..2.0).contains(&ratio), "unknown-email sign-in took {unknown:.4}s vs wrong password {known:.4}s");
}

#[tokio::test]
async fn sign_in_is_case_insensitive_on_email_and_honours_safe_next() {
    let app = TestApp::spawn().await;
    let (_, email) = app.signed_up("Next").await;
    let mut c = app.client();
    let res = c
        .call(
            "login",
            &[("email", &format!(" {} ", email.to_uppercase())), ("password", PASSWORD), ("next", "/account?x=1")],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/account?x=1"));
    for evil in ["https://evil.example/", "//evil.example/x", "/\\evil.example"] {
        let mut c = app.client();
        let res = c.call("login", &[("email", &email), ("password", PASSWORD), ("next", evil)]).await;
        assert_eq!(res.location(), Some("/account"), "{evil}");
    }
}

#[tokio::test]
async fn sign_out_deletes_the_server_side_session() {
    let app = TestApp::spawn().await;
    let (mut c, _) = app.signed_up("Leaver").await;
    let old_cookie = c.session_cookie.clone().unwrap();
    let res = c.call("logout", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.location(), Some("/login"));
    // The removal cookie has what a browser needs to replace a `__Host-` cookie.
    let removal = res.set_cookies().into_iter().find(|v| v.starts_with(common::COOKIE_NAME)).expect("a removal");
    let lower = removal.to_ascii_lowercase();
    for attr in ["; secure", "; path=/", "max-age=0"] {
        assert!(lower.contains(attr), "{removal} lacks {attr}");
    }
    let mut conn = app.db.conn().await;
    let n: i64 = fluxi_core::schema::sessions::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(n, 0, "the session row must be gone");
    // Replaying the old cookie gets a signed-out visitor.
    let mut replay = app.client();
    replay.session_cookie = Some(old_cookie);
    let page = replay.get("/account").await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(page.location(), Some("/login?next=%2Faccount"));
}

#[tokio::test]
async fn signed_out_account_visit_redirects_to_login() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res = c.get("/account").await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(res.location(), Some("/login?next=%2Faccount"));
}

#[tokio::test]
async fn plain_form_posts_redirect_and_show_errors_once() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res = c
        .post_form("signup", "/signup", &[("display_name", "Form User"), ("email", "bad"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status, StatusCode::FOUND);
    // Back to the form's page.
    assert!(res.location().unwrap().starts_with(&format!("{}/signup", app.base)), "{:?}", res.location());
    let page = c.get("/signup").await;
    assert!(page.body.contains("Enter a valid email address"), "{}", page.body);
    assert!(page.body.contains("value=\"Form User\""), "typed values are kept");
    assert!(!page.body.contains(PASSWORD), "passwords are never echoed back");
    let again = c.get("/signup").await;
    assert!(!again.body.contains("Enter a valid email address"), "a flash shows once");

    let ok = c
        .post_form(
            "signup",
            "/signup",
            &[("display_name", "Form User"), ("email", "form@example.test"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::FOUND);
    assert_eq!(ok.location(), Some("/signup?sent=1"));
    assert!(c.get("/signup?sent=1").await.body.contains("Check your email"));
    // The link's page works without JavaScript too, wrong password included.
    let token = common::sign_up_token(&app, "form@example.test", 0).await;
    let page = format!("/confirm-sign-up/{token}");
    let res = c.post_form("confirm_sign_up", &page, &[("token", &token), ("password", "not the one chosen")]).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert!(c.get(&page).await.body.contains("not the password you chose"));
    let res = c.post_form("confirm_sign_up", &page, &[("token", &token), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/account"));
    assert_eq!(c.get("/account").await.status, StatusCode::OK);
}

/// A flash keeps only what its page shows: not the `next` address of a sign-in (it can
/// carry an invitation link's token), and nothing at all of forms whose pages show none.
/// It travels in a signed cookie, so a visitor without a session costs no database row.
#[tokio::test]
async fn flashes_keep_only_what_their_page_shows() {
    use fluxi_core::schema::sessions;
    let app = TestApp::spawn().await;
    let token = "ab".repeat(32);
    let login_page = format!("/login?next=%2Finvite%2F{token}");
    let mut c = app.client();
    let form =
        [("email", "nobody@example.test"), ("password", "not the password 1"), ("next", &format!("/invite/{token}"))];
    for _ in 0..3 {
        let res = c.post_form("login", &login_page, &form).await;
        assert_eq!(res.status, StatusCode::FOUND);
    }
    let rows: i64 = sessions::table.count().get_result(&mut app.db.conn().await).await.unwrap();
    assert_eq!(rows, 0, "failed sign-ins without a session write no session");
    let cookie = c.flash_cookie.clone().expect("the flash cookie");
    let payload = String::from_utf8(hex::decode(cookie.split('.').next().unwrap()).unwrap()).unwrap();
    assert!(payload.contains("nobody@example.test"), "the typed email is kept: {payload}");
    assert!(!payload.contains(&token) && !payload.contains("not the password"), "{payload}");
    // The page still knows where to go next: from its own address.
    let page = c.get(&login_page).await;
    assert!(page.body.contains("Incorrect email or password"), "{}", page.body);
    assert!(page.body.contains(&format!("value=\"/invite/{token}\"")), "{}", page.body);
    assert!(c.flash_cookie.is_none(), "the page took the flash");
    // A flash we did not sign shows nothing.
    c.flash_cookie = Some(format!("{}.{}", hex::encode(payload.replace("Incorrect", "Forged")), "00".repeat(32)));
    assert!(!c.get(&login_page).await.body.contains("Forged"));

    // A signed-in person's failed note without JavaScript: nothing of it is kept.
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let secret = "x".repeat(201);
    let res = owner
        .client
        .post_form("create_note", &format!("/w/{slug}"), &[("slug", &slug), ("title", &secret), ("body", "")])
        .await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert!(owner.client.flash_cookie.is_none(), "no flash for a form whose page shows none");
    let mut conn = app.db.conn().await;
    let stored: Vec<serde_json::Value> = sessions::table.select(sessions::data).load(&mut conn).await.unwrap();
    assert!(!serde_json::to_string(&stored).unwrap().contains(&secret));
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let req = c
        .http()
        .post(c.url("/api/signup"))
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::encode(&[("display_name", "X"), ("email", "x@example.test"), ("password", PASSWORD)]));
    assert_eq!(c.raw(req).await.status, StatusCode::FORBIDDEN);
    let req = c
        .http()
        .post(c.url("/api/signup"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::encode(&[("display_name", "X"), ("email", "x@example.test"), ("password", PASSWORD)]));
    assert_eq!(c.raw(req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(c.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(c.get("/no/such/page").await.status, StatusCode::NOT_FOUND);
}

const BLOCKED: &str = "Too many wrong passwords for this account. Try again in 15 minutes.";

#[tokio::test]
async fn repeated_failed_sign_ins_block_the_account_for_a_while() {
    use fluxi_core::schema::sign_in_failures;
    let app = TestApp::spawn().await;
    let (_, email) = app.signed_up("Target").await;
    let (_, bystander) = app.signed_up("Bystander").await;
    let mut attacker = app.client();
    for i in 0..5 {
        let r = attacker.call("login", &[("email", &email), ("password", "a guess that is wrong")]).await;
        assert_eq!(r.error(), AppError::InvalidCredentials, "try {i}");
    }
    // Now even the right password is refused (without being checked), with a clear answer;
    // writing the email differently does not get around it.
    let mut owner = app.client();
    for spelling in [email.clone(), format!("  {}", email.to_uppercase())] {
        let r = owner.call("login", &[("email", &spelling), ("password", PASSWORD)]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        assert_eq!(common::too_many_message(&r.error()).as_deref(), Some(BLOCKED));
        assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("900"));
        assert!(owner.session_cookie.is_none());
    }
    // Without JavaScript the sign-in page shows the same message.
    let mut plain = app.client();
    plain.post_form("login", "/login", &[("email", &email), ("password", PASSWORD)]).await;
    assert!(plain.get("/login").await.body.contains(BLOCKED));
    // Other accounts are not affected.
    let r = app.client().call("login", &[("email", &bystander), ("password", PASSWORD)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An email without an account is throttled alike: the answers do not tell them apart.
    for _ in 0..5 {
        attacker.call("login", &[("email", "nobody@example.test"), ("password", "a guess that is wrong")]).await;
    }
    let r = attacker.call("login", &[("email", "nobody@example.test"), ("password", "a guess that is wrong")]).await;
    assert_eq!((r.status, common::too_many_message(&r.error())), (StatusCode::TOO_MANY_REQUESTS, Some(BLOCKED.into())));
    // The counts are stored under keyed pseudonyms: never the email or address, nor a plain
    // hash of them that anyone could recompute from a list of candidates.
    let mut conn = app.db.conn().await;
    let keys: Vec<Vec<u8>> = sign_in_failures::table.select(sign_in_failures::key).load(&mut conn).await.unwrap();
    // The target signed up from this network, so its failures here count for (account,
    // network); the unknown email's count for everywhere unfamiliar and for this network;
    // and the network's own.
    assert_eq!(keys.len(), 4, "one count for the target, two for the unknown email, and the network's");
    let normalized = fluxi_core::accounts::normalize_email(&email);
    assert!(keys.contains(&fluxi_core::accounts::client_sign_in_key(app.state.pseudonyms.current(), "127.0.0.1")));
    for key in &keys {
        let text = String::from_utf8_lossy(key);
        assert!(!text.contains("example.test") && !text.contains("127.0.0.1"));
        for plain in
            [format!("sign-in:{normalized}"), "sign-in:nobody@example.test".into(), "sign-in-client:127.0.0.1".into()]
        {
            assert_ne!(
                key,
                &<sha2::Sha256 as sha2::Digest>::digest(plain.as_bytes()).to_vec(),
                "a plain hash of {plain}"
            );
        }
    }
    // When the block is over the right password works again, and it starts the count over:
    // four more failures do not block.
    app.clock.advance(time::Duration::minutes(15) + time::Duration::seconds(1));
    let r = owner.call("login", &[("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for _ in 0..4 {
        let r = attacker.call("login", &[("email", &email), ("password", "a guess that is wrong")]).await;
        assert_eq!(r.error(), AppError::InvalidCredentials);
    }
    let r = app.client().call("login", &[("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// Failures of a burst are all counted (the count's row is locked while it is updated).
#[tokio::test]
async fn concurrent_failed_sign_ins_are_all_counted() {
    use fluxi_core::accounts::{record_failed_sign_in, sign_in_key, SignInThrottle};
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let throttle = SignInThrottle { max_failures: 1000, ..Default::default() };
    let key = sign_in_key(app.state.pseudonyms.current(), "burst@example.test");
    let now = fluxi_core::clock::Clock::now(&app.clock);
    let tries: Vec<_> = (0..40)
        .map(|_| {
            let (pool, key) = (app.db.pool.clone(), key.clone());
            tokio::spawn(async move {
                let mut conn = pool.get().await.unwrap();
                record_failed_sign_in(&mut conn, &throttle, &key, now).await.unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tries {
        seen.push(t.await.unwrap().failures);
    }
    seen.sort();
    assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "each failure saw its own count");
}

/// Sends `n` requests at once, each from its own client; returns their statuses.
async fn burst(
    n: usize,
    request: impl Fn(common::Client) -> reqwest::RequestBuilder,
    app: &TestApp,
) -> Vec<StatusCode> {
    let tries: Vec<_> = (0..n)
        .map(|_| {
            let mut c = app.client();
            let req = request(app.client());
            tokio::spawn(async move { c.raw(req).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// Every attempt is counted before its password is verified, so a burst gets no more
/// verifications than the limit, however many arrive at once: per account, per network,
/// and for step-up.
#[tokio::test]
async fn parallel_wrong_passwords_get_no_more_verifications_than_the_limits() {
    let app = TestApp::spawn_with(per_network(50, 1)).await;
    let (_, email) = app.signed_up("Targeted").await;
    let hasher = &app.state.hasher;

    let before = hasher.verifications();
    let statuses = burst(200, |c| login_via_proxy(&c, "203.0.113.20", &email, "a wrong guess"), &app).await;
    let verified = hasher.verifications() - before;
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    let wrong = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert!(verified <= 5, "{verified} verifications for one account");
    assert_eq!((wrong, refused), (5, 195), "{statuses:?}");

    // Unknown emails from one network: at most the network's 50.
    let before = hasher.verifications();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let statuses = burst(
        200,
        |c| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            login_via_proxy(&c, "198.51.100.30", &format!("sprayed{i}@example.test"), "Summer2026!")
        },
        &app,
    )
    .await;
    let verified = hasher.verifications() - before;
    assert!(verified <= 50, "{verified} verifications for one network");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count() as u64, verified);

    // Step-up: an owner's own session, 200 wrong passwords at once.
    let (mut owner, _) = app.signed_up("Deleter").await;
    let res = owner.call("create_workspace", &[("name", "Kept")]).await;
    let slug = res.location().unwrap().strip_prefix("/w/").unwrap().to_string();
    let cookie = owner.session_cookie.clone();
    let before = hasher.verifications();
    let statuses = burst(
        200,
        |c| {
            c.http()
                .post(c.url("/api/delete_workspace"))
                .header(reqwest::header::ACCEPT, "application/json")
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(reqwest::header::COOKIE, format!("{}={}", common::COOKIE_NAME, cookie.clone().unwrap()))
                .body(common::encode(&[("slug", &slug), ("password", "a wrong guess")]))
        },
        &app,
    )
    .await;
    let verified = hasher.verifications() - before;
    assert!(verified <= 5, "{verified} step-up verifications");
    assert!(statuses.iter().all(|s| *s != StatusCode::OK && !s.is_server_error()), "{statuses:?}");
}

/// Right passwords arriving together while successes clear the count: every one signs
/// in (a count row deleted by one success while another reads it is no internal error).
#[tokio::test]
async fn concurrent_right_passwords_all_sign_in() {
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let (_, email) = app.signed_up("Busy").await;
    for _ in 0..15 {
        let statuses = burst(4, |c| login_via_proxy(&c, "203.0.113.60", &email, PASSWORD), &app).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    }
}

/// The cleanup removes counts whose series is over, but keeps a block in force.
#[tokio::test]
async fn the_cleanup_keeps_blocks_in_force_and_drops_finished_series() {
    use fluxi_core::accounts::{delete_stale_sign_in_failures, record_failed_sign_in, sign_in_key, SignInThrottle};
    let app = TestApp::spawn().await;
    let throttle = SignInThrottle {
        max_failures: 2,
        window: time::Duration::minutes(15),
        block: time::Duration::minutes(30),
        escalating: false,
    };
    let now = fluxi_core::clock::Clock::now(&app.clock);
    let mut conn = app.db.conn().await;
    let (blocked, single) = (
        sign_in_key(app.state.pseudonyms.current(), "blocked@example.test"),
        sign_in_key(app.state.pseudonyms.current(), "single@example.test"),
    );
    for _ in 0..2 {
        record_failed_sign_in(&mut conn, &throttle, &blocked, now).await.unwrap();
    }
    record_failed_sign_in(&mut conn, &throttle, &single, now).await.unwrap();
    assert_eq!(delete_stale_sign_in_failures(&mut conn, &throttle, now).await.unwrap(), 0);
    let minutes = |m| now + time::Duration::minutes(m);
    assert_eq!(
        delete_stale_sign_in_failures(&mut conn, &throttle, minutes(16)).await.unwrap(),
        1,
        "the finished series"
    );
    assert_eq!(
        delete_stale_sign_in_failures(&mut conn, &throttle, minutes(29)).await.unwrap(),
        0,
        "the block is in force"
    );
    assert_eq!(delete_stale_sign_in_failures(&mut conn, &throttle, minutes(31)).await.unwrap(), 1);
}

const NETWORK_BLOCKED: &str = "Too many failed sign-ins from your network. Try again in 15 minutes.";

/// A JSON sign-in as relayed by our reverse proxy, which wrote `forwarded_for`.
fn login_via_proxy(c: &common::Client, forwarded_for: &str, email: &str, password: &str) -> reqwest::RequestBuilder {
    c.http()
        .post(c.url("/api/login"))
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-for", forwarded_for)
        .body(common::encode(&[("email", email), ("password", password)]))
}

fn per_network(max_failures: i32, trusted_proxies: usize) -> common::Options {
    common::Options {
        client_sign_in_throttle: fluxi_core::accounts::SignInThrottle { max_failures, ..Default::default() },
        trusted_proxies,
        ..Default::default()
    }
}

/// Password spraying: one common password tried on many accounts never reaches any
/// account's limit, so failures are also counted per client network, across accounts.
#[tokio::test]
async fn failed_sign_ins_across_accounts_block_the_network_they_come_from() {
    let app = TestApp::spawn_with(per_network(6, 1)).await;
    let (_, email) = app.signed_up("Sprayed").await;
    let mut sprayer = app.client();
    for i in 0..6 {
        let req = login_via_proxy(&sprayer, "203.0.113.7", &format!("user{i}@example.test"), "Summer2026!");
        assert_eq!(sprayer.raw(req).await.error(), AppError::InvalidCredentials, "try {i}");
    }
    // Now sign-ins from that network are refused, the right password included; so is a
    // request that puts made-up addresses in front of the one our proxy wrote.
    let mut person = app.client();
    for forwarded in ["203.0.113.7", "198.51.100.1, 203.0.113.7"] {
        let r = person.raw(login_via_proxy(&person, forwarded, &email, PASSWORD)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{forwarded}: {}", r.body);
        assert_eq!(common::too_many_message(&r.error()).as_deref(), Some(NETWORK_BLOCKED));
        assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("900"));
        assert!(person.session_cookie.is_none());
    }
    // The account itself is not blocked: from another network it signs in.
    let r = person.raw(login_via_proxy(&person, "203.0.113.8", &email, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // And the block ends.
    app.clock.advance(time::Duration::minutes(15) + time::Duration::seconds(1));
    let mut later = app.client();
    let r = later.raw(login_via_proxy(&later, "203.0.113.7", &email, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// A success clears the account's count but not the network's: otherwise a sprayer could
/// sign in to an account of their own between tries and never be blocked.
#[tokio::test]
async fn signing_in_does_not_forgive_a_networks_failures() {
    let app = TestApp::spawn_with(per_network(6, 1)).await;
    let (_, own) = app.signed_up("Sprayer").await;
    let mut c = app.client();
    for i in 0..5 {
        let req = login_via_proxy(&c, "203.0.113.9", &format!("user{i}@example.test"), "Summer2026!");
        assert_eq!(c.raw(req).await.error(), AppError::InvalidCredentials);
    }
    assert_eq!(c.raw(login_via_proxy(&c, "203.0.113.9", &own, PASSWORD)).await.status, StatusCode::OK);
    let mut other = app.client();
    let req = login_via_proxy(&other, "203.0.113.9", "user5@example.test", "Summer2026!");
    assert_eq!(other.raw(req).await.error(), AppError::InvalidCredentials, "the sixth failure");
    let r = other.raw(login_via_proxy(&other, "203.0.113.9", &own, PASSWORD)).await;
    assert_eq!(common::too_many_message(&r.error()).as_deref(), Some(NETWORK_BLOCKED));
    // The browser that signed in before still does: the block stops the spraying, not the
    // people who sign in from that network on browsers of their own.
    let r = c.raw(login_via_proxy(&c, "203.0.113.9", &own, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// With no trusted proxy configured (the default) `X-Forwarded-For` is whatever the
/// client wants it to be, so it is ignored: changing it does not make a new client.
#[tokio::test]
async fn without_trusted_proxies_forwarded_addresses_are_ignored() {
    let app = TestApp::spawn_with(per_network(3, 0)).await;
    let (_, email) = app.signed_up("Direct").await;
    let mut c = app.client();
    for i in 0..3 {
        let req = login_via_proxy(&c, &format!("203.0.113.{i}"), &format!("user{i}@example.test"), "Summer2026!");
        assert_eq!(c.raw(req).await.error(), AppError::InvalidCredentials);
    }
    let r = c.raw(login_via_proxy(&c, "203.0.113.200", &email, PASSWORD)).await;
    assert_eq!(common::too_many_message(&r.error()).as_deref(), Some(NETWORK_BLOCKED));
    // Without JavaScript the sign-in page shows the same message.
    let mut plain = app.client();
    plain.post_form("login", "/login", &[("email", &email), ("password", PASSWORD)]).await;
    assert!(plain.get("/login").await.body.contains(NETWORK_BLOCKED));
    assert_ne!(plain.get("/account").await.status, StatusCode::OK, "not signed in");
}

/// Accounts are free, each costs a password hash: sign-ups are limited per client
/// network and overall, counted atomically in the database.
#[tokio::test]
async fn sign_ups_are_limited_per_network_and_overall() {
    use fluxi_core::rate_limit::RateLimit;
    let app = TestApp::spawn_with(common::Options {
        trusted_proxies: 1,
        sign_up_limits: fluxi_core::accounts::SignUpLimits {
            per_network: RateLimit::per_hour(3),
            overall: RateLimit::per_hour(5),
        },
        ..Default::default()
    })
    .await;
    let sign_up = |c: &common::Client, network: &str, email: &str| {
        c.http()
            .post(c.url("/api/signup"))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", network)
            .body(common::encode(&[("display_name", "New"), ("email", email), ("password", PASSWORD)]))
    };
    // Three at once from one network: all three pass, a fourth does not.
    let tries: Vec<_> = (0..4)
        .map(|i| {
            let mut c = app.client();
            let req = sign_up(&c, "203.0.113.50", &format!("n{i}@example.test"));
            tokio::spawn(async move { c.raw(req).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        let r = t.await.unwrap();
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(common::too_many_message(&r.error()).unwrap().contains("from your network"), "{}", r.body);
            assert!(r.headers.contains_key("retry-after"));
        }
        statuses.push(r.status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(pending_sign_ups(&app, 3).await, 3);
    // Another network may; then the overall limit (5) stops everyone.
    let mut c = app.client();
    for (i, network) in ["198.51.100.1", "198.51.100.2"].iter().enumerate() {
        let r = c.raw(sign_up(&c, network, &format!("o{i}@example.test"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = c.raw(sign_up(&c, "198.51.100.3", "late@example.test")).await;
    assert!(common::too_many_message(&r.error()).unwrap().contains("paused"), "{}", r.body);
    assert_eq!(pending_sign_ups(&app, 5).await, 5);
    // An hour later, sign-ups open again.
    app.clock.advance(time::Duration::hours(1));
    let r = c.raw(sign_up(&c, "198.51.100.3", "later@example.test")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// No lockout weapon: failures from elsewhere never lock the owner out of a browser or
/// network they have signed in from before (not even a spraying neighbour behind the
/// office's NAT); from places the account does not know they slow down, never shut out.
#[tokio::test]
async fn failures_from_elsewhere_do_not_lock_the_owner_out() {
    let app = TestApp::spawn_with(per_network(50, 1)).await;
    let (_, email) = app.signed_up("Owner").await;
    let office = "203.0.113.10";
    let sign_in = |c: &common::Client, network: &str, password: &str| login_via_proxy(c, network, &email, password);
    // The owner signs in at the office with the laptop's browser, which keeps a device cookie.
    let mut laptop = app.client();
    assert_eq!(laptop.raw(sign_in(&laptop, office, PASSWORD)).await.status, StatusCode::OK);
    let device = laptop.device_cookie.clone().expect("a device cookie");
    let set = laptop.raw(sign_in(&laptop, office, PASSWORD)).await.set_cookies();
    let cookie = set.iter().find(|c| c.starts_with(fluxi_core::accounts::familiar::DEVICE_COOKIE)).unwrap();
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Lax", "; Path=/", "; Max-Age=34560000"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }

    // An attacker guesses from forty networks: ten guesses are checked, then the account
    // is slowed down for every place it does not know.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let mut attacker = app.client();
        statuses.push(attacker.raw(sign_in(&attacker, &format!("198.51.{i}.9"), "a wrong guess")).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 30, "{statuses:?}");

    // The laptop gets in from anywhere; another browser at the office gets in too.
    let mut travelling = app.client();
    travelling.device_cookie = Some(device.clone());
    assert_eq!(travelling.raw(sign_in(&travelling, "192.0.2.77", PASSWORD)).await.status, StatusCode::OK);
    let mut desktop = app.client();
    assert_eq!(desktop.raw(sign_in(&desktop, office, PASSWORD)).await.status, StatusCode::OK);
    // A forged or altered device cookie is a stranger's.
    let mut forged = app.client();
    let last = if device.ends_with('0') { '1' } else { '0' };
    forged.device_cookie = Some(format!("{}{last}", &device[..device.len() - 1]));
    let r = forged.raw(sign_in(&forged, "192.0.2.90", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // A new browser on a new network waits a minute — slowed, not locked out — then the
    // right password works.
    let mut cafe = app.client();
    let r = cafe.raw(sign_in(&cafe, "192.0.2.200", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let wait: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    app.clock.advance(time::Duration::seconds(61));
    assert_eq!(cafe.raw(sign_in(&cafe, "192.0.2.200", PASSWORD)).await.status, StatusCode::OK);
    // The slowing lasts its whole day (the owner's success elsewhere does not reset it, and
    // the cleanup job keeps it): twenty minutes on, one guess goes through, the next waits.
    app.clock.advance(time::Duration::minutes(20));
    {
        let mut conn = app.db.conn().await;
        let now = fluxi_core::clock::Clock::now(&app.clock);
        fluxi_core::accounts::delete_stale_sign_in_failures(&mut conn, &app.state.sign_in_counts_kept(), now)
            .await
            .unwrap();
    }
    let mut attacker = app.client();
    assert_eq!(
        attacker.raw(sign_in(&attacker, "198.51.200.9", "another guess")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut attacker = app.client();
    let r = attacker.raw(sign_in(&attacker, "198.51.201.9", "yet another guess")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);

    // Someone behind the office's NAT sprays other accounts until the network is blocked:
    // browsers new to the network are refused, the owner's familiar ones are not.
    for i in 0..50 {
        let mut sprayer = app.client();
        let req = login_via_proxy(&sprayer, office, &format!("colleague{i}@example.test"), "Summer2026!");
        sprayer.raw(req).await;
    }
    // (Also a new browser of this account: were it let in, its 401s would tell a sprayer
    // on that network which accounts exist.)
    let (_, newcomer) = app.signed_up("Newcomer").await;
    for (mut stranger, email) in [(app.client(), newcomer.as_str()), (app.client(), email.as_str())] {
        let r = stranger.raw(login_via_proxy(&stranger, office, email, PASSWORD)).await;
        assert_eq!(common::too_many_message(&r.error()).as_deref(), Some(NETWORK_BLOCKED), "{}", r.body);
    }
    assert_eq!(desktop.raw(sign_in(&desktop, office, PASSWORD)).await.status, StatusCode::OK);
    assert_eq!(laptop.raw(sign_in(&laptop, office, PASSWORD)).await.status, StatusCode::OK);
}
