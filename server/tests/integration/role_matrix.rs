//! The role matrix: every workspace server function × {owner, admin, member, viewer,
//! member of another workspace, signed out}, expected outcomes derived from the one
//! permission table (`fluxi_core::workspaces::permissions::MATRIX`). A server function
//! that is in neither list below fails the first test, so none can be forgotten. The
//! matrix is written out in docs/tenancy.md, "Permission matrix".

use crate::common::{self, Person, TestApp, PASSWORD};
use fluxi_core::workspaces::{allowed, Permission, Role};
use reqwest::StatusCode;

/// Workspace-scoped server functions and the permission each needs.
const WORKSPACE_FUNCTIONS: &[(&str, Permission)] = &[
    ("workspace_home", Permission::Read),
    ("members_page", Permission::Read),
    ("leave_workspace", Permission::Read),
    ("create_note", Permission::Write),
    ("invite_member", Permission::ManageMembers),
    ("revoke_invitation", Permission::ManageMembers),
    ("change_member_role", Permission::ManageMembers),
    ("remove_member", Permission::ManageMembers),
    ("transfer_ownership", Permission::ManageOwners),
    ("delete_workspace", Permission::DeleteWorkspace),
    ("set_workspace_mfa", Permission::ManageOwners),
    ("audit_page", Permission::ViewAudit),
    ("integrations_page", Permission::Read),
    ("connect_integration", Permission::ManageOwnIntegrations),
    ("save_api_key", Permission::ManageOwnIntegrations),
    ("disconnect_integration", Permission::ManageOwnIntegrations),
    ("check_integration", Permission::ManageOwnIntegrations),
    ("assistant_page", Permission::Read),
    ("send_assistant_message", Permission::Read),
    ("confirm_assistant_proposal", Permission::Read),
    ("dismiss_assistant_proposal", Permission::Read),
    ("set_assistant", Permission::ManageOwners),
];

/// Functions about one connection or proposal, called with an id that exists nowhere: a
/// role that may call them gets "not found" (and the others "forbidden" before any lookup).
const NEED_A_CONNECTION: &[&str] =
    &["disconnect_integration", "check_integration", "confirm_assistant_proposal", "dismiss_assistant_proposal"];

/// Functions that need the assistant's model, which this server has none of: a role that
/// may call them is told so (409), after every check of the caller.
const NEED_A_MODEL: &[&str] = &["send_assistant_message"];

/// Functions that answer a role without the permission like a non-member ("not found"):
/// the page they serve is not to be seen at all.
const HIDDEN_FROM_OTHER_ROLES: &[&str] = &["audit_page"];

/// Server functions that are not scoped to one workspace (each checks its caller itself;
/// covered by the account and invitation tests).
const OTHER_FUNCTIONS: &[&str] = &[
    "signup",
    "sign_up_link",
    "confirm_sign_up",
    "login",
    "logout",
    "current_user",
    "take_flash",
    "list_workspaces",
    "create_workspace",
    "invitation_info",
    "accept_invitation",
    "account_activity",
    "security_page",
    "start_totp_setup",
    "confirm_totp_setup",
    "regenerate_recovery_codes",
    "disable_two_factor",
    "second_step",
    "verify_sign_in",
    "signed_in_sessions",
    "sign_out_session",
    "sign_out_other_sessions",
    "confirm_identity",
    "verification_link",
    "verify_email",
    "resend_verification",
    "change_password",
    "request_password_reset",
    "reset_link",
    "reset_password",
    "change_email",
    "email_change_link",
    "confirm_email_change",
    "revert_email_link",
    "revert_email_change",
    "passkeys",
    "start_passkey_registration",
    "finish_passkey_registration",
    "remove_passkey",
    "start_passkey_sign_in",
    "finish_passkey_sign_in",
    "start_passkey_second_step",
    "finish_passkey_second_step",
];

#[test]
fn every_server_function_is_classified() {
    let mut registered: Vec<String> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, _)| path.trim_start_matches("/api/").to_string())
        .collect();
    registered.sort();
    let mut known: Vec<String> = WORKSPACE_FUNCTIONS
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(OTHER_FUNCTIONS.iter().map(|n| n.to_string()))
        .collect();
    known.sort();
    assert_eq!(registered, known, "classify every server function in tests/role_matrix.rs");
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    Role(Role),
    Outsider,
    Anonymous,
}

