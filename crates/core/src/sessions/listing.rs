//! "Where you're signed in": the signed-in sessions of one person, and signing them out.
//!
//! A session keeps only what the list shows about where it was started — the browser and
//! operating system parsed from the user agent, and the client's network truncated to a
//! /24 (IPv4) or /48 (IPv6) — never the raw address or user agent. The list refers to a
//! session by a random handle kept in its data (the cookie's id changes when the session
//! is renewed; its hash is the table's key and stays on the server).

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use time::OffsetDateTime;
use tower_sessions::session::Id;
use uuid::Uuid;

use super::policy::{AuthState, AUTH_KEY};
use super::store::session_id_hash;
use crate::audit::{Action, Audit, Detail, Event, Outcome};
use crate::schema::{sessions, users};

/// Session data key of [`SessionOrigin`].
pub const ORIGIN_KEY: &str = "origin";

/// Where a session was signed in, as the list shows it; stored with the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOrigin {
    /// How the list and its forms name this session.
    pub handle: Uuid,
    /// "Chrome 156", or "Unknown browser".
    pub browser: String,
    /// "Linux", "Windows 10", or "Unknown system".
    pub system: String,
    /// "203.0.113.0/24", or `None` when the request had no usable address.
    pub network: Option<String>,
}

impl SessionOrigin {
    /// From the request's `User-Agent` header and client network (`crate::client`).
    pub fn new(user_agent: Option<&str>, network: Option<&str>) -> Self {
        let (browser, system) = describe_user_agent(user_agent.unwrap_or_default());
        Self { handle: Uuid::new_v4(), browser, system, network: network.and_then(approximate_network) }
    }
}

const UNKNOWN: &str = "UNKNOWN";

/// The browser and the operating system a user agent names, in words. Parsed with
/// `woothee` (its rules are compiled in: no data file to ship or keep in step).
/// Text is kept short and to printable characters: a client chooses its user agent.
pub fn describe_user_agent(user_agent: &str) -> (String, String) {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let browser = parsed
        .as_ref()
        .filter(|p| p.name != UNKNOWN)
        .map(|p| match major_version(p.version) {
            Some(v) => format!("{} {v}", p.name),
            None => p.name.to_string(),
        })
        .unwrap_or_else(|| "Unknown browser".into());
    let system = parsed
        .as_ref()
        .filter(|p| p.os != UNKNOWN)
        .map(|p| match major_version(&p.os_version) {
            // woothee names Windows by release ("Windows 10") and leaves the version empty.
            Some(v) if !p.os.contains(v.as_str()) => format!("{} {v}", p.os),
            _ => p.os.to_string(),
        })
        .unwrap_or_else(|| "Unknown system".into());
    (tidy(&browser), tidy(&system))
}

fn major_version(version: &str) -> Option<String> {
    let major: String = version.chars().take_while(|c| c.is_ascii_digit()).take(4).collect();
    (!major.is_empty()).then_some(major)
}

fn tidy(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(40).collect()
}

/// A client network (`crate::client::client_network`: an IPv4 address, or an IPv6 /64)
/// truncated to what the list shows: the IPv4 /24 or the IPv6 /48 — roughly a provider's
/// neighbourhood, not a household.
pub fn approximate_network(network: &str) -> Option<String> {
    let address = network.split('/').next()?.parse::<IpAddr>().ok()?;
    Some(match address.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    })
}

/// One signed-in session in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    pub origin: SessionOrigin,
    pub signed_in_at: OffsetDateTime,
    pub last_active_at: OffsetDateTime,
    /// The session of the request asking.
    pub current: bool,
    /// Signed in before the session asking: ending it needs a step-up (see
    /// [`revoke_session`]).
    pub older_than_current: bool,
}

/// A session row of `account`, with what its data says.
struct Row {
    id_hash: Vec<u8>,
    auth: AuthState,
    origin: Option<SessionOrigin>,
}

