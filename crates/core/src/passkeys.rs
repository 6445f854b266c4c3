//! Passkeys (WebAuthn): registering them (after a step-up, checked by the caller),
//! listing and removing them, and signing in with one — a passkey proves possession of a
//! device key and, with user verification (required here), the person's PIN or
//! biometric: both factors at once.
//!
//! The checks are webauthn-rs's: challenge, origin, relying-party id, signature, user
//! verification, signature counter and backup flags; we persist what it updates. A
//! ceremony's state stays server-side in `passkey_challenges` and is taken with one
//! `DELETE … RETURNING`, so a challenge answers at most once; the browser holds only the
//! row's id (in a signed cookie, see the app), which binds the ceremony to it.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::accounts::familiar;
use crate::accounts::{find_user_by_id, Place, User};
use crate::audit::{Action, Actor, Audit, Detail, Event, Outcome, SecondFactorMethod};
use crate::notifications::{notify, Notice};
use crate::rate_limit::RateLimit;
use crate::schema::{passkey_challenges, passkeys};

/// How long a ceremony may take (the browser's prompt included).
pub const CHALLENGE_VALID_FOR: Duration = Duration::minutes(5);
/// Passkeys per account: enough for every device a person has, and a bound on the list.
pub const MAX_PASSKEYS: i64 = 20;
pub const NAME_MAX_CHARS: usize = 60;
/// Passkey sign-ins started per client network and hour (each stores a challenge), and
/// from clients whose network is unknown, together.
pub const SIGN_IN_STARTS_PER_NETWORK: RateLimit = RateLimit::per_hour(60);
pub const SIGN_IN_STARTS_UNKNOWN_NETWORK: RateLimit = RateLimit::per_hour(1_000);

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("Give the passkey a name, so that you can tell it from others.")]
    NameMissing,
    #[error("Keep the name to 60 characters.")]
    NameTooLong,
    #[error("The name contains a character that is not allowed (such as an invisible or direction-changing one).")]
    NameInvalid,
    #[error("You have 20 passkeys; remove one before adding another.")]
    TooMany,
    #[error("That passkey is already registered.")]
    AlreadyRegistered,
    /// The ceremony is not one we started for this browser (and account), or it expired
    /// or was answered already.
    #[error("The passkey request expired or was already used. Try again.")]
    NoChallenge,
    /// The authenticator's answer did not verify (wrong origin, signature, user
    /// verification, unknown or another account's credential, a cloned key's counter).
    #[error("The passkey could not be verified.")]
    Refused,
    #[error("No such passkey.")]
    NotFound,
    /// The server's base URL cannot be a relying party (an IP address, no host).
    #[error("Passkeys are not available on this server.")]
    Unavailable,
    #[error("passkey state could not be stored: {0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// A registered passkey, as the security page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    SignIn,
    SecondFactor,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::SignIn => "sign_in",
            Purpose::SecondFactor => "second_factor",
        }
    }
}

/// The relying party: its id is the host of `FLUXI_BASE_URL`, its origin that URL.
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

impl RelyingParty {
    pub fn new(base_url: &str) -> Result<Self, PasskeyError> {
        let origin = Url::parse(base_url).map_err(|_| PasskeyError::Unavailable)?;
        // WebAuthn binds credentials to a domain name; an address cannot be one.
        let host = origin.domain().ok_or(PasskeyError::Unavailable)?;
        let webauthn = WebauthnBuilder::new(host, &origin)
            .and_then(|b| b.rp_name("Fluxi").build())
            .map_err(|_| PasskeyError::Unavailable)?;
        Ok(Self { webauthn })
    }
}

/// Checks a passkey's name: trimmed, 1 to 60 characters, none of the characters display
/// names refuse (controls, invisible and direction-changing ones), in NFC.
pub fn validate_name(name: &str) -> Result<String, PasskeyError> {
    let name = name.trim();
    match name.chars().count() {
        0 => Err(PasskeyError::NameMissing),
        n if n > NAME_MAX_CHARS => Err(PasskeyError::NameTooLong),
        _ if crate::text::disallowed_char(name, false).is_some() => Err(PasskeyError::NameInvalid),
        _ => Ok(crate::text::nfc(name)),
    }
}

