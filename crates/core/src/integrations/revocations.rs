//! Revoking disconnected connections at their provider. A disconnect (or a member leaving,
//! or the workspace's deletion) removes the connection at once and moves its sealed
//! tokens here; they are revoked at the provider right away where someone is waiting
//! (a disconnect) and by the background job otherwise, with backoff, until the provider
//! confirms or [`RETRY_PERIOD`] ends. The ciphertext is deleted in the same transaction
//! as the outcome. Each row is worked on by one instance at a time (row lock, SKIP LOCKED).

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::catalogue::RevocationStyle;
use super::provider::{self, Failure, Tokens};
use super::{owner_parts, IntegrationError, Integrations, ProviderId, RemovedRow, Revocation};
use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::schema::integration_revocations as ir;
use crate::secrets::{Keyring, OpenError, Purpose, RotationReport, Sealed, VersionCount};

/// How long a revocation is retried before its tokens are destroyed unrevoked.
pub const RETRY_PERIOD: Duration = Duration::days(7);

/// Backoff after `attempts` failures: 30 s doubling, at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::seconds(30 * 2i64.pow(attempts.clamp(0, 7) as u32)).min(Duration::hours(1))
}

/// Queues a removed connection's tokens (inside the removal's transaction) and says what
/// the page can tell: nothing to revoke, not offered by the provider, or pending.
pub(crate) async fn enqueue_removed(
    c: &mut AsyncPgConnection,
    integrations: &Integrations,
    workspace: Uuid,
    row: &RemovedRow,
    now: OffsetDateTime,
) -> QueryResult<(Revocation, Option<Uuid>)> {
    let (_, provider, _, kind, _, access, refresh, _) = row;
    if kind == "api_key" {
        return Ok((Revocation::NotApplicable, None));
    }
    let offered = integrations
        .catalogue()
        .get(provider)
        .and_then(|p| p.oauth())
        .is_some_and(|o| o.revocation != RevocationStyle::None);
    if !offered || (access.is_none() && refresh.is_none()) {
        return Ok((Revocation::NotOffered, None));
    }
    let id = enqueue_removed_raw(c, workspace, row, now).await?;
    Ok((Revocation::Pending, id))
}

/// Queues a removed connection's tokens, whatever its provider offers (the job decides).
pub(crate) async fn enqueue_removed_raw(
    c: &mut AsyncPgConnection,
    workspace: Uuid,
    row: &RemovedRow,
    now: OffsetDateTime,
) -> QueryResult<Option<Uuid>> {
    let (connection, provider, owner, kind, key_version, access, refresh, account) = row;
    if kind == "api_key" || (access.is_none() && refresh.is_none()) {
        return Ok(None);
    }
    let id = Uuid::new_v4();
    diesel::insert_into(ir::table)
        .values((
            ir::id.eq(id),
            ir::workspace_id.eq(workspace),
            ir::owner_id.eq(owner),
            ir::connection_id.eq(connection),
            ir::provider.eq(provider),
            ir::key_version.eq(key_version),
            ir::access_token.eq(access),
            ir::refresh_token.eq(refresh),
            ir::account.eq(account),
            ir::next_attempt_at.eq(now),
            ir::give_up_at.eq(now + RETRY_PERIOD),
            ir::created_at.eq(now),
        ))
        .execute(c)
        .await?;
    Ok(Some(id))
}

/// Queues freshly issued tokens that no connection holds any more (a refresh that
/// finished after its connection was removed).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn enqueue_tokens(
    conn: &mut AsyncPgConnection,
    workspace: Uuid,
    owner: Uuid,
    connection: Uuid,
    provider: &super::Provider,
    keyring: &Keyring,
    tokens: &Tokens,
    account: Option<&str>,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let parts = owner_parts(&workspace, &owner, &connection);
    // The account too: where revoking ends the whole grant, the job checks it first.
    let account = account.map(|a| keyring.seal(Purpose::IntegrationAccount, &parts, a.as_bytes()).bytes);
    let access = keyring.seal(Purpose::IntegrationAccessToken, &parts, tokens.access_token.as_bytes());
    let refresh = tokens
        .refresh_token
        .as_ref()
        .map(|r| keyring.seal(Purpose::IntegrationRefreshToken, &parts, r.as_bytes()).bytes);
    let row: RemovedRow = (
        connection,
        provider.id.as_str().to_string(),
        owner,
        "oauth2".into(),
        access.key_version,
        Some(access.bytes),
        refresh,
        account,
    );
    enqueue_removed_raw(conn, workspace, &row, now).await.map(|_| ())
}

type QueueRow =
    (Uuid, Uuid, Uuid, Uuid, String, i32, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>, i32, OffsetDateTime);

