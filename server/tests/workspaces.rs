//! Membership, roles, invitations, mail outbox and fleet migrations.

mod common;

use std::sync::Arc;

use app::error::AppError;
use common::{TestApp, PASSWORD};
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use fluxi_core::clock::Clock;
use fluxi_core::schema::{invitations, memberships, outbox_emails, workspaces};
use reqwest::StatusCode;
use time::Duration;

fn token_from(body: &str) -> String {
    let start = body.find("/invite/").expect("invitation link in mail") + "/invite/".len();
    body[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect()
}

async fn outbox_body_for(app: &TestApp, email: &str) -> String {
    let mut conn = app.db.conn().await;
    outbox_emails::table
        .filter(outbox_emails::recipient.eq(email))
        .order(outbox_emails::created_at.desc())
        .select(outbox_emails::body)
        .first(&mut conn)
        .await
        .unwrap()
}

async fn role_of(app: &TestApp, slug: &str, user: uuid::Uuid) -> Option<String> {
    let mut conn = app.db.conn().await;
    memberships::table
        .inner_join(workspaces::table)
        .filter(workspaces::slug.eq(slug))
        .filter(memberships::user_id.eq(user))
        .select(memberships::role)
        .first(&mut conn)
        .await
        .optional()
        .unwrap()
}

#[tokio::test]
async fn invitations_are_single_use_expire_can_be_revoked_and_bind_to_the_email() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let mut invitee = app.person("Invitee").await;
    let mut stranger = app.person("Stranger").await;
    let invitee_email = invitee.user.email.clone();

    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee_email.to_uppercase()), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Written to the outbox in the same transaction; only the token's hash is stored.
    let token = token_from(&outbox_body_for(&app, &invitee_email.to_uppercase()).await);
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
    assert_eq!(role_of(&app, &slug, invitee.user.id).await.as_deref(), Some("member"));
    let again = invitee.client.call("accept_invitation", &[("token", &token)]).await;
    assert!(matches!(again.error(), AppError::Rejected(m) if m.contains("already been used")));
    // A made-up token.
    let bogus = invitee.client.call("accept_invitation", &[("token", &"0".repeat(64))]).await;
    assert!(matches!(bogus.error(), AppError::Rejected(m) if m.contains("not valid")));

    // Expiry (7 days by default).
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &stranger.user.email), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK);
    let token2 = token_from(&outbox_body_for(&app, &stranger.user.email).await);
    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    // (A week later the old session has expired too: sign in again.)
    let relogin = stranger.client.call("login", &[("email", &stranger.user.email), ("password", PASSWORD)]).await;
    assert_eq!(relogin.status, StatusCode::OK);
    owner.client.call("login", &[("email", &owner.user.email), ("password", PASSWORD)]).await;
    let expired = stranger.client.call("accept_invitation", &[("token", &token2)]).await;
    assert!(matches!(expired.error(), AppError::Rejected(m) if m.contains("expired")));

    // Revocation (from the members page's list).
    let mut late = app.person("Late").await;
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &late.user.email), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK);
    let token3 = token_from(&outbox_body_for(&app, &late.user.email).await);
    let page: serde_json::Value = serde_json::from_str(&owner.client.call("members_page", &[("slug", &slug)]).await.body).unwrap();
    let pending = page["invitations"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "the expired one is no longer listed: {pending:?}");
    let id = pending[0]["id"].as_str().unwrap();
    let res = owner.client.call("revoke_invitation", &[("slug", &slug), ("invitation_id", id)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let revoked = late.client.call("accept_invitation", &[("token", &token3)]).await;
    assert!(matches!(revoked.error(), AppError::Rejected(m) if m.contains("revoked")));
    assert_eq!(role_of(&app, &slug, late.user.id).await, None);

    // Owner is never offered by invitation; existing members cannot be invited again.
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", "x@example.test"), ("role", "owner")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee_email), ("role", "viewer")]).await;
    assert!(res.error().message_for("email").unwrap().contains("already a member"));
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", "not an email"), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Every role sees the controls it may use on the members page and the workspace home,
/// and none it may not (the server refuses them anyway: role_matrix.rs). Pending
/// invitations (invitees' addresses) are shown to those who manage members only.
#[tokio::test]
async fn each_role_sees_only_the_controls_it_may_use() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Olga Owner").await;
    let slug = app.workspace(&mut owner, "Controls").await;
    let mut admin = app.person("Adam Admin").await;
    let mut member = app.person("Mona Member").await;
    let mut viewer = app.person("Vic Viewer").await;
    let co_owner = app.person("Otto Owner").await;
    for (p, role) in [(&admin, "admin"), (&member, "member"), (&viewer, "viewer"), (&co_owner, "owner")] {
        app.add_member(&slug, p, role).await;
    }
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", "pending-guest@example.test"), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let members_page = format!("/w/{slug}/settings/members");
    let home = format!("/w/{slug}");
    let role_select = |name: &str| format!("aria-label=\"Role for {name}\"");
    let remove_of = |user: &fluxi_core::accounts::User| format!("name=\"user_id\" value=\"{}\"", user.id);

    // Owner: everything, including other owners' rows, the owner role, transfer and delete.
    let page = owner.client.get(&members_page).await.body;
    for wanted in ["Send invitation", "Revoke invitation for pending-guest@example.test", "Transfer ownership", "Delete workspace", "Leave workspace", "<option value=\"owner\"", ">Remove<", ">Actions<", "Role for "] {
        assert!(page.contains(wanted), "owner should see {wanted:?}");
    }
    for name in ["Adam Admin", "Mona Member", "Vic Viewer", "Otto Owner"] {
        assert!(page.contains(&role_select(name)), "owner manages {name}");
    }
    assert!(!page.contains(&role_select("Olga Owner")), "not one's own row");

    // Admin: members and invitations, but not owners, the owner role, transfer or delete.
    let page = admin.client.get(&members_page).await.body;
    for wanted in ["Send invitation", "Revoke invitation for pending-guest@example.test", "Leave workspace"] {
        assert!(page.contains(wanted), "admin should see {wanted:?}");
    }
    for name in ["Mona Member", "Vic Viewer"] {
        assert!(page.contains(&role_select(name)), "admin manages {name}");
    }
    for unwanted in [role_select("Olga Owner"), role_select("Otto Owner"), remove_of(&owner.user), remove_of(&co_owner.user)] {
        assert!(!page.contains(&unwanted), "admin must not see {unwanted:?}");
    }
    for unwanted in ["<option value=\"owner\"", "Transfer ownership", "Delete workspace"] {
        assert!(!page.contains(unwanted), "admin must not see {unwanted:?}");
    }

    // Member and viewer: the list and "Leave" only; no invitations, not even their addresses.
    for (who, person) in [("member", &mut member), ("viewer", &mut viewer)] {
        let page = person.client.get(&members_page).await.body;
        assert!(page.contains("Leave workspace") && page.contains("Mona Member") && page.contains("Olga Owner"), "{who}: the list");
        for unwanted in ["Send invitation", "Revoke", "pending-guest@example.test", "Role for ", ">Remove<", "Transfer ownership", "Delete workspace", ">Actions<"] {
            assert!(!page.contains(unwanted), "{who} must not see {unwanted:?}");
        }
    }

    // Workspace home: writers get the note form, the viewer a read-only notice instead.
    for (who, person, writes) in [("owner", &mut owner, true), ("admin", &mut admin, true), ("member", &mut member, true), ("viewer", &mut viewer, false)] {
        let page = person.client.get(&home).await.body;
        assert_eq!(page.contains("Add note"), writes, "{who}: note form");
    }
}

/// Each workspace is a schema, a database role and tables: an account may create
/// `workspaces_per_day` in any 24 hours, and no more, even when creations race.
#[tokio::test]
async fn an_account_can_create_only_so_many_workspaces_a_day() {
    use fluxi_core::schema::workspace_creations;
    let app = TestApp::spawn_with(common::Options { workspaces_per_day: 3, pool_size: 16, ..Default::default() }).await;
    let mut owner = app.person("Owner").await;
    let one = app.workspace(&mut owner, "One").await;
    app.workspace(&mut owner, "Two").await;
    // The last two race: exactly one gets through.
    let mut racers = Vec::new();
    for name in ["Three A", "Three B"] {
        let mut c = app.client();
        c.session_cookie = owner.client.session_cookie.clone();
        racers.push(tokio::spawn(async move { c.call("create_workspace", &[("name", name)]).await }));
    }
    let mut replies = Vec::new();
    for r in racers {
        replies.push(r.await.unwrap());
    }
    assert_eq!(replies.iter().filter(|r| r.status == StatusCode::OK).count(), 1, "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    let refused = replies.iter().find(|r| r.status != StatusCode::OK).unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.error(),
        AppError::TooMany("You have created 3 workspaces in the last 24 hours, the most allowed. Try again tomorrow.".into())
    );
    let mut conn = app.db.conn().await;
    assert_eq!(workspaces::table.count().get_result::<i64>(&mut conn).await.unwrap(), 3, "the refused one made nothing");
    let schemas: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ws\\_%')",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(schemas, 3);

    // Deleting one gives nothing back.
    let res = owner.client.call("delete_workspace", &[("slug", &one), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(owner.client.call("create_workspace", &[("name", "Four")]).await.status, StatusCode::TOO_MANY_REQUESTS);

    // Another account has its own allowance.
    let mut other = app.person("Other").await;
    app.workspace(&mut other, "Theirs").await;

    // A day later the allowance is back (after signing in again: the session has expired),
    // and the periodic clean-up forgets the old creations.
    app.clock.advance(Duration::hours(24) + Duration::minutes(1));
    let res = owner.client.call("login", &[("email", &owner.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let removed = fluxi_core::workspaces::delete_old_workspace_creations(&mut conn, app.clock.now()).await.unwrap();
    assert_eq!(removed, 4);
    app.workspace(&mut owner, "Four").await;
    assert_eq!(workspace_creations::table.count().get_result::<i64>(&mut conn).await.unwrap(), 1);
}

/// Each invitation mails an address of the inviter's choosing: a workspace may send
/// `INVITATIONS_PER_DAY` in any 24 hours, and no more, even when invitations race.
#[tokio::test]
async fn a_workspace_can_send_only_so_many_invitations_a_day() {
    use fluxi_core::workspaces::invitations::{invite, DEFAULT_TTL, INVITATIONS_PER_DAY};
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Mailer").await;
    let access = app.access(&slug, &owner).await;
    let mut conn = app.db.conn().await;
    // All but one of the day's allowance, through the domain function (fast).
    for i in 1..INVITATIONS_PER_DAY {
        invite(&mut conn, &access, &format!("guest{i}@example.test"), fluxi_core::workspaces::Role::Member, app.clock.now(), DEFAULT_TTL, "http://x")
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
        racers.push(tokio::spawn(async move { c.call("invite_member", &[("slug", &slug), ("email", email), ("role", "viewer")]).await }));
    }
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|r| r.status == StatusCode::OK).count(), 1, "{:?}", statuses.iter().map(|r| &r.body).collect::<Vec<_>>());
    let refused = statuses.iter().find(|r| r.status != StatusCode::OK).unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.error(),
        AppError::TooMany(format!("This workspace has sent {INVITATIONS_PER_DAY} invitations in the last 24 hours. Try again later."))
    );
    let invitations_now: i64 = invitations::table.count().get_result(&mut conn).await.unwrap();
    let mails_now: i64 = outbox_emails::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(invitations_now, INVITATIONS_PER_DAY, "the refused one wrote nothing");
    assert_eq!(mails_now, INVITATIONS_PER_DAY, "and sent nothing");
    // Another workspace has its own allowance.
    let other = app.workspace(&mut owner, "Other").await;
    let res = owner.client.call("invite_member", &[("slug", &other), ("email", "elsewhere@example.test"), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // A day after the first ones, the allowance is back (signed in again: a day is past
    // the session's limits).
    app.clock.advance(Duration::hours(23) + Duration::minutes(41));
    let res = owner.client.call("login", &[("email", owner.user.email.as_str()), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", "tomorrow@example.test"), ("role", "member")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

#[tokio::test]
async fn concurrent_accepts_of_one_invitation_succeed_once() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Race").await;
    let invitee = app.person("Invitee").await;
    owner.client.call("invite_member", &[("slug", &slug), ("email", &invitee.user.email), ("role", "member")]).await;
    let token = token_from(&outbox_body_for(&app, &invitee.user.email).await);
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

async fn note(c: &mut common::Client, slug: String) -> StatusCode {
    c.call("create_note", &[("slug", &slug), ("title", "hello"), ("body", "")]).await.status
}

#[tokio::test]
async fn role_changes_apply_on_the_next_request_and_admins_cannot_touch_owners() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Roles").await;
    let mut admin = app.person("Admin").await;
    let mut member = app.person("Member").await;
    app.add_member(&slug, &admin, "admin").await;
    app.add_member(&slug, &member, "member").await;

    assert_eq!(note(&mut member.client, slug.clone()).await, StatusCode::OK);
    let res = admin.client.call("change_member_role", &[("slug", &slug), ("user_id", &member.user.id.to_string()), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK);
    // The very next request of the demoted member is refused.
    assert_eq!(note(&mut member.client, slug.clone()).await, StatusCode::FORBIDDEN);
    let home: serde_json::Value = serde_json::from_str(&member.client.call("workspace_home", &[("slug", &slug)]).await.body).unwrap();
    assert_eq!(home["role"], "viewer");
    assert_eq!(home["can_write"], false);

    // Admins cannot change or remove owners, nor grant owner.
    let owner_id = owner.user.id.to_string();
    for (f, args) in [
        ("change_member_role", vec![("slug", slug.as_str()), ("user_id", owner_id.as_str()), ("role", "admin")]),
        ("remove_member", vec![("slug", slug.as_str()), ("user_id", owner_id.as_str())]),
    ] {
        assert_eq!(admin.client.call(f, &args).await.status, StatusCode::FORBIDDEN, "{f}");
    }
    let member_id = member.user.id.to_string();
    let res = admin.client.call("change_member_role", &[("slug", &slug), ("user_id", &member_id), ("role", "owner")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(role_of(&app, &slug, owner.user.id).await.as_deref(), Some("owner"));

    // Removal takes effect at once, too.
    let res = admin.client.call("remove_member", &[("slug", &slug), ("user_id", &member_id)]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(member.client.call("workspace_home", &[("slug", &slug)]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_workspace_always_keeps_an_owner_even_under_concurrent_demotions() {
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    for round in 0..5 {
        let mut a = app.person("A").await;
        let slug = app.workspace(&mut a, &format!("Owners {round}")).await;
        let b = app.person("B").await;
        app.add_member(&slug, &b, "owner").await;
        let (a_access, b_access) = (app.access(&slug, &a).await, app.access(&slug, &b).await);
        // Each owner demotes the other, at the same time, through the domain layer.
        let pool = app.db.pool.clone();
        let (pa, pb) = (pool.clone(), pool.clone());
        let (ida, idb) = (a.user.id, b.user.id);
        let t1 = tokio::spawn(async move {
            let mut c = pa.get().await.unwrap();
            fluxi_core::workspaces::change_role(&mut c, &a_access, idb, fluxi_core::workspaces::Role::Admin).await
        });
        let t2 = tokio::spawn(async move {
            let mut c = pb.get().await.unwrap();
            fluxi_core::workspaces::change_role(&mut c, &b_access, ida, fluxi_core::workspaces::Role::Admin).await
        });
        let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
        let mut conn = app.db.conn().await;
        let owners: i64 = memberships::table
            .inner_join(workspaces::table)
            .filter(workspaces::slug.eq(&slug))
            .filter(memberships::role.eq("owner"))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap();
        assert!(owners >= 1, "round {round}: no owner left ({r1:?}, {r2:?})");
        assert!(r1.is_ok() || r2.is_ok(), "one demotion succeeds");
        // Even a raw statement cannot remove the last owner.
        let raw = conn
            .batch_execute(&format!(
                "UPDATE memberships SET role = 'admin' WHERE workspace_id = (SELECT id FROM workspaces WHERE slug = '{slug}')"
            ))
            .await;
        assert!(raw.unwrap_err().to_string().contains("at least one owner"));
    }
    // The only owner cannot leave; a clear error.
    let mut solo = app.person("Solo").await;
    let slug = app.workspace(&mut solo, "Solo").await;
    let res = solo.client.call("leave_workspace", &[("slug", &slug)]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert!(matches!(res.error(), AppError::Rejected(m) if m.contains("at least one owner")));
}

/// The owner rule holds in the database whatever the isolation level of the transactions
/// that race, and without any help from the application's locking: two raw transactions
/// each demote a different owner of a two-owner workspace, the second one while the first
/// is still open. The second must fail (owner rule or serialization failure) and the
/// workspace keeps one owner.
#[tokio::test]
async fn raw_concurrent_demotions_cannot_leave_a_workspace_without_an_owner() {
    use diesel::sql_types::{Bool, Integer};
    let app = TestApp::spawn().await;
    for isolation in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        let mut a = app.person("A").await;
        let slug = app.workspace(&mut a, &format!("Raw owners {isolation}")).await;
        let b = app.person("B").await;
        app.add_member(&slug, &b, "owner").await;
        let demote = |user: uuid::Uuid| {
            format!(
                "UPDATE memberships SET role = 'admin' WHERE user_id = '{user}' \
                 AND workspace_id = (SELECT id FROM workspaces WHERE slug = '{slug}')"
            )
        };
        let (mut first, mut second, mut watcher) = (app.db.conn().await, app.db.conn().await, app.db.conn().await);
        let second_pid: i32 = diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()")).get_result(&mut second).await.unwrap();
        // Both transactions take their snapshot before either demotes anyone.
        first.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}; SELECT count(*) FROM memberships")).await.unwrap();
        second.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}; SELECT count(*) FROM memberships")).await.unwrap();
        first.batch_execute(&demote(a.user.id)).await.unwrap();
        let b_demotion = demote(b.user.id);
        let second_demotes = tokio::spawn(async move {
            let demoted = second.batch_execute(&b_demotion).await;
            let ended = second.batch_execute(if demoted.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
            (demoted, ended)
        });
        // Wait until the second transaction is blocked behind the first one's locks.
        let waiting = format!("EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {second_pid} AND wait_event_type = 'Lock')");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !diesel::select(diesel::dsl::sql::<Bool>(&waiting)).get_result::<bool>(&mut watcher).await.unwrap() {
            assert!(!second_demotes.is_finished(), "{isolation}: the second demotion did not wait for the first");
            assert!(std::time::Instant::now() < deadline, "{isolation}: the second demotion never waited");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        first.batch_execute("COMMIT").await.unwrap();
        let (demoted, ended) = second_demotes.await.unwrap();
        let refused = match (demoted, ended) {
            (Err(e), _) | (Ok(()), Err(e)) => e.to_string(),
            (Ok(()), Ok(())) => String::new(),
        };
        assert!(
            refused.contains("at least one owner") || refused.contains("could not serialize"),
            "{isolation}: the second demotion must be refused, got {refused:?}"
        );
        assert_eq!(role_of(&app, &slug, a.user.id).await.as_deref(), Some("admin"), "{isolation}");
        assert_eq!(role_of(&app, &slug, b.user.id).await.as_deref(), Some("owner"), "{isolation}");
    }
}

#[tokio::test]
async fn ownership_transfer_needs_the_current_password() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Transfer").await;
    let heir = app.person("Heir").await;
    app.add_member(&slug, &heir, "member").await;
    let heir_id = heir.user.id.to_string();
    let res = owner.client.call("transfer_ownership", &[("slug", &slug), ("user_id", &heir_id), ("password", "wrong password!")]).await;
    assert!(res.error().message_for("password").is_some());
    assert_eq!(role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
    let res = owner.client.call("transfer_ownership", &[("slug", &slug), ("user_id", &heir_id), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(role_of(&app, &slug, heir.user.id).await.as_deref(), Some("owner"));
    assert_eq!(role_of(&app, &slug, owner.user.id).await.as_deref(), Some("admin"));
}

/// Step-up password checks share the sign-in throttle: a stolen session must not be a way
/// to guess the account's password without limit.
#[tokio::test]
async fn wrong_step_up_passwords_are_throttled_together_with_sign_in() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Guarded").await;
    let heir = app.person("Heir").await;
    app.add_member(&slug, &heir, "member").await;
    let heir_id = heir.user.id.to_string();
    let transfer = |password: &'static str| [("slug", slug.clone()), ("user_id", heir_id.clone()), ("password", password.to_string())];
    for _ in 0..5 {
        let args = transfer("a wrong guess");
        let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = owner.client.call("transfer_ownership", &args).await;
        assert_eq!(res.error().message_for("password").as_deref(), Some("That is not your current password."));
    }
    let blocked = AppError::TooMany("Too many wrong passwords for this account. Try again in 15 minutes.".into());
    let args = transfer(PASSWORD);
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = owner.client.call("transfer_ownership", &args).await;
    assert_eq!((res.status, res.error()), (StatusCode::TOO_MANY_REQUESTS, blocked.clone()));
    assert_eq!(role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
    // The same count guards sign-in to the account.
    let res = app.client().call("login", &[("email", owner.user.email.as_str()), ("password", PASSWORD)]).await;
    assert_eq!((res.status, res.error()), (StatusCode::TOO_MANY_REQUESTS, blocked));
    // Once the block is over, the right password goes through.
    app.clock.advance(Duration::minutes(15) + Duration::seconds(1));
    let res = owner.client.call("transfer_ownership", &args).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(role_of(&app, &slug, heir.user.id).await.as_deref(), Some("owner"));
}

/// Transfer and delete run after a slow password check; a demotion or removal that lands
/// between the request's membership check and the action must still stop the action.
#[tokio::test]
async fn an_owner_demoted_after_the_check_can_neither_transfer_nor_delete() {
    use fluxi_core::workspaces::{delete_workspace, transfer_ownership, WorkspaceError};
    let app = TestApp::spawn().await;
    let mut alpha = app.person("Alpha").await;
    let slug = app.workspace(&mut alpha, "Recheck").await;
    let bravo = app.person("Bravo").await;
    app.add_member(&slug, &bravo, "owner").await;
    let charlie = app.person("Charlie").await;
    app.add_member(&slug, &charlie, "member").await;
    // Checked while Alpha was an owner...
    let stale = app.access(&slug, &alpha).await;
    // ...then demoted by the other owner.
    let mut conn = app.db.conn().await;
    let alpha_row = memberships::table.filter(memberships::user_id.eq(alpha.user.id));
    diesel::update(alpha_row).set(memberships::role.eq("admin")).execute(&mut conn).await.unwrap();
    let r = transfer_ownership(&mut conn, &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    let r = delete_workspace(&mut conn, &stale).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    assert_eq!(role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("member"));
    assert_eq!(role_of(&app, &slug, alpha.user.id).await.as_deref(), Some("admin"));
    // Removed altogether: the workspace is not theirs to see any more.
    diesel::delete(alpha_row).execute(&mut conn).await.unwrap();
    let r = delete_workspace(&mut conn, &stale).await;
    assert!(matches!(r, Err(WorkspaceError::NotFound)), "{r:?}");
    assert_eq!(role_of(&app, &slug, bravo.user.id).await.as_deref(), Some("owner"), "the workspace is still there");
    // A current owner's access still works, end to end.
    let fresh = app.access(&slug, &bravo).await;
    transfer_ownership(&mut conn, &fresh, charlie.user.id).await.unwrap();
    assert_eq!(role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("owner"));
}

/// The same for admins: the role checked when the request began is checked again, under
/// lock, where the change is written.
#[tokio::test]
async fn an_admin_demoted_after_the_check_can_no_longer_change_or_remove_members() {
    use fluxi_core::workspaces::{change_role, remove_member, Role, WorkspaceError};
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Admins").await;
    let alpha = app.person("Alpha").await;
    app.add_member(&slug, &alpha, "admin").await;
    let charlie = app.person("Charlie").await;
    app.add_member(&slug, &charlie, "member").await;
    let stale = app.access(&slug, &alpha).await;
    let mut conn = app.db.conn().await;
    let alpha_row = memberships::table.filter(memberships::user_id.eq(alpha.user.id));
    diesel::update(alpha_row).set(memberships::role.eq("viewer")).execute(&mut conn).await.unwrap();
    let r = change_role(&mut conn, &stale, charlie.user.id, Role::Viewer).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    let r = remove_member(&mut conn, &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    assert_eq!(role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("member"));
    // Removed altogether: not found, like any workspace that is not theirs.
    diesel::delete(alpha_row).execute(&mut conn).await.unwrap();
    let r = remove_member(&mut conn, &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::NotFound)), "{r:?}");
    // A current admin still can; acting on someone who is not a member is NoSuchMember.
    let bravo = app.person("Bravo").await;
    app.add_member(&slug, &bravo, "admin").await;
    let fresh = app.access(&slug, &bravo).await;
    change_role(&mut conn, &fresh, charlie.user.id, Role::Viewer).await.unwrap();
    assert_eq!(role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("viewer"));
    let r = change_role(&mut conn, &fresh, alpha.user.id, Role::Member).await;
    assert!(matches!(r, Err(WorkspaceError::NoSuchMember)), "{r:?}");
    remove_member(&mut conn, &fresh, charlie.user.id).await.unwrap();
    assert_eq!(role_of(&app, &slug, charlie.user.id).await, None);
}

/// Two admins demoting each other at the same moment: the second change is checked
/// against the first's outcome (its author is no admin any more), never both applied; and
/// the transactions wait for each other rather than deadlock (PostgreSQL would break a
/// deadlock by failing one of them with a database error, which would fail the match below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_demoting_each_other_at_once_leave_one_admin() {
    use fluxi_core::workspaces::{change_role, Role};
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Mutual").await;
    let (a, b) = (app.person("Ann").await, app.person("Ben").await);
    for _ in 0..20 {
        for p in [&a, &b] {
            let mut conn = app.db.conn().await;
            let row = memberships::table.filter(memberships::user_id.eq(p.user.id));
            diesel::delete(row).execute(&mut conn).await.unwrap();
        }
        app.add_member(&slug, &a, "admin").await;
        app.add_member(&slug, &b, "admin").await;
        let (access_a, access_b) = (app.access(&slug, &a).await, app.access(&slug, &b).await);
        let (pool_a, pool_b) = (app.db.pool.clone(), app.db.pool.clone());
        let (b_id, a_id) = (b.user.id, a.user.id);
        let first = tokio::spawn(async move {
            let mut conn = pool_a.get().await.unwrap();
            change_role(&mut conn, &access_a, b_id, Role::Member).await
        });
        let second = tokio::spawn(async move {
            let mut conn = pool_b.get().await.unwrap();
            change_role(&mut conn, &access_b, a_id, Role::Member).await
        });
        let (r1, r2) = (first.await.unwrap(), second.await.unwrap());
        // One of them goes first and demotes the other, whose change is then refused.
        let outcomes = [r1.is_ok(), r2.is_ok()];
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{r1:?} {r2:?}");
        for r in [r1, r2] {
            if let Err(e) = r {
                assert!(matches!(e, fluxi_core::workspaces::WorkspaceError::Forbidden), "{e:?}");
            }
        }
    }
}

/// One owner deletes the workspace while another changes roles in it: deleting locks the
/// workspace row and then (cascading) every membership, a role change its memberships and
/// then (the at-least-one-owner trigger) the workspace row. Both now take the workspace row
/// first, so they queue instead of deadlocking; every outcome is a clean one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_workspace_while_roles_change_never_deadlocks() {
    use fluxi_core::workspaces::{change_role, delete_workspace, remove_member, Role, WorkspaceError as E};
    let app = TestApp::spawn_with(common::Options { pool_size: 8, workspaces_per_day: u32::MAX, ..Default::default() }).await;
    let mut first = app.person("First").await;
    let second = app.person("Second").await;
    let third = app.person("Third").await;
    for round in 0..12 {
        let slug = app.workspace(&mut first, &format!("Race {round}")).await;
        app.add_member(&slug, &second, "owner").await;
        app.add_member(&slug, &third, "admin").await;
        let (deleter, changer) = (app.access(&slug, &first).await, app.access(&slug, &second).await);
        let (pool_a, pool_b) = (app.db.pool.clone(), app.db.pool.clone());
        let (first_id, third_id) = (first.user.id, third.user.id);
        let delete = tokio::spawn(async move {
            let mut conn = pool_a.get().await.unwrap();
            delete_workspace(&mut conn, &deleter).await
        });
        let change = tokio::spawn(async move {
            let mut conn = pool_b.get().await.unwrap();
            let demoted = change_role(&mut conn, &changer, first_id, Role::Admin).await;
            let removed = remove_member(&mut conn, &changer, third_id).await;
            (demoted, removed)
        });
        let deleted = delete.await.unwrap();
        let (demoted, removed) = change.await.unwrap();
        // Whoever went first, nothing failed with a database error (a deadlock would).
        assert!(matches!(deleted, Ok(()) | Err(E::Forbidden)), "round {round}: delete {deleted:?}");
        for r in [&demoted, &removed] {
            assert!(matches!(r, Ok(()) | Err(E::NotFound)), "round {round}: {r:?}");
        }
    }
}

/// A step-up (re-entering the password) waits for a hashing permit and then hashes: it
/// must not keep a pooled connection meanwhile. Twelve queued step-ups on a pool of two
/// connections; the signed-in account page must still be served before they are through.
#[tokio::test]
async fn queued_step_ups_leave_the_pool_to_other_requests() {
    let app = TestApp::spawn_with(common::Options {
        hasher: fluxi_core::accounts::PasswordHasherConfig { permits: 1, max_wait: std::time::Duration::from_secs(30) },
        pool_size: 2,
        // Twelve wrong passwords in a row: the password throttle is not what this is about.
        sign_in_throttle: fluxi_core::accounts::SignInThrottle { max_failures: 1000, ..Default::default() },
        ..Default::default()
    })
    .await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Queue").await;
    let heir = app.person("Heir").await;
    app.add_member(&slug, &heir, "member").await;
    let (mut reader, _) = app.signed_up("Reader").await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let mut c = app.client();
            c.session_cookie = owner.client.session_cookie.clone();
            let (slug, heir_id, done) = (slug.clone(), heir.user.id.to_string(), done.clone());
            tokio::spawn(async move {
                let args = [("slug", slug.as_str()), ("user_id", heir_id.as_str()), ("password", "not my password")];
                let r = c.call("transfer_ownership", &args).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r
            })
        })
        .collect();
    // Wait until the burst is demonstrably under way (the first step-up finished).
    while std::sync::atomic::AtomicUsize::load(&done, std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for _ in 0..3 {
        assert_eq!(reader.get("/account").await.status, StatusCode::OK);
    }
    let finished_when_reads_done = std::sync::atomic::AtomicUsize::load(&done, std::sync::atomic::Ordering::SeqCst);
    for h in burst {
        let r = h.await.unwrap();
        assert_eq!(r.error().message_for("password").as_deref(), Some("That is not your current password."), "{}", r.body);
    }
    assert!(finished_when_reads_done < 12, "reads had to wait for the whole burst ({finished_when_reads_done}/12 done)");
    assert_eq!(role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
}

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
    let dead = server::mail::Mailer::new("smtp://127.0.0.1:9", "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap(), 0);
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
    let mailer = server::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0, "not due yet (backoff)");
    app.clock.advance(Duration::minutes(1));
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 1);
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0, "sent once");
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Sent");
    // Delivered: the single-use link is no longer readable in the database.
    assert_eq!(outbox_body_for(&app, &to).await, fluxi_core::outbox::BODY_ERASED_AFTER_DELIVERY);

    let messages: serde_json::Value = reqwest::get(format!("{inbox}?to={to}")).await.unwrap().json().await.unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let data = messages[0]["data"].as_str().unwrap();
    assert!(data.contains("Subject: Invitation to Mail on Fluxi"), "{data}");
    let token = token_from(&data.replace("=\r\n", ""));
    let info = owner.client.call("invitation_info", &[("token", &token)]).await;
    assert_eq!(info.status, StatusCode::OK, "the mailed link works: {}", info.body);
}

/// A mail the SMTP server refuses for good (550) is given up at once, not retried.
#[tokio::test]
async fn mail_refused_for_good_is_given_up_at_once() {
    let sink = std::env::var("FLUXI_TEST_SMTP_URL").expect("FLUXI_TEST_SMTP_URL must point at the local SMTP sink (scripts/test starts it)");
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Bounces").await;
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", "nobody@rejected.test"), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let mailer = server::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0);
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
    assert_eq!(outbox_body_for(&app, "nobody@rejected.test").await, fluxi_core::outbox::BODY_ERASED_WHEN_GIVEN_UP);
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "NotDelivered");
    let page = owner.client.get(&format!("/w/{slug}/settings/members")).await.body;
    assert!(page.contains("mail could not be delivered: check the address and invite again"), "{page}");
    app.clock.advance(Duration::hours(2));
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 0);
    assert_eq!(state().await.0, 1, "never tried again");
}

/// A revoked or replaced invitation's mail that is not sent yet is withdrawn: never sent,
/// its body (the dead link) erased. Finished mails that still have a body (marked by an
/// older server version) are erased by the periodic sweep.
#[tokio::test]
async fn mails_of_revoked_or_replaced_invitations_are_withdrawn() {
    use fluxi_core::outbox::{erase_finished_bodies, BODY_ERASED_AFTER_DELIVERY, BODY_ERASED_WHEN_WITHDRAWN};
    let sink = std::env::var("FLUXI_TEST_SMTP_URL").expect("FLUXI_TEST_SMTP_URL must point at the local SMTP sink (scripts/test starts it)");
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
    let page: serde_json::Value = serde_json::from_str(&owner.client.call("members_page", &[("slug", &slug)]).await.body).unwrap();
    let id = page["invitations"].as_array().unwrap().iter().find(|i| i["email"] == revoked.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    let res = owner.client.call("revoke_invitation", &[("slug", &slug), ("invitation_id", &id)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let mut conn = app.db.conn().await;
    let bodies = |to: String| {
        outbox_emails::table.filter(outbox_emails::recipient.eq(to)).order(outbox_emails::created_at.asc()).select(outbox_emails::body)
    };
    assert_eq!(bodies(revoked.clone()).load::<String>(&mut conn).await.unwrap(), vec![BODY_ERASED_WHEN_WITHDRAWN]);
    let replaced_bodies = bodies(replaced.clone()).load::<String>(&mut conn).await.unwrap();
    assert_eq!(replaced_bodies.len(), 2);
    assert_eq!(replaced_bodies[0], BODY_ERASED_WHEN_WITHDRAWN, "the first invitation's mail was withdrawn");
    assert!(replaced_bodies[1].contains("/invite/"), "the new one waits with its link");

    let clock: fluxi_core::clock::SharedClock = Arc::new(app.clock.clone());
    app.clock.advance(Duration::seconds(2));
    let mailer = server::mail::Mailer::new(&sink, "Fluxi <no-reply@fluxi.test>").unwrap();
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &mailer).await.unwrap(), 1, "only the live invitation's mail");
    let count = |to: String| {
        let inbox = inbox.clone();
        async move {
            let messages: serde_json::Value = reqwest::get(format!("{inbox}?to={to}")).await.unwrap().json().await.unwrap();
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
    assert_eq!(bodies(revoked.clone()).load::<String>(&mut conn).await.unwrap(), vec![BODY_ERASED_WHEN_WITHDRAWN], "left as it was");
    assert_eq!(erase_finished_bodies(&mut conn).await.unwrap(), 0, "nothing left to erase");

    // An invitation from before mails were linked says nothing about its mail.
    diesel::update(invitations::table).set(invitations::mail_id.eq(None::<uuid::Uuid>)).execute(&mut conn).await.unwrap();
    assert_eq!(pending_mail_state(&mut owner, &slug).await, "Unknown");
    let page = owner.client.get(&format!("/w/{slug}/settings/members")).await.body;
    assert!(page.contains(&replaced) && !page.contains("mail sent") && !page.contains("mail not sent"), "{page}");
}

/// The mail state of the only pending invitation, as the members page's data says.
async fn pending_mail_state(owner: &mut common::Person, slug: &str) -> String {
    let page: serde_json::Value = serde_json::from_str(&owner.client.call("members_page", &[("slug", slug)]).await.body).unwrap();
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
    let dead = server::mail::Mailer::new("smtp://127.0.0.1:9", "Fluxi <no-reply@fluxi.test>").unwrap();
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
    assert_eq!(server::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap(), 0);
    assert_eq!(attempts().await, (1, false), "leased: nobody else tries it meanwhile");
    app.clock.advance(CLAIM_LEASE + Duration::seconds(1));
    server::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
    assert_eq!(attempts().await, (2, false), "claimed again after the lease");
    // The first worker was only slow, not dead: its late verdict on an old claim changes nothing.
    {
        let mut conn = app.db.conn().await;
        fluxi_core::outbox::mark_failed(&mut conn, &stale, "late", fluxi_core::outbox::Failure::Permanent, app.clock.now()).await.unwrap();
    }
    assert_eq!(attempts().await, (2, false), "a stale claim cannot give the mail up");

    for n in 3..=MAX_ATTEMPTS {
        app.clock.advance(Duration::hours(1) + Duration::seconds(1));
        server::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
        assert_eq!(attempts().await, (n, n == MAX_ATTEMPTS), "attempt {n}");
    }
    app.clock.advance(Duration::hours(2));
    server::mail::deliver_due(&app.db.pool, &clock, &dead).await.unwrap();
    assert_eq!(attempts().await, (MAX_ATTEMPTS, true), "given up: not tried again");
}

#[tokio::test]
async fn the_fleet_runner_migrates_every_schema_and_isolates_failures() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let mut slugs = Vec::new();
    for i in 0..4 {
        slugs.push(app.workspace(&mut owner, &format!("Fleet {i}")).await);
    }
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0), "new workspaces are born up to date");

    // Pretend every schema is one migration behind (undo it as the superuser) and break
    // one of them so that its migration fails.
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let schemas: Vec<(uuid::Uuid, String)> = {
        let mut conn = app.db.conn().await;
        workspaces::table.select((workspaces::id, workspaces::schema_name)).order(workspaces::slug).load(&mut conn).await.unwrap()
    };
    for (i, (_, schema)) in schemas.iter().enumerate() {
        let sql = if i == 0 {
            // Broken: the table is gone but an unrelated object holds its name.
            format!("DROP TABLE {schema}.notes; DELETE FROM {schema}.schema_migrations; CREATE VIEW {schema}.notes AS SELECT 1 AS x;")
        } else {
            format!("DROP TABLE {schema}.notes; DELETE FROM {schema}.schema_migrations;")
        };
        admin.batch_execute(&sql).await.unwrap();
    }
    admin.batch_execute("UPDATE workspaces SET tenant_version = ''").await.unwrap();

    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!(report.migrated, 3);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, schemas[0].0);
    // The healthy ones work again; the broken one is still marked behind, so a rerun
    // (after repair) resumes with it alone.
    for slug in &slugs {
        let res = owner.client.call("workspace_home", &[("slug", slug)]).await;
        let broken = slug == &{
            let mut conn = app.db.conn().await;
            workspaces::table.filter(workspaces::id.eq(schemas[0].0)).select(workspaces::slug).first::<String>(&mut conn).await.unwrap()
        };
        if broken {
            // Behind the running version: its members are told it is being upgraded (its
            // page too); anyone else still gets "not found".
            assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{slug}: {}", res.body);
            assert_eq!(res.error(), AppError::Upgrading);
            let page = owner.client.get(&format!("/w/{slug}")).await;
            assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(page.body.contains("This workspace is being upgraded."), "{}", page.body);
            let mut stranger = app.person("Stranger").await;
            assert_eq!(stranger.client.call("workspace_home", &[("slug", slug)]).await.status, StatusCode::NOT_FOUND);
        } else {
            assert_eq!(res.status, StatusCode::OK, "{slug}: {}", res.body);
        }
    }
    admin.batch_execute(&format!("DROP VIEW {}.notes", schemas[0].1)).await.unwrap();
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0), "nothing pending");
}

/// "Nothing pending" costs one query however many workspaces there are: counted with
/// Diesel's instrumentation on every connection the runner uses.
#[tokio::test]
async fn a_fleet_run_with_nothing_pending_is_one_query() {
    use diesel::connection::InstrumentationEvent;
    use diesel_async::pooled_connection::{deadpool::Pool, AsyncDieselConnectionManager, ManagerConfig};
    use futures::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    for i in 0..6 {
        app.workspace(&mut owner, &format!("Quiet {i}")).await;
    }
    let queries = Arc::new(AtomicUsize::new(0));
    let mut config = ManagerConfig::<diesel_async::AsyncPgConnection>::default();
    let counter = queries.clone();
    config.custom_setup = Box::new(move |url| {
        let counter = counter.clone();
        async move {
            let mut conn = diesel_async::AsyncPgConnection::establish(url).await?;
            conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            Ok(conn)
        }
        .boxed()
    });
    let pool = Pool::builder(AsyncDieselConnectionManager::new_with_config(&app.db.url, config)).max_size(4).build().unwrap();
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&pool, 4).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0));
    assert_eq!(AtomicUsize::load(&queries, Ordering::SeqCst), 1, "one query for six workspaces");

    // The counter does see the work when a workspace is behind.
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    admin.batch_execute("UPDATE workspaces SET tenant_version = '' WHERE slug = 'quiet-0'").await.unwrap();
    queries.store(0, Ordering::SeqCst);
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&pool, 4).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    assert!(AtomicUsize::load(&queries, Ordering::SeqCst) > 1);
}

/// A workspace deleted after the fleet runner listed it is not a failure: the runner
/// waits for the deletion (its registry update takes the row lock) and then skips it.
#[tokio::test]
async fn a_workspace_deleted_during_a_fleet_run_is_skipped_not_failed() {
    use diesel::sql_types::Bool;
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Going away").await;
    let kept = app.workspace(&mut owner, "Staying").await;
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    admin.batch_execute("UPDATE workspaces SET tenant_version = ''").await.unwrap();
    let (id, schema): (uuid::Uuid, String) = {
        let mut conn = app.db.conn().await;
        workspaces::table.filter(workspaces::slug.eq(&slug)).select((workspaces::id, workspaces::schema_name)).first(&mut conn).await.unwrap()
    };
    // The deletion holds the row while the runner starts.
    admin.batch_execute(&format!("BEGIN; SELECT 1 FROM workspaces WHERE id = '{id}' FOR UPDATE")).await.unwrap();
    let pool = app.db.pool.clone();
    let run = tokio::spawn(async move { fluxi_core::tenancy::migrations::migrate_fleet(&pool, 2).await.unwrap() });
    let waiting = "EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database())";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !diesel::select(diesel::dsl::sql::<Bool>(waiting)).get_result::<bool>(&mut admin).await.unwrap() {
        assert!(!run.is_finished(), "the runner did not wait for the row");
        assert!(std::time::Instant::now() < deadline, "the runner never waited for the row");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    admin
        .batch_execute(&format!("DELETE FROM workspaces WHERE id = '{id}'; DROP SCHEMA {schema} CASCADE; COMMIT"))
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0), "{:?}", report.failed);
    assert_eq!(owner.client.call("workspace_home", &[("slug", &kept)]).await.status, StatusCode::OK);
}

use diesel_async::AsyncConnection;

#[tokio::test]
async fn the_development_mailbox_shows_outgoing_mail_and_is_absent_in_production() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Dev <Mail>").await;
    owner.client.call("invite_member", &[("slug", &slug), ("email", "dev@example.test"), ("role", "viewer")]).await;
    let page = app.client().get("/dev/mailbox").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Invitation to Dev &lt;Mail&gt; on Fluxi"), "escaped: {}", page.body);
    assert!(page.body.contains("dev@example.test") && page.body.contains("/invite/"));
    // Relayed by a reverse proxy (even one on this machine): not shown.
    let mut relayed = app.client();
    let res = relayed.raw(relayed.http().get(relayed.url("/dev/mailbox")).header("x-forwarded-for", "203.0.113.5")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(!res.body.contains("/invite/"));

    let prod = TestApp::spawn_with(common::Options { production: true, ..Default::default() }).await;
    assert_eq!(prod.client().get("/dev/mailbox").await.status, StatusCode::NOT_FOUND);
}

/// The fields a browser without JavaScript posts for the row of `user_id` on the members
/// page: the inputs of that row's form (hidden slug and user_id, the role select).
fn row_form_fields(page: &str, user_id: &str) -> Vec<(String, String)> {
    let marker = format!(r#"name="user_id" value="{user_id}""#);
    let at = page.find(&marker).expect("a form for the member");
    let start = page[..at].rfind("<form").unwrap();
    let end = at + page[at..].find("</form>").unwrap();
    let form = &page[start..end];
    assert!(form.contains(r#"action="/api/change_member_role""#), "row form posts role changes: {form}");
    assert!(form.contains(r#"formaction="/api/remove_member""#), "its Remove button posts removals: {form}");
    let attr = |tag: &str, name: &str| -> String {
        let k = format!(r#"{name}=""#);
        let i = tag.find(&k).unwrap() + k.len();
        tag[i..i + tag[i..].find('"').unwrap()].to_string()
    };
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap()];
        fields.push((attr(tag, "name"), attr(tag, "value")));
    }
    let select = &form[form.find("<select").unwrap()..form.find("</select>").unwrap()];
    let selected = select.split("<option").find(|o| o.contains(" selected")).expect("a selected role");
    fields.push(("role".into(), attr(selected, "value")));
    fields
}

#[tokio::test]
async fn one_form_per_member_row_changes_roles_and_removes_without_javascript() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Rows").await;
    let member = app.person("Member").await;
    app.add_member(&slug, &member, "member").await;
    let page_path = format!("/w/{slug}/settings/members");
    let page = owner.client.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    let mut fields = row_form_fields(&page.body, &member.user.id.to_string());
    assert!(fields.contains(&("role".into(), "member".into())), "{fields:?}");

    // "Change role": the form's own action, with the role chosen in the select.
    fields.retain(|(k, _)| k != "role");
    fields.push(("role".into(), "viewer".into()));
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let res = owner.client.post_form("change_member_role", &page_path, &form).await;
    assert!(res.status.is_redirection(), "{:?}", res.status);
    assert_eq!(role_of(&app, &slug, member.user.id).await.as_deref(), Some("viewer"));

    // "Remove": the same fields (role included) posted to the button's formaction.
    let res = owner.client.post_form("remove_member", &page_path, &form).await;
    assert!(res.status.is_redirection(), "{:?}", res.status);
    assert_eq!(role_of(&app, &slug, member.user.id).await, None);
}
