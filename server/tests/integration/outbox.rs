//! The mail outbox: delivery over SMTP (the local sink), retries, leases, giving up, withdrawn mails, the development mailbox.

use std::sync::Arc;

use crate::common::{self, TestApp};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::clock::Clock;
use fluxi_core::schema::{invitations, outbox_emails};
use reqwest::StatusCode;
use time::Duration;

#[tokio::test]
async fn the_outbox_is_delivered_over_smtp_with_retries() {
    let Ok(sink) = std::env::var("FLUXI_TEST_SMTP_URL") else {
        panic!("FLUXI_TEST_SMTP_URL must point at the local SMTP sink (scripts/test starts it)");
    };
    let inbox = std::env::var("FLUXI_TEST_SMTP_MESSAGES").expect("FLUXI_TEST_SMTP_MESSAGES (the sink's HTTP listing)");
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Mail").await;
    let to = format!("mail-{}@example.test", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    owner.client.call("invite_member", &[("slug", &slug), ("email", &to), ("role", "viewer")]).await;
    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    // The row was stamped by the database clock; let the test clock catch up.
    app.clock.advance(Duration::seconds(2));

    // An unreachable server: the attempt is recorded and retried later, not lost.
    let dead = server::jobs::mail::Mailer::new("smtp://127.0.0.1:9", "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap(), 0);
    {
        let mut conn = app.db.conn().await;
        let (attempts, next, err): (i32, time::OffsetDateTime, Option<String>) = outbox_emails::table
            .select((outbox_emails::attempts, outbox_emails::next_attempt_at, outbox_emails::last_error))
            .first(&mut conn)
            .await
            .unwrap();
        assert_eq!(attempts, 1);
        assert!(next > app.clock.now() && err.is_some());
    }
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Queued", "a failed attempt is retried: not given up");
    let mailer = server::jobs::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(
        server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(),
        0,
        "not due yet (backoff)"
    );
    app.clock.advance(Duration::minutes(1));
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 1);
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0, "sent once");
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Sent");
    // Delivered: the single-use link is no longer readable in the database.
    assert_eq!(common::outbox_body_for(&app, &to).await, fluxi_core::outbox::BODY_ERASED_AFTER_DELIVERY);

    let messages: serde_json::Value = reqwest::get(format!("{inbox}?to={to}")).await.unwrap().json().await.unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let data = messages[0]["data"].as_str().unwrap();
    // The inviter's free text stays out of the subject.
    assert!(data.contains("Subject: You are invited to a workspace on Fluxi"), "{data}");
    let token = common::token_from(&data.replace("=\r\n", ""));
    let info = owner.client.call("invitation_info", &[("token", &token)]).await;
    assert_eq!(info.status, StatusCode::OK, "the mailed link works: {}", info.body);
}

/// A mail the SMTP server refuses for good (550) is given up at once, not retried.
#[tokio::test]
async fn mail_refused_for_good_is_given_up_at_once() {
    let sink = std::env::var("FLUXI_TEST_SMTP_URL")
        .expect("FLUXI_TEST_SMTP_URL must point at the local SMTP sink (scripts/test starts it)");
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Bounces").await;
    let res = owner
        .client
        .call("invite_member", &[("slug", &slug), ("email", "nobody@rejected.test"), ("role", "viewer")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let mailer = server::jobs::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0);
    let state = || async {
        let mut conn = app.db.conn().await;
        outbox_emails::table
            .select((outbox_emails::attempts, outbox_emails::failed_at.is_not_null(), outbox_emails::last_error))
            .first::<(i32, bool, Option<String>)>(&mut conn)
            .await
            .unwrap()
    };
    let (attempts, given_up, error) = state().await;
    assert_eq!((attempts, given_up), (1, true));
    assert!(error.as_deref().unwrap_or_default().contains("550"), "{error:?}");
    // Given up: the link is erased, and the people managing members are told.
    assert_eq!(
        common::outbox_body_for(&app, "nobody@rejected.test").await,
        fluxi_core::outbox::BODY_ERASED_WHEN_GIVEN_UP
    );
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "NotDelivered");
    let given_up = common::recorded(&app, fluxi_core::audit::Action::InvitationMailGivenUp).await;
    assert_eq!(given_up.len(), 1, "one event, in the workspace's trail");
    assert_eq!((given_up[0].target_kind.as_str(), given_up[0].outcome.as_str()), ("invitation", "failed"));
    let page = owner.client.get(&format!("/w/{slug}/settings/members")).await.body;
    assert!(page.contains("mail could not be delivered: check the address and invite again"), "{page}");
    app.clock.advance(Duration::hours(2));
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0);
    assert_eq!(state().await.0, 1, "never tried again");
}

