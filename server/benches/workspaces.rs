//! Workspace benchmarks (prints figures; run by scripts/bench-workspaces):
//! time to create a workspace (p50/p95), fleet migration with nothing pending at 1,000
//! and 10,000 schemas, and with one pending additive migration on 10,000 schemas.
//! Needs DATABASE_URL: an empty, migrated database, connecting as the application role.

use std::time::{Duration, Instant};

use fluxi_core::accounts::{create_user, NewUser};
use fluxi_core::db;
use fluxi_core::tenancy::migrations::{migrate_fleet, migrate_fleet_with, TENANT_MIGRATIONS};
use fluxi_core::workspaces::create_workspace;
use futures::stream::{self, StreamExt};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The real tenant migrations plus one additive migration that is pending everywhere.
static WITH_PENDING: std::sync::LazyLock<&'static [(&'static str, &'static str)]> = std::sync::LazyLock::new(|| {
    let mut all: Vec<(&'static str, &'static str)> = TENANT_MIGRATIONS.to_vec();
    all.push((
        "9999-01-01-000000_bench_additive",
        "ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false;",
    ));
    Box::leak(all.into_boxed_slice())
});

/// Workspace `i`, owned by one of `owners` in turn. The benchmark creates thousands of
/// workspaces: no daily cap.
async fn create_bench_workspace(conn: &mut diesel_async::AsyncPgConnection, owners: &[uuid::Uuid], i: usize) {
    let owner = owners[i % owners.len()];
    let audit = fluxi_core::testing::audit();
    create_workspace(conn, &audit, owner, &format!("Bench {i}"), time::OffsetDateTime::now_utc(), u32::MAX)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let total: usize = std::env::var("BENCH_SCHEMAS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let concurrency: usize = std::env::var("FLUXI_FLEET_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    db::run_public_migrations(&url).await.unwrap();
    let pool = db::build_pool(&url, concurrency + 2).unwrap();
    // One owner per parallel creator: an account's creations serialize on its row (the
    // daily cap's count), which is not what this measures.
    let mut owners = Vec::new();
    for k in 0..concurrency.max(1) {
        let mut conn = pool.get().await.unwrap();
        let email = format!("bench-owner-{k}@example.test");
        let owner = create_user(
            &mut conn,
            NewUser {
                email: &email,
                email_normalized: &email,
                display_name: "Bench Owner",
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNo",
            },
        )
        .await
        .unwrap();
        owners.push(owner.id);
    }

    // 1. Creating a workspace (registry row + membership + role + schema + tenant tables).
    let mut times = Vec::new();
    {
        let mut conn = pool.get().await.unwrap();
        for i in 0..200 {
            let t = Instant::now();
            create_bench_workspace(&mut conn, &owners, i).await;
            times.push(t.elapsed());
        }
    }
    times.sort();
    println!(
        "create workspace (200 sequential): p50 {:.1} ms, p95 {:.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );

    let mut made = 200;
    for checkpoint in [1_000usize, total] {
        if checkpoint > made {
            let t = Instant::now();
            stream::iter(made..checkpoint)
                .map(|i| {
                    let pool = pool.clone();
                    let owners = &owners;
                    async move {
                        let mut conn = pool.get().await.unwrap();
                        create_bench_workspace(&mut conn, owners, i).await;
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
            println!("  (created {} more workspaces in {:.1} s)", checkpoint - made, t.elapsed().as_secs_f64());
            made = checkpoint;
        }
        // 2. Nothing pending: one query, whatever the number of schemas.
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let report = migrate_fleet(&pool, concurrency).await.unwrap();
            assert_eq!(report.migrated, 0);
            runs.push(t.elapsed());
        }
        runs.sort();
        println!("fleet migration, nothing pending, {made} schemas: median {:.2} ms", runs[2].as_secs_f64() * 1e3);
    }

    // 3. One pending additive migration on every schema.
    let t = Instant::now();
    let report = migrate_fleet_with(&pool, concurrency, *WITH_PENDING).await.unwrap();
    println!(
        "fleet migration, one pending additive migration, {made} schemas (concurrency {concurrency}): {:.1} s ({} migrated, {} failed)",
        t.elapsed().as_secs_f64(),
        report.migrated,
        report.failed.len()
    );
}
