//! Pseudonyms for personal identifiers that the database must be able to match but
//! should not be able to reveal (sign-in throttling keys an email address or a client
//! network today).
//!
//! A plain hash would not do: every IPv4 address, and most email addresses of a known
//! domain, can be hashed by anyone holding a copy of the table until one matches. The
//! pseudonym is a keyed MAC (BLAKE2s-256 with a 32-byte secret key), so without the key,
//! which lives outside the database (`FLUXI_PSEUDONYM_KEY`), a stored value says nothing.

use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac256;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; KEY_LEN],
}

/// The key never reaches a log.
impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { key: <redacted> }")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a pseudonym key is {KEY_LEN} bytes written as {} hexadecimal digits", KEY_LEN * 2)]
pub struct BadKey;

impl Pseudonymizer {
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    /// From the hexadecimal form used in configuration (64 digits).
    pub fn from_hex(hex_key: &str) -> Result<Self, BadKey> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| BadKey)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| BadKey)?;
        Ok(Self { key })
    }

    /// A fresh random key (development without a configured key, tests).
    pub fn random() -> Self {
        Self { key: rand::random() }
    }

    /// The pseudonym of `value` for `purpose`: the same inputs give the same bytes under
    /// one key; different purposes never share pseudonyms.
    pub fn pseudonym(&self, purpose: &str, value: &str) -> Vec<u8> {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&self.key).expect("32 bytes is a valid BLAKE2s key");
        // Length-prefixed purpose: ("ab", "c") and ("a", "bc") must not collide.
        mac.update(&(purpose.len() as u64).to_le_bytes());
        mac.update(purpose.as_bytes());
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// `payload` with a MAC for `purpose`, in a form safe for a cookie value (hex): what a
    /// client may hold and hand back, but not alter or make up.
    pub fn sign(&self, purpose: &str, payload: &[u8]) -> String {
        let payload = hex::encode(payload);
        let tag = hex::encode(self.pseudonym(purpose, &payload));
        format!("{payload}.{tag}")
    }

    /// The payload of a value made by [`Self::sign`] for `purpose` under this key, if it is
    /// one; the tag is compared in constant time.
    pub fn verify_signed(&self, purpose: &str, value: &str) -> Option<Vec<u8>> {
        let (payload, tag) = value.split_once('.')?;
        let tag = hex::decode(tag).ok()?;
        let expected = self.pseudonym(purpose, payload);
        let same = tag.len() == expected.len() && tag.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return None;
        }
        hex::decode(payload).ok()
    }
}

/// The pseudonym keys by epoch: the current one makes new pseudonyms; older ones still
/// held let searches find entries made under them. Rotating the key starts a new epoch;
/// destroying an old epoch's key (dropping it from configuration) makes the entries of that
/// epoch unlinkable for good.
#[derive(Clone, Debug)]
pub struct PseudonymKeys {
    current_epoch: i32,
    current: Pseudonymizer,
    older: Vec<(i32, Pseudonymizer)>,
}

impl PseudonymKeys {
    pub fn new(current_epoch: i32, current: Pseudonymizer, older: Vec<(i32, Pseudonymizer)>) -> Self {
        let older = older.into_iter().filter(|(epoch, _)| *epoch != current_epoch).collect();
        Self { current_epoch, current, older }
    }

    /// One epoch (1), one key.
    pub fn single(key: Pseudonymizer) -> Self {
        Self::new(1, key, Vec::new())
    }

    pub fn current(&self) -> &Pseudonymizer {
        &self.current
    }

    pub fn current_epoch(&self) -> i32 {
        self.current_epoch
    }

    /// `(epoch, pseudonym)` under every key held, newest first: what a search must match.
    pub fn in_every_epoch(&self, purpose: &str, value: &str) -> Vec<(i32, Vec<u8>)> {
        std::iter::once((self.current_epoch, &self.current))
            .chain(self.older.iter().map(|(e, k)| (*e, k)))
            .map(|(epoch, key)| (epoch, key.pseudonym(purpose, value)))
            .collect()
    }

