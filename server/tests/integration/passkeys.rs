//! Passkeys through webauthn-rs against a software authenticator in Rust
//! (`webauthn-authenticator-rs`'s `SoftPasskey`): added after a step-up, listed, signing
//! in on their own, removed after a step-up; replayed, foreign and unbound answers
//! refused and recorded.

use crate::common::{recorded, Client, Options, Reply, TestApp, PASSWORD};
use crate::passwords::{reset_token, subjects_to};
use app::error::AppError;
use app::passkeys::api::PasskeyView;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::audit::Action;
use fluxi_core::schema::passkeys;
use reqwest::StatusCode;
use time::Duration;
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs_proto::{AllowCredentials, CreationChallengeResponse, RequestChallengeResponse};

/// WebAuthn needs a domain: the app's base URL is `http://localhost:PORT`.
async fn spawn() -> TestApp {
    TestApp::spawn_with(Options { named_host: true, ..Options::default() }).await
}

fn origin(app: &TestApp) -> Url {
    Url::parse(&app.base).unwrap()
}

/// The options a start call returned (a server function's string, holding JSON).
fn options<T: serde::de::DeserializeOwned>(res: &Reply) -> T {
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let json: String = serde_json::from_str(&res.body).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// A software authenticator that performs user verification (as a passkey does).
fn authenticator() -> SoftPasskey {
    SoftPasskey::new(true)
}

/// Adds a passkey named `name` for the person signed in to `c` (within the step-up window
/// or with the password); returns the reply and the new credential's id.
async fn add_passkey(app: &TestApp, c: &mut Client, auth: &mut SoftPasskey, name: &str) -> (Reply, Vec<u8>) {
    let (reply, id, _) = add_passkey_answer(app, c, auth, name).await;
    (reply, id)
}

/// [`add_passkey`], also returning the authenticator's answer as sent.
async fn add_passkey_answer(
    app: &TestApp,
    c: &mut Client,
    auth: &mut SoftPasskey,
    name: &str,
) -> (Reply, Vec<u8>, String) {
    let mut request: CreationChallengeResponse =
        options(&c.call("start_passkey_registration", &[("name", name), ("password", PASSWORD)]).await);
    let selection = request.public_key.authenticator_selection.as_mut().expect("authenticator selection");
    assert!(selection.require_resident_key, "a discoverable credential is asked for");
    // The software authenticator keeps no credentials of its own (it answers from the key
    // handle in the credential id), so it refuses a request for a resident key.
    selection.require_resident_key = false;
    selection.resident_key = None;
    let credential = auth.do_registration(origin(app), request).expect("registration");
    let id = credential.raw_id.clone();
    let json = serde_json::to_string(&credential).unwrap();
    (c.call("finish_passkey_registration", &[("name", name), ("credential", &json)]).await, id, json)
}

/// The authenticator's answer to a passkey sign-in started by `c`, as a resident key of
/// `user` would give it: the software authenticator needs the credential named, and the
/// account's handle is added as a resident key returns it (it is not signed).
async fn assertion(
    app: &TestApp,
    c: &mut Client,
    auth: &mut SoftPasskey,
    credential: &[u8],
    user: uuid::Uuid,
) -> String {
    let mut request: RequestChallengeResponse = options(&c.call("start_passkey_sign_in", &[]).await);
    assert!(request.public_key.allow_credentials.is_empty(), "discoverable: no account named");
    request.public_key.allow_credentials =
        vec![AllowCredentials { type_: "public-key".into(), id: credential.to_vec(), transports: None }];
    let mut answer = auth.do_authentication(origin(app), request).expect("assertion");
    answer.response.user_handle = Some(user.as_bytes().to_vec());
    serde_json::to_string(&answer).unwrap()
}

async fn signed_in_as(c: &mut Client) -> Option<String> {
    let res = c.call("current_user", &[]).await;
    let value: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    value["email"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_passkey_added_after_a_step_up_signs_in_on_its_own() {
    let app = spawn().await;
    let mut me = app.person("Keyholder").await;
    let mut auth = authenticator();
    app.clock.advance(Duration::minutes(11));
    let res = me.client.call("start_passkey_registration", &[("name", "  "), ("password", PASSWORD)]).await;
    assert!(res.error().message_for("name").is_some(), "{}", res.body);
    let res =
        me.client.call("start_passkey_registration", &[("name", "Laptop"), ("password", "wrong password!")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    assert_eq!(
        app.client().call("start_passkey_registration", &[("name", "X"), ("password", PASSWORD)]).await.error(),
        AppError::Unauthenticated
    );

    let (res, credential, first) = add_passkey_answer(&app, &mut me.client, &mut auth, "Laptop").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let list: Vec<PasskeyView> = serde_json::from_str(&me.client.call("passkeys", &[]).await.body).unwrap();
    assert_eq!(
        list.iter().map(|p| (p.name.as_str(), p.last_used.is_none())).collect::<Vec<_>>(),
        vec![("Laptop", true)]
    );
    assert_eq!(recorded(&app, Action::PasskeyAdded).await.len(), 1);
    let added = subjects_to(&app, &me.user.email).await;
    assert_eq!(added.iter().filter(|s| *s == "A passkey was added to your Fluxi account").count(), 1);
    // Adding another asks for the password again, even right after a step-up: a session
    // alone must never be enough to add a way in.
    let res = me.client.call("start_passkey_registration", &[("name", "Sneaky"), ("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    // The answer of that registration, offered to a new one: its challenge was another's.
    let _ = options::<CreationChallengeResponse>(
        &me.client.call("start_passkey_registration", &[("name", "Again"), ("password", PASSWORD)]).await,
    );
    let res = me.client.call("finish_passkey_registration", &[("name", "Again"), ("credential", &first)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("could not be verified")), "{}", res.body);
    assert_eq!(serde_json::from_str::<Vec<PasskeyView>>(&me.client.call("passkeys", &[]).await.body).unwrap().len(), 1);

    // Signed out, the passkey alone signs in — as both factors.
    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    let res = browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(signed_in_as(&mut browser).await.as_deref(), Some(me.user.email.as_str()));
    let events = recorded(&app, Action::SignInSucceeded).await;
    assert!(
        events.iter().any(|e| e.detail.to_string().contains("passkey")),
        "{:?}",
        events.iter().map(|e| &e.detail).collect::<Vec<_>>()
    );
    let list: Vec<PasskeyView> = serde_json::from_str(&browser.call("passkeys", &[]).await.body).unwrap();
    assert!(list[0].last_used.is_some());
    // The signature counter moved, and is kept (a cloned key would fall behind it).
    let mut conn = app.db.conn().await;
    let stored: serde_json::Value = passkeys::table.select(passkeys::passkey).first(&mut conn).await.unwrap();
    assert_ne!(stored["cred"]["counter"], 0, "{stored}");
}

#[tokio::test]
async fn replayed_unbound_and_foreign_answers_are_refused() {
    let app = spawn().await;
    let mut me = app.person("Guarded Key").await;
    let other = app.person("Other Key").await;
    let mut auth = authenticator();
    let (res, credential) = add_passkey(&app, &mut me.client, &mut auth, "Phone").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    // Another browser, without this one's ceremony: nothing to answer.
    let res = app.client().call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired or was already used")), "{}", res.body);
    let kept_cookie = browser.passkey_cookie.clone();
    assert!(kept_cookie.is_some());
    assert_eq!(browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await.status, StatusCode::OK);
    assert!(browser.passkey_cookie.is_none(), "the ceremony cookie is removed");
    // The same answer again, with the ceremony cookie kept: the challenge is gone.
    let mut replay = app.client();
    replay.passkey_cookie = kept_cookie;
    let res = replay.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired or was already used")), "{}", res.body);
    assert!(signed_in_as(&mut replay).await.is_none());
    // The old answer to a new challenge: the signature does not cover it.
    let mut late = app.client();
    let _ = options::<RequestChallengeResponse>(&late.call("start_passkey_sign_in", &[]).await);
    let res = late.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("could not be verified")), "{}", res.body);
    assert!(signed_in_as(&mut late).await.is_none());

    // The passkey presented as another account's (its handle swapped): refused.
    let mut impostor = app.client();
    let answer = assertion(&app, &mut impostor, &mut auth, &credential, other.user.id).await;
    let res = impostor.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert!(signed_in_as(&mut impostor).await.is_none());
    // Garbage: a clear refusal, no 500.
    let mut junk = app.client();
    let _ = options::<RequestChallengeResponse>(&junk.call("start_passkey_sign_in", &[]).await);
    let res = junk.call("finish_passkey_sign_in", &[("credential", "{\"not\":\"a credential\"}")]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert!(recorded(&app, Action::PasskeyRefused).await.len() >= 2);

    // A registration ceremony is bound to its account too: another account holding this
    // browser's ceremony cookie cannot finish it.
    let request: CreationChallengeResponse =
        options(&me.client.call("start_passkey_registration", &[("name", "Spare"), ("password", PASSWORD)]).await);
    let mut request = request;
    if let Some(selection) = request.public_key.authenticator_selection.as_mut() {
        selection.require_resident_key = false;
        selection.resident_key = None;
    }
    let spare = authenticator().do_registration(origin(&app), request).expect("registration");
    let mut other_client = other.client;
    other_client.passkey_cookie = me.client.passkey_cookie.clone();
    let json = serde_json::to_string(&spare).unwrap();
    let res = other_client.call("finish_passkey_registration", &[("name", "Spare"), ("credential", &json)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("expired or was already used")), "{}", res.body);
    let mut conn = app.db.conn().await;
    let count: i64 = passkeys::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn removing_a_passkey_needs_a_step_up_and_stops_it_signing_in() {
    let app = spawn().await;
    let mut me = app.person("Remover").await;
    let mut stranger = app.person("Stranger Key").await;
    let mut auth = authenticator();
    let (res, credential) = add_passkey(&app, &mut me.client, &mut auth, "Old key").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let list: Vec<PasskeyView> = serde_json::from_str(&me.client.call("passkeys", &[]).await.body).unwrap();
    let id = list[0].id.clone();

    let res = stranger.client.call("remove_passkey", &[("passkey", &id), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("No such passkey")), "{}", res.body);
    app.clock.advance(Duration::minutes(11));
    let res = me.client.call("remove_passkey", &[("passkey", &id), ("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    let res = me.client.call("remove_passkey", &[("passkey", "not-an-id"), ("password", PASSWORD)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    let res = me.client.call("remove_passkey", &[("passkey", &id), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(recorded(&app, Action::PasskeyRemoved).await.len(), 1);
    assert!(subjects_to(&app, &me.user.email)
        .await
        .iter()
        .any(|s| s == "A passkey was removed from your Fluxi account"));

    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    let res = browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert!(signed_in_as(&mut browser).await.is_none());
}

#[tokio::test]
async fn after_a_password_a_passkey_can_be_the_second_factor() {
    let app = spawn().await;
    let (mut me, key, _) = crate::mfa::enrolled(&app, "Two Keys").await;
    let mut auth = authenticator();
    let code = crate::mfa::app_code(&key, fluxi_core::clock::Clock::now(&app.clock));
    let mut request: CreationChallengeResponse = options(
        &me.client
            .call("start_passkey_registration", &[("name", "Key"), ("password", PASSWORD), ("code", &code)])
            .await,
    );
    if let Some(selection) = request.public_key.authenticator_selection.as_mut() {
        selection.require_resident_key = false;
        selection.resident_key = None;
    }
    let credential = auth.do_registration(origin(&app), request).expect("registration");
    let json = serde_json::to_string(&credential).unwrap();
    let res = me.client.call("finish_passkey_registration", &[("name", "Key"), ("credential", &json)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let mut browser = app.client();
    let res = browser.call("login", &[("email", &me.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.location(), Some("/login/mfa"), "{}", res.body);
    let step: serde_json::Value = serde_json::from_str(&browser.call("second_step", &[]).await.body).unwrap();
    assert_eq!(step["passkeys"], true);
    let request: RequestChallengeResponse = options(&browser.call("start_passkey_second_step", &[]).await);
    assert_eq!(request.public_key.allow_credentials.len(), 1, "only this account's passkeys");
    let answer = serde_json::to_string(&auth.do_authentication(origin(&app), request).expect("assertion")).unwrap();
    let res = browser.call("finish_passkey_second_step", &[("credential", &answer)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(serde_json::from_str::<String>(&res.body).unwrap(), "/account");
    assert_eq!(signed_in_as(&mut browser).await.as_deref(), Some(me.user.email.as_str()));

    // Another password sign-in offered the same answer: its challenge is gone.
    let mut again = app.client();
    again.call("login", &[("email", &me.user.email), ("password", PASSWORD)]).await;
    let _ = options::<RequestChallengeResponse>(&again.call("start_passkey_second_step", &[]).await);
    let res = again.call("finish_passkey_second_step", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("could not be verified")), "{}", res.body);
    assert!(signed_in_as(&mut again).await.is_none());
    // A counter that went backwards (a copy of the key): refused, recorded, owner told.
    let mut conn = app.db.conn().await;
    diesel::sql_query("UPDATE passkeys SET passkey = jsonb_set(passkey, '{cred,counter}', '1000000')")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut copied = app.client();
    copied.call("login", &[("email", &me.user.email), ("password", PASSWORD)]).await;
    let request: RequestChallengeResponse = options(&copied.call("start_passkey_second_step", &[]).await);
    let answer = serde_json::to_string(&auth.do_authentication(origin(&app), request).expect("assertion")).unwrap();
    let res = copied.call("finish_passkey_second_step", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert!(signed_in_as(&mut copied).await.is_none());
    assert_eq!(recorded(&app, Action::PasskeyPossiblyCopied).await.len(), 1);
    let told = subjects_to(&app, &me.user.email).await;
    assert!(told.iter().any(|s| s == "A passkey of your Fluxi account may have been copied"), "{told:?}");
    // No sign-in waiting: nothing to start.
    assert!(matches!(
        app.client().call("start_passkey_second_step", &[]).await.error(),
        AppError::Rejected(_) | AppError::Unauthenticated
    ));
}

#[tokio::test]
async fn a_passkey_sign_in_meets_a_workspace_that_requires_two_factor() {
    let app = spawn().await;
    let mut me = app.person("Policy Keeper").await;
    let slug = app.workspace(&mut me, "Keyed").await;
    let mut auth = authenticator();
    let (res, credential) = add_passkey(&app, &mut me.client, &mut auth, "Desk").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // The owner's passkey counts as a second factor for the policy…
    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    assert_eq!(browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await.status, StatusCode::OK);
    let args = [("slug", slug.as_str()), ("required", "on"), ("password", PASSWORD)];
    let res = browser.call("set_workspace_mfa", &args).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // …and a session signed in with it may enter; one signed in with the password may not.
    let res = browser.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = me.client.call("workspace_home", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
}

#[tokio::test]
async fn a_password_reset_removes_passkeys_added_lately() {
    let app = spawn().await;
    let mut me = app.person("Reset Keys").await;
    let mut auth = authenticator();
    let (res, credential) = add_passkey(&app, &mut me.client, &mut auth, "Intruder's").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    app.client().call("request_password_reset", &[("email", &me.user.email)]).await;
    let token = reset_token(&app, &me.user.email, 0).await;
    let res =
        app.client().call("reset_password", &[("token", &token), ("new_password", "a brand new passphrase 42")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(
        serde_json::from_str::<Vec<PasskeyView>>(&me.client.call("passkeys", &[]).await.body)
            .map(|l| l.len())
            .unwrap_or(0),
        0
    );
    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    let res = browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert_eq!(recorded(&app, Action::PasskeyRemoved).await.len(), 1);
}

#[tokio::test]
async fn a_server_addressed_by_ip_says_passkeys_are_unavailable() {
    let app = TestApp::spawn().await;
    let res = app.client().call("start_passkey_sign_in", &[]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("not available")), "{}", res.body);
}

/// Read from the SMTP sink: the passkey and email-change notices arrive once each, say
/// when and from where, and only the email-change notice carries a link (its undo).
#[tokio::test]
async fn passkey_and_email_change_notices_are_mailed_once() {
    let app = spawn().await;
    let mut me = app.person("Noticed Key").await;
    let email = me.user.email.clone();
    let mut auth = authenticator();
    let (res, _) = add_passkey(&app, &mut me.client, &mut auth, "Noticed").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let list: Vec<PasskeyView> = serde_json::from_str(&me.client.call("passkeys", &[]).await.body).unwrap();
    let res = me.client.call("remove_passkey", &[("passkey", &list[0].id), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = me.client.call("change_email", &[("password", PASSWORD), ("email", &format!("later-{email}"))]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let messages = crate::passwords::delivered_to(&app, &email).await;
    assert_eq!(
        crate::passwords::subjects_of(&messages),
        vec![
            "A passkey was added to your Fluxi account",
            "A passkey was removed from your Fluxi account",
            "The email address of your Fluxi account is being changed",
        ]
    );
    for m in &messages {
        assert!(m.contains("When: ") && m.contains("From: network 127.0.0.0/24 (approximate)"), "{m}");
        let undo = m.contains("/revert-email/");
        assert_eq!(undo, m.contains("being changed"), "only the email-change notice carries a link: {m}");
    }
}

/// A passkey whose signature counter went backwards (what a copy of the key shows) is
/// refused, recorded as such, and its owner is told.
#[tokio::test]
async fn a_passkey_whose_counter_went_backwards_is_refused_and_its_owner_told() {
    let app = spawn().await;
    let mut me = app.person("Copied Key").await;
    let mut auth = authenticator();
    let (res, credential) = add_passkey(&app, &mut me.client, &mut auth, "Laptop").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let subject = "A passkey of your Fluxi account may have been copied";
    // As if another copy of the key had signed in many times since.
    let mut conn = app.db.conn().await;
    diesel::sql_query("UPDATE passkeys SET passkey = jsonb_set(passkey, '{cred,counter}', '1000000')")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut browser = app.client();
    let answer = assertion(&app, &mut browser, &mut auth, &credential, me.user.id).await;
    let res = browser.call("finish_passkey_sign_in", &[("credential", &answer)]).await;
    assert!(matches!(res.error(), AppError::Rejected(_)), "{}", res.body);
    assert_eq!(signed_in_as(&mut browser).await, None);
    assert_eq!(recorded(&app, Action::PasskeyPossiblyCopied).await.len(), 1);
    let told = subjects_to(&app, &me.user.email).await;
    assert_eq!(told.iter().filter(|s| *s == subject).count(), 1, "{told:?}");
}
