//! Two-factor authentication: an authenticator app (TOTP, RFC 6238) and recovery codes.
//!
//! - The TOTP secret (160 random bits) is sealed by [`crate::secrets`], bound to its
//!   account; it is shown only while the enrolment waits for its first code.
//! - Standard parameters (SHA-1, 6 digits, 30 s), so every authenticator app works; the
//!   current step or one either side is accepted.
//! - Each step is accepted at most once per account: the check that accepts a code is a
//!   conditional update of the newest accepted step (`last_step < step`), so two
//!   submissions of one code, even at the same instant, succeed exactly once.
//! - Recovery codes are stored only as keyed hashes; using one deletes it in the
//!   statement that finds it, so each works once.
//!
//! Every change and every code checked is recorded through the audit writer, in the
//! same transaction.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{Action, Audit, Detail, Event, Outcome, SecondFactorMethod};
use crate::notifications::{notify, Notice};
use crate::schema::{mfa_recovery_codes, mfa_totp};
use crate::secrets::{Keyring, OpenError, Purpose, RotationReport, Sealed, VersionCount};

/// An enrolment not confirmed within this long is void.
pub const ENROLMENT_VALID_FOR: Duration = Duration::minutes(15);
/// Codes per set of recovery codes.
pub const RECOVERY_CODES: usize = 10;
/// At or below this many recovery codes left, the security page warns.
pub const RECOVERY_CODES_LOW: i64 = 2;
const SECRET_BYTES: usize = 20;
const STEP_SECONDS: u64 = 30;
const ISSUER: &str = "Fluxi";
/// Crockford's base 32 without i, l, o, u: 10 characters carry 50 bits and read aloud
/// without ambiguity.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RECOVERY_CODE_CHARS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// Not six digits once spaces and dashes are removed.
    #[error("an authentication code is 6 digits")]
    MalformedCode,
    /// Not two groups of five letters and digits.
    #[error("a recovery code is 10 letters and digits, like xxxxx-xxxxx")]
    MalformedRecoveryCode,
    #[error("that code is not right")]
    WrongCode,
    /// The code was right but its time step was already used.
    #[error("that code was already used; wait for the next one")]
    CodeAlreadyUsed,
    #[error("that recovery code is not right or was already used")]
    WrongRecoveryCode,
    #[error("two-factor authentication is already on")]
    AlreadyEnabled,
    #[error("two-factor authentication is not on")]
    NotEnabled,
    /// No enrolment waiting, it expired, or another one replaced it meanwhile.
    #[error("no set-up is waiting for a code, or it expired")]
    NoPendingEnrolment,
    #[error("confirm the account's email address first")]
    EmailNotVerified,
    /// A passkey's answer did not verify, or its ceremony expired or was answered already.
    #[error("the passkey could not be verified")]
    PasskeyRefused,
    /// The stored secret does not open (key version not configured, or tampered with).
    #[error("the stored secret could not be opened: {0}")]
    Sealed(#[from] OpenError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<crate::passkeys::PasskeyError> for MfaError {
    fn from(e: crate::passkeys::PasskeyError) -> Self {
        match e {
            crate::passkeys::PasskeyError::Database(e) => MfaError::Database(e),
            _ => MfaError::PasskeyRefused,
        }
    }
}

/// Whether an account has two-factor authentication, for pages and policy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MfaStatus {
    pub enabled: bool,
    /// An enrolment waits for its first code (and has not expired).
    pub pending: bool,
    pub recovery_codes_left: i64,
}

/// What the person needs to add the account to their app. Shown only while pending.
pub struct Enrolment {
    /// The secret in base 32, in groups of four.
    pub text_key: String,
    /// `otpauth://totp/Fluxi:<email>?secret=…&issuer=Fluxi`.
    pub uri: String,
    /// The URI as a QR code, an inline `<svg>` element drawn here.
    pub qr_svg: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enrolment {{ <redacted>, expires_at: {} }}", self.expires_at)
    }
}

/// A fresh set of recovery codes, in clear only here (shown once).
pub struct RecoveryCodes(pub Vec<Zeroizing<String>>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes, <redacted>)", self.0.len())
    }
}

/// Removes spaces and dashes; `None` unless six ASCII digits remain.
pub fn normalize_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Lower case without spaces or dashes, Crockford's look-alikes mapped (i, l → 1; o → 0);
/// `None` unless ten characters of the alphabet remain.
pub fn normalize_recovery_code(code: &str) -> Option<String> {
    let normalized: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            other => other,
        })
        .collect();
    (normalized.len() == RECOVERY_CODE_CHARS && normalized.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(normalized)
}