async fn rows_of(conn: &mut AsyncPgConnection, account: Uuid, now: OffsetDateTime) -> QueryResult<Vec<Row>> {
    let found: Vec<(Vec<u8>, serde_json::Value)> = sessions::table
        .filter(sessions::user_id.eq(account))
        .filter(sessions::expires_at.gt(now))
        .select((sessions::id_hash, sessions::data))
        .load(conn)
        .await?;
    Ok(found
        .into_iter()
        .filter_map(|(id_hash, mut data)| {
            let auth = serde_json::from_value::<AuthState>(data.get_mut(AUTH_KEY)?.take()).ok()?;
            let origin = data.get_mut(ORIGIN_KEY).and_then(|o| serde_json::from_value(o.take()).ok());
            (auth.user_id == account).then_some(Row { id_hash, auth, origin })
        })
        .collect())
}

/// The signed-in sessions of `account` at `now`, the current one first, then the most
/// recently active. Sessions that ended (signed out, revoked, idle or past their absolute
/// limit) are not listed.
pub async fn active_sessions(
    conn: &mut AsyncPgConnection,
    account: Uuid,
    current: Option<&Id>,
    now: OffsetDateTime,
) -> QueryResult<Vec<ActiveSession>> {
    let current = current.map(session_id_hash);
    let rows = rows_of(conn, account, now).await?;
    let current_since = signed_in_at(&rows, current.as_deref());
    let mut list: Vec<ActiveSession> = rows
        .into_iter()
        .map(|row| ActiveSession {
            current: current.as_ref() == Some(&row.id_hash),
            older_than_current: current_since.is_some_and(|since| row.auth.authenticated_at < since),
            // Sessions started before origins were kept: listed, and still revocable.
            origin: row.origin.unwrap_or_else(|| SessionOrigin {
                handle: handle_of_hash(&row.id_hash),
                browser: "Unknown browser".into(),
                system: "Unknown system".into(),
                network: None,
            }),
            signed_in_at: row.auth.authenticated_at,
            last_active_at: row.auth.last_seen_at,
        })
        .collect();
    list.sort_by(|a, b| b.current.cmp(&a.current).then(b.last_active_at.cmp(&a.last_active_at)));
    Ok(list)
}

