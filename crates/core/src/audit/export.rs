//! Exports as CSV or JSON Lines, each ending in a signed summary line, and the check of
//! an exported file (`server audit verify --export FILE`).
//!
//! The summary holds the row count, the first and last event hash and a SHA-256 of every
//! byte before it, signed with the audit key: a file edited after export (a row changed,
//! dropped or added) no longer matches its summary.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::chain::canonical_json;
use super::query::StoredEvent;
use super::{AuditSigner, ExportFormat};

const COLUMNS: [&str; 19] = [
    "seq",
    "occurred_at",
    "chain_id",
    "workspace_id",
    "account_id",
    "actor_kind",
    "actor_id",
    "actor_name",
    "actor_email_pseudonym",
    "action",
    "target_kind",
    "target_id",
    "outcome",
    "request_id",
    "network_pseudonym",
    "agent_pseudonym",
    "pseudonym_epoch",
    "detail",
    "hash",
];

/// What the last line of an export says, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub format: String,
    pub chain: Uuid,
    /// What was asked for: which filters (and their values, but never the actor typed,
    /// often an email) and the positions covered. An export of a filter cannot pass for
    /// the whole trail.
    pub filter: ExportedFilter,
    pub count: u64,
    pub first_hash: Option<String>,
    pub last_hash: Option<String>,
    /// SHA-256 of every byte before the summary line.
    pub content_sha256: String,
    /// The signing key's public half.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExportedFilter {
    pub action: Option<String>,
    pub actor_filtered: bool,
    pub from: Option<String>,
    pub until: Option<String>,
    pub outcome: Option<String>,
    /// First and last position (seq) the export could include.
    pub seq_from: i64,
    pub seq_through: i64,
    /// When the export was made (RFC 3339).
    pub exported_at: String,
}

#[derive(Serialize, Deserialize)]
struct SummaryLine {
    summary: Summary,
    signature: String,
}

/// Writes one export, row by row, keeping only the running digest.
pub struct ExportWriter {
    format: ExportFormat,
    chain: Uuid,
    filter: ExportedFilter,
    digest: Sha256,
    count: u64,
    first: Option<String>,
    last: Option<String>,
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn opt_hex(v: &Option<Vec<u8>>) -> String {
    v.as_ref().map(hex::encode).unwrap_or_default()
}

impl ExportWriter {
    pub fn new(format: ExportFormat, chain: Uuid, filter: ExportedFilter) -> Self {
        Self { format, chain, filter, digest: Sha256::new(), count: 0, first: None, last: None }
    }

    /// The first bytes of the file (the CSV header; nothing for JSON Lines).
    pub fn start(&mut self) -> Vec<u8> {
        let out = match self.format {
            ExportFormat::Csv => csv_line(COLUMNS.iter().map(|c| c.to_string())),
            ExportFormat::JsonLines => Vec::new(),
        };
        self.digest.update(&out);
        out
    }

    pub fn row(&mut self, e: &StoredEvent, actor_name: Option<&str>) -> Vec<u8> {
        let at = e.occurred_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let values = [
            e.seq.to_string(),
            at,
            e.chain_id.to_string(),
            opt(&e.workspace_id),
            opt(&e.account_id),
            e.actor_kind.clone(),
            opt(&e.actor_id),
            spreadsheet_safe(actor_name.unwrap_or_default()),
            opt_hex(&e.actor_email_pn),
            e.action.clone(),
            e.target_kind.clone(),
            opt(&e.target_id),
            e.outcome.clone(),
            opt(&e.request_id),
            opt_hex(&e.network_pn),
            opt_hex(&e.agent_pn),
            opt(&e.pseudonym_epoch),
            canonical_json(&e.detail),
            hex::encode(&e.hash),
        ];
        let out = match self.format {
            ExportFormat::Csv => csv_line(values.into_iter()),
            ExportFormat::JsonLines => {
                let map: serde_json::Map<String, serde_json::Value> =
                    COLUMNS.iter().zip(values).map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect();
                let mut line = serde_json::to_vec(&map).unwrap_or_default();
                line.push(b'\n');
                line
            }
        };
        self.digest.update(&out);
        self.count += 1;
        let hash = hex::encode(&e.hash);
        self.first.get_or_insert_with(|| hash.clone());
        self.last = Some(hash);
        out
    }

    /// The signed summary line that ends the file.
    pub fn finish(self, signer: &AuditSigner) -> Vec<u8> {
        let summary = Summary {
            format: match self.format {
                ExportFormat::Csv => "fluxi-audit-export v1 csv".into(),
                ExportFormat::JsonLines => "fluxi-audit-export v1 jsonl".into(),
            },
            chain: self.chain,
            filter: self.filter,
            count: self.count,
            first_hash: self.first,
            last_hash: self.last,
            content_sha256: hex::encode(self.digest.finalize()),
            key: signer.key_id(),
        };
        let signed = serde_json::to_vec(&summary).unwrap_or_default();
        let line = SummaryLine { signature: hex::encode(signer.sign(&signed)), summary };
        let mut out = match self.format {
            ExportFormat::Csv => b"# ".to_vec(),
            ExportFormat::JsonLines => Vec::new(),
        };
        out.extend(serde_json::to_vec(&line).unwrap_or_default());
        out.push(b'\n');
        out
    }
}

/// A display name is the one value people type: one that a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, return) gets a leading apostrophe.
fn spreadsheet_safe(name: &str) -> String {
    match name.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{name}"),
        _ => name.to_string(),
    }
}

fn csv_line(values: impl Iterator<Item = String>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let _ = w.write_record(values.collect::<Vec<_>>());
    w.into_inner().unwrap_or_default()
}

/// Checks an exported file: the summary's signature, the digest of everything before it,
/// and the row count and first/last hashes against the rows themselves.
pub fn verify_export(file: &[u8], signer: &AuditSigner) -> Result<Summary, String> {
    let body_end = file[..file.len().saturating_sub(1)].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let (content, last_line) = file.split_at(body_end);
    let last_line = std::str::from_utf8(last_line).map_err(|_| "the summary line is not text".to_string())?.trim();
    let json = last_line.strip_prefix("# ").unwrap_or(last_line);
    let line: SummaryLine =
        serde_json::from_str(json).map_err(|_| "the file does not end with a summary line".to_string())?;
    let signed = serde_json::to_vec(&line.summary).map_err(|e| e.to_string())?;
    let signature = hex::decode(&line.signature).map_err(|_| "the summary's signature is not hex".to_string())?;
    if line.summary.key != signer.key_id() || !signer.verify(&signed, &signature) {
        return Err("the summary is not signed by this server's audit key".into());
    }
    if hex::encode(Sha256::digest(content)) != line.summary.content_sha256 {
        return Err("the rows do not match the signed summary: the file was changed after export".into());
    }
    let hashes: Vec<String> = if line.summary.format.ends_with("csv") {
        let mut reader = csv::Reader::from_reader(content);
        let column = COLUMNS.len() - 1;
        reader
            .records()
            .map(|r| r.map(|r| r.get(column).unwrap_or_default().to_string()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?
    } else {
        content
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).map_err(|e| e.to_string())?;
                Ok(v["hash"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Result<_, String>>()?
    };
    if hashes.len() as u64 != line.summary.count
        || hashes.first() != line.summary.first_hash.as_ref()
        || hashes.last() != line.summary.last_hash.as_ref()
    {
        return Err("the row count or first/last event differs from the signed summary".into());
    }
    Ok(line.summary)
}
