//! Sign-in and the step-up password check: the whole flow of each, so that the
//! pages only parse their input and show the outcome.
//!
//! Sign-in and step-up share one password check (`PasswordGate::check`): both guess the
//! same password, so both are refused while the account's count is blocked, both count a
//! wrong password, and both verify on the hashing permits with no database connection
//! held (a burst of checks must not tie up the pool).

use time::Duration;
use uuid::Uuid;

use super::familiar::{self, DeviceId, Familiarity};
use super::{
    clear_failed_sign_ins, client_sign_in_key, conclude_failure, conclude_locked_failure, find_login_by_email,
    find_password_hash, normalize_email, refund_attempt, replace_password_hash_if_unchanged, reserve_attempt,
    reserve_attempts, reserve_locked, sign_in_key, HashError, InputError, PasswordHasher, SignInThrottle,
    StoredPasswordHash, User, EMAIL_MAX_CHARS, PASSWORD_MAX_CHARS,
};
use crate::audit::{Action, Actor, Audit, Detail, Event, Origin, Outcome, Target};
use crate::clock::Clock;
use crate::db::{Pool, PooledConn};
use crate::notifications::{notify, Notice};
use crate::pseudonym::PseudonymKeys;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncConnection;

/// Why an account operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Input broke one or more rules; each error names its field.
    #[error("input refused: {0:?}")]
    Invalid(Vec<InputError>),
    /// Unknown email or wrong password: deliberately one answer.
    #[error("incorrect email or password")]
    WrongCredentials,
    /// Step-up: the signed-in person gave no password, or not theirs.
    #[error("current password missing")]
    CurrentPasswordMissing,
    #[error("not the current password")]
    WrongCurrentPassword,
    /// The account's count is blocked for this much longer.
    #[error("too many wrong passwords for this account")]
    AccountThrottled(Duration),
    /// The client network's count is blocked for this much longer.
    #[error("too many failed sign-ins from this network")]
    NetworkThrottled(Duration),
    /// Too many accounts created lately, from this network or (`overall`) at all.
    #[error("too many sign-ups")]
    SignUpsThrottled { wait: Duration, overall: bool },
    /// No hashing permit became free within the wait.
    #[error("no password hashing permit became free in time")]
    Busy,
    /// No database connection within the pool's wait.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// A second factor was refused (wrong, reused or malformed code).
    #[error("second factor refused: {0}")]
    SecondFactor(crate::mfa::MfaError),
    /// The sign-in waiting for its second factor is gone: expired, or the account changed.
    #[error("the sign-in waiting for a second factor expired")]
    SecondFactorExpired,
    /// A step-up of an account with two-factor authentication came without a code.
    #[error("authentication code missing")]
    SecondFactorMissing,
    /// Too many wrong codes for one password sign-in: back to the password.
    #[error("too many wrong codes for this sign-in")]
    TooManyCodes,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(message) => Self::Hashing(message),
        }
    }
}

/// What a correct password leads to.
#[derive(Debug)]
pub enum SignInOutcome {
    SignedIn(User),
    /// The account has a second factor: not signed in until it is given.
    SecondFactorRequired(PendingSecondFactor),
}

/// A sign-in whose password was right, waiting for its second factor. Kept in the
/// session, where it grants nothing else.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSecondFactor {
    pub user_id: Uuid,
    pub started_at: time::OffsetDateTime,
    /// Wrong codes given for this sign-in so far.
    pub failures: u8,
    /// The browser and (pseudonymous, hex) network to remember once the code is right.
    #[serde(default)]
    pub device: Option<DeviceId>,
    #[serde(default)]
    pub network_pn: Option<String>,
    /// The account's `sessions_epoch` when the password was checked: signing out
    /// everywhere since then (also by a reset, or a password change that signs out the
    /// others) ends this sign-in too.
    #[serde(default)]
    pub sessions_epoch: i32,
}

impl PendingSecondFactor {
    /// How long the second step may take.
    pub const VALID_FOR: Duration = Duration::minutes(5);
    /// Wrong codes per password sign-in; then the password is asked again. (Each also
    /// counts in the account's failure series, which bounds guessing across sign-ins.)
    pub const MAX_FAILURES: u8 = 3;

    pub fn new(user_id: Uuid, now: time::OffsetDateTime) -> Self {
        Self { user_id, started_at: now, failures: 0, device: None, network_pn: None, sessions_epoch: 0 }
    }