/// A revoked or replaced invitation's mail that is not sent yet is withdrawn: never sent,
/// its body (the dead link) erased. Finished mails that still have a body (marked by an
/// older server version) are erased by the periodic sweep.
#[tokio::test]
async fn mails_of_revoked_or_replaced_invitations_are_withdrawn() {
    use fluxi_core::outbox::{erase_finished_bodies, BODY_ERASED_AFTER_DELIVERY, BODY_ERASED_WHEN_WITHDRAWN};
    let sink = std::env::var("FLUXI_TEST_SMTP_URL")
        .expect("FLUXI_TEST_SMTP_URL must point at the local SMTP sink (scripts/test starts it)");
    let inbox = std::env::var("FLUXI_TEST_SMTP_MESSAGES").expect("FLUXI_TEST_SMTP_MESSAGES (the sink's HTTP listing)");
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Withdrawn").await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (revoked, replaced) = (format!("revoked-{tag}@example.test"), format!("replaced-{tag}@example.test"));
    for to in [&revoked, &replaced, &replaced] {
        let res = owner.client.call("invite_member", &[("slug", &slug), ("email", to), ("role", "viewer")]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    let page: serde_json::Value =
        serde_json::from_str(&owner.client.call("members_page", &[("slug", &slug)]).await.body).unwrap();
    let id = page["invitations"].as_array().unwrap().iter().find(|i| i["email"] == revoked.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = owner.client.call("revoke_invitation", &[("slug", &slug), ("invitation_id", &id)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let mut conn = app.db.conn().await;
    let bodies = |to: String| {
        outbox_emails::table
            .filter(outbox_emails::recipient.eq(to))
            .order(outbox_emails::created_at.asc())
            .select(outbox_emails::body)
    };
    assert_eq!(bodies(revoked.clone()).load::<String>(&mut conn).await.unwrap(), vec![BODY_ERASED_WHEN_WITHDRAWN]);
    let replaced_bodies = bodies(replaced.clone()).load::<String>(&mut conn).await.unwrap();
    assert_eq!(replaced_bodies.len(), 2);
    assert_eq!(replaced_bodies[0], BODY_ERASED_WHEN_WITHDRAWN, "the first invitation's mail was withdrawn");
    assert!(replaced_bodies[1].contains("/invite/"), "the new one waits with its link");

    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let mailer = server::jobs::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(
        server::jobs::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(),
        1,
        "only the live invitation's mail"
    );
    let count = |to: String| {
        let inbox = inbox.clone();
        async move {
            let messages: serde_json::Value =
                reqwest::get(format!("{inbox}?to={to}")).await.unwrap().json().await.unwrap();
            messages.as_array().unwrap().len()
        }
    };
    assert_eq!(count(revoked.clone()).await, 0);
    assert_eq!(count(replaced.clone()).await, 1);
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Sent");

    // The sweep: a mail marked sent by an older version, body still there.
    diesel::update(outbox_emails::table.filter(outbox_emails::recipient.eq(&replaced)))
        .set(outbox_emails::body.eq("link: /invite/0123"))
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(erase_finished_bodies(&mut conn).await.unwrap() >= 1);
    assert_eq!(bodies(replaced.clone()).load::<String>(&mut conn).await.unwrap()[1], BODY_ERASED_AFTER_DELIVERY);
    assert_eq!(
        bodies(revoked.clone()).load::<String>(&mut conn).await.unwrap(),
        vec![BODY_ERASED_WHEN_WITHDRAWN],
        "left as it was"
    );
    assert_eq!(erase_finished_bodies(&mut conn).await.unwrap(), 0, "nothing left to erase");

    // An invitation from before mails were linked says nothing about its mail.
    diesel::update(invitations::table)
        .set(invitations::mail_id.eq(None::<uuid::Uuid>))
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Unknown");
    let page = owner.client.get(&format!("/w/{slug}/settings/members")).await.body;
    assert!(page.contains(&replaced) && !page.contains("mail sent") && !page.contains("mail not sent"), "{page}");
}

/// The mail state of the only pending invitation, as the members page's data says.
async fn pending_mail_state(owner: &mut common::Person, slug: &str) -> String {
    let page: serde_json::Value =
        serde_json::from_str(&owner.client.call("members_page", &[("slug", slug)]).await.body).unwrap();
    let pending = page["invitations"].as_array().unwrap_or_else(|| panic!("{page}"));
    assert_eq!(pending.len(), 1, "{pending:?}");
    pending[0]["mail"].as_str().unwrap().to_string()
}

/// Claimed mails are leased: a worker that dies after claiming leaves them to be claimed
/// again after `CLAIM_LEASE`, and a mail that keeps failing is given up after
/// `MAX_ATTEMPTS`.
#[tokio::test]
async fn mail_delivery_is_leased_and_gives_up_after_the_last_attempt() {
    use fluxi_core::outbox::{claim_due, CLAIM_LEASE, MAX_ATTEMPTS};
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Unreachable").await;
    owner.client.call("invite_member", &[("slug", &slug), ("email", "far@example.test"), ("role", "viewer")]).await;
    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let dead = server::jobs::mail::Mailer::new("smtp://127.0.0.1:9", "Fluxi <no-reply@fluxi.test>").unwrap();
    let attempts = || async {
        let mut conn = app.db.conn().await;
        outbox_emails::table
            .select((outbox_emails::attempts, outbox_emails::failed_at.is_not_null()))
            .first::<(i32, bool)>(&mut conn)
            .await
            .unwrap()
    };

    // A worker claims the mail and dies before sending it.
    let stale = {
        let mut conn = app.db.conn().await;
        let mut claimed = claim_due(&mut conn, app.clock.now(), 20).await.unwrap();
        assert_eq!(claimed.len(), 1);
        claimed.pop().unwrap()
    };
    assert_eq!(server::jobs::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap(), 0);
    assert_eq!(attempts().await, (1, false), "leased: nobody else tries it meanwhile");
    app.clock.advance(CLAIM_LEASE + Duration::seconds(1));
    server::jobs::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
    assert_eq!(attempts().await, (2, false), "claimed again after the lease");
    // The first worker was only slow, not dead: its late verdict on an old claim changes nothing.
    {
        let mut conn = app.db.conn().await;
        fluxi_core::outbox::mark_failed(
            &mut conn,
            &stale,
            "late",
            fluxi_core::outbox::Failure::Permanent,
            app.clock.now(),
        )
        .await
        .unwrap();
    }
    assert_eq!(attempts().await, (2, false), "a stale claim cannot give the mail up");

    for n in 3..=MAX_ATTEMPTS {
        app.clock.advance(Duration::hours(1) + Duration::seconds(1));
        server::jobs::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
        assert_eq!(attempts().await, (n, n == MAX_ATTEMPTS), "attempt {n}");
    }
    app.clock.advance(Duration::hours(2));
    server::jobs::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
    assert_eq!(attempts().await, (MAX_ATTEMPTS, true), "given up: not tried again");
}

#[tokio::test]
async fn the_development_mailbox_shows_outgoing_mail_and_is_absent_in_production() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Dev <Mail>").await;
    owner.client.call("invite_member", &[("slug", &slug), ("email", "dev@example.test"), ("role", "viewer")]).await;
    let page = app.client().get("/dev/mailbox").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("You are invited to a workspace on Fluxi"), "{}", page.body);
    assert!(page.body.contains("\u{201c}Dev &lt;Mail&gt;\u{201d}"), "quoted and escaped: {}", page.body);
    assert!(page.body.contains("dev@example.test") && page.body.contains("/invite/"));
    // Relayed by a reverse proxy (even one on this machine): not shown.
    let mut relayed = app.client();
    let res =
        relayed.raw(relayed.http().get(relayed.url("/dev/mailbox")).header("x-forwarded-for", "203.0.113.5")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(!res.body.contains("/invite/"));

    let prod = TestApp::spawn_with(common::Options { production: true, ..Default::default() }).await;
    assert_eq!(prod.client().get("/dev/mailbox").await.status, StatusCode::NOT_FOUND);
}
