//! The Ed25519 key that signs checkpoints, anchors and exports. It lives outside the
//! database (`FLUXI_AUDIT_SIGNING_KEY`): whoever controls the database can recompute the
//! chains, but not these signatures.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Clone)]
pub struct AuditSigner {
    key: SigningKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner {{ public: {} }}", self.key_id())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an audit signing key is a 32-byte Ed25519 seed written as 64 hexadecimal digits")]
pub struct BadSigningKey;

impl AuditSigner {
    pub fn from_hex(hex_seed: &str) -> Result<Self, BadSigningKey> {
        let bytes = hex::decode(hex_seed.trim()).map_err(|_| BadSigningKey)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| BadSigningKey)?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    pub fn random() -> Self {
        Self { key: SigningKey::from_bytes(&rand::random()) }
    }

    /// The public key, in hex: names the key in checkpoints and export summaries.
    pub fn key_id(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(signature) else { return false };
        let public: VerifyingKey = self.key.verifying_key();
        public.verify(message, &Signature::from_bytes(&signature)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let k = AuditSigner::random();
        let sig = k.sign(b"head");
        assert!(k.verify(b"head", &sig));
        assert!(!k.verify(b"head!", &sig));
        assert!(!AuditSigner::random().verify(b"head", &sig));
        assert!(!k.verify(b"head", &sig[..63]));
        let hex_seed = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(
            AuditSigner::from_hex(hex_seed).unwrap().key_id(),
            AuditSigner::from_hex(hex_seed).unwrap().key_id()
        );
        assert!(AuditSigner::from_hex("abc").is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(k.key.to_bytes())));
    }
}
