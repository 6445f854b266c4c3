//! A tower-sessions store on the `sessions` table, written with Diesel so the process has
//! a single database driver and a single pool.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use uuid::Uuid;

use super::policy::{AuthState, SessionPolicy, AUTH_KEY};
use crate::accounts::User;
use crate::audit::{Action, Audit, Detail, Event, Outcome, SystemJob};
use crate::clock::At;
use crate::clock::SharedClock;
use crate::db::Pool;
use crate::schema::{sessions, users};

/// Session data key under which [`DieselSessionStore::load`] puts the signed-in user's
/// account row, read in the same statement as the session: every signed-in request needs
/// both, and one round trip is cheaper than two. It is a read-only view of `users` for
/// this request: never written back (see `DieselSessionStore::row`), overwritten on every
/// load, absent when the session's user no longer exists.
pub const SIGNED_IN_USER_KEY: &str = "_signed_in_user";

/// The stored key: SHA-256 of the cookie's session id. The id itself is never stored,
/// so reading the table does not yield usable cookies.
pub fn session_id_hash(id: &Id) -> Vec<u8> {
    Sha256::digest(id.0.to_le_bytes()).to_vec()
}

#[derive(Clone)]
pub struct DieselSessionStore {
    pool: Pool,
    clock: SharedClock,
    policy: SessionPolicy,
}

impl std::fmt::Debug for DieselSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselSessionStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id_hash: Vec<u8>,
    user_id: Option<Uuid>,
    data: serde_json::Value,
    expires_at: OffsetDateTime,
}

impl DieselSessionStore {
    pub fn new(pool: Pool, clock: SharedClock, policy: SessionPolicy) -> Self {
        Self { pool, clock, policy }
    }

    fn row(&self, record: &Record) -> session_store::Result<SessionRow> {
        let auth = record.data.get(AUTH_KEY).and_then(|v| serde_json::from_value::<AuthState>(v.clone()).ok());
        // Whatever the cookie says, a row never outlives the idle timeout from its last
        // write, nor (when signed in) the absolute timeout.
        let mut expires_at = record.expiry_date.min(self.clock.now() + self.policy.idle_timeout);
        if let Some(auth) = &auth {
            expires_at = expires_at.min(self.policy.expires_at(auth));
        }
        // The user row that `load` lent this request is not part of the session.
        let data = record
            .data
            .iter()
            .filter(|(key, _)| key.as_str() != SIGNED_IN_USER_KEY)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<serde_json::Map<_, _>>();
        Ok(SessionRow {
            id_hash: session_id_hash(&record.id),
            user_id: auth.map(|a| a.user_id),
            data: serde_json::Value::Object(data),
            expires_at,
        })
    }
}

#[async_trait]
impl SessionStore for DieselSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        // On the (astronomically unlikely) id collision, draw a new id instead of
        // overwriting someone else's session.
        loop {
            let row = self.row(record)?;
            let inserted = diesel::insert_into(sessions::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await
                .map_err(backend)?;
            if inserted == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    /// Updates the row only: a session that was deleted (signed out, revoked, expired)
    /// while a request that had loaded it was still running stays deleted. Nor does such a
    /// request lower the session's `sessions_epoch` (the kept session of a "sign out
    /// everywhere" is moved to the new one while other requests of it may be running).
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        use diesel::sql_types::{Bytea, Jsonb, Nullable, Timestamptz, Uuid as SqlUuid};
        let row = self.row(record)?;
        let mut conn = self.pool.get().await.map_err(backend)?;
        diesel::sql_query(
            "UPDATE sessions SET user_id = $2, expires_at = $4, data = CASE \
               WHEN $3 ? 'auth' AND sessions.data ? 'auth' THEN jsonb_set($3, '{auth,sessions_epoch}', to_jsonb(GREATEST( \
                 COALESCE((sessions.data #>> '{auth,sessions_epoch}')::int, 0), \
                 COALESCE(($3 #>> '{auth,sessions_epoch}')::int, 0)))) \
               ELSE $3 END \
             WHERE id_hash = $1",
        )
        .bind::<Bytea, _>(&row.id_hash)
        .bind::<Nullable<SqlUuid>, _>(row.user_id)
        .bind::<Jsonb, _>(&row.data)
        .bind::<Timestamptz, _>(row.expires_at)
        .execute(&mut conn)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let found: Option<(serde_json::Value, OffsetDateTime, Option<User>)> = sessions::table
            .left_join(users::table)
            .filter(sessions::id_hash.eq(session_id_hash(id)))
            .filter(sessions::expires_at.gt(self.clock.now()))
            .select((sessions::data, sessions::expires_at, Option::<User>::as_select()))
            .first(&mut conn)
            .await
            .optional()
            .map_err(backend)?;
        let Some((data, expiry_date, user)) = found else {
            return Ok(None);
        };
        let mut data: std::collections::HashMap<String, serde_json::Value> =
            serde_json::from_value(data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        data.remove(SIGNED_IN_USER_KEY);
        if let Some(user) = user {
            let user = serde_json::to_value(&user).map_err(|e| session_store::Error::Encode(e.to_string()))?;
            data.insert(SIGNED_IN_USER_KEY.to_string(), user);
        }
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        diesel::delete(sessions::table.filter(sessions::id_hash.eq(session_id_hash(id))))
            .execute(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Deletes every session row that has expired by `now`; run periodically in the background.
/// Each account whose sessions ended gets one `session.expired` event, in the same
/// transaction.
pub async fn delete_expired_sessions(pool: &Pool, now: OffsetDateTime) -> Result<usize, crate::db::DbError> {
    use diesel_async::scoped_futures::ScopedFutureExt;
    use diesel_async::AsyncConnection;
    let mut conn = pool.get().await.map_err(|e| crate::db::DbError::Pool(e.to_string()))?;
    let deleted = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            async move {
                let ended: Vec<Option<Uuid>> = diesel::delete(sessions::table.filter(sessions::expires_at.le(now)))
                    .returning(sessions::user_id)
                    .get_results(c)
                    .await?;
                let mut per_account = std::collections::BTreeMap::<Uuid, u64>::new();
                for user in ended.iter().flatten() {
                    *per_account.entry(*user).or_default() += 1;
                }
                let at = At(now);
                let audit = Audit::system(SystemJob::SessionCleanup, &at);
                for (account, count) in per_account {
                    let detail = Detail::SessionsEnded { count };
                    audit
                        .record(c, Event::account(Some(account), Action::SessionExpired, Outcome::Succeeded, detail))
                        .await?;
                }
                Ok(ended.len())
            }
            .scope_boxed()
        })
        .await?;
    Ok(deleted)
}

/// Ends one signed-in session (signing out, or expired when it was used), with its event
/// in the same transaction. The caller then flushes its `Session`, which finds the row gone.
pub async fn end_session(
    conn: &mut diesel_async::AsyncPgConnection,
    audit: &Audit<'_>,
    id: &Id,
    account: Uuid,
    action: Action,
) -> diesel::QueryResult<()> {
    use diesel_async::scoped_futures::ScopedFutureExt;
    use diesel_async::AsyncConnection;
    let id_hash = session_id_hash(id);
    conn.transaction(|c| {
        async move {
            let deleted = diesel::delete(sessions::table.filter(sessions::id_hash.eq(id_hash))).execute(c).await?;
            // Already gone (signed out everywhere meanwhile): that was recorded then.
            if deleted == 0 {
                return Ok(());
            }
            audit.record(c, Event::account(Some(account), action, Outcome::Succeeded, Detail::None)).await
        }
        .scope_boxed()
    })
    .await
}