    pub fn expired(&self, now: time::OffsetDateTime) -> bool {
        now >= self.started_at + Self::VALID_FOR || now < self.started_at - Duration::minutes(1)
    }
}

/// The second factor offered.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A code from the authenticator app.
    Code(&'a str),
    RecoveryCode(&'a str),
    /// A passkey's answer to the ceremony `challenge` (second step of a sign-in only).
    Passkey {
        rp: &'a crate::passkeys::RelyingParty,
        challenge: Uuid,
        credential: &'a webauthn_rs::prelude::PublicKeyCredential,
    },
}

impl SecondFactor<'_> {
    fn method(self) -> crate::audit::SecondFactorMethod {
        use crate::audit::SecondFactorMethod;
        match self {
            SecondFactor::Code(_) => SecondFactorMethod::AuthenticatorApp,
            SecondFactor::RecoveryCode(_) => SecondFactorMethod::RecoveryCode,
            SecondFactor::Passkey { .. } => SecondFactorMethod::Passkey,
        }
    }

    /// Malformed input is refused before it counts as an attempt.
    fn well_formed(self) -> Result<(), AccountError> {
        use crate::mfa::{normalize_code, normalize_recovery_code, MfaError};
        match self {
            SecondFactor::Code(code) if normalize_code(code).is_none() => {
                Err(AccountError::SecondFactor(MfaError::MalformedCode))
            }
            SecondFactor::RecoveryCode(code) if normalize_recovery_code(code).is_none() => {
                Err(AccountError::SecondFactor(MfaError::MalformedRecoveryCode))
            }
            _ => Ok(()),
        }
    }
}

/// Why a second factor was not accepted (the transaction that checked it commits).
enum CodeRefusal {
    /// The count was blocked: not checked.
    Throttled(Duration),
    /// Wrong or reused: counted.
    Wrong(crate::mfa::MfaError),
    /// Neither checked nor counted (no second factor to check, a malformed answer).
    Other(crate::mfa::MfaError),
}

/// Inside the caller's transaction: checks `proof` for `user`, recording refusals. The
/// success is the caller's to record, last (for a recovery code, with how many are left,
/// which this returns).
async fn check_proof(
    c: &mut diesel_async::AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &crate::secrets::Keyring,
    user: Uuid,
    proof: SecondFactor<'_>,
    now: time::OffsetDateTime,
) -> Result<Option<i64>, crate::mfa::MfaError> {
    use crate::mfa;
    match proof {
        SecondFactor::Code(code) => mfa::accept_code(c, audit, keyring, user, code).await.map(|()| None),
        SecondFactor::RecoveryCode(code) => mfa::take_recovery_code(c, audit, keyring, user, code).await.map(Some),
        SecondFactor::Passkey { rp, challenge, credential } => {
            crate::passkeys::check_second_factor(c, audit, rp, user, challenge, credential, now)
                .await
                .map(|()| None)
                .map_err(Into::into)
        }
    }
}

/// Everything a password check needs, borrowed from the server's state.
pub struct PasswordGate<'a> {
    pub pool: &'a Pool,
    pub hasher: &'a PasswordHasher,
    /// Failures per account (sign-in and step-up together).
    pub account_throttle: &'a SignInThrottle,
    /// Failed sign-ins per client network, across accounts (see `crate::client`), from
    /// browsers and networks unfamiliar to the account tried.
    pub network_throttle: &'a SignInThrottle,
    /// An account's failed sign-ins from everywhere unfamiliar to it, together
    /// ([`SignInThrottle::elsewhere_default`]).
    pub elsewhere_throttle: &'a SignInThrottle,
    pub pseudonyms: &'a PseudonymKeys,
    pub clock: &'a dyn Clock,
    /// Where the request came from, for the audit events.
    pub origin: &'a Origin,
    /// Throttled attempts are recorded once a minute per account or network, not per try.
    pub repeats: &'a crate::audit::RepeatFilter,
    /// Opens the second factors' secrets.
    pub keyring: &'a crate::secrets::Keyring,
}

/// What a step-up guards, for its audit events: the action it precedes, and the
/// workspace it is in (whose trail records it), if any.
#[derive(Debug, Clone, Copy)]
pub struct StepUpFor {
    pub workspace: Option<Uuid>,
    pub action: Action,
}

