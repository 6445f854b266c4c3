//! "Where you're signed in": listing a person's sessions and signing them out.

use crate::common::{recorded, Client, TestApp, PASSWORD};
use app::error::AppError;
use app::sessions::api::SessionsView;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::audit::Action;
use fluxi_core::schema::sessions;
use reqwest::StatusCode;

const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A browser with `agent` signed in as `email`.
async fn signed_in(app: &TestApp, email: &str, agent: &str) -> Client {
    let mut c = app.client();
    c.user_agent = Some(agent.into());
    let res = c.call("login", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    c
}

async fn list(c: &mut Client) -> SessionsView {
    let res = c.call("signed_in_sessions", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    serde_json::from_str(&res.body).unwrap()
}

#[tokio::test]
async fn the_list_names_each_browser_its_network_and_this_device() {
    let app = TestApp::spawn().await;
    let (_, email) = app.signed_up("Lister").await;
    let mut chrome = signed_in(&app, &email, CHROME).await;
    app.clock.advance(time::Duration::minutes(2));
    let mut firefox = signed_in(&app, &email, FIREFOX).await;

    let view = list(&mut chrome).await;
    let names: Vec<String> = view.sessions.iter().map(|s| format!("{} on {}", s.browser, s.system)).collect();
    assert_eq!(view.sessions.len(), 3, "sign-up's session and two sign-ins: {names:?}");
    assert!(view.sessions[0].this_device, "this device comes first");
    assert_eq!(names[0], "Chrome 156 on Linux");
    assert!(names.contains(&"Firefox 133 on Windows 10".to_string()), "{names:?}");
    assert_eq!(view.sessions.iter().filter(|s| s.this_device).count(), 1);
    for s in &view.sessions {
        assert_eq!(s.network.as_deref(), Some("127.0.0.0/24"), "truncated, not the address");
        assert!(s.signed_in_at_utc.ends_with("UTC"));
    }
    let from_firefox = list(&mut firefox).await;
    assert_eq!(from_firefox.sessions.iter().find(|s| s.this_device).map(|s| s.browser.as_str()), Some("Firefox 133"));

    // Stored: the parsed names and the truncated network, never the raw values.
    let mut conn = app.db.conn().await;
    let data: Vec<serde_json::Value> = sessions::table.select(sessions::data).load(&mut conn).await.unwrap();
    let dump = serde_json::to_string(&data).unwrap();
    assert!(dump.contains("Chrome 156"));
    for raw in ["127.0.0.1", "Mozilla/5.0", "AppleWebKit"] {
        assert!(!dump.contains(raw), "the session table holds {raw}");
    }
}

#[tokio::test]
async fn a_revoked_session_is_refused_on_its_next_request() {
    let app = TestApp::spawn().await;
    let (mut mine, email) = app.signed_up("Revoker").await;
    let mut other = signed_in(&app, &email, FIREFOX).await;
    assert_eq!(other.get("/account").await.status, StatusCode::OK);

    let view = list(&mut mine).await;
    let target = view.sessions.iter().find(|s| !s.this_device).unwrap().handle.clone();
    let res = mine.call("sign_out_session", &[("session", &target)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    // Its very next request is signed out.
    let res = other.get("/account").await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(res.location(), Some("/login?next=%2Faccount"));
    assert_eq!(other.call("signed_in_sessions", &[]).await.error(), AppError::Unauthenticated);
    // The one that revoked it is still signed in, and the list shows one session.
    assert_eq!(list(&mut mine).await.sessions.len(), 1);
    let events = recorded(&app, Action::SessionRevoked).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["count"], 1);

    // Again: it has already ended. Nothing else changes.
    let again = mine.call("sign_out_session", &[("session", &target)]).await;
    assert!(matches!(again.error(), AppError::Rejected(m) if m.contains("already ended")), "{}", again.body);
    assert_eq!(recorded(&app, Action::SessionRevoked).await.len(), 1);
}

#[tokio::test]
async fn only_the_owner_can_end_a_session_and_not_the_current_one_this_way() {
    let app = TestApp::spawn().await;
    let (mut owner, _) = app.signed_up("Owner").await;
    let (mut stranger, _) = app.signed_up("Stranger").await;
    let owners = list(&mut owner).await.sessions[0].handle.clone();

    // Someone else's handle is refused as unknown, and the session lives on.
    let res = stranger.call("sign_out_session", &[("session", &owners)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("already ended")), "{}", res.body);
    assert_eq!(owner.get("/account").await.status, StatusCode::OK);
    // The current session is signed out with "Sign out", not from the list.
    let res = owner.call("sign_out_session", &[("session", &owners)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("Sign out")), "{}", res.body);
    assert_eq!(owner.get("/account").await.status, StatusCode::OK);
    // Not a handle at all; signed out.
    for bad in ["", "not-a-uuid", "'; DELETE FROM sessions; --"] {
        let res = owner.call("sign_out_session", &[("session", bad)]).await;
        assert!(matches!(res.error(), AppError::Rejected(_)), "{bad:?}: {}", res.body);
    }
    let res = app.client().call("sign_out_session", &[("session", &owners)]).await;
    assert_eq!(res.error(), AppError::Unauthenticated);
    assert_eq!(owner.get("/account").await.status, StatusCode::OK);
    assert!(recorded(&app, Action::SessionRevoked).await.is_empty());
}

#[tokio::test]
async fn signing_out_all_other_sessions_asks_who_you_are_and_keeps_this_one() {
    let app = TestApp::spawn().await;
    let (mut mine, email) = app.signed_up("Everywhere").await;
    let mut others = vec![signed_in(&app, &email, FIREFOX).await, signed_in(&app, &email, CHROME).await];
    let (mut bystander, _) = app.signed_up("Bystander").await;
    // A step-up from the sign-up is long gone.
    app.clock.advance(time::Duration::minutes(11));

    let res = mine.call("sign_out_other_sessions", &[("password", "")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    let res = mine.call("sign_out_other_sessions", &[("password", "wrong password entirely")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    for c in &mut others {
        assert_eq!(c.get("/account").await.status, StatusCode::OK, "nothing ended on a refused step-up");
    }

    let res = mine.call("sign_out_other_sessions", &[("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    for c in &mut others {
        assert_eq!(c.get("/account").await.status, StatusCode::FOUND, "signed out on its next request");
    }
    assert_eq!(mine.get("/account").await.status, StatusCode::OK, "this session stays");
    assert_eq!(bystander.get("/account").await.status, StatusCode::OK, "other accounts are untouched");
    let view = list(&mut mine).await;
    assert_eq!(view.sessions.len(), 1);
    assert!(view.sessions[0].this_device);
    let events = recorded(&app, Action::SessionRevoked).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["count"], 2);
}

/// Without JavaScript: the forms post and come back to the list.
#[tokio::test]
async fn the_forms_work_as_plain_posts() {
    let app = TestApp::spawn().await;
    let (mut mine, email) = app.signed_up("Plain").await;
    let mut other = signed_in(&app, &email, FIREFOX).await;
    let page = mine.get("/account/security").await;
    assert!(page.body.contains("Where you&#x27;re signed in") || page.body.contains("Where you're signed in"));
    assert!(page.body.contains("Firefox 133 on Windows 10"), "the list is server-rendered");
    let target = list(&mut mine).await.sessions.iter().find(|s| !s.this_device).unwrap().handle.clone();
    let res = mine.post_form("sign_out_session", "/account/security", &[("session", &target)]).await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(res.location(), Some("/account/security#sessions"));
    assert_eq!(other.get("/account").await.status, StatusCode::FOUND);
}

/// How many "new sign-in" notices went to `email`.
async fn notices(app: &TestApp, email: &str) -> i64 {
    use fluxi_core::schema::outbox_emails;
    let mut conn = app.db.conn().await;
    outbox_emails::table
        .filter(outbox_emails::recipient.eq(email))
        .filter(outbox_emails::subject.eq("New sign-in to your Fluxi account"))
        .count()
        .get_result::<i64>(&mut conn)
        .await
        .unwrap()
}

/// A sign-in from a browser and a network the account has never used is mailed to its
/// owner; the browser it signed up in, and a known network, are not news; nor is an
/// address that was never confirmed mailed (anyone can sign up with someone else's).
#[tokio::test]
async fn a_sign_in_from_a_new_browser_and_network_is_mailed_to_the_owner() {
    use reqwest::header::{ACCEPT, CONTENT_TYPE};
    let app = TestApp::spawn_with(crate::common::Options { trusted_proxies: 1, ..Default::default() }).await;
    let (_, email) = app.signed_up("Placed").await;
    let unconfirmed = "never-confirmed@example.test";
    fluxi_core::testing::UserBuilder::new()
        .email(unconfirmed)
        .password(crate::common::PASSWORD)
        .unverified()
        .create(&app.db.pool, &app.state.hasher)
        .await;
    let sign_in = |email: &str, network: &'static str| {
        let mut c = app.client();
        let body = crate::common::encode(&[("email", email), ("password", crate::common::PASSWORD)]);
        let req = c
            .http()
            .post(c.url("/api/login"))
            .header("x-forwarded-for", network)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        async move { c.raw(req).await.status }
    };
    let from = |network: &'static str| sign_in(&email, network);
    // An address never confirmed (an account from before sign-up proved addresses) is
    // not mailed, even from a new place: anyone could have typed it.
    assert_eq!(sign_in(unconfirmed, "192.0.2.44").await, StatusCode::OK);
    assert_eq!(notices(&app, unconfirmed).await, 0);
    // Sign-up's network, another browser: known network.
    assert_eq!(from("127.0.0.1").await, StatusCode::OK);
    assert_eq!(notices(&app, &email).await, 0);
    // A new browser on a new network.
    assert_eq!(from("203.0.113.9").await, StatusCode::OK);
    assert_eq!(notices(&app, &email).await, 1);
    // That network is known now.
    assert_eq!(from("203.0.113.9").await, StatusCode::OK);
    assert_eq!(notices(&app, &email).await, 1);
    let mut conn = app.db.conn().await;
    use fluxi_core::schema::outbox_emails;
    let body: String = outbox_emails::table
        .filter(outbox_emails::subject.eq("New sign-in to your Fluxi account"))
        .select(outbox_emails::body)
        .first(&mut conn)
        .await
        .unwrap();
    assert!(body.contains("From: network 203.0.113.0/24 (approximate)"), "{body}");
}

/// A newer session (say, a stolen one) cannot throw out the one that signed in before it
/// without the password; once it confirms, it can.
#[tokio::test]
async fn ending_an_older_session_needs_the_password() {
    let app = TestApp::spawn().await;
    let (mut owner, email) = app.signed_up("Older").await;
    app.clock.advance(time::Duration::minutes(11));
    let mut newer = signed_in(&app, &email, FIREFOX).await;
    let view = list(&mut newer).await;
    let owners = view.sessions.iter().find(|s| !s.this_device).unwrap();
    assert!(owners.older, "signed in before");
    let owners = owners.handle.clone();
    let res = newer.call("sign_out_session", &[("session", &owners)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("confirm it's you")), "{}", res.body);
    assert_eq!(owner.get("/account").await.status, StatusCode::OK, "still signed in");

    let res = newer.call("confirm_identity", &[("password", "not the password at all")]).await;
    assert!(res.error().message_for("password").is_some(), "{}", res.body);
    assert_eq!(newer.call("confirm_identity", &[("password", PASSWORD)]).await.status, StatusCode::OK);
    let res = newer.call("sign_out_session", &[("session", &owners)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(owner.get("/account").await.status, StatusCode::FOUND);
}

/// A request that was under way when every other session was signed out, and writes its
/// session back under a new id (as renewing the id does), finds it signed out.
#[tokio::test]
async fn a_session_written_back_after_sign_out_everywhere_stays_signed_out() {
    use tower_sessions::SessionStore;
    let app = TestApp::spawn().await;
    let (mut mine, email) = app.signed_up("Everywhere").await;
    let mut other = signed_in(&app, &email, FIREFOX).await;
    let store = fluxi_core::sessions::DieselSessionStore::new(
        app.state.pool.clone(),
        app.state.clock.clone(),
        app.state.session_policy,
    );
    let id: tower_sessions::session::Id = other.session_cookie.clone().unwrap().parse().unwrap();
    let mut in_flight = SessionStore::load(&store, &id).await.unwrap().expect("loaded");

    let res = mine.call("sign_out_other_sessions", &[("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // The request under way renews its id: its record is created again.
    in_flight.id = tower_sessions::session::Id::default();
    SessionStore::create(&store, &mut in_flight).await.unwrap();
    other.session_cookie = Some(in_flight.id.to_string());
    let res = other.get("/account").await;
    assert_eq!(res.status, StatusCode::FOUND, "signed out");
    assert_eq!(mine.get("/account").await.status, StatusCode::OK, "the session that asked stays");
    assert_eq!(list(&mut mine).await.sessions.len(), 1);
}

/// A request of the kept session that loaded it before "sign out all other sessions" and
/// saves it afterwards (say, refreshing "last active") does not sign it out.
#[tokio::test]
async fn the_kept_session_survives_its_own_requests_in_flight() {
    use tower_sessions::SessionStore;
    let app = TestApp::spawn().await;
    let (mut mine, email) = app.signed_up("Kept").await;
    let _other = signed_in(&app, &email, FIREFOX).await;
    let store = fluxi_core::sessions::DieselSessionStore::new(
        app.state.pool.clone(),
        app.state.clock.clone(),
        app.state.session_policy,
    );
    let id: tower_sessions::session::Id = mine.session_cookie.clone().unwrap().parse().unwrap();
    let stale = SessionStore::load(&store, &id).await.unwrap().expect("loaded");
    let res = mine.call("sign_out_other_sessions", &[("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    SessionStore::save(&store, &stale).await.unwrap();
    assert_eq!(mine.get("/account").await.status, StatusCode::OK, "still signed in");
}