fn totp(secret: &[u8], account: &str) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        // A colon would end the label early; emails we accept have none, but be sure.
        .with_account_name(account.replace(':', "_"))
        .build_noncompliant()
}

fn unix_seconds(at: OffsetDateTime) -> u64 {
    at.unix_timestamp().max(0) as u64
}

fn owner(user: &Uuid) -> [&[u8]; 1] {
    [user.as_bytes().as_slice()]
}

fn enrolment(secret: &[u8], email: &str, expires_at: OffsetDateTime) -> Enrolment {
    let t = totp(secret, email);
    let base32 = t.secret().to_base32();
    let text_key =
        base32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ");
    let uri = t.to_url().unwrap_or_default();
    Enrolment { text_key, qr_svg: qr_svg(&uri), uri, expires_at }
}

/// The URI as an inline SVG QR code, labelled for screen readers.
fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else { return String::new() };
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).quiet_zone(true).build();
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..].replacen("<svg ", r#"<svg role="img" aria-label="QR code for your authenticator app" "#, 1)
}

#[derive(Queryable)]
struct TotpRow {
    secret_sealed: Vec<u8>,
    key_version: i32,
    confirmed_at: Option<OffsetDateTime>,
    pending_until: Option<OffsetDateTime>,
}

async fn totp_row(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<Option<TotpRow>> {
    mfa_totp::table
        .find(user)
        .select((mfa_totp::secret_sealed, mfa_totp::key_version, mfa_totp::confirmed_at, mfa_totp::pending_until))
        .first(conn)
        .await
        .optional()
}

/// Two-factor status of an account at `now`.
pub async fn status(conn: &mut AsyncPgConnection, user: Uuid, now: OffsetDateTime) -> QueryResult<MfaStatus> {
    let row = totp_row(conn, user).await?;
    let left: i64 =
        mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user)).count().get_result(conn).await?;
    Ok(MfaStatus {
        enabled: row.as_ref().is_some_and(|r| r.confirmed_at.is_some()),
        pending: row.as_ref().is_some_and(|r| r.pending_until.is_some_and(|until| until > now)),
        recovery_codes_left: left,
    })
}

/// Whether the account has an authenticator app confirmed (sign-in, policy checks).
pub async fn is_enabled(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        mfa_totp::table.filter(mfa_totp::user_id.eq(user)).filter(mfa_totp::confirmed_at.is_not_null()),
    ))
    .get_result(conn)
    .await
}

/// Whether the account has any second factor: a confirmed authenticator app or a passkey
/// (workspace policy: either counts).
pub async fn has_second_factor(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    use crate::schema::passkeys;
    diesel::select(
        diesel::dsl::exists(
            mfa_totp::table.filter(mfa_totp::user_id.eq(user)).filter(mfa_totp::confirmed_at.is_not_null()),
        )
        .or(diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(user)))),
    )
    .get_result(conn)
    .await
}

