//! The assistant's closed list of tools, and the strict parsing of what the model asks.
//!
//! Read tools run at once, under the person's own permissions. Action tools are only ever
//! *proposals*: parsed here against a strict schema (unknown fields, wrong types, other
//! roles than the list → refused), checked against the person's permissions by `super`,
//! and executed by the same domain functions the pages call once the person confirms.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::provider::ToolSpec;
use crate::workspaces::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    ListMembers,
    ListNotes,
    ListMyIntegrations,
    RecentAuditEvents,
    InviteMember,
    ChangeRole,
    RemoveMember,
    DisconnectIntegration,
}

impl Tool {
    pub const ALL: &'static [Tool] = &[
        Tool::ListMembers,
        Tool::ListNotes,
        Tool::ListMyIntegrations,
        Tool::RecentAuditEvents,
        Tool::InviteMember,
        Tool::ChangeRole,
        Tool::RemoveMember,
        Tool::DisconnectIntegration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::ListMembers => "list_members",
            Tool::ListNotes => "list_notes",
            Tool::ListMyIntegrations => "list_my_integrations",
            Tool::RecentAuditEvents => "recent_audit_events",
            Tool::InviteMember => "invite_member",
            Tool::ChangeRole => "change_role",
            Tool::RemoveMember => "remove_member",
            Tool::DisconnectIntegration => "disconnect_integration",
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// Changes something: only ever proposed, executed after the person confirms.
    pub fn is_action(self) -> bool {
        matches!(self, Tool::InviteMember | Tool::ChangeRole | Tool::RemoveMember | Tool::DisconnectIntegration)
    }

    pub fn spec(self) -> ToolSpec {
        let (description, parameters) = match self {
            Tool::ListMembers => (
                "The workspace's members (id, name, email, role) and, for those who manage members, pending invitations.",
                no_arguments(),
            ),
            Tool::ListNotes => ("The workspace's most recent notes: title and text.", no_arguments()),
            Tool::ListMyIntegrations => ("The asking person's own integrations and their state.", no_arguments()),
            Tool::RecentAuditEvents => (
                "Recent events of the workspace's audit log (owners and admins only).",
                json!({
                    "type": "object",
                    "properties": { "limit": { "type": "integer", "minimum": 1, "maximum": MAX_AUDIT_EVENTS } },
                    "additionalProperties": false,
                }),
            ),
            Tool::InviteMember => (
                "Propose inviting someone by email with a role. The person must confirm.",
                json!({
                    "type": "object",
                    "properties": {
                        "email": { "type": "string", "maxLength": 254 },
                        "role": { "type": "string", "enum": ["admin", "member", "viewer"] },
                    },
                    "required": ["email", "role"],
                    "additionalProperties": false,
                }),
            ),
            Tool::ChangeRole => (
                "Propose changing a member's role (member_id from list_members). The person must confirm.",
                json!({
                    "type": "object",
                    "properties": {
                        "member_id": { "type": "string", "format": "uuid" },
                        "role": { "type": "string", "enum": ["admin", "member", "viewer"] },
                    },
                    "required": ["member_id", "role"],
                    "additionalProperties": false,
                }),
            ),
            Tool::RemoveMember => (
                "Propose removing a member from the workspace. The person must confirm.",
                json!({
                    "type": "object",
                    "properties": { "member_id": { "type": "string", "format": "uuid" } },
                    "required": ["member_id"],
                    "additionalProperties": false,
                }),
            ),
            Tool::DisconnectIntegration => (
                "Propose disconnecting an integration (connection_id from list_my_integrations). The person must confirm.",
                json!({
                    "type": "object",
                    "properties": { "connection_id": { "type": "string", "format": "uuid" } },
                    "required": ["connection_id"],
                    "additionalProperties": false,
                }),
            ),
        };
        ToolSpec { name: self.name(), description, parameters }
    }
}

/// Most audit events one read returns.
pub const MAX_AUDIT_EVENTS: u8 = 20;

fn no_arguments() -> Value {
    json!({ "type": "object", "properties": {}, "additionalProperties": false })
}

/// A role the assistant may propose: never owner (ownership moves only by the owners' own
/// transfer, with its step-up, on the members page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposableRole {
    Admin,
    Member,
    Viewer,
}