/// Tries one queued revocation now (a disconnect waiting for the answer). `Pending` when
/// it failed and will be retried, or another instance is on it.
pub async fn attempt(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    integrations: &Integrations,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Revocation, IntegrationError> {
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            // Only while due: another instance may have tried it and set its next time.
            let row: Option<QueueRow> = ir::table
                .find(id)
                .filter(ir::next_attempt_at.le(now))
                .select(QUEUE_COLUMNS)
                .for_update()
                .skip_locked()
                .first(c)
                .await
                .optional()?;
            match row {
                Some(row) => work_on(c, audit, keyring, integrations, row, now).await,
                None => Ok(Revocation::Pending),
            }
        }
        .scope_boxed()
    })
    .await
}

/// The background job's pass: works through due revocations, one transaction each, at
/// most `limit`. Returns how many were worked on. A row whose attempt fails with an error
/// (not a provider's answer) is put back with its backoff, so it cannot hold up the rest.
pub async fn run_due(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    integrations: &Integrations,
    now: OffsetDateTime,
    limit: usize,
) -> Result<usize, IntegrationError> {
    let due: Vec<(Uuid, i32)> = ir::table
        .filter(ir::next_attempt_at.le(now))
        .select((ir::id, ir::attempts))
        .order(ir::next_attempt_at)
        .limit(limit as i64)
        .load(conn)
        .await?;
    let mut done = 0;
    for (id, attempts) in due {
        match attempt(conn, audit, keyring, integrations, id, now).await {
            Ok(_) => done += 1,
            Err(e) => {
                tracing::warn!(error = %e, "a revocation attempt failed; retried later");
                diesel::update(ir::table.find(id))
                    .set((ir::attempts.eq(attempts + 1), ir::next_attempt_at.eq(now + backoff(attempts))))
                    .execute(conn)
                    .await?;
            }
        }
    }
    Ok(done)
}

const QUEUE_COLUMNS: (
    ir::id,
    ir::workspace_id,
    ir::owner_id,
    ir::connection_id,
    ir::provider,
    ir::key_version,
    ir::access_token,
    ir::refresh_token,
    ir::account,
    ir::attempts,
    ir::give_up_at,
) = (
    ir::id,
    ir::workspace_id,
    ir::owner_id,
    ir::connection_id,
    ir::provider,
    ir::key_version,
    ir::access_token,
    ir::refresh_token,
    ir::account,
    ir::attempts,
    ir::give_up_at,
);

async fn work_on(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    integrations: &Integrations,
    row: QueueRow,
    now: OffsetDateTime,
) -> Result<Revocation, IntegrationError> {
    let (id, workspace, owner, connection, provider_id, key_version, access, refresh, account, attempts, give_up_at) =
        row;
    let parts = owner_parts(&workspace, &owner, &connection);
    let open = |purpose, bytes: Option<Vec<u8>>| -> Result<Option<Zeroizing<String>>, OpenError> {
        bytes
            .map(|b| {
                let plain = keyring.open(purpose, &parts, &Sealed { key_version, bytes: b })?;
                String::from_utf8(plain.to_vec()).map(Zeroizing::new).map_err(|_| OpenError::DoesNotOpen)
            })
            .transpose()
    };
    let provider = integrations
        .catalogue()
        .get(&provider_id)
        .filter(|p| p.oauth().is_some_and(|o| o.revocation != RevocationStyle::None));
    let opened = open(Purpose::IntegrationAccessToken, access)
        .and_then(|a| Ok((a, open(Purpose::IntegrationRefreshToken, refresh)?)));
    // Nothing more can be done when the provider offers no revocation (or left the
    // catalogue) or the tokens no longer open.
    let pid = ProviderId::parse(&provider_id);
    // Where revoking ends the person's whole authorization of Fluxi (not one token), it
    // waits while the same account is connected elsewhere: it would end that one too.
    if let Some(p) = provider.filter(|p| p.oauth().is_some_and(|o| o.revocation_ends_grant)) {
        let account = account
            .map(|bytes| keyring.open(Purpose::IntegrationAccount, &parts, &Sealed { key_version, bytes }))
            .transpose()
            .ok()
            .flatten();
        if let Some(account) = account {
            if super::connected_elsewhere(c, keyring, owner, p.id.as_str(), Some(&account)).await? {
                diesel::delete(ir::table.find(id)).execute(c).await?;
                let event = Event::workspace(
                    workspace,
                    Action::IntegrationRevocationSkipped,
                    Target::Connection(connection),
                    Outcome::Succeeded,
                    pid.clone()
                        .map_or(Detail::None, |p| Detail::Disconnected { provider: p, revocation: Revocation::Shared }),
                );
                audit.record(c, event).await?;
                return Ok(Revocation::Shared);
            }
        }
    }
    let (result, hopeless) = match (provider, opened) {
        (Some(p), Ok((a, r))) => (
            provider::revoke(integrations, p, a.as_deref().map(|s| s.as_str()), r.as_deref().map(|s| s.as_str())).await,
            false,
        ),
        _ => (Err(Failure::Refused), true),
    };
    let record = |action, outcome, revocation| {
        let detail = pid.clone().map_or(Detail::None, |p| Detail::Disconnected { provider: p, revocation });
        Event::workspace(workspace, action, Target::Connection(connection), outcome, detail)
    };
    match result {
        Ok(()) => {
            diesel::delete(ir::table.find(id)).execute(c).await?;
            audit.record(c, record(Action::IntegrationRevoked, Outcome::Succeeded, Revocation::Revoked)).await?;
            Ok(Revocation::Revoked)
        }
        // A provider's refusal is final too (an unknown or already revoked token).
        Err(failure) if hopeless || failure == Failure::Refused || now >= give_up_at => {
            diesel::delete(ir::table.find(id)).execute(c).await?;
            audit.record(c, record(Action::IntegrationRevocationGivenUp, Outcome::Failed, Revocation::GaveUp)).await?;
            Ok(Revocation::GaveUp)
        }
        Err(_) => {
            diesel::update(ir::table.find(id))
                .set((ir::attempts.eq(attempts + 1), ir::next_attempt_at.eq(now + backoff(attempts))))
                .execute(c)
                .await?;
            if attempts == 0 {
                audit
                    .record(c, record(Action::IntegrationRevocationFailed, Outcome::Failed, Revocation::Pending))
                    .await?;
            }
            Ok(Revocation::Pending)
        }
    }
}

