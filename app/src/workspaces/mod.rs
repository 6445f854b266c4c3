//! Workspaces: list/create, workspace home, members settings, invitations.

pub mod api;
mod pages;
pub(crate) use pages::problem_view;

pub use pages::{InvitePage, MembersSettingsPage, WorkspaceHomePage, WorkspacesPage};