impl StepUpFor {
    pub fn workspace(workspace: Uuid, action: Action) -> Self {
        Self { workspace: Some(workspace), action }
    }

    pub fn account(action: Action) -> Self {
        Self { workspace: None, action }
    }

    fn event(&self, account: Option<Uuid>, action: Action, outcome: Outcome) -> Event {
        let detail = Detail::StepUp { for_action: self.action };
        match self.workspace {
            Some(w) => Event::workspace(w, action, Target::Workspace(w), outcome, detail),
            None => Event::account(account, action, outcome, detail),
        }
    }
}

/// Where a sign-in attempt comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Place<'a> {
    /// The client network (`crate::client`); `None` when the server could not tell.
    pub network: Option<&'a str>,
    /// The browser, by its device cookie (a new id for a browser without one).
    pub device: Option<&'a DeviceId>,
}

/// Which kind of count an attempt is checked on: what its refusal says, and what a
/// success does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountOf {
    /// The account's count for one place (or its step-ups): a success forgives it.
    Account,
    /// The account's count for everywhere unfamiliar: a success elsewhere does not reset it,
    /// or signing in once would buy a guesser a fresh day.
    Elsewhere,
    /// The network's, across accounts: a success does not forgive it either.
    Network,
}

/// Whose password is being checked.
#[derive(Clone, Copy)]
enum Claimant<'a> {
    /// Sign-in: whoever owns this normalized email, if anyone.
    Email(&'a str),
    /// Step-up: the signed-in person (id and normalized email).
    Account(Uuid, &'a str),
}

impl<'a> PasswordGate<'a> {
    fn audit(&self, actor: Actor<'a>) -> Audit<'a> {
        Audit {
            keys: Some(self.pseudonyms),
            clock: self.clock,
            origin: self.origin,
            actor,
            repeats: Some(self.repeats),
        }
    }

    async fn conn(&self) -> Result<PooledConn, AccountError> {
        self.pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))
    }

    /// Signs in with an email and password, from `place`.
    ///
    /// Refused before the password is looked at while a count that applies is blocked
    /// (even the right password then fails). Which counts apply depends on whether the
    /// account knows the browser or the network (see [`Self::check`]). Unknown emails cost
    /// the same work and get the same answer as wrong passwords, and are counted the same
    /// way. A success forgives the account's counts but not the network's: otherwise
    /// signing in to one's own account between guesses would reset it. A success
    /// remembers the browser and network; a hash made with older parameters is replaced.
    pub async fn sign_in(&self, email: &str, password: &str, place: Place<'_>) -> Result<SignInOutcome, AccountError> {
        let mut invalid = Vec::new();
        if email.trim().is_empty() {
            invalid.push(InputError::EmailMissing);
        } else if email.chars().count() > EMAIL_MAX_CHARS {
            invalid.push(InputError::EmailTooLong);
        }
        if password.is_empty() {
            invalid.push(InputError::PasswordMissing);
        } else if password.chars().count() > PASSWORD_MAX_CHARS {
            invalid.push(InputError::PasswordTooLong);
        }
        if !invalid.is_empty() {
            return Err(AccountError::Invalid(invalid));
        }
        let normalized = normalize_email(email);
        let Some((Some(user), stored, second_factor)) =
            self.check(Claimant::Email(&normalized), password, place, None).await?
        else {
            return Err(AccountError::WrongCredentials);
        };
        if PasswordHasher::needs_rehash(stored.as_str()) {
            self.rehash(user.id, stored.as_str(), password).await;
        }
        let network_pn = place.network.map(|n| familiar::network_pseudonym(self.pseudonyms.current(), n));
        if second_factor {
            let mut pending = PendingSecondFactor::new(user.id, self.clock.now());
            pending.sessions_epoch = user.sessions_epoch;
            pending.device = place.device.cloned();
            pending.network_pn = network_pn.map(hex::encode);
            return Ok(SignInOutcome::SecondFactorRequired(pending));
        }
        let mut conn = self.conn().await?;
        let audit = self.audit(Actor::User { id: user.id, email_normalized: &user.email_normalized });
        let (now, device, user_id) = (self.clock.now(), place.device, user.id);
        // Only a confirmed address is told: anyone can sign up with someone else's address
        // and would otherwise have us mail it at will.
        let verified = user.email_verified_at.is_some();
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            async move {
                if familiar::remember(c, user_id, device, network_pn.as_deref(), now).await? && verified {
                    notify(c, &audit, user_id, Notice::NewPlace).await?;
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await?;
        Ok(SignInOutcome::SignedIn(user))
    }

    /// The second step of a sign-in: a code from the app, or a recovery code. Refused
    /// while the account's failure count is blocked; a wrong or reused code counts in that
    /// series (so guessing codes across many password sign-ins is bounded too) and in
    /// `pending`, which allows [`PendingSecondFactor::MAX_FAILURES`]. Only a success
    /// forgives the account's count.
    pub async fn second_factor(
        &self,
        pending: &mut PendingSecondFactor,
        proof: SecondFactor<'_>,
    ) -> Result<User, AccountError> {
        use crate::mfa::MfaError;
        let now = self.clock.now();
        if pending.expired(now) || pending.failures >= PendingSecondFactor::MAX_FAILURES {
            return Err(AccountError::SecondFactorExpired);
        }
        proof.well_formed()?;
        let mut conn = self.conn().await?;
        let user = super::find_user_by_id(&mut conn, pending.user_id)
            .await?
            .filter(|u| u.sessions_epoch == pending.sessions_epoch)
            .ok_or(AccountError::SecondFactorExpired)?;
        // Wrong codes count on a browser that has signed in before on that browser's own
        // count, and elsewhere on the account's count for codes from everywhere else, which
        // slows down rather than shuts out: someone who has the password can neither block
        // the owner's second step on a familiar browser nor, through this count, the owner's
        // step-ups (which count on the account's own).
        let keys = self.pseudonyms.current();
        let (code_throttle, account_key, forgives) = match (
            &pending.device,
            familiar::familiarity(&mut conn, Some(user.id), pending.device.as_ref(), None).await?,
        ) {
            (Some(device), Familiarity::Device) => (
                self.account_throttle,
                keys.pseudonym("codes-device", &format!("{}\n{}", user.email_normalized, device.key_part())),
                true,
            ),
            _ => (self.elsewhere_throttle, keys.pseudonym("codes-elsewhere", &user.email_normalized), false),
        };
        let audit = self.audit(Actor::User { id: user.id, email_normalized: &user.email_normalized });
        let method = proof.method();
        let (audit, account_key, user_ref) = (&audit, &account_key, &user);
        let (pending_device, pending_network) = (pending.device.as_ref(), pending.network_pn.as_deref());
        let keyring = self.keyring;
        // One transaction: the count is locked while the code is checked (see
        // `reserve_locked`); a success remembers the place and records the sign-in with
        // what it used.
        let checked = conn
            .transaction::<_, AccountError, _>(|c| {
                async move {
                    let reserved = match reserve_locked(c, code_throttle, account_key, now).await? {
                        Ok(reserved) => reserved,
                        Err(wait) => return Ok(Err(CodeRefusal::Throttled(wait))),
                    };
                    let recovery_codes_left = match check_proof(c, audit, keyring, user_ref.id, proof, now).await {
                        Ok(left) => left,
                        Err(
                            e @ (MfaError::WrongCode
                            | MfaError::CodeAlreadyUsed
                            | MfaError::WrongRecoveryCode
                            | MfaError::PasskeyRefused),
                        ) => {
                            conclude_locked_failure(c, code_throttle, account_key, reserved, now).await?;
                            return Ok(Err(CodeRefusal::Wrong(e)));
                        }
                        Err(MfaError::Database(e)) => return Err(AccountError::Database(e)),
                        Err(e) => return Ok(Err(CodeRefusal::Other(e))),
                    };
                    // Like a password's, a success forgives this browser's count, but not
                    // the count for everywhere unfamiliar: the owner signing in once must not
                    // buy a guesser who has the password a fresh series.
                    if forgives {
                        clear_failed_sign_ins(c, account_key).await?;
                    }
                    let network_pn = pending_network.and_then(|n| hex::decode(n).ok());
                    let new_place =
                        familiar::remember(c, user_ref.id, pending_device, network_pn.as_deref(), now).await?;
                    if new_place && user_ref.email_verified_at.is_some() {
                        notify(c, audit, user_ref.id, Notice::NewPlace).await?;
                    }
                    if let Some(left) = recovery_codes_left {
                        crate::mfa::record_recovery_code_used(c, audit, user_ref.id, left).await?;
                    }
                    let detail = Detail::SecondFactor { method };
                    let event = Event::account(Some(user_ref.id), Action::SignInSucceeded, Outcome::Succeeded, detail);
                    audit.record(c, event).await?;
                    Ok(Ok(()))
                }
                .scope_boxed()
            })
            .await?;
        match checked {
            Ok(()) => Ok(user),
            Err(CodeRefusal::Throttled(wait)) => {
                Err(self.refused_code(&mut conn, audit, user.id, account_key, wait).await?)
            }
            Err(CodeRefusal::Wrong(e)) => {
                pending.failures += 1;
                if pending.failures >= PendingSecondFactor::MAX_FAILURES {
                    return Err(AccountError::TooManyCodes);
                }
                Err(AccountError::SecondFactor(e))
            }
            Err(CodeRefusal::Other(MfaError::NotEnabled | MfaError::NoPendingEnrolment)) => {
                Err(AccountError::SecondFactorExpired)
            }
            Err(CodeRefusal::Other(e)) => Err(AccountError::SecondFactor(e)),
        }
    }

    /// Step-up re-authentication: `password` must be the signed-in `user`'s current one,
    /// and with two-factor authentication on, `second` a code (or recovery code) too. A
    /// wrong code counts like a wrong password. Whatever the caller checked before must be
    /// checked again after it (it takes a while; see `crate::workspaces::transfer_ownership`).
    pub async fn check_current_password(
        &self,
        user: &User,
        password: &str,
        second: Option<SecondFactor<'_>>,
        purpose: StepUpFor,
    ) -> Result<(), AccountError> {
        use crate::mfa::{self, MfaError};
        if password.is_empty() || password.chars().count() > PASSWORD_MAX_CHARS {
            return Err(AccountError::CurrentPasswordMissing);
        }
        let found = self
            .check(Claimant::Account(user.id, &user.email_normalized), password, Place::default(), Some(purpose))
            .await?;
        let Some((_, _, second_factor_on)) = found else { return Err(AccountError::WrongCurrentPassword) };
        let mut conn = self.conn().await?;
        let audit = self.audit(Actor::User { id: user.id, email_normalized: &user.email_normalized });
        let account_key = sign_in_key(self.pseudonyms.current(), &user.email_normalized);
        if second_factor_on {
            let Some(second) = second else { return Err(AccountError::SecondFactorMissing) };
            second.well_formed()?;
            if let Err(wait) = reserve_attempt(&mut conn, self.account_throttle, &account_key, self.clock.now()).await?
            {
                return Err(self.refused_code(&mut conn, &audit, user.id, &account_key, wait).await?);
            }
            let checked = match second {
                SecondFactor::Code(code) => mfa::verify_code(&mut conn, &audit, self.keyring, user.id, code).await,
                SecondFactor::RecoveryCode(code) => {
                    mfa::use_recovery_code(&mut conn, &audit, self.keyring, user.id, code).await.map(|_| ())
                }
                // A step-up takes a code: the forms that ask for one have no passkey ceremony.
                SecondFactor::Passkey { .. } => Err(MfaError::PasskeyRefused),
            };
            match checked {
                Ok(()) => {}
                Err(e @ (MfaError::WrongCode | MfaError::CodeAlreadyUsed | MfaError::WrongRecoveryCode)) => {
                    conclude_failure(&mut conn, self.account_throttle, &account_key, self.clock.now()).await?;
                    audit
                        .record(&mut conn, purpose.event(Some(user.id), Action::StepUpFailed, Outcome::Failed))
                        .await?;
                    return Err(AccountError::SecondFactor(e));
                }
                Err(MfaError::Database(e)) => return Err(AccountError::Database(e)),
                Err(e) => return Err(AccountError::SecondFactor(e)),
            }
        }
        let (audit, account_key) = (&audit, &account_key);
        conn.transaction::<_, AccountError, _>(|c| {
            async move {
                clear_failed_sign_ins(c, account_key).await?;
                audit.record(c, purpose.event(Some(user.id), Action::StepUpSucceeded, Outcome::Succeeded)).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await
    }

    /// The counts an attempt reserves, with what each refusal means. A step-up counts on
    /// the account's own count (only its sessions can try). A sign-in from a browser the
    /// account knows counts on that browser's count alone; from a network it knows, on
    /// that network's count for the account and the network's count; from anywhere else,
    /// also on the account's count for everywhere unfamiliar (which slows down rather than
    /// shuts out). So failures from elsewhere never block the owner's familiar browser or
    /// network, and failures behind one NAT never block the browsers that have signed in
    /// there before.
    async fn counts_for(
        &self,
        conn: &mut PooledConn,
        claimant: Claimant<'_>,
        user: Option<Uuid>,
        place: Place<'_>,
    ) -> Result<Vec<(&'a SignInThrottle, Vec<u8>, CountOf)>, AccountError> {
        let keys = self.pseudonyms.current();
        let normalized = match claimant {
            Claimant::Account(_, normalized) => {
                return Ok(vec![(self.account_throttle, sign_in_key(keys, normalized), CountOf::Account)])
            }
            Claimant::Email(normalized) => normalized,
        };
        let network_pn = place.network.map(|n| familiar::network_pseudonym(keys, n));
        let for_account_on =
            |network: &str| keys.pseudonym("sign-in-account-network", &format!("{normalized}\n{network}"));
        Ok(match familiar::familiarity(conn, user, place.device, network_pn.as_deref()).await? {
            Familiarity::Device => {
                let device = place.device.map(DeviceId::key_part).unwrap_or_default();
                let key = keys.pseudonym("sign-in-device", &format!("{normalized}\n{device}"));
                vec![(self.account_throttle, key, CountOf::Account)]
            }
            // The network's count still applies: were a familiar network exempt, an account
            // answering 401 on a network that is blocked for everyone else would give away
            // that it exists.
            Familiarity::Network => {
                let network = place.network.unwrap_or_default();
                vec![
                    (self.account_throttle, for_account_on(network), CountOf::Account),
                    (self.network_throttle, client_sign_in_key(keys, network), CountOf::Network),
                ]
            }
            Familiarity::Unfamiliar => {
                let mut counts = vec![(
                    self.elsewhere_throttle,
                    keys.pseudonym("sign-in-elsewhere", normalized),
                    CountOf::Elsewhere,
                )];
                if let Some(network) = place.network {
                    counts.push((self.account_throttle, for_account_on(network), CountOf::Account));
                    counts.push((self.network_throttle, client_sign_in_key(keys, network), CountOf::Network));
                }
                counts
            }
        })
    }

    /// The shared check. Returns the account found by email (sign-in) and its hash, or
    /// `None` for a wrong password (or no such account). The attempt is counted before the
    /// password is verified ([`Self::counts_for`]), so a burst of parallel tries gets no
    /// more verifications than the limits allow.
    async fn check(
        &self,
        claimant: Claimant<'_>,
        password: &str,
        place: Place<'_>,
        step_up: Option<StepUpFor>,
    ) -> Result<Option<(Option<User>, StoredPasswordHash, bool)>, AccountError> {
        let (counts, found) = {
            let mut conn = self.conn().await?;
            let now = self.clock.now();
            let found = match claimant {
                Claimant::Email(normalized) => {
                    find_login_by_email(&mut conn, normalized).await?.map(|(u, h, mfa)| (Some(u), h, mfa))
                }
                Claimant::Account(id, _) => match find_password_hash(&mut conn, id).await? {
                    Some(h) => Some((None, h, crate::mfa::is_enabled(&mut conn, id).await?)),
                    None => None,
                },
            };
            let account = match claimant {
                Claimant::Email(_) => found.as_ref().and_then(|(u, _, _)| u.as_ref().map(|u| u.id)),
                Claimant::Account(id, _) => Some(id),
            };
            let counts = self.counts_for(&mut conn, claimant, account, place).await?;
            let keys: Vec<(&SignInThrottle, &[u8])> = counts.iter().map(|(t, k, _)| (*t, k.as_slice())).collect();
            if let Err((which, wait)) = reserve_attempts(&mut conn, &keys, now).await? {
                let (count, key) = (counts[which].2, &counts[which].1);
                let (action, error) = match count {
                    CountOf::Account | CountOf::Elsewhere => {
                        (Action::SignInThrottledAccount, AccountError::AccountThrottled(wait))
                    }
                    CountOf::Network => (Action::SignInThrottledNetwork, AccountError::NetworkThrottled(wait)),
                };
                let detail = Detail::Throttled { retry_after_seconds: wait.whole_seconds().max(0) as u64 };
                let event = match step_up {
                    Some(p) => p.event(account, Action::StepUpFailed, Outcome::Denied),
                    None => Event::account(account, action, Outcome::Denied, detail),
                };
                let repeat_key = [action.name().as_bytes(), key].concat();
                self.audit(self.claimant_actor(claimant)).record_unless_repeated(&mut conn, &repeat_key, event).await?;
                return Err(error);
            }
            (counts, found)
        };
        // An unknown account is verified against the dummy hash: same work, same answer.
        let verified = self.hasher.verify(password, found.as_ref().map(|(_, hash, _)| hash.as_str())).await;
        let mut conn = self.conn().await?;
        let verified = match verified {
            Ok(verified) => verified,
            // Not checked (no hashing permit in time): the attempt is given back.
            Err(e) => {
                let now = self.clock.now();
                for (_, key, _) in &counts {
                    refund_attempt(&mut conn, key, now).await?;
                }
                return Err(e.into());
            }
        };
        let now = self.clock.now();
        let account = match claimant {
            Claimant::Email(_) => found.as_ref().and_then(|(u, _, _)| u.as_ref().map(|u| u.id)),
            Claimant::Account(id, _) => Some(id),
        };
        let audit = self.audit(self.claimant_actor(claimant));
        let counts = &counts;
        match found.filter(|_| verified) {
            Some(found) => {
                let second_factor = found.2;
                conn.transaction::<_, AccountError, _>(|c| {
                    async move {
                        // A right password gives its reservations back. It forgives the
                        // account's count for this place — unless a second factor is still
                        // to come (the password alone proves too little) — but never the
                        // count for everywhere unfamiliar, nor the network's.
                        for (_, key, count) in counts {
                            if second_factor || *count != CountOf::Account {
                                refund_attempt(c, key, now).await?;
                            } else {
                                clear_failed_sign_ins(c, key).await?;
                            }
                        }
                        if step_up.is_none() && !second_factor {
                            let event =
                                Event::account(account, Action::SignInSucceeded, Outcome::Succeeded, Detail::None);
                            audit.record(c, event).await?;
                        }
                        Ok(())
                    }
                    .scope_boxed()
                })
                .await?;
                Ok(Some(found))
            }
            None => {
                // Counted by the reservation; reaching a limit now blocks it.
                for (throttle, key, _) in counts {
                    conclude_failure(&mut conn, throttle, key, now).await?;
                }
                let event = match step_up {
                    Some(p) => p.event(account, Action::StepUpFailed, Outcome::Failed),
                    None => Event::account(
                        account,
                        Action::SignInFailed,
                        Outcome::Failed,
                        Detail::SignInFailure { known_account: account.is_some() },
                    ),
                };
                audit.record(&mut conn, event).await?;
                Ok(None)
            }
        }
    }

    /// A code refused unchecked because the account's count is blocked: recorded once a
    /// minute per account.
    async fn refused_code(
        &self,
        conn: &mut PooledConn,
        audit: &Audit<'_>,
        user: Uuid,
        account_key: &[u8],
        wait: Duration,
    ) -> Result<AccountError, AccountError> {
        let detail = Detail::Throttled { retry_after_seconds: wait.whole_seconds().max(0) as u64 };
        let event = Event::account(Some(user), Action::SignInThrottledAccount, Outcome::Denied, detail);
        let key = [Action::SignInThrottledAccount.name().as_bytes(), account_key].concat();
        audit.record_unless_repeated(conn, &key, event).await?;
        Ok(AccountError::AccountThrottled(wait))
    }

    /// Who is acting: the signed-in person for a step-up; for a sign-in, nobody yet
    /// (the email tried is kept, as a pseudonym).
    fn claimant_actor<'c>(&self, claimant: Claimant<'c>) -> Actor<'c> {
        match claimant {
            Claimant::Email(normalized) => Actor::Anonymous { email_normalized: Some(normalized) },
            Claimant::Account(id, normalized) => Actor::User { id, email_normalized: normalized },
        }
    }

    /// Replaces an outdated hash; a failure only delays the upgrade to the next sign-in.
    async fn rehash(&self, id: Uuid, old: &str, password: &str) {
        let Ok(new_hash) = self.hasher.hash(password).await else { return };
        let updated = match self.conn().await {
            Ok(mut conn) => {
                replace_password_hash_if_unchanged(&mut conn, id, old, &new_hash).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = updated {
            tracing::warn!(error = %e, "could not upgrade a password hash");
        }
    }
}
