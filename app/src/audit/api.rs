//! Server functions of the audit viewer and the activity page. Each is a public endpoint:
//! it checks the caller (a workspace's owners and admins; one's own account) and
//! validates every filter value itself.

// `audit_page` takes the viewer's query parameters one by one, as the form sends them.
#![allow(clippy::too_many_arguments)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    /// Milliseconds since the Unix epoch, for the browser's local time.
    pub at_ms: i64,
    pub at_utc: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub network: String,
}

/// Events per UTC day, by outcome, for the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartDay {
    pub day: String,
    pub succeeded: i64,
    pub denied: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetail {
    pub row: AuditRow,
    pub actor_kind: String,
    pub action_name: String,
    pub user_agent: String,
    pub request_id: String,
    pub details: Vec<(String, String)>,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    pub slug: String,
    pub name: String,
    pub rows: Vec<AuditRow>,
    pub older: Option<i64>,
    pub newer: Option<i64>,
    pub chart: Vec<ChartDay>,
    /// "Verified up to …", or what is wrong.
    pub status: String,
    pub status_ok: bool,
    pub detail: Option<EventDetail>,
    /// The "Action" choices: (value, label, is a group).
    pub actions: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityLog {
    pub rows: Vec<AuditRow>,
    pub older: Option<i64>,
    pub newer: Option<i64>,
}

#[cfg(feature = "ssr")]
mod imp {
    use fluxi_core::audit::query::{self, AuditReader, Cursor, FilterError, RawFilter, StoredEvent};
    use fluxi_core::audit::{Action, ActionGroup};
    use time::format_description::well_known::Rfc3339;

    use super::*;

    pub fn filter_error(e: FilterError) -> AppError {
        let field = match e {
            FilterError::UnknownAction => "action",
            FilterError::UnknownOutcome => "outcome",
            FilterError::BadDate | FilterError::DateOutOfRange | FilterError::DatesReversed => "from",
            FilterError::WindowTooLong => "to",
            FilterError::ActorTooLong | FilterError::ActorInvalid => "actor",
            FilterError::BadCursor => "cursor",
        };
        AppError::field(field, e.to_string())
    }

    pub fn action_choices() -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for g in ActionGroup::ALL {
            out.push((format!("group:{}", g.name()), format!("{} (all)", g.words()), true));
            for a in Action::ALL.iter().filter(|a| a.group() == *g) {
                out.push((a.name().to_string(), a.words().to_string(), false));
            }
        }
        out
    }

    fn utc_text(at: time::OffsetDateTime) -> String {
        let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
        at.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
    }

    /// Who, in words: the account's current name while it exists, else a short pseudonym.
    fn actor_text(e: &StoredEvent, names: &std::collections::HashMap<uuid::Uuid, String>) -> String {
        if let Some(name) = e.actor_id.and_then(|id| names.get(&id)) {
            return name.clone();
        }
        match e.actor_kind.as_str() {
            "user" => format!("Former account {}", StoredEvent::short(&e.actor_email_pn).unwrap_or_default()),
            "anonymous" => match StoredEvent::short(&e.actor_email_pn) {
                Some(p) => format!("Someone using email {p}"),
                None => "Someone not signed in".into(),
            },
            kind => format!("System ({})", kind.trim_start_matches("system:").replace('_', " ")),
        }
    }

    fn target_text(e: &StoredEvent, names: &std::collections::HashMap<uuid::Uuid, String>) -> String {
        let name = e.target_id.and_then(|id| names.get(&id).cloned());
        let short = e.target_id.map(|id| id.simple().to_string()[..8].to_string()).unwrap_or_default();
        match (e.target_kind.as_str(), name) {
            ("member" | "account", Some(n)) => n,
            ("member" | "account", None) if e.target_id.is_some() => format!("Former account {short}"),
            ("invitation", _) => format!("Invitation {short}"),
            ("workspace", _) => "This workspace".into(),
            ("audit_log", _) => "Audit log".into(),
            _ => String::new(),
        }
    }

    pub fn row(e: &StoredEvent, names: &std::collections::HashMap<uuid::Uuid, String>) -> AuditRow {
        AuditRow {
            seq: e.seq,
            at_ms: (e.occurred_at.unix_timestamp_nanos() / 1_000_000) as i64,
            at_utc: utc_text(e.occurred_at),
            actor: actor_text(e, names),
            action: Action::parse(&e.action).map(Action::words).unwrap_or(&e.action).to_string(),
            target: target_text(e, names),
            outcome: e.outcome.clone(),
            network: StoredEvent::short(&e.network_pn).map(|p| format!("net-{p}")).unwrap_or_else(|| "—".into()),
        }
    }

    pub fn detail(e: &StoredEvent, names: &std::collections::HashMap<uuid::Uuid, String>) -> EventDetail {
        let mut details = Vec::new();
        if let Some(map) = e.detail.as_object() {
            for (k, v) in map.iter().filter(|(k, _)| *k != "type") {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                details.push((k.replace('_', " "), value));
            }
        }
        EventDetail {
            row: row(e, names),
            actor_kind: e.actor_kind.clone(),
            action_name: e.action.clone(),
            user_agent: StoredEvent::short(&e.agent_pn).map(|p| format!("agent-{p}")).unwrap_or_else(|| "—".into()),
            request_id: e.request_id.map(|r| r.to_string()).unwrap_or_else(|| "—".into()),
            details,
            hash: hex_encode(&e.hash),
        }
    }

    fn hex_encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn cursor(before: &str, after: &str) -> Result<Cursor, AppError> {
        Cursor::parse(before, after).map_err(filter_error)
    }

    pub fn raw<'a>(action: &'a str, actor: &'a str, from: &'a str, to: &'a str, outcome: &'a str) -> RawFilter<'a> {
        RawFilter { action, actor, from, to, outcome }
    }

    pub async fn names(
        conn: &mut fluxi_core::db::PooledConn,
        events: &[StoredEvent],
        known: std::collections::HashMap<uuid::Uuid, String>,
    ) -> Result<std::collections::HashMap<uuid::Uuid, String>, AppError> {
        let mut names = known;
        let targets: Vec<uuid::Uuid> = events
            .iter()
            .filter(|e| matches!(e.target_kind.as_str(), "member" | "account"))
            .filter_map(|e| e.target_id)
            .chain(events.iter().filter_map(|e| e.actor_id))
            .filter(|id| !names.contains_key(id))
            .collect();
        names.extend(query::names_for(&mut *conn, targets).await?);
        Ok(names)
    }

    pub fn chart(days: Vec<query::DayCount>) -> Vec<ChartDay> {
        days.into_iter()
            .map(|d| ChartDay { day: d.day.to_string(), succeeded: d.succeeded, denied: d.denied, failed: d.failed })
            .collect()
    }

    pub fn status_text(status: fluxi_core::audit::verify::ChainStatus) -> (String, bool) {
        use fluxi_core::audit::verify::ChainStatus;
        match status {
            ChainStatus::VerifiedThrough(at) => {
                (format!("Verified up to {}", at.format(&Rfc3339).unwrap_or_default()), true)
            }
            ChainStatus::NotYetCheckpointed => ("Not yet covered by a signed checkpoint".into(), true),
            ChainStatus::Problem(p) => (format!("Tampering detected: {p}"), false),
        }
    }

    pub fn reader(access: &fluxi_core::workspaces::WorkspaceAccess) -> Result<AuditReader, AppError> {
        Ok(AuditReader::for_workspace(access)?)
    }
}

