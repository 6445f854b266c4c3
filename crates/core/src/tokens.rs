//! The single-use tokens of links we mail (invitations, email verification, password
//! reset): 256 random bits as hex, of which the database keeps only the SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of a token: 256 random bits as hex.
pub const TOKEN_CHARS: usize = 64;

/// A fresh token from the operating system's generator.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is stored for `token`.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `token` has the shape of one we issue; anything else is not looked up at all.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_well_formed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert!(!well_formed(&a[..63]), "truncated");
        assert!(!well_formed(&format!("{}g", &a[..63])), "not hex");
        assert_eq!(token_hash(&a).len(), 32);
    }
}