impl From<ProposableRole> for Role {
    fn from(r: ProposableRole) -> Role {
        match r {
            ProposableRole::Admin => Role::Admin,
            ProposableRole::Member => Role::Member,
            ProposableRole::Viewer => Role::Viewer,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditArgs {
    limit: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteArgs {
    email: String,
    role: ProposableRole,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRoleArgs {
    member_id: Uuid,
    role: ProposableRole,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberArgs {
    member_id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionArgs {
    connection_id: Uuid,
}

/// A tool call that passed the schema: typed, nothing else in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum Call {
    ListMembers,
    ListNotes,
    ListMyIntegrations,
    RecentAuditEvents { limit: u8 },
    InviteMember { email: String, role: ProposableRole },
    ChangeRole { member_id: Uuid, role: ProposableRole },
    RemoveMember { member_id: Uuid },
    DisconnectIntegration { connection_id: Uuid },
}

impl Call {
    pub fn tool(&self) -> Tool {
        match self {
            Call::ListMembers => Tool::ListMembers,
            Call::ListNotes => Tool::ListNotes,
            Call::ListMyIntegrations => Tool::ListMyIntegrations,
            Call::RecentAuditEvents { .. } => Tool::RecentAuditEvents,
            Call::InviteMember { .. } => Tool::InviteMember,
            Call::ChangeRole { .. } => Tool::ChangeRole,
            Call::RemoveMember { .. } => Tool::RemoveMember,
            Call::DisconnectIntegration { .. } => Tool::DisconnectIntegration,
        }
    }
}

/// Why a tool call was not carried out (audited; a plain sentence for the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolRefusal {
    /// Not one of our tools.
    UnknownTool,
    /// The arguments do not match the tool's schema.
    BadArguments,
    /// An id that is not a member, connection… of this workspace (or of this person).
    NotFound,
    /// The person's role does not allow it.
    NotPermitted,
    /// Allowed in general, but not this (themselves, the last owner, no change…).
    NotPossible,
    /// Too many proposals: the limit on action proposals.
    RateLimited,
}

impl ToolRefusal {
    pub fn words(self) -> &'static str {
        match self {
            ToolRefusal::UnknownTool => "the assistant asked for something it has no tool for",
            ToolRefusal::BadArguments => "the assistant's request was malformed",
            ToolRefusal::NotFound => "it refers to something that is not in this workspace",
            ToolRefusal::NotPermitted => "you cannot do that in this workspace",
            ToolRefusal::NotPossible => "that change is not possible",
            ToolRefusal::RateLimited => "too many actions were proposed recently",
        }
    }
}

/// Parses one call against its tool's schema.
pub fn parse_call(name: &str, arguments: &Value) -> Result<Call, ToolRefusal> {
    let tool = Tool::parse(name).ok_or(ToolRefusal::UnknownTool)?;
    // A missing arguments object counts as empty (some providers omit it for no arguments).
    let args = if arguments.is_null() { json!({}) } else { arguments.clone() };
    let bad = |_| ToolRefusal::BadArguments;
    Ok(match tool {
        Tool::ListMembers => serde_json::from_value::<NoArgs>(args).map(|_| Call::ListMembers).map_err(bad)?,
        Tool::ListNotes => serde_json::from_value::<NoArgs>(args).map(|_| Call::ListNotes).map_err(bad)?,
        Tool::ListMyIntegrations => {
            serde_json::from_value::<NoArgs>(args).map(|_| Call::ListMyIntegrations).map_err(bad)?
        }
        Tool::RecentAuditEvents => {
            let a: AuditArgs = serde_json::from_value(args).map_err(bad)?;
            let limit = a.limit.unwrap_or(10);
            if !(1..=MAX_AUDIT_EVENTS).contains(&limit) {
                return Err(ToolRefusal::BadArguments);
            }
            Call::RecentAuditEvents { limit }
        }
        Tool::InviteMember => {
            let a: InviteArgs = serde_json::from_value(args).map_err(bad)?;
            Call::InviteMember { email: a.email, role: a.role }
        }
        Tool::ChangeRole => {
            let a: ChangeRoleArgs = serde_json::from_value(args).map_err(bad)?;
            Call::ChangeRole { member_id: a.member_id, role: a.role }
        }
        Tool::RemoveMember => {
            let a: MemberArgs = serde_json::from_value(args).map_err(bad)?;
            Call::RemoveMember { member_id: a.member_id }
        }
        Tool::DisconnectIntegration => {
            let a: ConnectionArgs = serde_json::from_value(args).map_err(bad)?;
            Call::DisconnectIntegration { connection_id: a.connection_id }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_schema() {
        let id = Uuid::new_v4();
        assert_eq!(
            parse_call("change_role", &json!({"member_id": id, "role": "admin"})),
            Ok(Call::ChangeRole { member_id: id, role: ProposableRole::Admin })
        );
        for bad in [
            json!({"member_id": id, "role": "owner"}),
            json!({"member_id": id, "role": "admin", "workspace": "other"}),
            json!({"member_id": "not-a-uuid", "role": "admin"}),
            json!({"member_id": 7, "role": "admin"}),
            json!({"role": "admin"}),
            json!("member_id"),
            json!({"unparsed": "{oops"}),
        ] {
            assert_eq!(parse_call("change_role", &bad), Err(ToolRefusal::BadArguments), "{bad}");
        }
        assert_eq!(parse_call("delete_workspace", &json!({})), Err(ToolRefusal::UnknownTool));
        assert_eq!(parse_call("list_members", &Value::Null), Ok(Call::ListMembers));
        assert_eq!(parse_call("list_members", &json!({"x": 1})), Err(ToolRefusal::BadArguments));
        assert_eq!(parse_call("recent_audit_events", &json!({"limit": 200})), Err(ToolRefusal::BadArguments));
        assert_eq!(parse_call("recent_audit_events", &json!({"limit": 0})), Err(ToolRefusal::BadArguments));
    }

    #[test]
    fn every_tool_has_an_object_schema_closed_to_extra_fields() {
        for t in Tool::ALL {
            let spec = t.spec();
            assert_eq!(spec.parameters["type"], "object");
            assert_eq!(spec.parameters["additionalProperties"], false, "{}", t.name());
            assert_eq!(Tool::parse(spec.name), Some(*t));
        }
    }
}
