//! Two-factor authentication over HTTP and against the database: enrolment, the second
//! sign-in step, replay (also concurrent), recovery codes, step-up with a code, sealed
//! secrets (bound to their row, rotated to a new key) and what never appears in clear.
//! Codes are computed with totp-rs from the text key the page shows, as an app would.

use std::sync::Arc;

use crate::common::{recorded, Client, Person, TestApp, PASSWORD};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::audit::{Action, Actor, Audit, Origin};
use fluxi_core::clock::{At, Clock};
use fluxi_core::mfa::{self, MfaError};
use fluxi_core::secrets::{EncryptionKey, Keyring};
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

/// What an authenticator app computes from the text key.
pub(crate) fn app_code(text_key: &str, at: OffsetDateTime) -> String {
    let secret = totp_rs::Secret::try_from_base32(text_key.replace(' ', "")).expect("base 32 key");
    let totp = totp_rs::Builder::new().with_secret(secret).build_noncompliant();
    totp.generate(at.unix_timestamp() as u64).to_string()
}

fn security(reply: &crate::common::Reply) -> serde_json::Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// Starts the set-up through the page's server functions; returns the text key.
async fn start_setup(client: &mut Client) -> String {
    let res = client.call("start_totp_setup", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let page = security(&client.call("security_page", &[]).await);
    let pending = &page["pending"];
    assert!(pending["qr_svg"].as_str().unwrap().starts_with("<svg role=\"img\""));
    pending["text_key"].as_str().unwrap().to_string()
}

/// A person with two-factor authentication on; returns the text key and the recovery codes.
pub(crate) async fn enrolled(app: &TestApp, name: &str) -> (Person, String, Vec<String>) {
    let mut person = app.person(name).await;
    let (key, codes) = enrol(app, &mut person.client).await;
    (person, key, codes)
}

/// Turns two-factor authentication on for the person signed in to `client`; returns the
/// text key and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, client: &mut Client) -> (String, Vec<String>) {
    let key = start_setup(client).await;
    let code = app_code(&key, app.clock.now());
    let res = client.call("confirm_totp_setup", &[("code", &code), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let page = security(&client.call("security_page", &[]).await);
    assert_eq!(page["mfa_enabled"], true);
    let codes: Vec<String> =
        page["fresh_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    // Past the step-up window the confirmation opened (so later step-ups ask again), and
    // past the step that confirmed enrolment (used up: the next sign-in needs a later code).
    app.clock.advance(Duration::minutes(10) + Duration::seconds(30));
    (key, codes)
}

/// Signs in with the password; returns the client, left at the second step.
async fn password_step(app: &TestApp, email: &str) -> Client {
    let mut client = app.client();
    let res = client.call("login", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/login/mfa"));
    client
}

async fn signed_in(client: &mut Client) -> bool {
    let res = client.call("current_user", &[]).await;
    res.body != "null"
}

#[tokio::test]
async fn enrolment_then_sign_in_with_a_code_that_works_once() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let key = start_setup(&mut ada.client).await;
    // A wrong code says so and keeps the set-up pending.
    // Confirming needs the password too (a stolen session cannot bind its own app).
    let res =
        ada.client.call("confirm_totp_setup", &[("code", &app_code(&key, app.clock.now())), ("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    let res = ada.client.call("confirm_totp_setup", &[("code", "000000"), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.error().message_for("code").unwrap().contains("not right"), "{}", res.body);
    assert!(security(&ada.client.call("security_page", &[]).await)["pending"].is_object());
    let res = ada.client.call("confirm_totp_setup", &[("code", "12 34"), ("password", PASSWORD)]).await;
    assert!(res.error().message_for("code").unwrap().contains("6-digit"), "{}", res.body);
    // The right code (spaces and dashes allowed) turns it on and shows ten codes once.
    let code = app_code(&key, app.clock.now());
    let spaced = format!("{}-{}", &code[..3], &code[3..]);
    let res = ada.client.call("confirm_totp_setup", &[("code", &spaced), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let page = security(&ada.client.call("security_page", &[]).await);
    assert_eq!(page["mfa_enabled"], true);
    assert!(page["pending"].is_null(), "the secret is not shown once enabled");
    assert_eq!(page["fresh_codes"].as_array().unwrap().len(), 10);
    assert_eq!(page["recovery_codes_left"], 10);
    let again = security(&ada.client.call("security_page", &[]).await);
    assert!(again["fresh_codes"].is_null(), "shown once");
    assert_eq!(recorded(&app, Action::MfaEnabled).await.len(), 1);

    // The password alone no longer signs in.
    let mut browser = password_step(&app, &ada.user.email).await;
    assert!(!signed_in(&mut browser).await);
    let res = browser.call("list_workspaces", &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "nothing but the second step: {}", res.body);
    // The code that confirmed enrolment cannot sign in.
    let res = browser.call("verify_sign_in", &[("code", &code)]).await;
    assert!(res.error().message_for("code").unwrap().contains("already used"), "{}", res.body);
    assert_eq!(recorded(&app, Action::MfaCodeReplayed).await.len(), 1);
    // A wrong code: refused and recorded.
    let res = browser.call("verify_sign_in", &[("code", "000000")]).await;
    assert!(res.error().message_for("code").unwrap().contains("not right"), "{}", res.body);
    assert_eq!(recorded(&app, Action::MfaCodeFailed).await.len(), 2, "one at set-up, one now");
    // The next step's code signs in, cycling the session id; `next` survives.
    app.clock.advance(Duration::seconds(30));
    let mut browser = app.client();
    let res = browser
        .call("login", &[("email", &ada.user.email), ("password", PASSWORD), ("next", "/account/activity")])
        .await;
    assert_eq!(res.location(), Some("/login/mfa"));
    let pending_cookie = browser.session_cookie.clone();
    let next_code = app_code(&key, app.clock.now());
    let res = browser.call("verify_sign_in", &[("code", &next_code)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/account/activity"));
    assert_ne!(browser.session_cookie, pending_cookie, "a new session id");
    assert!(signed_in(&mut browser).await);
    // The sign-in's event records the accepted code; the two are one fact.
    let with_app = recorded(&app, Action::SignInSucceeded).await;
    let with_app: Vec<_> = with_app.iter().filter(|e| e.detail["method"] == "authenticator_app").collect();
    assert_eq!(with_app.len(), 1);
    assert!(recorded(&app, Action::MfaCodeAccepted).await.is_empty());
    // The same code again, on another browser: refused.
    let mut other = password_step(&app, &ada.user.email).await;
    let res = other.call("verify_sign_in", &[("code", &next_code)]).await;
    assert!(res.error().message_for("code").unwrap().contains("already used"), "{}", res.body);
}

#[tokio::test]
async fn codes_are_accepted_one_step_either_side_and_each_step_once() {
    let app = TestApp::spawn().await;
    let (ada, key, _) = enrolled(&app, "Ada").await;
    let mut conn = app.db.conn().await;
    let base = app.clock.now() + Duration::minutes(10);
    let keyring = &app.state.keyring;
    let origin = Origin::NONE;
    let check = |offset: i64| {
        let code = app_code(&key, base + Duration::seconds(30 * offset));
        (code, base)
    };
    for (offset, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
        let (code, now) = check(offset);
        let clock = At(now);
        let actor = Actor::User { id: ada.user.id, email_normalized: &ada.user.email_normalized };
        let audit = Audit { keys: None, clock: &clock, origin: &origin, actor, repeats: None };
        let result = mfa::verify_code(&mut conn, &audit, keyring, ada.user.id, &code).await;
        assert_eq!(result.is_ok(), accepted, "offset {offset}: {result:?}");
    }
    // Once +1 was accepted, the older steps are spent.
    let (code, now) = check(0);
    let clock = At(now);
    let actor = Actor::User { id: ada.user.id, email_normalized: &ada.user.email_normalized };
    let audit = Audit { keys: None, clock: &clock, origin: &origin, actor, repeats: None };
    assert!(matches!(
        mfa::verify_code(&mut conn, &audit, keyring, ada.user.id, &code).await,
        Err(MfaError::CodeAlreadyUsed)
    ));
}

#[tokio::test]
async fn one_code_sent_at_once_from_many_connections_succeeds_exactly_once() {
    let app = TestApp::spawn().await;
    let (ada, key, codes) = enrolled(&app, "Ada").await;
    let now = app.clock.now();
    let code = app_code(&key, now);
    let attempts = (0..8).map(|_| {
        let (pool, keyring, code, user) =
            (app.db.pool.clone(), app.state.keyring.clone(), code.clone(), ada.user.clone());
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            let clock = At(now);
            let actor = Actor::User { id: user.id, email_normalized: &user.email_normalized };
            let audit = Audit { keys: None, clock: &clock, origin: &Origin::NONE, actor, repeats: None };
            mfa::verify_code(&mut conn, &audit, &keyring, user.id, &code).await.is_ok()
        })
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    assert_eq!(recorded(&app, Action::MfaCodeReplayed).await.len(), 7);

    // A recovery code, likewise, works once however many use it at the same time.
    let recovery = codes[0].clone();
    let attempts = (0..8).map(|_| {
        let (pool, keyring, code, user) =
            (app.db.pool.clone(), app.state.keyring.clone(), recovery.clone(), ada.user.clone());
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            let clock = At(now);
            let actor = Actor::User { id: user.id, email_normalized: &user.email_normalized };
            let audit = Audit { keys: None, clock: &clock, origin: &Origin::NONE, actor, repeats: None };
            mfa::use_recovery_code(&mut conn, &audit, &keyring, user.id, &code).await.ok()
        })
    });
    let results: Vec<Option<i64>> = futures::future::join_all(attempts).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1, "{results:?}");
    assert_eq!(results.into_iter().flatten().next(), Some(9), "nine left");
    assert_eq!(recorded(&app, Action::RecoveryCodeUsed).await.len(), 1);
}

#[tokio::test]
async fn signing_in_with_a_recovery_code_uses_it_up() {
    let app = TestApp::spawn().await;
    let (ada, _, codes) = enrolled(&app, "Ada").await;
    let mut browser = password_step(&app, &ada.user.email).await;
    let res = browser.call("verify_sign_in", &[("recovery_code", "nope")]).await;
    assert!(res.error().message_for("recovery_code").unwrap().contains("10 letters"), "{}", res.body);
    // Upper case and without the dash, as people type it.
    let typed = codes[3].replace('-', "").to_uppercase();
    let res = browser.call("verify_sign_in", &[("recovery_code", &typed)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut browser).await);
    let page = security(&browser.call("security_page", &[]).await);
    assert_eq!(page["recovery_codes_left"], 9);
    let mut again = password_step(&app, &ada.user.email).await;
    let res = again.call("verify_sign_in", &[("recovery_code", &codes[3])]).await;
    assert!(res.error().message_for("recovery_code").unwrap().contains("already used"), "{}", res.body);
}

#[tokio::test]
async fn the_second_step_expires_and_allows_only_a_few_wrong_codes() {
    let app = TestApp::spawn().await;
    let (ada, key, _) = enrolled(&app, "Ada").await;
    // Expired after five minutes: back to the password.
    let mut browser = password_step(&app, &ada.user.email).await;
    app.clock.advance(Duration::minutes(5) + Duration::seconds(1));
    let res = browser.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
    assert!(res.error().to_string().contains("took too long"), "{}", res.body);
    assert!(!signed_in(&mut browser).await);
    let res = browser.call("second_step", &[]).await;
    assert!(res.body.contains("\"waiting\":false"), "{}", res.body);
    // Three wrong codes end the attempt, even with the right one next.
    let mut browser = password_step(&app, &ada.user.email).await;
    for _ in 0..2 {
        let res = browser.call("verify_sign_in", &[("code", "000000")]).await;
        assert!(res.error().message_for("code").is_some(), "{}", res.body);
    }
    let res = browser.call("verify_sign_in", &[("code", "000000")]).await;
    assert!(res.error().to_string().contains("Too many wrong codes"), "{}", res.body);
    let res = browser.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert!(res.error().to_string().contains("took too long"), "the attempt is over: {}", res.body);
    // They count in the account's series of wrong codes from unfamiliar browsers: seven
    // more make ten in a day, and then even the right code is refused there for a while.
    for wrong in [3, 3, 1] {
        let mut browser = password_step(&app, &ada.user.email).await;
        for _ in 0..wrong {
            browser.call("verify_sign_in", &[("code", "000000")]).await;
        }
    }
    let mut browser = password_step(&app, &ada.user.email).await;
    app.clock.advance(Duration::seconds(30));
    let res = browser.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    assert!(!signed_in(&mut browser).await);
}

#[tokio::test]
async fn step_ups_ask_for_a_code_and_regenerating_replaces_every_recovery_code() {
    let app = TestApp::spawn().await;
    let (mut ada, key, old_codes) = enrolled(&app, "Ada").await;
    // The password alone is not enough to turn it off.
    let res = ada.client.call("disable_two_factor", &[("password", PASSWORD)]).await;
    assert!(res.error().message_for("code").is_some(), "{}", res.body);
    let res = ada.client.call("disable_two_factor", &[("password", PASSWORD), ("code", "000000")]).await;
    assert!(res.error().message_for("code").unwrap().contains("not right"), "{}", res.body);
    assert!(!recorded(&app, Action::StepUpFailed).await.is_empty());
    // Regenerate with password and a recovery code (typed into the same field).
    let res = ada.client.call("regenerate_recovery_codes", &[("password", PASSWORD), ("code", &old_codes[0])]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let page = security(&ada.client.call("security_page", &[]).await);
    let new_codes: Vec<String> =
        page["fresh_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    assert_eq!(recorded(&app, Action::RecoveryCodesRegenerated).await.len(), 1);
    assert!(!recorded(&app, Action::StepUpSucceeded).await.is_empty());
    let mut browser = password_step(&app, &ada.user.email).await;
    let res = browser.call("verify_sign_in", &[("recovery_code", &old_codes[1])]).await;
    assert!(res.error().message_for("recovery_code").is_some(), "old codes are void: {}", res.body);
    // Turning it off with password and code: sign-in asks for the password only again.
    let code = app_code(&key, app.clock.now());
    let res = ada.client.call("disable_two_factor", &[("password", PASSWORD), ("code", &code)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(recorded(&app, Action::MfaDisabled).await.len(), 1);
    let mut browser = app.client();
    let res = browser.call("login", &[("email", &ada.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/account"));
}

#[tokio::test]
async fn sealed_secrets_are_bound_to_their_row_and_rotate_to_a_new_key() {
    let v1 = Keyring::single(key(1));
    let app = TestApp::spawn_with(crate::common::Options { keyring: v1.clone(), ..Default::default() }).await;
    let (ada, ada_key, _) = enrolled(&app, "Ada").await;
    let (bob, _, _) = enrolled(&app, "Bob").await;
    let mut conn = app.db.conn().await;
    let now = app.clock.now();
    let clock = At(now);
    let actor = Actor::User { id: bob.user.id, email_normalized: &bob.user.email_normalized };
    let audit = Audit { keys: None, clock: &clock, origin: &Origin::NONE, actor, repeats: None };
    // Ada's sealed secret copied into Bob's row does not open there.
    diesel::sql_query(
        "UPDATE mfa_totp b SET secret_sealed = a.secret_sealed, key_version = a.key_version \
         FROM mfa_totp a WHERE a.user_id = $1 AND b.user_id = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(ada.user.id)
    .bind::<diesel::sql_types::Uuid, _>(bob.user.id)
    .execute(&mut conn)
    .await
    .unwrap();
    let result = mfa::verify_code(&mut conn, &audit, &v1, bob.user.id, &app_code(&ada_key, now)).await;
    assert!(matches!(result, Err(MfaError::Sealed(_))), "{result:?}");

    // Rotation: a new key version; everything moves to it; the old key can then go.
    let v2 = Keyring::new(2, key(2), vec![(1, key(1))]);
    let before = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
    assert!(before.iter().any(|c| c.kind == "TOTP secrets" && c.key_version == 1 && c.count == 2), "{before:?}");
    let report = fluxi_core::secrets::rotate(&mut conn, &v2, 1, &fluxi_core::clock::SystemClock).await.unwrap();
    // Bob's row holds Ada's ciphertext: it does not open, and is reported.
    assert_eq!((report.resealed, report.failed), (1, 1), "{report:?}");
    let after = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
    assert!(after.iter().any(|c| c.kind == "TOTP secrets" && c.key_version == 2 && c.count == 1), "{after:?}");
    let only_v2 = Keyring::new(2, key(2), Vec::new());
    let later = At(now + Duration::seconds(60));
    let actor = Actor::User { id: ada.user.id, email_normalized: &ada.user.email_normalized };
    let audit = Audit { keys: None, clock: &later, origin: &Origin::NONE, actor, repeats: None };
    let code = app_code(&ada_key, later.now());
    mfa::verify_code(&mut conn, &audit, &only_v2, ada.user.id, &code).await.expect("opens under the new key alone");
}

fn key(n: u8) -> EncryptionKey {
    EncryptionKey::new([n; 32])
}

#[tokio::test]
async fn rotation_runs_while_people_sign_in() {
    // Secrets sealed under version 1; the server now holds version 2 (and 1, until the
    // rotation is done), as the operations guide has it.
    let v1 = Keyring::single(key(1));
    let v2 = Keyring::new(2, key(2), vec![(1, key(1))]);
    let app = TestApp::spawn_with(crate::common::Options { keyring: v2.clone(), ..Default::default() }).await;
    let mut conn = app.db.conn().await;
    let mut people = Vec::new();
    for i in 0..6 {
        let person = app.person(&format!("P{i}")).await;
        let now = app.clock.now();
        let enrolment = mfa::start_enrolment(&mut conn, &v1, now, person.user.id, &person.user.email).await.unwrap();
        let clock = At(now);
        let actor = Actor::User { id: person.user.id, email_normalized: &person.user.email_normalized };
        let audit = Audit { keys: None, clock: &clock, origin: &Origin::NONE, actor, repeats: None };
        let code = app_code(&enrolment.text_key, now);
        mfa::confirm_enrolment(&mut conn, &audit, &v1, person.user.id, &person.user.email, &code).await.unwrap();
        people.push((person, enrolment.text_key.clone()));
    }
    app.clock.advance(Duration::seconds(30));
    let before = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
    assert!(before.iter().any(|c| c.kind == "TOTP secrets" && c.key_version == 1 && c.count == 6), "{before:?}");
    let app = Arc::new(app);
    let rotation = fluxi_core::secrets::rotate(&mut conn, &v2, 2, &fluxi_core::clock::SystemClock);
    let sign_ins = futures::future::join_all(people.iter().map(|(p, key)| {
        let app = app.clone();
        async move {
            let mut browser = password_step(&app, &p.user.email).await;
            let res = browser.call("verify_sign_in", &[("code", &app_code(key, app.clock.now()))]).await;
            res.status
        }
    }));
    let (report, statuses) = tokio::join!(rotation, sign_ins);
    assert_eq!(report.unwrap().failed, 0);
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    let counts = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
    assert!(counts.iter().filter(|c| c.kind == "TOTP secrets").all(|c| c.key_version == 2), "{counts:?}");
}

#[tokio::test]
async fn no_secret_or_recovery_code_is_stored_or_shown_in_clear() {
    let app = TestApp::spawn().await;
    let (mut ada, key, codes) = enrolled(&app, "Ada").await;
    let secret = totp_rs::Secret::try_from_base32(key.replace(' ', "")).unwrap();
    let secret_hex = hex::encode(secret.as_ref());
    let mut conn = app.db.conn().await;
    #[derive(QueryableByName)]
    struct Dump {
        #[diesel(sql_type = diesel::sql_types::Text)]
        dump: String,
    }
    let mut dump = String::new();
    for table in
        ["mfa_totp", "mfa_recovery_codes", "sessions", "audit_inbox", "audit_events", "users", "sign_in_failures"]
    {
        let d: Dump =
            diesel::sql_query(format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') AS dump FROM {table} t"))
                .get_result(&mut conn)
                .await
                .unwrap();
        dump.push_str(&d.dump);
    }
    let compact_key = key.replace(' ', "");
    assert!(!dump.contains(&compact_key) && !dump.to_lowercase().contains(&compact_key.to_lowercase()));
    assert!(!dump.contains(&secret_hex), "the raw secret bytes");
    for code in &codes {
        assert!(!dump.contains(code.as_str()) && !dump.contains(&code.replace('-', "")), "recovery code {code}");
    }
    // After enrolment, pages show neither.
    let page = ada.client.get("/account/security").await;
    assert!(!page.body.contains(&key) && !page.body.contains(&compact_key));
    assert!(codes.iter().all(|c| !page.body.contains(c.as_str())));
}

#[tokio::test]
async fn parallel_code_guesses_get_no_more_checks_than_the_limit() {
    let app = TestApp::spawn().await;
    let (ada, key, _) = enrolled(&app, "Ada").await;
    let browser = password_step(&app, &ada.user.email).await;
    // Twenty wrong codes at once on the pending sign-in: each waits for the count's lock
    // and is counted with its check, so at most ten (the limit for an unfamiliar browser)
    // are checked at all.
    let guesses = (0..20).map(|i| {
        let mut c = app.client();
        c.session_cookie = browser.session_cookie.clone();
        async move { c.call("verify_sign_in", &[("code", &format!("{:06}", 100_000 + i))]).await.status }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = recorded(&app, Action::MfaCodeFailed).await.len();
    assert!(checked <= 10, "{checked} codes checked: {statuses:?}");
    assert!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count() >= 10, "{statuses:?}");
    // Blocked now: even the right code is not checked.
    let mut other = app.client();
    other.session_cookie = browser.session_cookie.clone();
    let res = other.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert!(
        res.status == StatusCode::TOO_MANY_REQUESTS || res.status == StatusCode::CONFLICT,
        "{} {}",
        res.status,
        res.body
    );
    assert!(!signed_in(&mut other).await);
}

#[tokio::test]
async fn owners_require_mfa_and_members_without_it_are_led_to_set_it_up() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Strict").await;
    let mut member = app.person("Member").await;
    app.add_member(&slug, &member, "member").await;
    // An owner without two-factor authentication cannot require it.
    let args = [("slug", slug.as_str()), ("required", "on"), ("password", PASSWORD)];
    let res = owner.client.call("set_workspace_mfa", &args).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
    assert!(res.error().to_string().contains("your own account first"), "{}", res.body);
    let res =
        owner.client.call("set_workspace_mfa", &[("slug", &slug), ("required", "maybe"), ("password", PASSWORD)]).await;
    assert!(res.error().message_for("required").is_some(), "{}", res.body);
    // With it on, and a code in the step-up, the owner can.
    let key = start_setup(&mut owner.client).await;
    let code = app_code(&key, app.clock.now());
    owner.client.call("confirm_totp_setup", &[("code", &code), ("password", PASSWORD)]).await;
    app.clock.advance(Duration::minutes(10) + Duration::seconds(30));
    let res = owner.client.call("set_workspace_mfa", &args).await;
    assert!(res.error().message_for("code").is_some(), "a code is needed: {}", res.body);
    let code = app_code(&key, app.clock.now());
    let with_code = [("slug", slug.as_str()), ("required", "on"), ("password", PASSWORD), ("code", &code)];
    let res = owner.client.call("set_workspace_mfa", &with_code).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let changes = recorded(&app, Action::WorkspaceMfaPolicyChanged).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].detail["required"], true);
    // Invitations say so, in the mail and on the invitation page.
    let invitee = format!("new-{}@example.test", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let body = crate::common::outbox_body_for(&app, &invitee).await;
    assert!(body.contains("requires two-factor authentication"), "{body}");
    let info = app.client().call("invitation_info", &[("token", &crate::common::token_from(&body))]).await;
    assert!(info.body.contains("\"requires_mfa\":true"), "{}", info.body);
    // The members page shows who has it.
    let page: serde_json::Value =
        serde_json::from_str(&owner.client.call("members_page", &[("slug", &slug)]).await.body).unwrap();
    assert_eq!(page["require_mfa"], true);
    let has: Vec<(String, bool)> = page["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["display_name"].as_str().unwrap().to_string(), m["has_mfa"].as_bool().unwrap()))
        .collect();
    assert!(has.contains(&("Owner".into(), true)) && has.contains(&("Member".into(), false)), "{has:?}");
    // A second browser of the member, signed in with the password before any set-up
    // (or a stolen cookie): it never gave a code.
    let mut older_session = app.client();
    let res = older_session.call("login", &[("email", &member.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/account"));
    // The member is refused, led to set-up and back.
    let res = member.client.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.error(), app::error::AppError::MfaRequired);
    let html = member.client.get(&format!("/w/{slug}")).await;
    assert_eq!(html.status, StatusCode::FORBIDDEN);
    assert!(html.body.contains(&format!("/account/security?next=%2Fw%2F{slug}")), "{}", html.body);
    let res = member.client.call("start_totp_setup", &[("next", &format!("/w/{slug}"))]).await;
    assert_eq!(res.location(), Some(format!("/account/security?next=/w/{slug}").as_str()));
    let page = security(&member.client.call("security_page", &[]).await);
    let key = page["pending"]["text_key"].as_str().unwrap().to_string();
    let code = app_code(&key, app.clock.now());
    let res = member
        .client
        .call("confirm_totp_setup", &[("code", &code), ("password", PASSWORD), ("next", &format!("/w/{slug}"))])
        .await;
    assert_eq!(res.location(), Some(format!("/account/security?next=/w/{slug}#recovery-codes").as_str()));
    let res = member.client.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // The older session still gave no code: still refused, until it signs in with one.
    let res = older_session.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.error(), app::error::AppError::MfaRequired, "{}", res.body);
    let export = older_session.get(&format!("/w/{slug}/audit/export.csv")).await;
    assert_eq!(export.status, StatusCode::FORBIDDEN);
    app.clock.advance(Duration::seconds(30));
    let mut again = password_step(&app, &member.user.email).await;
    let res = again.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = again.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Refusals are in the workspace's trail.
    let denied = recorded(&app, Action::WorkspaceAccessDenied).await;
    assert!(denied.iter().any(|e| e.detail["reason"] == "mfa_required"), "{denied:?}");
}

#[tokio::test]
async fn a_step_up_holds_for_ten_minutes_in_its_session_only() {
    let app = TestApp::spawn().await;
    let (mut ada, key, _) = enrolled(&app, "Ada").await;
    let page = security(&ada.client.call("security_page", &[]).await);
    assert_eq!(page["step_up_fresh"], false);
    let code = app_code(&key, app.clock.now());
    let res = ada.client.call("regenerate_recovery_codes", &[("password", PASSWORD), ("code", &code)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(recorded(&app, Action::MfaCodeAccepted).await.len(), 1, "the step-up's code");
    // Within the window: no password asked, in this session.
    app.clock.advance(Duration::minutes(9));
    let page = security(&ada.client.call("security_page", &[]).await);
    assert_eq!(page["step_up_fresh"], true);
    let res = ada.client.call("regenerate_recovery_codes", &[("password", "")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Another session of the same person is not covered.
    let mut other = password_step(&app, &ada.user.email).await;
    app.clock.advance(Duration::seconds(30));
    let res = other.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = other.call("regenerate_recovery_codes", &[("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    // Past the window: asked again.
    app.clock.advance(Duration::minutes(1));
    let res = ada.client.call("disable_two_factor", &[("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    assert_eq!(recorded(&app, Action::MfaDisabled).await.len(), 0);
}

/// Someone who has the password can use up the wrong codes of unfamiliar browsers, but not
/// those of a browser the owner has signed in with before, nor the owner's step-ups: the
/// owner's second step still works there, and so do their settings.
#[tokio::test]
async fn wrong_codes_from_elsewhere_do_not_block_the_owners_browser() {
    let app = TestApp::spawn().await;
    let (mut ada, key, codes) = enrolled(&app, "Ada").await;
    assert!(ada.client.device_cookie.is_some(), "Ada's browser signed in before");
    for _ in 0..4 {
        let mut thief = password_step(&app, &ada.user.email).await;
        for _ in 0..3 {
            thief.call("verify_sign_in", &[("code", "000000")]).await;
        }
    }
    let mut thief = password_step(&app, &ada.user.email).await;
    let res = thief.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "blocked for the thief: {}", res.body);
    let res = ada.client.call("regenerate_recovery_codes", &[("password", PASSWORD), ("code", &codes[0])]).await;
    assert_eq!(res.status, StatusCode::OK, "the owner's step-up still works: {}", res.body);
    let res = ada.client.call("login", &[("email", &ada.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/login/mfa"), "{}", res.body);
    let res = ada.client.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut ada.client).await);
}

/// The owner's sign-in with a code from an unfamiliar browser does not forgive the count
/// of wrong codes from unfamiliar browsers: a guesser who has the password gets no fresh
/// series from it.
#[tokio::test]
async fn a_success_elsewhere_does_not_forgive_codes_guessed_elsewhere() {
    use fluxi_core::schema::sign_in_failures;
    let app = TestApp::spawn().await;
    let (ada, key, _) = enrolled(&app, "Ada").await;
    let mut guesser = password_step(&app, &ada.user.email).await;
    for guess in ["111111", "222222"] {
        let res = guesser.call("verify_sign_in", &[("code", guess)]).await;
        assert!(res.error().message_for("code").is_some(), "{}", res.body);
    }
    async fn most(app: &TestApp) -> Option<i32> {
        let mut conn = app.db.conn().await;
        sign_in_failures::table
            .select(diesel::dsl::max(sign_in_failures::failures))
            .first::<Option<i32>>(&mut conn)
            .await
            .unwrap()
    }
    assert_eq!(most(&app).await, Some(2));
    let mut owner = password_step(&app, &ada.user.email).await;
    let res = owner.call("verify_sign_in", &[("code", &app_code(&key, app.clock.now()))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(signed_in(&mut owner).await);
    assert_eq!(most(&app).await, Some(2), "still counted");
}
