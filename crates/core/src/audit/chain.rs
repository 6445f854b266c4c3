//! The canonical encoding of an event and its hash.
//!
//! `hash = SHA-256(previous hash ‖ seq ‖ time ‖ rest)`: seq and time as 8-byte big-endian
//! integers (time in microseconds since the Unix epoch, PostgreSQL's precision), `rest` the
//! encoding below of every other stored field. The sealer computes the first part in SQL
//! (`sha256`, `int8send`), where seq and time are decided under the chain's row lock;
//! `server audit verify` recomputes all of it here.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The previous hash of a chain's first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Every stored field of an event but seq, time and hash.
#[derive(Debug, Clone)]
pub struct ChainFields<'a> {
    pub chain_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub actor_kind: &'a str,
    pub actor_id: Option<Uuid>,
    pub actor_email_pn: Option<&'a [u8]>,
    pub action: &'a str,
    pub target_kind: &'a str,
    pub target_id: Option<Uuid>,
    pub outcome: &'a str,
    pub request_id: Option<Uuid>,
    pub network_pn: Option<&'a [u8]>,
    pub agent_pn: Option<&'a [u8]>,
    pub pseudonym_epoch: Option<i32>,
    pub detail: &'a serde_json::Value,
}

/// Each field as presence byte, then (when present) a 4-byte length and the bytes: no two
/// different events encode the same.
pub fn canonical_rest(f: &ChainFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"fluxi-audit-v1");
    let mut field = |value: Option<&[u8]>| match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    };
    let epoch = f.pseudonym_epoch.map(i32::to_be_bytes);
    let detail = canonical_json(f.detail);
    field(Some(f.chain_id.as_bytes()));
    field(f.workspace_id.as_ref().map(|u| &u.as_bytes()[..]));
    field(f.account_id.as_ref().map(|u| &u.as_bytes()[..]));
    field(Some(f.actor_kind.as_bytes()));
    field(f.actor_id.as_ref().map(|u| &u.as_bytes()[..]));
    field(f.actor_email_pn);
    field(Some(f.action.as_bytes()));
    field(Some(f.target_kind.as_bytes()));
    field(f.target_id.as_ref().map(|u| &u.as_bytes()[..]));
    field(Some(f.outcome.as_bytes()));
    field(f.request_id.as_ref().map(|u| &u.as_bytes()[..]));
    field(f.network_pn);
    field(f.agent_pn);
    field(epoch.as_ref().map(|e| &e[..]));
    field(Some(detail.as_bytes()));
    out
}

/// `SHA-256(prev ‖ seq ‖ micros ‖ rest)`, as the writer computes it in SQL.
pub fn event_hash(prev: &[u8], seq: i64, micros: i64, rest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(micros.to_be_bytes());
    h.update(rest);
    h.finalize().into()
}

/// JSON with object keys sorted at every level and no spaces: the same value read back
/// from `jsonb` (which reorders keys) encodes the same.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros(at: time::OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(detail: &serde_json::Value) -> ChainFields<'_> {
        ChainFields {
            chain_id: Uuid::nil(),
            workspace_id: None,
            account_id: None,
            actor_kind: "user",
            actor_id: None,
            actor_email_pn: None,
            action: "sign_in.failed",
            target_kind: "none",
            target_id: None,
            outcome: "failed",
            request_id: None,
            network_pn: None,
            agent_pn: None,
            pseudonym_epoch: Some(1),
            detail,
        }
    }

    #[test]
    fn key_order_does_not_change_the_encoding() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":[1,2]}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":[1,2],"d":2},"b":1}"#);
    }

    #[test]
    fn every_field_changes_the_hash() {
        let detail = serde_json::json!({"type": "none"});
        let base = canonical_rest(&fields(&detail));
        let mut other = fields(&detail);
        other.actor_email_pn = Some(b"");
        assert_ne!(canonical_rest(&other), base, "absent and empty differ");
        let mut other = fields(&detail);
        other.outcome = "denied";
        assert_ne!(canonical_rest(&other), base);
        let h = event_hash(&GENESIS_HASH, 1, 5, &base);
        assert_ne!(h, event_hash(&GENESIS_HASH, 2, 5, &base));
        assert_ne!(h, event_hash(&GENESIS_HASH, 1, 6, &base));
        assert_ne!(h, event_hash(&[1; 32], 1, 5, &base));
    }
}
