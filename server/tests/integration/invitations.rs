//! Invitations: single use, expiry, revocation, binding to the email, the daily cap.

use crate::common::{self, TestApp, PASSWORD};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::clock::Clock;
use fluxi_core::schema::{invitations, outbox_emails};
use reqwest::StatusCode;
use time::Duration;

#[tokio::test]
async fn invitations_are_single_use_expire_can_be_revoked_and_bind_to_the_email() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let mut invitee = app.person("Invitee").await;
    let mut stranger = app.person("Stranger").await;
    let invitee_email = invitee.user.email.clone();

    let res = owner
        .client
        .call("invite_member", &[("slug", &slug), ("email", &invitee_email.to_uppercase()), ("role", "member")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Written to the outbox in the same transaction; only the token's hash is stored.
    let token = common::token_from(&common::outbox_body_for(&app, &invitee_email.to_uppercase()).await);
    assert_eq!(token.len(), 64, "256-bit token");
    {
        let mut conn = app.db.conn().await;
        let stored: Vec<u8> = invitations::table.select(invitations::token_hash).first(&mut conn).await.unwrap();
        assert_ne!(stored, token.as_bytes());
        assert_eq!(stored.len(), 32);
    }
    // The invitation page shows workspace and role, to anyone holding the link.
    let info = stranger.client.call("invitation_info", &[("token", &token)]).await;
    assert_eq!(info.status, StatusCode::OK);
    assert!(info.body.contains("Team") && info.body.contains("member"));

    // Another account cannot use it.
    let res = stranger.client.call("accept_invitation", &[("token", &token)]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("different email")));
    // Signed out: must sign in first.
    assert_eq!(app.client().call("accept_invitation", &[("token", &token)]).await.status, StatusCode::UNAUTHORIZED);
    // The invited account can, once.
    let res = invitee.client.call("accept_invitation", &[("token", &token)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some(format!("/w/{slug}").as_str()));
    assert_eq!(common::role_of(&app, &slug, invitee.user.id).await.as_deref(), Some("member"));
    let again = invitee.client.call("accept_invitation", &[("token", &token)]).await;
    assert!(matches!(again.error(), AppError::Rejected(m) if m.contains("already been used")));
    // A made-up token.
    let bogus = invitee.client.call("accept_invitation", &[("token", &"0".repeat(64))]).await;
    assert!(matches!(bogus.error(), AppError::Rejected(m) if m.contains("not valid")));

    // Expiry (7 days by default).
    let res = owner
        .client
        .call("invite_member", &[("slug", &slug), ("email", &stranger.user.email), ("role", "viewer")])
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let token2 = common::token_from(&common::outbox_body_for(&app, &stranger.user.email).await);
    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    // (A week later the old session has expired too: sign in again.)
    let relogin = stranger.client.call("login", &[("email", &stranger.user.email), ("password", PASSWORD)]).await;
    assert_eq!(relogin.status, StatusCode::OK);
    owner.client.call("login", &[("email", &owner.user.email), ("password", PASSWORD)]).await;
    let expired = stranger.client.call("accept_invitation", &[("token", &token2)]).await;
    assert!(matches!(expired.error(), AppError::Rejected(m) if m.contains("expired")));

    // Revocation (from the members page's list).
    let mut late = app.person("Late").await;
    let res =
        owner.client.call("invite_member", &[("slug", &slug), ("email", &late.user.email), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK);
    let token3 = common::token_from(&common::outbox_body_for(&app, &late.user.email).await);
    let page: serde_json::Value =
        serde_json::from_str(&owner.client.call("members_page", &[("slug", &slug)]).await.body).unwrap();
    let pending = page["invitations"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "the expired one is no longer listed: {pending:?}");
    let id = pending[0]["id"].as_str().unwrap();
    let res = owner.client.call("revoke_invitation", &[("slug", &slug), ("invitation_id", id)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let revoked = late.client.call("accept_invitation", &[("token", &token3)]).await;
    assert!(matches!(revoked.error(), AppError::Rejected(m) if m.contains("revoked")));
    assert_eq!(common::role_of(&app, &slug, late.user.id).await, None);

    // Owner is never offered by invitation; existing members cannot be invited again.
    let res =
        owner.client.call("invite_member", &[("slug", &slug), ("email", "x@example.test"), ("role", "owner")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let res =
        owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee_email), ("role", "viewer")]).await;
    assert!(res.error().message_for("email").unwrap().contains("already a member"));
    let res =
        owner.client.call("invite_member", &[("slug", &slug), ("email", "not an email"), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Each invitation mails an address of the inviter's choosing: a workspace may send
/// `INVITATIONS_PER_DAY` in any 24 hours, and no more, even when invitations race.
#[tokio::test]
async fn a_workspace_can_send_only_so_many_invitations_a_day() {
    use fluxi_core::workspaces::invitations::{invite, InvitationPolicy, INVITATIONS_PER_DAY};
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Mailer").await;
    let access = app.access(&slug, &owner).await;
    let mut conn = app.db.conn().await;
    // All but one of the day's allowance, through the domain function (fast).
    for i in 1..INVITATIONS_PER_DAY {
        invite(
            &mut conn,
            &fluxi_core::testing::audit(),
            &access,
            &format!("guest{i}@example.test"),
            fluxi_core::workspaces::Role::Member,
            app.clock.now(),
            &InvitationPolicy::default(),
            "http://x",
        )
        .await
        .unwrap();
    }
    app.clock.advance(Duration::minutes(20));
    // The last two race: exactly one gets through.
    let mut racers = Vec::new();
    for email in ["last-a@example.test", "last-b@example.test"] {
        let mut c = app.client();
        c.session_cookie = owner.client.session_cookie.clone();
        let slug = slug.clone();
        racers.push(tokio::spawn(async move {
            c.call("invite_member", &[("slug", &slug), ("email", email), ("role", "viewer")]).await
        }));
    }
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|r| r.status == StatusCode::OK).count(),
        1,
        "{:?}",
        statuses.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let refused = statuses.iter().find(|r| r.status != StatusCode::OK).unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.error(),
        AppError::TooMany {
            message: format!(
                "This workspace has sent {INVITATIONS_PER_DAY} invitations in the last 24 hours. Try again later."
            ),
            retry_after_seconds: None,
        }
    );
    let invitations_now: i64 = invitations::table.count().get_result(&mut conn).await.unwrap();
    let mails_now: i64 = outbox_emails::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(invitations_now, INVITATIONS_PER_DAY, "the refused one wrote nothing");
    assert_eq!(mails_now, INVITATIONS_PER_DAY, "and sent nothing");
    // Another workspace has its own allowance.
    let other = app.workspace(&mut owner, "Other").await;
    let res = owner
        .client
        .call("invite_member", &[("slug", &other), ("email", "elsewhere@example.test"), ("role", "member")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // A day after the first ones, the allowance is back (signed in again: a day is past
    // the session's limits).
    app.clock.advance(Duration::hours(23) + Duration::minutes(41));
    let res = owner.client.call("login", &[("email", owner.user.email.as_str()), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = owner
        .client
        .call("invite_member", &[("slug", &slug), ("email", "tomorrow@example.test"), ("role", "member")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

#[tokio::test]
async fn concurrent_accepts_of_one_invitation_succeed_once() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Race").await;
    let invitee = app.person("Invitee").await;
    owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee.user.email), ("role", "member")]).await;
    let token = common::token_from(&common::outbox_body_for(&app, &invitee.user.email).await);
    let cookie = invitee.client.session_cookie.clone();
    let attempts = (0..6).map(|_| {
        let mut c = app.client();
        c.session_cookie = cookie.clone();
        let token = token.clone();
        async move { c.call("accept_invitation", &[("token", &token)]).await.status }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
}

/// An invitation carries its inviter's authority: when the inviter can no longer manage
/// members (demoted, removed, left), what they sent stops admitting anyone.
#[tokio::test]
async fn invitations_die_with_their_inviters_right_to_manage_members() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let mut admin = app.person("Admin").await;
    app.add_member(&slug, &admin, "admin").await;
    let mut first = app.person("First").await;
    let mut second = app.person("Second").await;
    let mut kept = app.person("Kept").await;
    for email in [&first.user.email, &second.user.email] {
        let res = admin.client.call("invite_member", &[("slug", &slug), ("email", email), ("role", "member")]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    let res =
        owner.client.call("invite_member", &[("slug", &slug), ("email", &kept.user.email), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let token_of = |body: String| common::token_from(&body);
    let first_token = token_of(common::outbox_body_for(&app, &first.user.email).await);
    let second_token = token_of(common::outbox_body_for(&app, &second.user.email).await);
    let kept_token = token_of(common::outbox_body_for(&app, &kept.user.email).await);

    // The owner demotes the admin: the admin's invitations are revoked, the owner's stay.
    let admin_id = admin.user.id.to_string();
    let res =
        owner.client.call("change_member_role", &[("slug", &slug), ("user_id", &admin_id), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    for (person, token) in [(&mut first, &first_token), (&mut second, &second_token)] {
        let info = person.client.call("invitation_info", &[("token", token)]).await;
        assert!(info.body.contains("revoked"), "{}", info.body);
        let res = person.client.call("accept_invitation", &[("token", token)]).await;
        assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("revoked")), "{}", res.body);
    }
    assert_eq!(common::role_of(&app, &slug, first.user.id).await, None);
    let revoked = common::recorded(&app, fluxi_core::audit::Action::InvitationRevoked).await;
    assert_eq!(revoked.len(), 2, "one event per revoked invitation");
    let res = kept.client.call("accept_invitation", &[("token", &kept_token)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    // Made admin again, the same person invites; removed, the invitation dies too.
    let res =
        owner.client.call("change_member_role", &[("slug", &slug), ("user_id", &admin_id), ("role", "admin")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let mut third = app.person("Third").await;
    admin.client.call("invite_member", &[("slug", &slug), ("email", &third.user.email), ("role", "viewer")]).await;
    let third_token = token_of(common::outbox_body_for(&app, &third.user.email).await);
    let res = owner.client.call("remove_member", &[("slug", &slug), ("user_id", &admin_id)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = third.client.call("accept_invitation", &[("token", &third_token)]).await;
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("revoked")), "{}", res.body);
}

/// Invitation mail is capped across workspaces: one address gets at most three a day,
/// whoever sends them; the workspace name is quoted as the inviter's words, never in the
/// subject.
#[tokio::test]
async fn one_address_gets_only_a_few_invitations_a_day_from_anyone() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Click https://evil.example now").await;
    let mut other = app.person("Other").await;
    let other_slug = app.workspace(&mut other, "Elsewhere").await;
    let target = "target@example.test";
    for _ in 0..3 {
        let res = owner.client.call("invite_member", &[("slug", &slug), ("email", target), ("role", "member")]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", target), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    assert!(common::too_many_message(&res.error()).unwrap().contains("several invitations today"), "{}", res.body);
    // Another account's workspace cannot add more, nor a sub-address of the same mailbox.
    for to in [target, "target+again@example.test"] {
        let res = other.client.call("invite_member", &[("slug", &other_slug), ("email", to), ("role", "viewer")]).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    }
    // Refused invitations wrote nothing; other addresses are unaffected.
    let mut conn = app.db.conn().await;
    let mails: i64 =
        outbox_emails::table.filter(outbox_emails::recipient.eq(target)).count().get_result(&mut conn).await.unwrap();
    assert_eq!(mails, 3);
    let res = other
        .client
        .call("invite_member", &[("slug", &other_slug), ("email", "else@example.test"), ("role", "viewer")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let (subject, body): (String, String) = outbox_emails::table
        .filter(outbox_emails::recipient.eq(target))
        .order(outbox_emails::created_at.desc())
        .select((outbox_emails::subject, outbox_emails::body))
        .first(&mut conn)
        .await
        .unwrap();
    assert!(!subject.contains("evil"), "{subject}");
    assert!(body.contains("as they wrote it: \u{201c}Click https://evil.example now\u{201d}"), "{body}");
    // A day later (signed in again), the address may be invited again.
    app.clock.advance(Duration::days(1));
    other.client.call("login", &[("email", &other.user.email), ("password", PASSWORD)]).await;
    let res = other.client.call("invite_member", &[("slug", &other_slug), ("email", target), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}