/// The audit log of a workspace: a page of events for the filter, the chart, the chain's
/// status, and one event's details when `event` names one.
#[server(prefix = "/api", endpoint = "audit_page")]
pub async fn audit_page(
    slug: String,
    action: String,
    actor: String,
    from: String,
    to: String,
    outcome: String,
    before: String,
    after: String,
    event: String,
) -> Result<AuditLog, AppError> {
    use fluxi_core::audit::{query, verify, Action, Detail, Event, Outcome, Target};
    use fluxi_core::workspaces::{self, Permission};
    use imp::*;

    use crate::ssr;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    // Everyone else gets what non-members get.
    if workspaces::require(&mut conn, &audit, &access, Permission::ViewAudit, Action::AuditViewed, Target::AuditLog)
        .await
        .is_err()
    {
        return Err(AppError::NotFound);
    }
    let reader = reader(&access)?;
    let cursor = cursor(&before, &after)?;
    let event_seq = match event.trim() {
        "" => None,
        raw => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| AppError::field("event", "That event does not exist."))?,
        ),
    };
    let filter = query::parse_filter(&mut conn, &state.pseudonyms, &raw(&action, &actor, &from, &to, &outcome))
        .await?
        .map_err(filter_error)?;
    let page = query::page(&mut conn, &reader, &filter, cursor).await?;
    let names = names(&mut conn, &page.events, page.names.clone()).await?;
    let detail = match event_seq {
        Some(seq) => {
            let (e, _) = query::event(&mut conn, &reader, seq)
                .await?
                .ok_or_else(|| AppError::field("event", "That event does not exist."))?;
            let names = imp::names(&mut conn, std::slice::from_ref(&e), names.clone()).await?;
            Some(detail(&e, &names))
        }
        None => None,
    };
    let chart = chart(query::daily_counts(&mut conn, &reader, &filter, state.clock.now()).await?);
    let (status, status_ok) = status_text(verify::status(&mut conn, &state.audit_signer, reader.chain()).await?);
    let detail_record = Detail::AuditRead { filter: filter.used(), rows: page.events.len() as u64 };
    let viewed = Event::workspace(
        access.workspace_id(),
        Action::AuditViewed,
        Target::AuditLog,
        Outcome::Succeeded,
        detail_record,
    );
    audit.record(&mut conn, viewed).await?;
    Ok(AuditLog {
        slug: access.slug().into(),
        name: access.name().into(),
        rows: page.events.iter().map(|e| row(e, &names)).collect(),
        older: page.older,
        newer: page.newer,
        chart,
        status,
        status_ok,
        detail,
        actions: action_choices(),
    })
}

/// The signed-in person's own account-level events.
#[server(prefix = "/api", endpoint = "account_activity")]
pub async fn account_activity(before: String, after: String) -> Result<ActivityLog, AppError> {
    use fluxi_core::audit::query::{self, AuditReader, Filter};
    use imp::*;

    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let cursor = cursor(&before, &after)?;
    let mut conn = ssr::conn(&state).await?;
    let reader = AuditReader::for_account(user.id);
    let page = query::page(&mut conn, &reader, &Filter::default(), cursor).await?;
    let names = names(&mut conn, &page.events, page.names.clone()).await?;
    Ok(ActivityLog { rows: page.events.iter().map(|e| row(e, &names)).collect(), older: page.older, newer: page.newer })
}
