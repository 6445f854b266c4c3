//! The one encryption module: every secret the database holds (TOTP secrets; OAuth
//! tokens and API keys later) is sealed here, and nowhere else.
//!
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): authenticated, and its 192-bit
//! nonces are drawn at random without a counter to keep. The key lives outside the
//! database (`FLUXI_ENCRYPTION_KEY`), so a dump alone reveals nothing. Each ciphertext
//! carries the version of the key that sealed it, so keys can be rotated while serving
//! (`server keys rotate`, [`rotate`]). The associated data binds a ciphertext to its
//! purpose and owner (account, workspace, connection…): copied to another row, or read
//! for another purpose, it does not open.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use diesel_async::AsyncPgConnection;
use zeroize::{Zeroize, Zeroizing};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Format tag in the associated data: a later format cannot be confused with this one.
const FORMAT: &[u8] = b"fluxi-sealed-v1";

pub struct EncryptionKey([u8; KEY_LEN]);

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Clone for EncryptionKey {
    fn clone(&self) -> Self {
        Self(self.0)
    }
}

/// The key never reaches a log.
impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an encryption key is {KEY_LEN} bytes written as {} hexadecimal digits", KEY_LEN * 2)]
pub struct BadKey;

impl EncryptionKey {
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        Self(key)
    }

    /// From the hexadecimal form used in configuration (64 digits).
    pub fn from_hex(hex_key: &str) -> Result<Self, BadKey> {
        let bytes = Zeroizing::new(hex::decode(hex_key.trim()).map_err(|_| BadKey)?);
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| BadKey)?;
        Ok(Self(key))
    }

    /// A fresh random key (development without a configured key, tests).
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// What a sealed secret is for. Part of the associated data: a TOTP secret cannot be
/// opened as anything else, whatever row it is copied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    TotpSecret,
    RecoveryCode,
    /// The account a connection reaches at its provider ("Connected as …").
    IntegrationAccount,
    IntegrationAccessToken,
    IntegrationRefreshToken,
    IntegrationApiKey,
    /// The PKCE verifier of an OAuth connection under way.
    PkceVerifier,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::TotpSecret => "totp-secret",
            Purpose::RecoveryCode => "recovery-code",
            Purpose::IntegrationAccount => "integration-account",
            Purpose::IntegrationAccessToken => "integration-access-token",
            Purpose::IntegrationRefreshToken => "integration-refresh-token",
            Purpose::IntegrationApiKey => "integration-api-key",
            Purpose::PkceVerifier => "pkce-verifier",
        }
    }
}

/// A sealed secret as stored: the key version beside nonce ‖ ciphertext ‖ tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_version: i32,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed {{ key_version: {}, {} bytes }}", self.key_version, self.bytes.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key version this process does not hold (dropped from configuration).
    #[error("sealed under key version {0}, which is not configured")]
    UnknownKeyVersion(i32),
    /// Wrong key, another owner or purpose, or altered bytes: deliberately one answer.
    #[error("the sealed secret does not open for this owner and purpose")]
    DoesNotOpen,
}

/// The keys by version: the current one seals; older ones still open what they sealed
/// until rotation has moved everything to the current one.
#[derive(Clone, Debug)]
pub struct Keyring {
    current_version: i32,
    keys: Vec<(i32, EncryptionKey)>,
}

impl Keyring {
    pub fn new(current_version: i32, current: EncryptionKey, older: Vec<(i32, EncryptionKey)>) -> Self {
        let mut keys = vec![(current_version, current)];
        keys.extend(older.into_iter().filter(|(v, _)| *v != current_version));
        Self { current_version, keys }
    }

    /// One version (1), one key.
    pub fn single(key: EncryptionKey) -> Self {
        Self::new(1, key, Vec::new())
    }

    pub fn current_version(&self) -> i32 {
        self.current_version
    }

