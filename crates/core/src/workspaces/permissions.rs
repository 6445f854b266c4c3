//! Roles and the permission matrix: written down once, here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// See the workspace, its members and its content.
    Read,
    /// Create and change content.
    Write,
    /// Invite, revoke invitations, change roles (not of owners, not to owner), remove members.
    ManageMembers,
    /// Change workspace settings.
    ManageSettings,
    /// Manage the workspace's integrations.
    ManageIntegrations,
    /// Connect and revoke one's own integrations.
    ManageOwnIntegrations,
    /// Read and export the audit trail.
    ViewAudit,
    /// Change owners, grant owner, transfer ownership.
    ManageOwners,
    /// Delete the workspace.
    DeleteWorkspace,
}

use Permission::*;

/// THE permission matrix. `true` = allowed. The table in docs/tenancy.md is generated from the same
/// rows (see `matrix_markdown`), and the role-matrix test walks it.
pub const MATRIX: &[(Permission, [bool; 4])] = &[
    //                        owner  admin  member viewer
    (Read, [true, true, true, true]),
    (Write, [true, true, true, false]),
    (ManageOwnIntegrations, [true, true, true, false]),
    (ManageMembers, [true, true, false, false]),
    (ManageSettings, [true, true, false, false]),
    (ManageIntegrations, [true, true, false, false]),
    (ViewAudit, [true, true, false, false]),
    (ManageOwners, [true, false, false, false]),
    (DeleteWorkspace, [true, false, false, false]),
];

pub fn allowed(role: Role, permission: Permission) -> bool {
    let column = Role::ALL.iter().position(|r| *r == role).expect("every role has a column");
    MATRIX.iter().find(|(p, _)| *p == permission).map(|(_, row)| row[column]).unwrap_or(false)
}

/// The matrix as a Markdown table (for docs/tenancy.md).
pub fn matrix_markdown() -> String {
    let mut out = String::from("| Permission | owner | admin | member | viewer |\n|---|---|---|---|---|\n");
    for (p, row) in MATRIX {
        let cells: Vec<&str> = row.iter().map(|a| if *a { "✓" } else { "—" }).collect();
        out.push_str(&format!("| {p:?} | {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_can_do_everything_and_roles_are_nested() {
        for (p, row) in MATRIX {
            assert!(row[0], "owner lacks {p:?}");
            // Each role can do at most what the role above it can.
            for i in 1..4 {
                assert!(!row[i] || row[i - 1], "{p:?}: {:?} exceeds {:?}", Role::ALL[i], Role::ALL[i - 1]);
            }
        }
        assert!(!allowed(Role::Viewer, Write));
        assert!(allowed(Role::Admin, ManageMembers) && !allowed(Role::Admin, ManageOwners));
    }

    #[test]
    fn the_docs_show_the_matrix() {
        let doc = include_str!("../../../../docs/tenancy.md");
        assert!(
            doc.contains(&matrix_markdown()),
            "docs/tenancy.md's permission table is stale:\n{}",
            matrix_markdown()
        );
    }
}
