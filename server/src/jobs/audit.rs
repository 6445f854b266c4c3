//! Keeping the audit trail: recorded events sealed into their chains, partitions made
//! ahead, signed checkpoints, pruning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fluxi_core::audit::{maintenance, AuditSigner};
use fluxi_core::clock::SharedClock;
use fluxi_core::db::Pool;

/// What the maintenance job needs.
#[derive(Clone)]
pub struct AuditUpkeep {
    pub pool: Pool,
    pub clock: SharedClock,
    pub signer: AuditSigner,
    pub retention: time::Duration,
    pub checkpoint_file: Option<PathBuf>,
}

impl AuditUpkeep {
    /// Signs and stores a checkpoint of every chain head, then ships it: appended to the
    /// checkpoint file (created if missing), or logged.
    pub async fn checkpoint(&self) -> anyhow::Result<Option<maintenance::Checkpoint>> {
        let mut conn = self.pool.get().await.context("no database connection")?;
        let run = maintenance::checkpoint(&mut conn, &self.signer, self.clock.now()).await?;
        for (chain, problem) in &run.refused {
            tracing::error!(%chain, %problem, "audit chain not signed: it no longer continues from its signed head");
        }
        let Some(checkpoint) = run.checkpoint else { return Ok(None) };
        let line = checkpoint.to_json_line();
        match &self.checkpoint_file {
            Some(path) => {
                append_line(path, &line).with_context(|| format!("appending the checkpoint to {}", path.display()))?
            }
            None => tracing::info!(target: "fluxi::audit_checkpoint", checkpoint = %line, "audit checkpoint"),
        }
        Ok(Some(checkpoint))
    }

    /// Drops the months past retention (exactly one instance does it).
    pub async fn prune(&self) -> anyhow::Result<maintenance::PruneReport> {
        let mut conn = self.pool.get().await.context("no database connection")?;
        Ok(maintenance::prune(&mut conn, &self.signer, self.clock.as_ref(), self.retention).await?)
    }

    /// Partitions for this month and the next ones.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await.context("no database connection")?;
        let now = self.clock.now();
        maintenance::ensure_partitions(&mut conn, now, now).await?;
        Ok(())
    }

    /// One round: partitions, pruning, then a checkpoint.
    pub async fn round(&self) {
        if let Err(e) = self.prepare().await {
            tracing::error!(error = %format!("{e:#}"), "could not create audit partitions ahead");
        }
        match self.prune().await {
            Ok(r) if r.periods > 0 => {
                tracing::info!(periods = r.periods, events = r.events, "pruned audit events past retention")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "audit pruning round failed; retrying next round"),
        }
        if let Err(e) = self.checkpoint().await {
            tracing::error!(error = %format!("{e:#}"), "audit checkpoint failed");
        }
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// Runs a round every `every` (the first right away).
pub fn spawn(upkeep: AuditUpkeep, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            upkeep.round().await;
        }
    })
}

/// Seals recorded events into their chains every `every`. Several instances share the
/// work (a chain another holds is skipped). A chain that fails is logged and left alone for
/// `hold_back`, so a bad row neither floods the log nor delays the other chains.
pub fn spawn_sealer(pool: Pool, every: Duration, hold_back: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: std::collections::HashMap<uuid::Uuid, tokio::time::Instant> = Default::default();
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            held.retain(|_, until| *until > now);
            let mut conn = match pool.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "no database connection to seal audit events; retrying next round");
                    continue;
                }
            };
            let skip = held.keys().copied().collect();
            match fluxi_core::audit::seal_round(&mut conn, &skip).await {
                Ok(report) => {
                    for (chain, error) in report.failed {
                        tracing::error!(%chain, %error, "sealing audit events failed; they wait in the inbox");
                        held.insert(chain, now + hold_back);
                    }
                }
                Err(e) => tracing::error!(error = %e, "sealing audit events failed; retrying next round"),
            }
        }
    })
}
