//! Workspace rules at the domain level, on a real database: what each role may do with
//! tenant data, whom it may manage, and how invitation tokens are checked.

use fluxi_core::accounts::{PasswordHasher, PasswordHasherConfig, User};
use fluxi_core::sessions::SignedInWith;
use fluxi_core::tenancy::notes;
use fluxi_core::testing::{TestDb, UserBuilder, WorkspaceBuilder};
use fluxi_core::workspaces::invitations::{self, AcceptError, InvitationProblem};
use fluxi_core::workspaces::{authorize, may_manage, InvalidInput, Role, WorkspaceAccess, WorkspaceError};

struct Team {
    db: TestDb,
    slug: String,
    /// Owner, admin, member, viewer, in that order.
    people: Vec<(Role, User)>,
}

async fn team() -> Team {
    let db = TestDb::new().await;
    let hasher = PasswordHasher::new(PasswordHasherConfig::default());
    let mut people = Vec::new();
    for role in Role::ALL {
        people.push((role, UserBuilder::new().create(&db.pool, &hasher).await));
    }
    let owner = people[0].1.clone();
    let mut builder = WorkspaceBuilder::new("Team");
    for (role, user) in &people[1..] {
        builder = builder.member(user, *role);
    }
    let slug = builder.create(&db.pool, &owner).await;
    Team { db, slug, people }
}

impl Team {
    async fn access(&self, role: Role) -> WorkspaceAccess {
        let user = &self.people.iter().find(|(r, _)| *r == role).unwrap().1;
        authorize(
            &mut *self.db.conn().await,
            &fluxi_core::testing::audit(),
            user.id,
            SignedInWith::PasswordOnly,
            &self.slug,
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn the_fixture_builds_a_workspace_with_every_role() {
    let team = team().await;
    for (role, user) in &team.people {
        let access = authorize(
            &mut *team.db.conn().await,
            &fluxi_core::testing::audit(),
            user.id,
            SignedInWith::PasswordOnly,
            &team.slug,
        )
        .await
        .unwrap();
        assert_eq!(access.role(), *role);
    }
}

/// The tenant functions check the permission themselves: the capability proves only
/// membership.
#[tokio::test]
async fn notes_check_the_role_and_their_input_themselves() {
    let team = team().await;
    let mut conn = team.db.conn().await;
    let viewer = team.access(Role::Viewer).await;
    let member = team.access(Role::Member).await;

    assert!(matches!(notes::create_note(&mut conn, &viewer, "Plan", "text").await, Err(WorkspaceError::Forbidden)));
    let note = notes::create_note(&mut conn, &member, "  Plan  ", "text").await.unwrap();
    assert_eq!(note.title, "Plan", "trimmed");
    assert!(matches!(notes::delete_note(&mut conn, &viewer, note.id).await, Err(WorkspaceError::Forbidden)));

    for (title, body, expected) in [
        ("", "text", InvalidInput::NoteTitle),
        ("   ", "text", InvalidInput::NoteTitle),
        (&"t".repeat(201), "text", InvalidInput::NoteTitle),
        ("Plan", &"b".repeat(10_001), InvalidInput::NoteBodyTooLong),
    ] {
        match notes::create_note(&mut conn, &member, title, body).await {
            Err(WorkspaceError::Invalid(e)) => assert_eq!(e, expected),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(InvalidInput::NoteTitle.field(), Some("title"));
    assert_eq!(InvalidInput::NoteBodyTooLong.field(), Some("body"));
    // Only the one valid note was written, and every role may read it.
    assert_eq!(notes::list_notes(&mut conn, &viewer).await.unwrap().len(), 1);
}

/// Whom each role may manage (change the role of, remove): never oneself, admins every
/// non-owner, owners everyone, members and viewers no one.
#[tokio::test]
async fn who_may_manage_whom() {
    let team = team().await;
    for (caller_role, caller) in &team.people {
        let access = team.access(*caller_role).await;
        for (target_role, target) in &team.people {
            let expected = caller.id != target.id
                && match caller_role {
                    Role::Owner => true,
                    Role::Admin => *target_role != Role::Owner,
                    Role::Member | Role::Viewer => false,
                };
            assert_eq!(may_manage(&access, target.id, *target_role), expected, "{caller_role:?} → {target_role:?}");
        }
    }
}

/// Tokens are 64 hex digits; anything else is "not valid" without a lookup, in preview
/// and acceptance alike.
#[tokio::test]
async fn malformed_invitation_tokens_are_not_found() {
    let team = team().await;
    let mut conn = team.db.conn().await;
    let now = time::OffsetDateTime::now_utc();
    let user = team.people[3].1.id;
    for token in ["", "abc", &"a".repeat(63), &"a".repeat(65), &"z".repeat(64), &"a".repeat(10_000)] {
        assert_eq!(invitations::preview(&mut conn, token, now).await.unwrap_err(), InvitationProblem::NotFound);
        assert!(matches!(
            invitations::accept(&mut conn, &fluxi_core::testing::audit(), token, user, now).await,
            Err(AcceptError::Problem(InvitationProblem::NotFound))
        ));
    }
    // Well formed but unknown: looked up, and not found either.
    assert_eq!(invitations::preview(&mut conn, &"a".repeat(64), now).await.unwrap_err(), InvitationProblem::NotFound);
}

/// Inviting someone as owner is refused as input (ownership is transferred, not given by
/// invitation), before any address is looked at.
#[tokio::test]
async fn nobody_is_invited_as_owner() {
    let team = team().await;
    let mut conn = team.db.conn().await;
    let owner = team.access(Role::Owner).await;
    let now = time::OffsetDateTime::now_utc();
    let refused = invitations::invite(
        &mut conn,
        &fluxi_core::testing::audit(),
        &owner,
        "new@example.test",
        Role::Owner,
        now,
        &invitations::InvitationPolicy::default(),
        "http://x",
    )
    .await;
    assert!(matches!(refused, Err(WorkspaceError::Invalid(InvalidInput::InviteAsOwner))), "{refused:?}");
    let bad = invitations::invite(
        &mut conn,
        &fluxi_core::testing::audit(),
        &owner,
        "not an address",
        Role::Member,
        now,
        &invitations::InvitationPolicy::default(),
        "http://x",
    )
    .await;
    match bad {
        Err(WorkspaceError::Invalid(e @ InvalidInput::Email(_))) => assert_eq!(e.field(), Some("email")),
        other => panic!("{other:?}"),
    }
}