async fn store_challenge(
    conn: &mut AsyncPgConnection,
    purpose: Purpose,
    user: Option<Uuid>,
    state: &impl Serialize,
    now: OffsetDateTime,
) -> Result<Uuid, PasskeyError> {
    let id = Uuid::new_v4();
    let state = serde_json::to_value(state).map_err(|e| PasskeyError::Config(e.to_string()))?;
    // One open ceremony per account and purpose: starting again replaces it, so repeated
    // starts cannot pile up rows.
    if let Some(user) = user {
        diesel::delete(
            passkey_challenges::table
                .filter(passkey_challenges::user_id.eq(user))
                .filter(passkey_challenges::purpose.eq(purpose.as_str())),
        )
        .execute(conn)
        .await?;
    }
    diesel::insert_into(passkey_challenges::table)
        .values((
            passkey_challenges::id.eq(id),
            passkey_challenges::purpose.eq(purpose.as_str()),
            passkey_challenges::user_id.eq(user),
            passkey_challenges::state.eq(state),
            passkey_challenges::expires_at.eq(now + CHALLENGE_VALID_FOR),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// Takes (deletes) the challenge `id` of `purpose` and `user`, if it is still good: once.
async fn take_challenge<T: DeserializeOwned>(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    purpose: Purpose,
    user: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<T, PasskeyError> {
    let taken: Option<(Option<Uuid>, OffsetDateTime, serde_json::Value)> = diesel::delete(
        passkey_challenges::table
            .filter(passkey_challenges::id.eq(id))
            .filter(passkey_challenges::purpose.eq(purpose.as_str())),
    )
    .returning((passkey_challenges::user_id, passkey_challenges::expires_at, passkey_challenges::state))
    .get_result(conn)
    .await
    .optional()?;
    match taken {
        Some((owner, expires_at, state)) if owner == user && expires_at > now => {
            serde_json::from_value(state).map_err(|_| PasskeyError::NoChallenge)
        }
        _ => Err(PasskeyError::NoChallenge),
    }
}

/// Deletes ceremonies that expired (the clean-up job).
pub async fn delete_expired_challenges(conn: &mut AsyncPgConnection, now: OffsetDateTime) -> QueryResult<usize> {
    diesel::delete(passkey_challenges::table.filter(passkey_challenges::expires_at.le(now))).execute(conn).await
}

async fn stored_passkeys(conn: &mut AsyncPgConnection, user: Uuid) -> Result<Vec<(Uuid, Passkey)>, PasskeyError> {
    let rows: Vec<(Uuid, serde_json::Value)> =
        passkeys::table.filter(passkeys::user_id.eq(user)).select((passkeys::id, passkeys::passkey)).load(conn).await?;
    Ok(rows.into_iter().filter_map(|(id, json)| serde_json::from_value(json).ok().map(|pk| (id, pk))).collect())
}

/// Starts registering a passkey for `user`: the options for the browser, and the id of the
/// stored ceremony. The passkey is asked to be discoverable (stored on the authenticator
/// with the account's handle), so that it can sign in without an email.
pub async fn start_registration(
    conn: &mut AsyncPgConnection,
    rp: &RelyingParty,
    user: &User,
    now: OffsetDateTime,
) -> Result<(Uuid, CreationChallengeResponse), PasskeyError> {
    let existing = stored_passkeys(conn, user.id).await?;
    if existing.len() as i64 >= MAX_PASSKEYS {
        return Err(PasskeyError::TooMany);
    }
    let exclude = existing.iter().map(|(_, pk)| pk.cred_id().clone()).collect();
    let (mut options, state) = rp
        .webauthn
        .start_passkey_registration(user.id, &user.email, &user.display_name, Some(exclude))
        .map_err(|_| PasskeyError::Refused)?;
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.require_resident_key = true;
        selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
    }
    let id = store_challenge(conn, Purpose::Register, Some(user.id), &state, now).await?;
    Ok((id, options))
}

/// Finishes a registration of `user` started with [`start_registration`]: verified by
/// webauthn-rs, stored under `name`, with the event and the notice, in one transaction.
pub async fn finish_registration(
    conn: &mut AsyncPgConnection,
    rp: &RelyingParty,
    audit: &Audit<'_>,
    user: Uuid,
    challenge: Uuid,
    name: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<PasskeyInfo, PasskeyError> {
    let name = validate_name(name)?;
    let now = audit.clock.now();
    // Taken (and gone) before anything else can fail: an answer is checked once.
    let state: PasskeyRegistration = take_challenge(conn, challenge, Purpose::Register, Some(user), now).await?;
    let passkey = rp.webauthn.finish_passkey_registration(credential, &state).map_err(|_| PasskeyError::Refused)?;
    let (name, passkey) = (&name, &passkey);
    conn.transaction::<_, PasskeyError, _>(|c| {
        async move {
            crate::accounts::lock_account(c, user).await?;
            let count: i64 = passkeys::table.filter(passkeys::user_id.eq(user)).count().get_result(c).await?;
            if count >= MAX_PASSKEYS {
                return Err(PasskeyError::TooMany);
            }
            let id = Uuid::new_v4();
            let json = serde_json::to_value(passkey).map_err(|e| PasskeyError::Config(e.to_string()))?;
            let inserted = diesel::insert_into(passkeys::table)
                .values((
                    passkeys::id.eq(id),
                    passkeys::user_id.eq(user),
                    passkeys::credential_id.eq(passkey.cred_id().as_ref() as &[u8]),
                    passkeys::name.eq(name),
                    passkeys::passkey.eq(json),
                    passkeys::created_at.eq(now),
                ))
                .on_conflict(passkeys::credential_id)
                .do_nothing()
                .execute(c)
                .await?;
            if inserted == 0 {
                return Err(PasskeyError::AlreadyRegistered);
            }
            let event = Event::account(Some(user), Action::PasskeyAdded, Outcome::Succeeded, Detail::None);
            audit.record(c, event).await?;
            notify(c, audit, user, Notice::PasskeyAdded).await?;
            Ok(PasskeyInfo { id, name: name.clone(), created_at: now, last_used_at: None })
        }
        .scope_boxed()
    })
    .await
}

/// The passkeys of `user`, oldest first.
pub async fn list(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<Vec<PasskeyInfo>> {
    let rows: Vec<(Uuid, String, OffsetDateTime, Option<OffsetDateTime>)> = passkeys::table
        .filter(passkeys::user_id.eq(user))
        .order((passkeys::created_at.asc(), passkeys::id.asc()))
        .select((passkeys::id, passkeys::name, passkeys::created_at, passkeys::last_used_at))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at, last_used_at)| PasskeyInfo { id, name, created_at, last_used_at })
        .collect())
}

/// Removes the passkey `id` of `user` (the caller checked a step-up), with the event and
/// the notice. Another account's passkey is "not found".
pub async fn remove(conn: &mut AsyncPgConnection, audit: &Audit<'_>, user: Uuid, id: Uuid) -> Result<(), PasskeyError> {
    conn.transaction::<_, PasskeyError, _>(|c| {
        async move {
            let removed =
                diesel::delete(passkeys::table.filter(passkeys::id.eq(id)).filter(passkeys::user_id.eq(user)))
                    .execute(c)
                    .await?;
            if removed == 0 {
                return Err(PasskeyError::NotFound);
            }
            let event = Event::account(Some(user), Action::PasskeyRemoved, Outcome::Succeeded, Detail::None);
            audit.record(c, event).await?;
            notify(c, audit, user, Notice::PasskeyRemoved).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Removes `user`'s passkeys added after `since` (a reset or an email change's undo: they
/// may be whoever held the account's), with one `passkey.removed` event when there were
/// any. Returns how many.
pub async fn remove_added_since(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    since: OffsetDateTime,
) -> QueryResult<usize> {
    let removed =
        diesel::delete(passkeys::table.filter(passkeys::user_id.eq(user)).filter(passkeys::created_at.gt(since)))
            .execute(conn)
            .await?;
    if removed > 0 {
        let event = Event::account(Some(user), Action::PasskeyRemoved, Outcome::Succeeded, Detail::None);
        audit.record(conn, event).await?;
    }
    Ok(removed)
}

/// Starts a passkey sign-in: options for any passkey of this site the browser holds
/// (discoverable: no email asked), and the stored ceremony's id.
pub async fn start_sign_in(
    conn: &mut AsyncPgConnection,
    rp: &RelyingParty,
    now: OffsetDateTime,
) -> Result<(Uuid, RequestChallengeResponse), PasskeyError> {
    let (options, state) = rp.webauthn.start_discoverable_authentication().map_err(|_| PasskeyError::Refused)?;
    let id = store_challenge(conn, Purpose::SignIn, None, &state, now).await?;
    Ok((id, options))
}

/// Finishes a passkey sign-in: the ceremony taken, the assertion checked against the
/// passkey it names (of the account whose handle it carries), the passkey's counter and
/// flags saved, `sign_in.succeeded` recorded. A refusal is recorded as a failed sign-in
/// of that account when the passkey is known, and changes nothing else.
pub async fn finish_sign_in(
    conn: &mut AsyncPgConnection,
    rp: &RelyingParty,
    audit: &Audit<'_>,
    challenge: Uuid,
    credential: &PublicKeyCredential,
    place: Place<'_>,
) -> Result<User, PasskeyError> {
    let now = audit.clock.now();
    let state: DiscoverableAuthentication = take_challenge(conn, challenge, Purpose::SignIn, None, now).await?;
    let Ok((user_id, credential_id)) = rp.webauthn.identify_discoverable_authentication(credential) else {
        return Err(refused(conn, audit, None).await?);
    };
    let credential_id = credential_id.to_vec();
    let Some(user) = find_user_by_id(conn, user_id).await? else {
        return Err(refused(conn, audit, None).await?);
    };
    let account_audit = audit.as_actor(Actor::User { id: user.id, email_normalized: &user.email_normalized });
    let account_audit = &account_audit;
    let network_pn = place.network.and_then(|n| audit.keys.map(|k| familiar::network_pseudonym(k.current(), n)));
    let (network_pn, verified, credential_id) = (&network_pn, user.email_verified_at.is_some(), &credential_id);
    // The passkey row is locked while the answer is checked against it and its counter
    // saved: two sign-ins with one counter value (a cloned key) cannot both pass.
    let outcome = conn
        .transaction::<_, PasskeyError, _>(|c| {
            async move {
                let Some((row, mut passkey)) = locked_passkey(c, user_id, credential_id).await? else {
                    return Ok(Err(Refusal::UnknownPasskey));
                };
                let result = match rp.webauthn.finish_discoverable_authentication_v2(credential, state, &passkey) {
                    Ok(result) => result,
                    Err(WebauthnError::CredentialPossibleCompromise) => return Ok(Err(Refusal::PossiblyCopied)),
                    Err(_) => return Ok(Err(Refusal::Refused)),
                };
                save_use(c, row, &mut passkey, &result, now).await?;
                // As after a password: a browser and network both new to the account are news.
                if familiar::remember(c, user_id, place.device, network_pn.as_deref(), now).await? && verified {
                    notify(c, account_audit, user_id, Notice::NewPlace).await?;
                }
                let detail = Detail::SecondFactor { method: SecondFactorMethod::Passkey };
                let event = Event::account(Some(user_id), Action::SignInSucceeded, Outcome::Succeeded, detail);
                account_audit.record(c, event).await?;
                Ok(Ok(()))
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        Ok(()) => Ok(user),
        Err(Refusal::UnknownPasskey) => Err(refused(conn, audit, None).await?),
        Err(Refusal::Refused) => Err(refused(conn, audit, Some(&user)).await?),
        Err(Refusal::PossiblyCopied) => {
            Err(refused_answer(conn, account_audit, user.id, Action::PasskeyPossiblyCopied).await?)
        }
    }
}

/// Why a known account's passkey answer was refused.
enum Refusal {
    /// No passkey of the account has the credential id the answer names.
    UnknownPasskey,
    /// The answer did not verify.
    Refused,
    /// It verified, but the passkey's signature counter did not move past the last one
    /// seen: two authenticators hold this key.
    PossiblyCopied,
}

/// Records a refused answer of `user`'s passkey (`action`: refused, or possibly copied —
/// its counter went backwards — when the owner is told too), in the caller's transaction
/// if any.
async fn refused_answer(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    action: Action,
) -> Result<PasskeyError, PasskeyError> {
    let detail = Detail::SecondFactor { method: SecondFactorMethod::Passkey };
    audit.record(conn, Event::account(Some(user), action, Outcome::Denied, detail)).await?;
    if action == Action::PasskeyPossiblyCopied {
        notify(conn, audit, user, Notice::PasskeyPossiblyCopied).await?;
    }
    Ok(PasskeyError::Refused)
}

/// `user`'s passkey with this credential id, its row locked until the transaction ends.
async fn locked_passkey(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    credential_id: &[u8],
) -> Result<Option<(Uuid, Passkey)>, PasskeyError> {
    let found: Option<(Uuid, serde_json::Value)> = passkeys::table
        .filter(passkeys::credential_id.eq(credential_id))
        .filter(passkeys::user_id.eq(user))
        .select((passkeys::id, passkeys::passkey))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(found.and_then(|(row, json)| serde_json::from_value::<Passkey>(json).ok().map(|pk| (row, pk))))
}

/// Saves what an accepted answer changed of the passkey (counter, backup flags, as
/// webauthn-rs's `update_credential` says) and when it was used.
async fn save_use(
    conn: &mut AsyncPgConnection,
    row: Uuid,
    passkey: &mut Passkey,
    result: &webauthn_rs::prelude::AuthenticationResult,
    now: OffsetDateTime,
) -> Result<(), PasskeyError> {
    if passkey.update_credential(result) == Some(true) {
        let json = serde_json::to_value(&*passkey).map_err(|e| PasskeyError::Config(e.to_string()))?;
        diesel::update(passkeys::table.find(row))
            .set((passkeys::last_used_at.eq(now), passkeys::passkey.eq(json)))
            .execute(conn)
            .await?;
    } else {
        diesel::update(passkeys::table.find(row)).set(passkeys::last_used_at.eq(now)).execute(conn).await?;
    }
    Ok(())
}

/// Starts the second step of a password sign-in with one of `user`'s passkeys; `None`
/// when the account has none.
pub async fn start_second_factor(
    conn: &mut AsyncPgConnection,
    rp: &RelyingParty,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<Option<(Uuid, RequestChallengeResponse)>, PasskeyError> {
    let keys: Vec<Passkey> = stored_passkeys(conn, user).await?.into_iter().map(|(_, pk)| pk).collect();
    if keys.is_empty() {
        return Ok(None);
    }
    let (options, state) = rp.webauthn.start_passkey_authentication(&keys).map_err(|_| PasskeyError::Refused)?;
    let id = store_challenge(conn, Purpose::SecondFactor, Some(user), &state, now).await?;
    Ok(Some((id, options)))
}

/// Checks a passkey's answer as the second step of `user`'s password sign-in (the caller,
/// `PasswordGate::second_factor`, counts the attempt and records the outcome); the
/// passkey's counter, flags and last use are saved.
pub async fn check_second_factor(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    rp: &RelyingParty,
    user: Uuid,
    challenge: Uuid,
    credential: &PublicKeyCredential,
    now: OffsetDateTime,
) -> Result<(), PasskeyError> {
    let state: PasskeyAuthentication = take_challenge(conn, challenge, Purpose::SecondFactor, Some(user), now).await?;
    let result = match rp.webauthn.finish_passkey_authentication(credential, &state) {
        Ok(result) => result,
        Err(WebauthnError::CredentialPossibleCompromise) => {
            return Err(refused_answer(conn, audit, user, Action::PasskeyPossiblyCopied).await?)
        }
        Err(_) => return Err(refused_answer(conn, audit, user, Action::PasskeyRefused).await?),
    };
    let result = &result;
    let outcome = conn
        .transaction::<_, PasskeyError, _>(|c| {
            async move {
                let credential_id: &[u8] = result.cred_id().as_ref();
                let Some((row, mut passkey)) = locked_passkey(c, user, credential_id).await? else {
                    return Ok(Err(Refusal::UnknownPasskey));
                };
                // The ceremony checked the counter against the passkey as it was when it
                // started; against the row as it is now, a counting key must have moved on.
                let moved = serde_json::to_value(&passkey)
                    .ok()
                    .and_then(|json| json["cred"]["counter"].as_u64())
                    .is_none_or(|stored| result.counter() == 0 || u64::from(result.counter()) > stored);
                if !moved {
                    return Ok(Err(Refusal::PossiblyCopied));
                }
                save_use(c, row, &mut passkey, result, now).await.map(Ok)
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        Ok(()) => Ok(()),
        Err(Refusal::PossiblyCopied) => Err(refused_answer(conn, audit, user, Action::PasskeyPossiblyCopied).await?),
        Err(_) => Err(refused_answer(conn, audit, user, Action::PasskeyRefused).await?),
    }
}

/// Whether `user` has any passkey (the second step then offers one).
pub async fn has_passkeys(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(user)))).get_result(conn).await
}

/// Records a refused passkey sign-in (on the account when the passkey is known).
async fn refused(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Option<&User>,
) -> Result<PasskeyError, PasskeyError> {
    let detail = Detail::SecondFactor { method: SecondFactorMethod::Passkey };
    let event = Event::account(user.map(|u| u.id), Action::PasskeyRefused, Outcome::Denied, detail);
    match user {
        Some(u) => {
            let audit = audit.as_actor(Actor::User { id: u.id, email_normalized: &u.email_normalized });
            audit.record(conn, event).await?
        }
        None => audit.record(conn, event).await?,
    }
    Ok(PasskeyError::Refused)
}