/// Starts (or restarts) setting up an authenticator app: a fresh secret, sealed and kept
/// pending until a code confirms it.
pub async fn start_enrolment(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    now: OffsetDateTime,
    user: Uuid,
    email: &str,
) -> Result<Enrolment, MfaError> {
    // A second factor on an unconfirmed address would let someone who signed up with
    // another person's address keep it from them: a reset from the mailbox would still
    // ask for the impostor's code.
    if !crate::accounts::verification::is_verified(conn, user).await? {
        return Err(MfaError::EmailNotVerified);
    }
    let secret = Zeroizing::new(rand::random::<[u8; SECRET_BYTES]>());
    let sealed = keyring.seal(Purpose::TotpSecret, &owner(&user), secret.as_slice());
    let expires_at = now + ENROLMENT_VALID_FOR;
    // Replaces a pending enrolment, never a confirmed one.
    let written = diesel::sql_query(
        "INSERT INTO mfa_totp (user_id, secret_sealed, key_version, pending_until, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, \
             key_version = excluded.key_version, pending_until = excluded.pending_until, \
             last_step = -1, created_at = excluded.created_at \
         WHERE mfa_totp.confirmed_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(user)
    .bind::<diesel::sql_types::Bytea, _>(&sealed.bytes)
    .bind::<diesel::sql_types::Integer, _>(sealed.key_version)
    .bind::<diesel::sql_types::Timestamptz, _>(expires_at)
    .bind::<diesel::sql_types::Timestamptz, _>(now)
    .execute(conn)
    .await?;
    if written == 0 {
        return Err(MfaError::AlreadyEnabled);
    }
    Ok(enrolment(secret.as_slice(), email, expires_at))
}

/// The enrolment waiting for its first code, to show again (a reload of the page).
pub async fn pending_enrolment(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    now: OffsetDateTime,
    user: Uuid,
    email: &str,
) -> Result<Option<Enrolment>, MfaError> {
    let Some(row) = totp_row(conn, user).await? else { return Ok(None) };
    let Some(until) = row.pending_until.filter(|until| *until > now) else { return Ok(None) };
    let secret = keyring.open(Purpose::TotpSecret, &owner(&user), &row.sealed())?;
    Ok(Some(enrolment(&secret, email, until)))
}

impl TotpRow {
    fn sealed(&self) -> Sealed {
        Sealed { key_version: self.key_version, bytes: self.secret_sealed.clone() }
    }
}

/// Confirms the pending enrolment with a code from the app: two-factor authentication is
/// on from here, with a first set of recovery codes (returned in clear, to show once).
/// The confirming code's step counts as used. A wrong code keeps the enrolment pending.
pub async fn confirm_enrolment(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
    email: &str,
    code: &str,
) -> Result<RecoveryCodes, MfaError> {
    let code = normalize_code(code).ok_or(MfaError::MalformedCode)?;
    let now = audit.clock.now();
    let row = totp_row(conn, user).await?.ok_or(MfaError::NoPendingEnrolment)?;
    if row.confirmed_at.is_some() {
        return Err(MfaError::AlreadyEnabled);
    }
    if row.pending_until.is_none_or(|until| until <= now) {
        return Err(MfaError::NoPendingEnrolment);
    }
    let secret = keyring.open(Purpose::TotpSecret, &owner(&user), &row.sealed())?;
    let Some(step) = totp(&secret, email).check(&code, unix_seconds(now)) else {
        let event = Event::account(Some(user), Action::MfaCodeFailed, Outcome::Failed, method(false));
        audit.record(conn, event).await?;
        return Err(MfaError::WrongCode);
    };
    let (sealed_bytes, codes) = (row.secret_sealed, new_recovery_codes());
    let rows = recovery_rows(keyring, user, &codes, now);
    conn.transaction::<_, MfaError, _>(|c| {
        async move {
            // Only the enrolment whose secret was checked, if still pending.
            let confirmed = diesel::update(
                mfa_totp::table
                    .filter(mfa_totp::user_id.eq(user))
                    .filter(mfa_totp::confirmed_at.is_null())
                    .filter(mfa_totp::pending_until.gt(now))
                    .filter(mfa_totp::secret_sealed.eq(&sealed_bytes)),
            )
            .set((
                mfa_totp::confirmed_at.eq(now),
                mfa_totp::pending_until.eq(None::<OffsetDateTime>),
                mfa_totp::last_step.eq(step as i64),
            ))
            .execute(c)
            .await?;
            if confirmed == 0 {
                return Err(MfaError::NoPendingEnrolment);
            }
            replace_recovery_codes(c, user, &rows).await?;
            let detail = Detail::RecoveryCodes { remaining: RECOVERY_CODES as u32 };
            audit.record(c, Event::account(Some(user), Action::MfaEnabled, Outcome::Succeeded, detail)).await?;
            notify(c, audit, user, Notice::TwoFactorEnabled).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    Ok(codes)
}

fn method(recovery: bool) -> Detail {
    let method = if recovery { SecondFactorMethod::RecoveryCode } else { SecondFactorMethod::AuthenticatorApp };
    Detail::SecondFactor { method }
}

/// Checks a code from the account's authenticator app and uses up its time step, in one
/// statement. Records the acceptance, the wrong code or the replay.
pub async fn verify_code(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
    code: &str,
) -> Result<(), MfaError> {
    let code = normalize_code(code).ok_or(MfaError::MalformedCode)?;
    let code = code.as_str();
    conn.transaction::<_, MfaError, _>(|c| {
        async move {
            // A refusal commits: its event (and a replay's notice) must stay.
            match accept_code(c, audit, keyring, user, code).await {
                Ok(()) => {
                    let event = Event::account(Some(user), Action::MfaCodeAccepted, Outcome::Succeeded, method(false));
                    audit.record(c, event).await?;
                    Ok(Ok(()))
                }
                Err(e @ (MfaError::WrongCode | MfaError::CodeAlreadyUsed)) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        }
        .scope_boxed()
    })
    .await?
}

/// Inside the caller's transaction: checks a code from the account's authenticator app
/// and uses up its time step, in one statement (so of N simultaneous submissions of one
/// code exactly one is accepted). Records a wrong code or a replay; recording the
/// acceptance is the caller's (a sign-in records it as its own success).
pub async fn accept_code(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
    code: &str,
) -> Result<(), MfaError> {
    let code = normalize_code(code).ok_or(MfaError::MalformedCode)?;
    let now = audit.clock.now();
    let row = totp_row(c, user).await?.filter(|r| r.confirmed_at.is_some()).ok_or(MfaError::NotEnabled)?;
    let secret = keyring.open(Purpose::TotpSecret, &owner(&user), &row.sealed())?;
    // The label is not part of the code; any will do here.
    let Some(step) = totp(&secret, "-").check(&code, unix_seconds(now)) else {
        let event = Event::account(Some(user), Action::MfaCodeFailed, Outcome::Failed, method(false));
        audit.record(c, event).await?;
        return Err(MfaError::WrongCode);
    };
    let accepted = diesel::update(
        mfa_totp::table
            .filter(mfa_totp::user_id.eq(user))
            .filter(mfa_totp::confirmed_at.is_not_null())
            .filter(mfa_totp::last_step.lt(step as i64)),
    )
    .set(mfa_totp::last_step.eq(step as i64))
    .execute(c)
    .await?;
    if accepted == 1 {
        return Ok(());
    }
    audit.record(c, Event::account(Some(user), Action::MfaCodeReplayed, Outcome::Denied, method(false))).await?;
    notify(c, audit, user, Notice::CodeReused).await?;
    Err(MfaError::CodeAlreadyUsed)
}

/// Uses up one recovery code: found and deleted in one statement, so it works once.
/// Records the use (or the wrong code). Returns how many are left.
pub async fn use_recovery_code(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
    code: &str,
) -> Result<i64, MfaError> {
    let code = normalize_recovery_code(code).ok_or(MfaError::MalformedRecoveryCode)?;
    let code = code.as_str();
    conn.transaction::<_, MfaError, _>(|c| {
        async move {
            // A wrong code commits: its event must stay.
            match take_recovery_code(c, audit, keyring, user, code).await {
                Ok(left) => {
                    record_recovery_code_used(c, audit, user, left).await?;
                    Ok(Ok(left))
                }
                Err(e @ MfaError::WrongRecoveryCode) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        }
        .scope_boxed()
    })
    .await?
}

/// Inside the caller's transaction: deletes the recovery code `code` of `user` (one
/// statement per key version, so of N simultaneous uses exactly one succeeds) and returns
/// how many are left. Records a wrong code; the use is the caller's to record, with
/// [`record_recovery_code_used`], with the rest of the sign-in.
pub async fn take_recovery_code(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
    code: &str,
) -> Result<i64, MfaError> {
    let code = normalize_recovery_code(code).ok_or(MfaError::MalformedRecoveryCode)?;
    if !is_enabled(c, user).await? {
        return Err(MfaError::NotEnabled);
    }
    let mut used = false;
    for version in keyring.versions() {
        let Some(hash) = keyring.keyed_hash(version, Purpose::RecoveryCode, &owner(&user), code.as_bytes()) else {
            continue;
        };
        let deleted = diesel::delete(
            mfa_recovery_codes::table
                .filter(mfa_recovery_codes::user_id.eq(user))
                .filter(mfa_recovery_codes::key_version.eq(version))
                .filter(mfa_recovery_codes::code_hash.eq(hash.to_vec())),
        )
        .execute(c)
        .await?;
        used |= deleted == 1;
    }
    if !used {
        let event = Event::account(Some(user), Action::MfaCodeFailed, Outcome::Failed, method(true));
        audit.record(c, event).await?;
        return Err(MfaError::WrongRecoveryCode);
    }
    Ok(mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user)).count().get_result(c).await?)
}

/// Records that a recovery code of `user` was used, `left` remaining (with a notice when
/// few are), in the caller's transaction.
pub async fn record_recovery_code_used(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    left: i64,
) -> QueryResult<()> {
    let remaining = left.max(0) as u32;
    let detail = Detail::RecoveryCodes { remaining };
    audit.record(c, Event::account(Some(user), Action::RecoveryCodeUsed, Outcome::Succeeded, detail)).await?;
    if left <= RECOVERY_CODES_LOW {
        notify(c, audit, user, Notice::RecoveryCodesLow { remaining }).await?;
    }
    Ok(())
}

/// Replaces the whole set of recovery codes (the caller has checked a step-up).
pub async fn regenerate_recovery_codes(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    user: Uuid,
) -> Result<RecoveryCodes, MfaError> {
    let now = audit.clock.now();
    let codes = new_recovery_codes();
    let rows = recovery_rows(keyring, user, &codes, now);
    conn.transaction::<_, MfaError, _>(|c| {
        async move {
            if !is_enabled(c, user).await? {
                return Err(MfaError::NotEnabled);
            }
            replace_recovery_codes(c, user, &rows).await?;
            let detail = Detail::RecoveryCodes { remaining: RECOVERY_CODES as u32 };
            let event = Event::account(Some(user), Action::RecoveryCodesRegenerated, Outcome::Succeeded, detail);
            audit.record(c, event).await?;
            notify(c, audit, user, Notice::RecoveryCodesRegenerated).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    Ok(codes)
}

/// Turns two-factor authentication off: the secret and the recovery codes are deleted
/// (the caller has checked a step-up).
pub async fn disable(conn: &mut AsyncPgConnection, audit: &Audit<'_>, user: Uuid) -> Result<(), MfaError> {
    conn.transaction::<_, MfaError, _>(|c| {
        async move {
            let removed = diesel::delete(
                mfa_totp::table.filter(mfa_totp::user_id.eq(user)).filter(mfa_totp::confirmed_at.is_not_null()),
            )
            .execute(c)
            .await?;
            if removed == 0 {
                return Err(MfaError::NotEnabled);
            }
            diesel::delete(mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user))).execute(c).await?;
            audit.record(c, Event::account(Some(user), Action::MfaDisabled, Outcome::Succeeded, Detail::None)).await?;
            notify(c, audit, user, Notice::TwoFactorDisabled).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

fn new_recovery_codes() -> RecoveryCodes {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    RecoveryCodes(
        (0..RECOVERY_CODES)
            .map(|_| {
                let chars: String = (0..RECOVERY_CODE_CHARS)
                    .map(|_| RECOVERY_ALPHABET[rng.gen_range(0..RECOVERY_ALPHABET.len())] as char)
                    .collect();
                Zeroizing::new(format!("{}-{}", &chars[..5], &chars[5..]))
            })
            .collect(),
    )
}

type RecoveryRow = (Uuid, Vec<u8>, i32, OffsetDateTime);

fn recovery_rows(keyring: &Keyring, user: Uuid, codes: &RecoveryCodes, now: OffsetDateTime) -> Vec<RecoveryRow> {
    let version = keyring.current_version();
    codes
        .0
        .iter()
        .filter_map(|code| {
            let normalized = normalize_recovery_code(code)?;
            let hash = keyring.keyed_hash(version, Purpose::RecoveryCode, &owner(&user), normalized.as_bytes())?;
            Some((user, hash.to_vec(), version, now))
        })
        .collect()
}

async fn replace_recovery_codes(c: &mut AsyncPgConnection, user: Uuid, rows: &[RecoveryRow]) -> QueryResult<()> {
    diesel::delete(mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user))).execute(c).await?;
    let values: Vec<_> = rows
        .iter()
        .map(|(u, h, v, at)| {
            (
                mfa_recovery_codes::user_id.eq(u),
                mfa_recovery_codes::code_hash.eq(h),
                mfa_recovery_codes::key_version.eq(v),
                mfa_recovery_codes::created_at.eq(at),
            )
        })
        .collect();
    diesel::insert_into(mfa_recovery_codes::table).values(&values).execute(c).await?;
    Ok(())
}

/// Stored secrets per key version: TOTP secrets (re-sealable) and recovery-code hashes
/// (which move to the new key when their owner regenerates them).
pub(crate) async fn sealed_counts(conn: &mut AsyncPgConnection) -> QueryResult<Vec<VersionCount>> {
    let totp: Vec<(i32, i64)> = mfa_totp::table
        .group_by(mfa_totp::key_version)
        .select((mfa_totp::key_version, diesel::dsl::count_star()))
        .order(mfa_totp::key_version)
        .load(conn)
        .await?;
    let codes: Vec<(i32, i64)> = mfa_recovery_codes::table
        .group_by(mfa_recovery_codes::key_version)
        .select((mfa_recovery_codes::key_version, diesel::dsl::count_star()))
        .order(mfa_recovery_codes::key_version)
        .load(conn)
        .await?;
    Ok(totp
        .into_iter()
        .map(|(v, n)| VersionCount { kind: "TOTP secrets", key_version: v, count: n, rotatable: true })
        .chain(codes.into_iter().map(|(v, n)| VersionCount {
            kind: "recovery code hashes",
            key_version: v,
            count: n,
            rotatable: false,
        }))
        .collect())
}

/// Re-seals every TOTP secret not on the current key version, up to `batch` per
/// transaction; rows another transaction holds are skipped and come round in the next
/// pass. Secrets that do not open are left as they are and counted.
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
                    let rows: Vec<(Uuid, Vec<u8>, i32)> = mfa_totp::table
                        .filter(mfa_totp::key_version.ne(current))
                        .filter(mfa_totp::user_id.ne_all(&excluded))
                        .select((mfa_totp::user_id, mfa_totp::secret_sealed, mfa_totp::key_version))
                        .order(mfa_totp::user_id)
                        .limit(batch)
                        .for_update()
                        .skip_locked()
                        .load(c)
                        .await?;
                    let (mut resealed, mut failed) = (0u64, Vec::new());
                    for (user, bytes, version) in rows {
                        let sealed = Sealed { key_version: version, bytes };
                        match keyring.reseal(Purpose::TotpSecret, &owner(&user), &sealed) {
                            Ok(new) => {
                                diesel::update(mfa_totp::table.find(user))
                                    .set((
                                        mfa_totp::secret_sealed.eq(&new.bytes),
                                        mfa_totp::key_version.eq(new.key_version),
                                    ))
                                    .execute(c)
                                    .await?;
                                resealed += 1;
                            }
                            Err(e) => {
                                tracing::warn!(key_version = version, error = %e, "a TOTP secret could not be re-sealed");
                                failed.push(user);
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalized_or_refused() {
        assert_eq!(normalize_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "123\u{0}456"] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_recovery_code("ABCDE-12345").as_deref(), Some("abcde12345"));
        assert_eq!(normalize_recovery_code("abcdo 1234l").as_deref(), Some("abcd012341"), "look-alikes");
        for bad in ["", "abcde-1234", "abcde-123456", "abcde-1234u", "abcde_12345"] {
            assert_eq!(normalize_recovery_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn recovery_codes_are_ten_distinct_50_bit_codes() {
        let codes = new_recovery_codes();
        assert_eq!(codes.0.len(), RECOVERY_CODES);
        let mut seen = std::collections::HashSet::new();
        for code in &codes.0 {
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            assert!(normalize_recovery_code(code).is_some(), "{}", code.as_str());
            assert!(seen.insert(code.to_string()));
        }
        // 32 symbols, 10 characters: 50 bits.
        assert_eq!(RECOVERY_ALPHABET.len().pow(RECOVERY_CODE_CHARS as u32), 1 << 50);
        assert!(!format!("{codes:?}").contains(&codes.0[0][..5]));
    }

    #[test]
    fn enrolment_shows_a_standard_uri_a_grouped_key_and_an_svg_code() {
        let secret = [42u8; SECRET_BYTES];
        let e = enrolment(&secret, "ada@example.test", OffsetDateTime::UNIX_EPOCH);
        assert!(e.uri.starts_with("otpauth://totp/Fluxi:ada%40example.test?secret="), "{}", e.uri);
        assert!(e.uri.contains("issuer=Fluxi"), "{}", e.uri);
        assert_eq!(e.text_key.replace(' ', "").len(), 32, "160 bits in base 32");
        assert!(e.text_key.split(' ').all(|g| g.len() <= 4));
        assert!(e.qr_svg.starts_with("<svg role=\"img\""), "{}", &e.qr_svg[..40]);
        assert!(!e.qr_svg.contains("<?xml"));
        assert!(!format!("{e:?}").contains(&e.text_key[..4]));
    }
}