    /// Parses `FLUXI_PSEUDONYM_OLD_KEYS`: `epoch:hex` entries separated by commas.
    pub fn parse_older(list: &str) -> Result<Vec<(i32, Pseudonymizer)>, BadKey> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (epoch, key) = entry.split_once(':').ok_or(BadKey)?;
                let epoch: i32 = epoch.trim().parse().map_err(|_| BadKey)?;
                Ok((epoch, Pseudonymizer::from_hex(key)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signed_values_open_only_unaltered_and_under_their_purpose_and_key() {
        let key = Pseudonymizer::random();
        let value = key.sign("flash", b"{\"form\":\"login\"}");
        assert_eq!(key.verify_signed("flash", &value).as_deref(), Some(&b"{\"form\":\"login\"}"[..]));
        assert_eq!(key.verify_signed("device", &value), None, "another purpose");
        assert_eq!(Pseudonymizer::random().verify_signed("flash", &value), None, "another key");
        let (payload, tag) = value.split_once('.').unwrap();
        let flipped = if payload.ends_with('0') { '1' } else { '0' };
        let altered = format!("{}{flipped}.{tag}", &payload[..payload.len() - 1]);
        assert_eq!(key.verify_signed("flash", &altered), None, "altered payload");
        assert_eq!(key.verify_signed("flash", payload), None, "no tag");
        assert_eq!(key.verify_signed("flash", &format!("{payload}.{}", &tag[..10])), None, "short tag");
    }

    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn pseudonyms_depend_on_key_purpose_and_value() {
        let one = Pseudonymizer::new([1; KEY_LEN]);
        let other = Pseudonymizer::new([2; KEY_LEN]);
        let p = one.pseudonym("sign-in", "ada@example.test");
        assert_eq!(p.len(), 32);
        assert_eq!(p, one.pseudonym("sign-in", "ada@example.test"), "stable under one key");
        assert_ne!(p, other.pseudonym("sign-in", "ada@example.test"), "another key, another pseudonym");
        assert_ne!(p, one.pseudonym("sign-in-client", "ada@example.test"), "purposes are kept apart");
        assert_ne!(p, one.pseudonym("sign-in", "bob@example.test"));
        assert_ne!(one.pseudonym("ab", "c"), one.pseudonym("a", "bc"));
        // Not what an unkeyed hash of the same text would give.
        assert_ne!(p, Sha256::digest(b"sign-in:ada@example.test").to_vec());
    }

    #[test]
    fn keys_are_read_from_64_hex_digits_and_never_shown() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = Pseudonymizer::from_hex(hex_key).unwrap();
        assert_eq!(k.key[1], 0x11);
        assert_eq!(Pseudonymizer::from_hex(&format!(" {hex_key}\n")).unwrap().key, k.key);
        for bad in ["", "abc", &hex_key[..62], &format!("{hex_key}00"), &hex_key.replace('0', "g")] {
            assert_eq!(Pseudonymizer::from_hex(bad).unwrap_err(), BadKey, "{bad:?}");
        }
        assert!(!format!("{k:?}").contains("0011"), "{k:?}");
        assert_ne!(Pseudonymizer::random().key, Pseudonymizer::random().key);
    }

    #[test]
    fn searches_match_every_epoch_still_held() {
        let (old, new) = (Pseudonymizer::new([1; KEY_LEN]), Pseudonymizer::new([2; KEY_LEN]));
        let keys = PseudonymKeys::new(2, new.clone(), vec![(1, old.clone())]);
        let all = keys.in_every_epoch("audit-email", "ada@example.test");
        assert_eq!(
            all,
            vec![
                (2, new.pseudonym("audit-email", "ada@example.test")),
                (1, old.pseudonym("audit-email", "ada@example.test"))
            ]
        );
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let parsed = PseudonymKeys::parse_older(&format!("1:{hex_key}, 7:{hex_key}")).unwrap();
        assert_eq!(parsed.iter().map(|(e, _)| *e).collect::<Vec<_>>(), vec![1, 7]);
        assert!(PseudonymKeys::parse_older("x:00").is_err());
        assert!(PseudonymKeys::parse_older(hex_key).is_err(), "an epoch is required");
    }
}
