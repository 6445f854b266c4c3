//! `server [serve]` runs Fluxi; `server migrate` only applies pending migrations.

use std::sync::Arc;

use anyhow::{bail, Context};
use app::ssr::{AppServices, AppState};
use fluxi_core::accounts::PasswordHasher;
use fluxi_core::clock::{Clock, SharedClock, SystemClock};
use fluxi_core::db;
use leptos::config::get_configuration;
use server::config::Config;

/// mimalloc instead of glibc malloc: server-side rendering allocates and frees many small
/// strings per page, and glibc's allocator was a third of the instructions of a
/// signed-in page (callgrind, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_sessions=error,tower_sessions_core=error".into()),
        )
        .init();
    // Defaults for running the binary outside cargo-leptos (scripts/run does).
    for (k, v) in [("LEPTOS_OUTPUT_NAME", "fluxi"), ("LEPTOS_SITE_ROOT", "target/site"), ("LEPTOS_SITE_PKG_DIR", "pkg")]
    {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().cloned().unwrap_or_else(|| "serve".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = match command.as_str() {
        "serve" => runtime.block_on(serve()),
        "migrate" => runtime.block_on(migrate()),
        "audit" => runtime.block_on(audit(&args[1..])),
        "keys" => runtime.block_on(keys(&args[1..])),
        "assistant" => runtime.block_on(assistant(&args[1..])),
        other => {
            Err(anyhow::anyhow!("unknown command {other:?}; use `serve`, `migrate`, `audit`, `keys` or `assistant`"))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A refusal to start is on the record: the log, wherever operators ship it.
            tracing::error!(target: "fluxi::startup", command = %command, error = %format!("{e:#}"), "refused to run");
            eprintln!("fluxi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Public migrations, then the tenant set on every workspace schema (fleet runner).
/// Returns the workspaces whose migration failed (described); any other failure is an
/// error.
async fn migrate_with(config: &Config) -> anyhow::Result<Option<String>> {
    {
        let mut conn = db::connect(&config.database_url).await?;
        db::check_login_role(&mut conn).await?;
    }
    let applied = db::run_public_migrations(&config.database_url).await?;
    if applied.is_empty() {
        tracing::info!("database schema is up to date");
    } else {
        tracing::info!(?applied, "applied migrations");
    }
    let pool = db::build_pool(&config.database_url, config.fleet_concurrency + 1)?;
    {
        let mut conn = pool.get().await?;
        let now = time::OffsetDateTime::now_utc();
        fluxi_core::audit::maintenance::ensure_partitions(&mut conn, now, now).await?;
    }
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&pool, config.fleet_concurrency).await?;
    if report.migrated > 0 {
        tracing::info!(migrated = report.migrated, "workspace schemas migrated");
    }
    if report.failed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} workspace schema(s) failed to migrate (the others are up to date; run `server migrate` to resume): {}",
        report.failed.len(),
        report.failed.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>().join("; ")
    )))
}