    /// Versions held, current first.
    pub fn versions(&self) -> impl Iterator<Item = i32> + '_ {
        self.keys.iter().map(|(v, _)| *v)
    }

    fn key(&self, version: i32) -> Option<&EncryptionKey> {
        self.keys.iter().find(|(v, _)| *v == version).map(|(_, k)| k)
    }

    /// Parses `FLUXI_ENCRYPTION_OLD_KEYS`: `version:hex` entries separated by commas.
    pub fn parse_older(list: &str) -> Result<Vec<(i32, EncryptionKey)>, BadKey> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (version, key) = entry.split_once(':').ok_or(BadKey)?;
                let version: i32 = version.trim().parse().map_err(|_| BadKey)?;
                Ok((version, EncryptionKey::from_hex(key)?))
            })
            .collect()
    }

    /// Seals `plaintext` under the current key, bound to `purpose` and `owner` (the ids
    /// of whatever the secret belongs to, in a fixed order per purpose).
    pub fn seal(&self, purpose: Purpose, owner: &[&[u8]], plaintext: &[u8]) -> Sealed {
        self.seal_with(self.current_version, purpose, owner, plaintext).expect("the current key is always held")
    }

    fn seal_with(&self, version: i32, purpose: Purpose, owner: &[&[u8]], plaintext: &[u8]) -> Option<Sealed> {
        let cipher = XChaCha20Poly1305::new(self.key(version)?.0.as_slice().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(version, purpose, owner);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .expect("XChaCha20-Poly1305 encryption of an in-memory message cannot fail");
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Some(Sealed { key_version: version, bytes })
    }

    /// Opens what [`Keyring::seal`] sealed for the same purpose and owner.
    pub fn open(&self, purpose: Purpose, owner: &[&[u8]], sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let key = self.key(sealed.key_version).ok_or(OpenError::UnknownKeyVersion(sealed.key_version))?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(OpenError::DoesNotOpen);
        }
        let (nonce, body) = sealed.bytes.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
        let aad = associated_data(sealed.key_version, purpose, owner);
        cipher
            .decrypt(nonce.into(), Payload { msg: body, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| OpenError::DoesNotOpen)
    }

    /// Opens `sealed` and seals it again under the current key (rotation).
    pub fn reseal(&self, purpose: Purpose, owner: &[&[u8]], sealed: &Sealed) -> Result<Sealed, OpenError> {
        let plain = self.open(purpose, owner, sealed)?;
        Ok(self.seal(purpose, owner, &plain))
    }

    /// A keyed hash of `value` under key `version` (for secrets that are only ever
    /// compared, never read back, such as recovery codes): useless to whoever holds the
    /// database without the key, even for values with little entropy. `None` when the
    /// version is not held.
    pub fn keyed_hash(&self, version: i32, purpose: Purpose, owner: &[&[u8]], value: &[u8]) -> Option<[u8; 32]> {
        use blake2::digest::Mac;
        let key = self.key(version)?;
        // A subkey: the encryption key itself is never used for anything but sealing.
        let mut derive = <blake2::Blake2bMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&key.0)
            .expect("32 bytes is a valid BLAKE2b key");
        derive.update(b"fluxi keyed hash subkey");
        let subkey: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
        let mut mac = <blake2::Blake2bMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(subkey.as_slice())
            .expect("32 bytes is a valid BLAKE2b key");
        mac.update(&associated_data(version, purpose, owner));
        mac.update(value);
        Some(mac.finalize().into_bytes().into())
    }
}

