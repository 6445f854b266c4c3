//! Members and roles: what each role sees, role changes, removal, ownership transfer with step-up, and the locks that keep them consistent.

use std::sync::Arc;

use crate::common::{self, TestApp, PASSWORD};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use fluxi_core::schema::{memberships, workspaces};
use reqwest::StatusCode;
use time::Duration;

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
    let res = owner
        .client
        .call("invite_member", &[("slug", &slug), ("email", "pending-guest@example.test"), ("role", "member")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let members_page = format!("/w/{slug}/settings/members");
    let home = format!("/w/{slug}");
    let role_select = |name: &str| format!("aria-label=\"Role for {name}\"");
    let remove_of = |user: &fluxi_core::accounts::User| format!("name=\"user_id\" value=\"{}\"", user.id);

    // Owner: everything, including other owners' rows, the owner role, transfer and delete.
    let page = owner.client.get(&members_page).await.body;
    for wanted in [
        "Send invitation",
        "Revoke invitation for pending-guest@example.test",
        "Transfer ownership",
        "Delete workspace",
        "Leave workspace",
        "<option value=\"owner\"",
        ">Remove<",
        ">Actions<",
        "Role for ",
    ] {
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
    for unwanted in
        [role_select("Olga Owner"), role_select("Otto Owner"), remove_of(&owner.user), remove_of(&co_owner.user)]
    {
        assert!(!page.contains(&unwanted), "admin must not see {unwanted:?}");
    }
    for unwanted in ["<option value=\"owner\"", "Transfer ownership", "Delete workspace"] {
        assert!(!page.contains(unwanted), "admin must not see {unwanted:?}");
    }

    // Member and viewer: the list and "Leave" only; no invitations, not even their addresses.
    for (who, person) in [("member", &mut member), ("viewer", &mut viewer)] {
        let page = person.client.get(&members_page).await.body;
        assert!(
            page.contains("Leave workspace") && page.contains("Mona Member") && page.contains("Olga Owner"),
            "{who}: the list"
        );
        for unwanted in [
            "Send invitation",
            "Revoke",
            "pending-guest@example.test",
            "Role for ",
            ">Remove<",
            "Transfer ownership",
            "Delete workspace",
            ">Actions<",
        ] {
            assert!(!page.contains(unwanted), "{who} must not see {unwanted:?}");
        }
    }

    // Workspace home: writers get the note form, the viewer a read-only notice instead.
    for (who, person, writes) in [
        ("owner", &mut owner, true),
        ("admin", &mut admin, true),
        ("member", &mut member, true),
        ("viewer", &mut viewer, false),
    ] {
        let page = person.client.get(&home).await.body;
        assert_eq!(page.contains("Add note"), writes, "{who}: note form");
    }
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
    let res = admin
        .client
        .call("change_member_role", &[("slug", &slug), ("user_id", &member.user.id.to_string()), ("role", "viewer")])
        .await;
    assert_eq!(res.status, StatusCode::OK);
    // The very next request of the demoted member is refused.
    assert_eq!(note(&mut member.client, slug.clone()).await, StatusCode::FORBIDDEN);
    let home: serde_json::Value =
        serde_json::from_str(&member.client.call("workspace_home", &[("slug", &slug)]).await.body).unwrap();
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
    let res =
        admin.client.call("change_member_role", &[("slug", &slug), ("user_id", &member_id), ("role", "owner")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(common::role_of(&app, &slug, owner.user.id).await.as_deref(), Some("owner"));

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
            fluxi_core::workspaces::change_role(
                &mut c,
                &fluxi_core::testing::audit(),
                &a_access,
                idb,
                fluxi_core::workspaces::Role::Admin,
            )
            .await
        });
        let t2 = tokio::spawn(async move {
            let mut c = pb.get().await.unwrap();
            fluxi_core::workspaces::change_role(
                &mut c,
                &fluxi_core::testing::audit(),
                &b_access,
                ida,
                fluxi_core::workspaces::Role::Admin,
            )
            .await
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
        let second_pid: i32 =
            diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()")).get_result(&mut second).await.unwrap();
        // Both transactions take their snapshot before either demotes anyone.
        first
            .batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}; SELECT count(*) FROM memberships"))
            .await
            .unwrap();
        second
            .batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}; SELECT count(*) FROM memberships"))
            .await
            .unwrap();
        first.batch_execute(&demote(a.user.id)).await.unwrap();
        let b_demotion = demote(b.user.id);
        let second_demotes = tokio::spawn(async move {
            let demoted = second.batch_execute(&b_demotion).await;
            let ended = second.batch_execute(if demoted.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
            (demoted, ended)
        });
        // Wait until the second transaction is blocked behind the first one's locks.
        let waiting =
            format!("EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {second_pid} AND wait_event_type = 'Lock')");
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
        assert_eq!(common::role_of(&app, &slug, a.user.id).await.as_deref(), Some("admin"), "{isolation}");
        assert_eq!(common::role_of(&app, &slug, b.user.id).await.as_deref(), Some("owner"), "{isolation}");
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
    let res = owner
        .client
        .call("transfer_ownership", &[("slug", &slug), ("user_id", &heir_id), ("password", "wrong password!")])
        .await;
    assert!(res.error().message_for("password").is_some());
    assert_eq!(common::role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
    let res = owner
        .client
        .call("transfer_ownership", &[("slug", &slug), ("user_id", &heir_id), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(common::role_of(&app, &slug, heir.user.id).await.as_deref(), Some("owner"));
    assert_eq!(common::role_of(&app, &slug, owner.user.id).await.as_deref(), Some("admin"));
}

/// Step-up password checks are throttled like sign-ins: a stolen session must not be a way
/// to guess the account's password without limit — nor to lock its owner out of signing in.
#[tokio::test]
async fn wrong_step_up_passwords_are_throttled_without_locking_sign_in() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Guarded").await;
    let heir = app.person("Heir").await;
    app.add_member(&slug, &heir, "member").await;
    let heir_id = heir.user.id.to_string();
    let transfer = |password: &'static str| {
        [("slug", slug.clone()), ("user_id", heir_id.clone()), ("password", password.to_string())]
    };
    for _ in 0..5 {
        let args = transfer("a wrong guess");
        let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = owner.client.call("transfer_ownership", &args).await;
        assert_eq!(res.error().message_for("password").as_deref(), Some("That is not your current password."));
    }
    let blocked = Some("Too many wrong passwords for this account. Try again in 15 minutes.".to_string());
    let args = transfer(PASSWORD);
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = owner.client.call("transfer_ownership", &args).await;
    assert_eq!((res.status, common::too_many_message(&res.error())), (StatusCode::TOO_MANY_REQUESTS, blocked.clone()));
    assert_eq!(common::role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
    // The owner can still sign in; the step-up stays blocked.
    let res = app.client().call("login", &[("email", owner.user.email.as_str()), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = owner.client.call("transfer_ownership", &args).await;
    assert_eq!((res.status, common::too_many_message(&res.error())), (StatusCode::TOO_MANY_REQUESTS, blocked));
    // Once the block is over, the right password goes through.
    app.clock.advance(Duration::minutes(15) + Duration::seconds(1));
    let res = owner.client.call("transfer_ownership", &args).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(common::role_of(&app, &slug, heir.user.id).await.as_deref(), Some("owner"));
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
    let r = transfer_ownership(&mut conn, &fluxi_core::testing::audit(), &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    let r = delete_workspace(&mut conn, &fluxi_core::testing::audit(), &stale).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    assert_eq!(common::role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("member"));
    assert_eq!(common::role_of(&app, &slug, alpha.user.id).await.as_deref(), Some("admin"));
    // Removed altogether: the workspace is not theirs to see any more.
    diesel::delete(alpha_row).execute(&mut conn).await.unwrap();
    let r = delete_workspace(&mut conn, &fluxi_core::testing::audit(), &stale).await;
    assert!(matches!(r, Err(WorkspaceError::NotFound)), "{r:?}");
    assert_eq!(
        common::role_of(&app, &slug, bravo.user.id).await.as_deref(),
        Some("owner"),
        "the workspace is still there"
    );
    // A current owner's access still works, end to end.
    let fresh = app.access(&slug, &bravo).await;
    transfer_ownership(&mut conn, &fluxi_core::testing::audit(), &fresh, charlie.user.id).await.unwrap();
    assert_eq!(common::role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("owner"));
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
    let r = change_role(&mut conn, &fluxi_core::testing::audit(), &stale, charlie.user.id, Role::Viewer).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    let r = remove_member(&mut conn, &fluxi_core::testing::audit(), &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::Forbidden)), "{r:?}");
    assert_eq!(common::role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("member"));
    // Removed altogether: not found, like any workspace that is not theirs.
    diesel::delete(alpha_row).execute(&mut conn).await.unwrap();
    let r = remove_member(&mut conn, &fluxi_core::testing::audit(), &stale, charlie.user.id).await;
    assert!(matches!(r, Err(WorkspaceError::NotFound)), "{r:?}");
    // A current admin still can; acting on someone who is not a member is NoSuchMember.
    let bravo = app.person("Bravo").await;
    app.add_member(&slug, &bravo, "admin").await;
    let fresh = app.access(&slug, &bravo).await;
    change_role(&mut conn, &fluxi_core::testing::audit(), &fresh, charlie.user.id, Role::Viewer).await.unwrap();
    assert_eq!(common::role_of(&app, &slug, charlie.user.id).await.as_deref(), Some("viewer"));
    let r = change_role(&mut conn, &fluxi_core::testing::audit(), &fresh, alpha.user.id, Role::Member).await;
    assert!(matches!(r, Err(WorkspaceError::NoSuchMember)), "{r:?}");
    remove_member(&mut conn, &fluxi_core::testing::audit(), &fresh, charlie.user.id).await.unwrap();
    assert_eq!(common::role_of(&app, &slug, charlie.user.id).await, None);
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
            change_role(&mut conn, &fluxi_core::testing::audit(), &access_a, b_id, Role::Member).await
        });
        let second = tokio::spawn(async move {
            let mut conn = pool_b.get().await.unwrap();
            change_role(&mut conn, &fluxi_core::testing::audit(), &access_b, a_id, Role::Member).await
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
    let app =
        TestApp::spawn_with(common::Options { pool_size: 8, workspaces_per_day: u32::MAX, ..Default::default() }).await;
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
            delete_workspace(&mut conn, &fluxi_core::testing::audit(), &deleter).await
        });
        let change = tokio::spawn(async move {
            let mut conn = pool_b.get().await.unwrap();
            let demoted = change_role(&mut conn, &fluxi_core::testing::audit(), &changer, first_id, Role::Admin).await;
            let removed = remove_member(&mut conn, &fluxi_core::testing::audit(), &changer, third_id).await;
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
        assert_eq!(
            r.error().message_for("password").as_deref(),
            Some("That is not your current password."),
            "{}",
            r.body
        );
    }
    assert!(
        finished_when_reads_done < 12,
        "reads had to wait for the whole burst ({finished_when_reads_done}/12 done)"
    );
    assert_eq!(common::role_of(&app, &slug, heir.user.id).await.as_deref(), Some("member"));
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
    assert_eq!(common::role_of(&app, &slug, member.user.id).await.as_deref(), Some("viewer"));

    // "Remove": the same fields (role included) posted to the button's formaction.
    let res = owner.client.post_form("remove_member", &page_path, &form).await;
    assert!(res.status.is_redirection(), "{:?}", res.status);
    assert_eq!(common::role_of(&app, &slug, member.user.id).await, None);
}

/// Names are text: markup in a member's name can neither close an attribute of the row's
/// controls nor open a tag in its cells.
#[tokio::test]
async fn markup_in_member_names_stays_text() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Team").await;
    let eve = app.person("Eve\" onmouseover=\"alert(1)' <img src=x onerror=alert(2)> & co").await;
    app.add_member(&slug, &eve, "member").await;
    let page = owner.client.get(&format!("/w/{slug}/settings/members")).await.body;
    assert!(page.contains("aria-label=\"Role for Eve&quot; onmouseover=&quot;alert(1)'"), "{page}");
    assert!(!page.contains("=\"Eve\"") && !page.contains("Role for Eve\""), "an attribute was closed: {page}");
    assert!(page.contains("<td>Eve\" onmouseover=\"alert(1)' &lt;img src=x onerror=alert(2)&gt; &amp; co"), "{page}");
    assert!(!page.contains("<td>Eve\" onmouseover=\"alert(1)' <img"), "a tag was opened: {page}");
}