async fn migrate() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    if let Some(failed) = migrate_with(&config).await? {
        bail!(failed);
    }
    Ok(())
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let (pseudonyms, pseudonym_key_is_ephemeral) = config.pseudonyms()?;
    let (audit_signer, audit_key_is_ephemeral) = config.audit_signer()?;
    let (keyring, encryption_key_is_ephemeral) = config.keyring()?;
    // One broken workspace must not take the others down: they are served, and it answers
    // "being upgraded" (503) to its members until a rerun of the migration succeeds.
    if let Some(failed) = migrate_with(&config).await? {
        tracing::error!("{failed}; serving the others, these answer 503 until migrated");
    }
    let mut leptos_options = get_configuration(None).context("reading the Leptos configuration")?.leptos_options;
    leptos_options.site_addr = config.addr;
    let pool = db::build_pool(&config.database_url, config.pool_size)?;
    let clock: SharedClock = Arc::new(SystemClock);
    let state = AppState::new(AppServices {
        pool: pool.clone(),
        hasher: PasswordHasher::new(config.hasher.clone()),
        clock: clock.clone(),
        session_policy: config.session_policy,
        sign_in_throttle: fluxi_core::accounts::SignInThrottle::default(),
        sign_up_limits: config.sign_up_limits,
        elsewhere_sign_in_throttle: fluxi_core::accounts::SignInThrottle::elsewhere_default(),
        client_sign_in_throttle: fluxi_core::accounts::SignInThrottle::per_client_default(),
        trusted_proxies: config.trusted_proxies,
        leptos_options,
        base_url: config.base_url.clone(),
        security_txt: server::security_txt(&config.base_url, &config.security_contact, config.security_txt_expires),
        dev_mailbox: config.dev_mailbox(),
        request_timeout: config.request_timeout,
        workspaces_per_day: config.workspaces_per_day,
        invitation_policy: config.invitation_policy,
        pseudonyms,
        audit_signer: audit_signer.clone(),
        audit_repeats: Default::default(),
        keyring,
        integrations: fluxi_core::integrations::Integrations::new(config.integrations.clone(), &config.base_url)?,
        assistant: config.assistant.clone(),
    });
    if encryption_key_is_ephemeral {
        tracing::warn!(
            "FLUXI_ENCRYPTION_KEY is not set: secrets are sealed with a random key until the process stops \
             (development only)"
        );
    }
    if audit_key_is_ephemeral {
        tracing::warn!(
            "FLUXI_AUDIT_SIGNING_KEY is not set: audit checkpoints are signed with a random key until the process stops \
             (development only)"
        );
    }
    if pseudonym_key_is_ephemeral {
        tracing::warn!("FLUXI_PSEUDONYM_KEY is not set: using a random key until the process stops (development only)");
    }
    if let Some(smtp_url) = &config.smtp_url {
        let mailer = server::jobs::mail::Mailer::new(smtp_url, &config.mail_from)?;
        server::jobs::mail::spawn_worker(pool.clone(), clock.clone(), mailer, std::time::Duration::from_secs(1));
    } else {
        tracing::info!("SMTP_URL is not set: mails stay in the outbox (see /dev/mailbox in development)");
    }
    server::jobs::session_cleanup::spawn(
        pool.clone(),
        clock,
        state.sign_in_counts_kept(),
        config.session_cleanup_every,
    );
    let upkeep = server::jobs::audit::AuditUpkeep {
        pool: pool.clone(),
        clock: state.clock.clone(),
        signer: audit_signer,
        retention: config.audit_retention,
        checkpoint_file: config.audit_checkpoint_file.clone(),
    };
    server::jobs::audit::spawn(upkeep, config.audit_checkpoint_every);
    server::jobs::audit::spawn_sealer(
        pool.clone(),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    server::jobs::integration_revocations::spawn(
        pool.clone(),
        state.clock.clone(),
        state.keyring.clone(),
        state.integrations.clone(),
        std::time::Duration::from_secs(30),
    );
    server::jobs::fleet_catch_up::spawn(pool, config.fleet_concurrency, std::time::Duration::from_secs(60));
    let tls = config.tls.as_ref().map(|files| files.acceptor()).transpose()?;
    // The pool, PostgreSQL's socket, log and site files, and some headroom.
    server::listen::check_file_limit(&config.connection_limits, config.pool_size + 64);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    if let Some(redirect_addr) = config.http_redirect_addr {
        let redirect = tokio::net::TcpListener::bind(redirect_addr)
            .await
            .with_context(|| format!("cannot listen on {redirect_addr}"))?;
        let (base_url, limits) = (config.base_url.clone(), config.connection_limits);
        tokio::spawn(server::listen::serve_https_redirect(redirect, base_url, limits, shutdown_signal()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("Fluxi is serving at {scheme}://{}", config.addr);
    server::listen::serve(listener, server::build_router(state), config.connection_limits, tls, shutdown_signal())
        .await;
    Ok(())
}

/// `server audit verify [--workspace SLUG|ID] [--checkpoints FILE] [--export FILE]`, `server audit checkpoint`,
/// `server audit prune`.
/// `keys rotate [--batch N]`: re-seals every stored secret under the newest encryption key
/// version, in batches beside a running server; `keys status`: secrets per key version.
async fn keys(args: &[String]) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let (keyring, ephemeral) = config.keyring()?;
    if ephemeral {
        bail!("FLUXI_ENCRYPTION_KEY is not set: stored secrets can only be re-sealed with the server's keys");
    }
    let batch: i64 = match args.iter().position(|a| a == "--batch").and_then(|i| args.get(i + 1)) {
        Some(n) => n.parse().ok().filter(|n| *n > 0).context("--batch takes a positive number")?,
        None => 500,
    };
    let pool = db::build_pool(&config.database_url, 2)?;
    let mut conn = pool.get().await?;
    let show = |counts: &[fluxi_core::secrets::VersionCount]| {
        if counts.is_empty() {
            println!("  no stored secrets");
        }
        for c in counts {
            let note = if c.rotatable || c.key_version == keyring.current_version() {
                ""
            } else {
                " (move when their owners make new ones)"
            };
            println!("  {}: {} on key version {}{note}", c.kind, c.count, c.key_version);
        }
    };
    match args.first().map(String::as_str) {
        Some("status") => {
            println!("current key version: {}", keyring.current_version());
            show(&fluxi_core::secrets::count_by_version(&mut conn).await?);
            Ok(())
        }
        Some("rotate") => {
            let report =
                fluxi_core::secrets::rotate(&mut conn, &keyring, batch, &fluxi_core::clock::SystemClock).await?;
            println!(
                "re-sealed {} secrets under key version {}; {} could not be opened",
                report.resealed,
                keyring.current_version(),
                report.failed
            );
            show(&fluxi_core::secrets::count_by_version(&mut conn).await?);
            if report.failed > 0 {
                bail!("{} secrets did not open: is every older key in FLUXI_ENCRYPTION_OLD_KEYS?", report.failed);
            }
            Ok(())
        }
        _ => bail!("use `keys rotate [--batch N]` or `keys status`"),
    }
}

/// `assistant off|on`: the deployment's switch, for every instance at once.
async fn assistant(args: &[String]) -> anyhow::Result<()> {
    let enabled = match args.first().map(String::as_str) {
        Some("off") => false,
        Some("on") => true,
        _ => bail!("use `assistant off` or `assistant on`"),
    };
    let config = Config::from_env()?;
    let mut conn = db::connect(&config.database_url).await?;
    let clock = SystemClock;
    let audit = fluxi_core::audit::Audit::system(fluxi_core::audit::SystemJob::AssistantSwitch, &clock);
    fluxi_core::assistant::set_deployment_enabled(&mut conn, &audit, enabled, clock.now()).await?;
    println!("the assistant is {} for this deployment", if enabled { "on" } else { "off" });
    Ok(())
}

async fn audit(args: &[String]) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let (signer, ephemeral) = config.audit_signer()?;
    if ephemeral {
        bail!("FLUXI_AUDIT_SIGNING_KEY is not set: signatures can only be checked with the server's key");
    }
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sub = args.first().map(String::as_str).unwrap_or("");
    if sub == "verify" {
        if let Some(file) = flag("--export") {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
            let summary = fluxi_core::audit::export::verify_export(&bytes, &signer)
                .map_err(|problem| anyhow::anyhow!("{file}: {problem}"))?;
            println!("{file}: intact, {} events, signed by this server's audit key", summary.count);
            return Ok(());
        }
    }
    let pool = db::build_pool(&config.database_url, 2)?;
    let upkeep = server::jobs::audit::AuditUpkeep {
        pool: pool.clone(),
        clock: Arc::new(SystemClock),
        signer: signer.clone(),
        retention: config.audit_retention,
        checkpoint_file: config.audit_checkpoint_file.clone(),
    };
    match sub {
        "verify" => {
            let mut conn = pool.get().await?;
            let only = match flag("--workspace") {
                // A deleted workspace's trail is named by its id.
                Some(slug) => Some(match uuid::Uuid::parse_str(&slug) {
                    Ok(id) => id,
                    Err(_) => fluxi_core::workspaces::workspace_id_by_slug(&mut conn, &slug)
                        .await?
                        .with_context(|| format!("no workspace {slug:?}"))?,
                }),
                None => None,
            };
            // The shipped copy of the checkpoints: given, or the configured file.
            let shipped_file =
                flag("--checkpoints").map(std::path::PathBuf::from).or(config.audit_checkpoint_file.clone());
            let mut shipped = Vec::new();
            if let Some(path) = shipped_file.filter(|p| p.exists()) {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    shipped.push(
                        fluxi_core::audit::maintenance::Checkpoint::from_json_line(line)
                            .with_context(|| format!("{}:{}: not a checkpoint line", path.display(), n + 1))?,
                    );
                }
                println!("checking against {} shipped checkpoint(s) in {}", shipped.len(), path.display());
            }
            let reports = fluxi_core::audit::verify::verify(&mut conn, &signer, only, &shipped).await?;
            let mut broken = 0;
            for r in &reports {
                let name = if r.chain.is_nil() { "accounts".to_string() } else { format!("workspace {}", r.chain) };
                match &r.problem {
                    None => println!(
                        "{name}: intact, {} events through #{}{}{}",
                        r.events,
                        r.last_seq,
                        r.verified_through
                            .map(|t| format!(", matches the checkpoint signed at {t}"))
                            .unwrap_or_default(),
                        if r.pending > 0 { format!("; {} event(s) not yet sealed", r.pending) } else { String::new() }
                    ),
                    Some(problem) => {
                        broken += 1;
                        println!("{name}: TAMPERED: {problem}");
                    }
                }
            }
            if broken > 0 {
                bail!("{broken} of {} chain(s) failed verification", reports.len());
            }
            Ok(())
        }
        "checkpoint" => {
            match upkeep.checkpoint().await? {
                Some(c) => println!("checkpoint #{} signed: {} chain(s) moved since the last one", c.id, c.heads().len()),
                None => println!("no chain moved since the last checkpoint: nothing to sign"),
            }
            Ok(())
        }
        "prune" => {
            upkeep.prepare().await?;
            let r = upkeep.prune().await?;
            println!("pruned {} month(s), {} event(s) in {} chain(s)", r.periods, r.events, r.chains);
            Ok(())
        }
        other => bail!(
            "unknown audit command {other:?}; use `verify [--workspace SLUG|ID] [--checkpoints FILE] [--export FILE]`, `checkpoint` or `prune`"
        ),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