/// A stable handle for a session without a stored origin, derived from its key's hash
/// (itself a hash: it names the session without revealing its cookie).
fn handle_of_hash(id_hash: &[u8]) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&id_hash[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// When the session keyed `id_hash` signed in, if it is among `rows`.
fn signed_in_at(rows: &[Row], id_hash: Option<&[u8]>) -> Option<OffsetDateTime> {
    rows.iter().find(|r| Some(r.id_hash.as_slice()) == id_hash).map(|r| r.auth.authenticated_at)
}

fn handle(row: &Row) -> Uuid {
    row.origin.as_ref().map_or_else(|| handle_of_hash(&row.id_hash), |o| o.handle)
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("That session has already ended.")]
    NotFound,
    /// The list's own session is signed out with "Sign out", which also clears the cookie.
    #[error("This is the session you are using: use “Sign out” instead.")]
    Current,
    /// The session to end signed in before the one asking: a stolen, newer session must
    /// not be able to throw its owner out without the password.
    #[error("That session signed in before this one: confirm it's you first (below the list).")]
    StepUpNeeded,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Signs out `account`'s session `handle` (not the `current` one), with its
/// `session.revoked` event in the same transaction. The session's next request finds no
/// row and is signed out, whichever server instance it reaches. Ending a session that
/// signed in before the current one needs `stepped_up` (newer ones can be ended at once:
/// someone who sees a session they do not know must be able to stop it).
pub async fn revoke_session(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    account: Uuid,
    handle_to_end: Uuid,
    current: Option<&Id>,
    now: OffsetDateTime,
    stepped_up: bool,
) -> Result<(), RevokeError> {
    let current = current.map(session_id_hash);
    conn.transaction::<_, RevokeError, _>(|c| {
        async move {
            let rows = rows_of(c, account, now).await?;
            let row = rows.iter().find(|r| handle(r) == handle_to_end).ok_or(RevokeError::NotFound)?;
            if current.as_ref() == Some(&row.id_hash) {
                return Err(RevokeError::Current);
            }
            let current_since = signed_in_at(&rows, current.as_deref());
            if !stepped_up && current_since.is_none_or(|since| row.auth.authenticated_at < since) {
                return Err(RevokeError::StepUpNeeded);
            }
            let deleted = diesel::delete(sessions::table.find(&row.id_hash)).execute(c).await?;
            if deleted == 0 {
                return Err(RevokeError::NotFound);
            }
            let detail = Detail::SessionsEnded { count: 1 };
            audit.record(c, Event::account(Some(account), Action::SessionRevoked, Outcome::Succeeded, detail)).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Signs out every signed-in session of `account` but `keep` (none when `None`: all of
/// them), with one `session.revoked` event counting them, in the same transaction, and
/// bumps the account's `sessions_epoch`, so that a session a request in flight (or a
/// sign-in under way) writes back afterwards is signed out too. Returns how many ended
/// and the new epoch, which the kept session takes on. (Rows already expired are left to
/// the clean-up job, which records them as expired.)
pub async fn revoke_other_sessions(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    account: Uuid,
    keep: Option<&Id>,
    now: OffsetDateTime,
) -> QueryResult<(u64, i32)> {
    let keep = keep.map(session_id_hash);
    conn.transaction(|c| {
        async move {
            let mut query = diesel::delete(
                sessions::table.filter(sessions::user_id.eq(account)).filter(sessions::expires_at.gt(now)),
            )
            .into_boxed();
            if let Some(keep) = &keep {
                query = query.filter(sessions::id_hash.ne(keep));
            }
            let ended = query.execute(c).await? as u64;
            let epoch: i32 = diesel::update(users::table.find(account))
                .set(users::sessions_epoch.eq(users::sessions_epoch + 1))
                .returning(users::sessions_epoch)
                .get_result(c)
                .await?;
            // The kept session takes it on in the same transaction: a request of its own
            // that starts in between must not find it behind.
            if let Some(keep) = &keep {
                diesel::sql_query(
                    "UPDATE sessions SET data = jsonb_set(data, '{auth,sessions_epoch}', to_jsonb($1::int)) \
                     WHERE id_hash = $2 AND data ? 'auth'",
                )
                .bind::<diesel::sql_types::Integer, _>(epoch)
                .bind::<diesel::sql_types::Bytea, _>(keep)
                .execute(c)
                .await?;
            }
            if ended > 0 {
                let detail = Detail::SessionsEnded { count: ended };
                audit
                    .record(c, Event::account(Some(account), Action::SessionRevoked, Outcome::Succeeded, detail))
                    .await?;
            }
            Ok((ended, epoch))
        }
        .scope_boxed()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_named_by_browser_and_system() {
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(describe_user_agent(chrome), ("Chrome 156".into(), "Linux".into()));
        let firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(describe_user_agent(firefox), ("Firefox 133".into(), "Windows 10".into()));
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        let (browser, system) = describe_user_agent(safari);
        assert_eq!(browser, "Safari 17");
        assert!(system.starts_with("iPhone"), "{system}");
        assert_eq!(describe_user_agent(""), ("Unknown browser".into(), "Unknown system".into()));
        assert_eq!(describe_user_agent("curl/8.5.0").1, "Unknown system");
    }

    #[test]
    fn a_made_up_user_agent_cannot_inject_text() {
        let (browser, system) = describe_user_agent("Mozilla/5.0 (\u{202e}evil\n<script>) Chrome/1\u{0}");
        for text in [browser, system] {
            assert!(text.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{text:?}");
            assert!(text.len() <= 40);
        }
    }

    #[test]
    fn networks_are_truncated_for_display() {
        assert_eq!(approximate_network("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(approximate_network("2001:db8:1:2::/64").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(approximate_network("::ffff:198.51.100.3").as_deref(), Some("198.51.100.0/24"));
        assert_eq!(approximate_network("not an address"), None);
    }
}