struct World {
    slug: String,
    owner: Person,
    admin: Person,
    member: Person,
    viewer: Person,
    target: Person,
    outsider: Person,
    invitation_id: String,
}

async fn world(app: &TestApp) -> World {
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Matrix").await;
    let (admin, member, viewer, target) =
        (app.person("Admin").await, app.person("Member").await, app.person("Viewer").await, app.person("Target").await);
    app.add_member(&slug, &admin, "admin").await;
    app.add_member(&slug, &member, "member").await;
    app.add_member(&slug, &viewer, "viewer").await;
    app.add_member(&slug, &target, "viewer").await;
    let mut outsider = app.person("Outsider").await;
    app.workspace(&mut outsider, "Elsewhere").await;
    // A fresh address per world: one address gets only a few invitations a day.
    let pending = format!("pending-{}@example.test", &slug[slug.len() - 8..]);
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", &pending), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let page = owner.client.call("members_page", &[("slug", &slug)]).await;
    let json: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    let invitation_id = json["invitations"][0]["id"].as_str().unwrap().to_string();
    World { slug, owner, admin, member, viewer, target, outsider, invitation_id }
}

async fn call(app: &TestApp, w: &mut World, caller: Caller, function: &str) -> common::Reply {
    let target = w.target.user.id.to_string();
    let email = format!("new-{}@example.test", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let slug = w.slug.clone();
    let args: Vec<(&str, &str)> = match function {
        "create_note" => vec![("slug", &slug), ("title", "A note"), ("body", "")],
        "invite_member" => vec![("slug", &slug), ("email", &email), ("role", "viewer")],
        "revoke_invitation" => vec![("slug", &slug), ("invitation_id", &w.invitation_id)],
        "change_member_role" => vec![("slug", &slug), ("user_id", &target), ("role", "member")],
        "remove_member" => vec![("slug", &slug), ("user_id", &target)],
        "transfer_ownership" => vec![("slug", &slug), ("user_id", &target), ("password", PASSWORD)],
        "delete_workspace" => vec![("slug", &slug), ("password", PASSWORD)],
        "set_workspace_mfa" => vec![("slug", &slug), ("required", "off"), ("password", PASSWORD)],
        "connect_integration" => vec![("slug", &slug), ("provider", "local-idp")],
        "save_api_key" => vec![
            ("slug", &slug),
            ("provider", "openai"),
            ("api_key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"),
        ],
        "disconnect_integration" | "check_integration" => {
            vec![("slug", &slug), ("connection", "6f1c2a64-0d2e-4c44-9a43-3b1f4c1f0b7e")]
        }
        "confirm_assistant_proposal" | "dismiss_assistant_proposal" => {
            vec![("slug", &slug), ("proposal", "6f1c2a64-0d2e-4c44-9a43-3b1f4c1f0b7e")]
        }
        "send_assistant_message" => vec![("slug", &slug), ("message", "Who are the admins?")],
        "set_assistant" => vec![("slug", &slug), ("enabled", "off")],
        "audit_page" => ["slug", "action", "actor", "from", "to", "outcome", "before", "after", "event"]
            .into_iter()
            .map(|k| (k, if k == "slug" { slug.as_str() } else { "" }))
            .collect(),
        _ => vec![("slug", &slug)],
    };
    let mut anonymous = app.client();
    let client = match caller {
        Caller::Role(Role::Owner) => &mut w.owner.client,
        Caller::Role(Role::Admin) => &mut w.admin.client,
        Caller::Role(Role::Member) => &mut w.member.client,
        Caller::Role(Role::Viewer) => &mut w.viewer.client,
        Caller::Outsider => &mut w.outsider.client,
        Caller::Anonymous => &mut anonymous,
    };
    client.call(function, &args).await
}

#[tokio::test]
async fn every_workspace_function_allows_exactly_the_roles_the_matrix_allows() {
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let callers = [
        Caller::Role(Role::Owner),
        Caller::Role(Role::Admin),
        Caller::Role(Role::Member),
        Caller::Role(Role::Viewer),
        Caller::Outsider,
        Caller::Anonymous,
    ];
    let cases = WORKSPACE_FUNCTIONS.iter().flat_map(|(f, p)| callers.iter().map(move |c| (*f, *p, *c)));
    let results = futures::future::join_all(cases.map(|(function, permission, caller)| {
        let app = &app;
        async move {
            // A fresh world per case: earlier calls (removals, transfers) cannot skew later ones.
            let mut w = world(app).await;
            let res = call(app, &mut w, caller, function).await;
            (function, permission, caller, res)
        }
    }))
    .await;
    let mut failures = Vec::new();
    for (function, permission, caller, res) in results {
        let expected_ok = match caller {
            Caller::Role(role) => allowed(role, permission),
            _ => false,
        };
        let ok = match caller {
            Caller::Anonymous => res.status == StatusCode::UNAUTHORIZED,
            Caller::Outsider => res.status == StatusCode::NOT_FOUND,
            Caller::Role(_) if expected_ok && NEED_A_CONNECTION.contains(&function) => {
                res.status == StatusCode::NOT_FOUND
            }
            Caller::Role(_) if expected_ok && NEED_A_MODEL.contains(&function) => res.status == StatusCode::CONFLICT,
            Caller::Role(role) if expected_ok => {
                res.status == StatusCode::OK
                    // The only owner cannot leave: authorized, then refused by the invariant.
                    || (function == "leave_workspace" && role == Role::Owner && res.status == StatusCode::CONFLICT)
            }
            Caller::Role(_) if HIDDEN_FROM_OTHER_ROLES.contains(&function) => res.status == StatusCode::NOT_FOUND,
            Caller::Role(_) => res.status == StatusCode::FORBIDDEN,
        };
        if !ok {
            failures.push(format!("{function} as {caller:?}: got {} {}", res.status, res.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A workspace that requires two-factor authentication: a member without it gets none of
/// the workspace's server functions, whatever their role allows (enforced in `authorize`,
/// on every call, not in the pages).
#[tokio::test]
async fn a_member_without_mfa_gets_nothing_of_a_workspace_that_requires_it() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let results = futures::future::join_all(WORKSPACE_FUNCTIONS.iter().map(|(function, _)| {
        let app = &app;
        async move {
            let mut w = world(app).await;
            let mut conn = app.db.conn().await;
            diesel::sql_query("UPDATE workspaces SET require_mfa = true WHERE slug = $1")
                .bind::<diesel::sql_types::Text, _>(&w.slug)
                .execute(&mut conn)
                .await
                .unwrap();
            (function, call(app, &mut w, Caller::Role(Role::Owner), function).await)
        }
    }))
    .await;
    let failures: Vec<String> = results
        .into_iter()
        .filter(|(_, res)| res.status != StatusCode::FORBIDDEN || res.error() != app::error::AppError::MfaRequired)
        .map(|(f, res)| format!("{f}: {} {}", res.status, res.body))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The members page reads with statements that check the caller's membership themselves:
/// every role sees the same member list, and only roles that may manage members (per the
/// matrix) see the pending invitation.
#[tokio::test]
async fn the_members_page_shows_pending_invitations_only_to_roles_that_manage_members() {
    let app = TestApp::spawn().await;
    let mut w = world(&app).await;
    for role in Role::ALL {
        let page = call(&app, &mut w, Caller::Role(role), "members_page").await;
        assert_eq!(page.status, StatusCode::OK, "{role:?}: {}", page.body);
        let json: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(json["my_role"], role.as_str());
        let members = json["members"].as_array().unwrap();
        let mut roles: Vec<&str> = members.iter().map(|m| m["role"].as_str().unwrap()).collect();
        roles.sort();
        assert_eq!(roles, ["admin", "member", "owner", "viewer", "viewer"], "{role:?}");
        assert_eq!(members.iter().filter(|m| m["is_me"] == true).count(), 1);
        let invitations: Vec<&str> =
            json["invitations"].as_array().unwrap().iter().map(|i| i["email"].as_str().unwrap()).collect();
        if allowed(role, Permission::ManageMembers) {
            assert_eq!(invitations.len(), 1, "{role:?}");
            assert!(invitations[0].starts_with("pending-"), "{role:?}: {invitations:?}");
        } else {
            assert!(invitations.is_empty(), "{role:?} must not see invitations: {invitations:?}");
        }
    }
    let page = call(&app, &mut w, Caller::Outsider, "members_page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}
