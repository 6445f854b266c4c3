//! Workspaces: list/create, workspace home, members settings, invitations.

pub mod api;
mod pages;

pub use pages::{InvitePage, MembersSettingsPage, WorkspaceHomePage, WorkspacesPage};