pub(crate) async fn sealed_counts(conn: &mut AsyncPgConnection) -> QueryResult<Vec<VersionCount>> {
    let rows: Vec<(i32, i64)> = ir::table
        .group_by(ir::key_version)
        .select((ir::key_version, diesel::dsl::count_star()))
        .order(ir::key_version)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(v, n)| VersionCount { kind: "tokens waiting for revocation", key_version: v, count: n, rotatable: true })
        .collect())
}

pub(crate) async fn reseal_all(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    batch: i64,
) -> QueryResult<RotationReport> {
    let current = keyring.current_version();
    let mut report = RotationReport::default();
    let mut failed: Vec<Uuid> = Vec::new();
    loop {
        let excluded = failed.clone();
        let (resealed, newly_failed) = conn
            .transaction::<_, diesel::result::Error, _>(|c| {
                async move {
                    type Row = (Uuid, Uuid, Uuid, Uuid, i32, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
                    let rows: Vec<Row> = ir::table
                        .filter(ir::key_version.ne(current))
                        .filter(ir::id.ne_all(&excluded))
                        .select((
                            ir::id,
                            ir::workspace_id,
                            ir::owner_id,
                            ir::connection_id,
                            ir::key_version,
                            ir::access_token,
                            ir::refresh_token,
                            ir::account,
                        ))
                        .order(ir::id)
                        .limit(batch)
                        .for_update()
                        .skip_locked()
                        .load(c)
                        .await?;
                    let (mut resealed, mut failed) = (0u64, Vec::new());
                    for (id, workspace, owner, connection, version, access, refresh, account) in rows {
                        let parts = owner_parts(&workspace, &owner, &connection);
                        let reseal = |purpose, bytes: Option<Vec<u8>>| {
                            bytes
                                .map(|b| {
                                    keyring
                                        .reseal(purpose, &parts, &Sealed { key_version: version, bytes: b })
                                        .map(|s| s.bytes)
                                })
                                .transpose()
                        };
                        match (
                            reseal(Purpose::IntegrationAccessToken, access),
                            reseal(Purpose::IntegrationRefreshToken, refresh),
                            reseal(Purpose::IntegrationAccount, account),
                        ) {
                            (Ok(a), Ok(r), Ok(n)) => {
                                diesel::update(ir::table.find(id))
                                    .set((
                                        ir::key_version.eq(current),
                                        ir::access_token.eq(a),
                                        ir::refresh_token.eq(r),
                                        ir::account.eq(n),
                                    ))
                                    .execute(c)
                                    .await?;
                                resealed += 1;
                            }
                            _ => failed.push(id),
                        }
                    }
                    Ok((resealed, failed))
                }
                .scope_boxed()
            })
            .await?;
        report.resealed += resealed;
        report.failed += newly_failed.len() as u64;
        if resealed == 0 && newly_failed.is_empty() {
            return Ok(report);
        }
        failed.extend(newly_failed);
    }
}