/// Format ‖ key version ‖ purpose ‖ each owner part, all length-prefixed where their
/// length varies, so no two different bindings give the same bytes.
fn associated_data(version: i32, purpose: Purpose, owner: &[&[u8]]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(FORMAT);
    aad.extend_from_slice(&version.to_le_bytes());
    for part in std::iter::once(purpose.name().as_bytes()).chain(owner.iter().copied()) {
        aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// How many stored secrets each key version holds, per kind of secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    pub kind: &'static str,
    pub key_version: i32,
    pub count: i64,
    /// Whether rotation can move these (keyed hashes cannot be recomputed without the
    /// value: they move when their owner replaces them).
    pub rotatable: bool,
}

/// Secrets on each key version, over every table that stores them.
pub async fn count_by_version(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<VersionCount>> {
    let mut counts = crate::mfa::sealed_counts(conn).await?;
    counts.extend(crate::integrations::sealed_counts(conn).await?);
    Ok(counts)
}

/// What one rotation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub resealed: u64,
    /// Secrets that did not open (their key version is not configured, or the row was
    /// tampered with): left as they are, and counted.
    pub failed: u64,
}

/// Re-seals every rotatable secret not on the current key version, `batch` rows per
/// transaction (rows locked with SKIP LOCKED, so serving goes on beside it). Each store
/// of sealed secrets takes part with its own re-sealing pass.
/// The pass is recorded in the account-level trail.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    batch: i64,
    clock: &dyn crate::clock::Clock,
) -> diesel::QueryResult<RotationReport> {
    use crate::audit::{Action, Audit, Detail, Event, Outcome, SystemJob};
    let mut report = crate::mfa::reseal_all(conn, keyring, batch.max(1)).await?;
    let more = crate::integrations::reseal_all(conn, keyring, batch.max(1)).await?;
    report.resealed += more.resealed;
    report.failed += more.failed;
    let outcome = if report.failed == 0 { Outcome::Succeeded } else { Outcome::Failed };
    let detail = Detail::Rotation { resealed: report.resealed, failed: report.failed };
    Audit::system(SystemJob::KeyRotation, clock)
        .record(conn, Event::account(None, Action::SecretsRotated, outcome, detail))
        .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::single(EncryptionKey::new([7; KEY_LEN]))
    }

    #[test]
    fn sealed_secrets_open_only_for_their_owner_and_purpose() {
        let ring = ring();
        let (ada, bob) = (b"ada".as_slice(), b"bob".as_slice());
        let sealed = ring.seal(Purpose::TotpSecret, &[ada], b"twenty secret bytes!");
        assert_eq!(sealed.key_version, 1);
        assert!(!sealed.bytes.windows(6).any(|w| w == b"secret"), "not in clear");
        assert_eq!(ring.open(Purpose::TotpSecret, &[ada], &sealed).unwrap().as_slice(), b"twenty secret bytes!");
        assert_eq!(ring.open(Purpose::TotpSecret, &[bob], &sealed), Err(OpenError::DoesNotOpen), "another owner");
        assert_eq!(ring.open(Purpose::RecoveryCode, &[ada], &sealed), Err(OpenError::DoesNotOpen), "another purpose");
        // ("ab", "c") and ("a", "bc") are different owners.
        let split = ring.seal(Purpose::TotpSecret, &[b"ab", b"c"], b"x");
        assert_eq!(ring.open(Purpose::TotpSecret, &[b"a", b"bc"], &split), Err(OpenError::DoesNotOpen));
        let mut flipped = sealed.clone();
        let last = flipped.bytes.len() - 1;
        flipped.bytes[last] ^= 1;
        assert_eq!(ring.open(Purpose::TotpSecret, &[ada], &flipped), Err(OpenError::DoesNotOpen), "altered");
        let short = Sealed { key_version: 1, bytes: vec![0; 5] };
        assert_eq!(ring.open(Purpose::TotpSecret, &[ada], &short), Err(OpenError::DoesNotOpen));
        assert_ne!(
            ring.seal(Purpose::TotpSecret, &[ada], b"same").bytes,
            ring.seal(Purpose::TotpSecret, &[ada], b"same").bytes
        );
    }

    #[test]
    fn older_versions_open_until_resealed_and_the_version_is_bound() {
        let old = Keyring::single(EncryptionKey::new([1; KEY_LEN]));
        let sealed = old.seal(Purpose::TotpSecret, &[b"ada"], b"secret");
        let new = Keyring::new(2, EncryptionKey::new([2; KEY_LEN]), vec![(1, EncryptionKey::new([1; KEY_LEN]))]);
        assert_eq!(new.versions().collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(new.open(Purpose::TotpSecret, &[b"ada"], &sealed).unwrap().as_slice(), b"secret");
        let moved = new.reseal(Purpose::TotpSecret, &[b"ada"], &sealed).unwrap();
        assert_eq!(moved.key_version, 2);
        assert_eq!(new.open(Purpose::TotpSecret, &[b"ada"], &moved).unwrap().as_slice(), b"secret");
        // Relabelled as another version, it does not open even where that key would be right.
        let relabelled = Sealed { key_version: 1, bytes: moved.bytes.clone() };
        assert_eq!(new.open(Purpose::TotpSecret, &[b"ada"], &relabelled), Err(OpenError::DoesNotOpen));
        let without_old = Keyring::new(2, EncryptionKey::new([2; KEY_LEN]), Vec::new());
        assert_eq!(without_old.open(Purpose::TotpSecret, &[b"ada"], &sealed), Err(OpenError::UnknownKeyVersion(1)));
    }

    #[test]
    fn keyed_hashes_depend_on_key_owner_and_value() {
        let ring = ring();
        let h = ring.keyed_hash(1, Purpose::RecoveryCode, &[b"ada"], b"abcde12345").unwrap();
        assert_eq!(h, ring.keyed_hash(1, Purpose::RecoveryCode, &[b"ada"], b"abcde12345").unwrap());
        assert_ne!(h, ring.keyed_hash(1, Purpose::RecoveryCode, &[b"bob"], b"abcde12345").unwrap());
        assert_ne!(h, ring.keyed_hash(1, Purpose::RecoveryCode, &[b"ada"], b"abcde12346").unwrap());
        let other = Keyring::single(EncryptionKey::new([8; KEY_LEN]));
        assert_ne!(h, other.keyed_hash(1, Purpose::RecoveryCode, &[b"ada"], b"abcde12345").unwrap());
        assert_eq!(ring.keyed_hash(5, Purpose::RecoveryCode, &[b"ada"], b"x"), None);
    }

    #[test]
    fn keys_are_read_from_hex_and_never_shown() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = EncryptionKey::from_hex(hex_key).unwrap();
        assert_eq!(key.0[1], 0x11);
        assert!(!format!("{key:?}").contains("0011"));
        assert!(!format!("{:?}", Keyring::single(key)).contains("0011"));
        for bad in ["", "abc", &hex_key[..62], &hex_key.replace('0', "g")] {
            assert_eq!(EncryptionKey::from_hex(bad).unwrap_err(), BadKey);
        }
        let older = Keyring::parse_older(&format!("1:{hex_key}, 3:{hex_key}")).unwrap();
        assert_eq!(older.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 3]);
        assert!(Keyring::parse_older(hex_key).is_err(), "a version is required");
    }
}
