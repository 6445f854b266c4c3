//! Audit trail benchmarks (prints figures; run by scripts/bench-audit).
//!
//! `load`: makes a workspace with BENCH_EVENTS (5,000,000) events spread over the last
//! 12.5 months and one with 10,000, owned by the account BENCH_OWNER_EMAIL, and prints
//! the big one's slug. `measure`: viewer pages on both (first page, a page 100,000 events
//! deep — 5,000 on the small one —, unfiltered and filtered by actor and by action),
//! p50/p99 and the big/small ratio; then what an event adds to a member role change.
//! `prune`: drops the oldest month (≈ 400,000 events) and times it.
//! Needs DATABASE_URL (migrated, as the application role).

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fluxi_core::audit::query::{self, ActionFilter, ActorFilter, AuditReader, Cursor, Filter};
use fluxi_core::audit::{Action, Detail, Event, Outcome, Target};
use fluxi_core::db;
use fluxi_core::schema::{memberships, users, workspaces};
use time::OffsetDateTime;
use uuid::Uuid;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Bulk-loads `n` events into `chain` (times evenly over `span` up to now, a realistic
/// mix of actions, 20 actors, 2 % denied), in batches of 250,000, then moves the head.
/// Hashes are random: these rows measure reads, not verification.
async fn load(conn: &mut AsyncPgConnection, chain: Uuid, actors: &[Uuid], n: i64, span: time::Duration) {
    let now = OffsetDateTime::now_utc();
    let start = now - span;
    let actors: Vec<String> = actors.iter().map(|a| format!("'{a}'")).collect();
    let mut from = 1;
    while from <= n {
        let to = (from + 249_999).min(n);
        diesel::sql_query(format!(
            "INSERT INTO audit_events (chain_id, seq, occurred_at, workspace_id, account_id, actor_kind, actor_id, \
               actor_email_pn, action, action_group, target_kind, target_id, outcome, request_id, network_pn, agent_pn, \
               pseudonym_epoch, detail, hash) \
             SELECT $1, g, $2 + (($3 - $2) * (g::float8 / $4)), $1, NULL, 'user', \
               (ARRAY[{actors}]::uuid[])[1 + (g * 7919) % 20], sha256(int8send(g % 20)), \
               (ARRAY['invitation.sent','member.role_changed','audit.viewed','invitation.accepted','member.removed'])[1 + g % 5], \
               (ARRAY['invitations','members','audit','invitations','members'])[1 + g % 5], \
               'member', gen_random_uuid(), CASE WHEN g % 50 = 0 THEN 'denied' ELSE 'succeeded' END, gen_random_uuid(), \
               sha256(int8send(g % 300)), sha256(int8send(g % 40)), 1, '{{\"type\":\"none\"}}', sha256(int8send(g)) \
             FROM generate_series($5::bigint, $6::bigint) g",
            actors = actors.join(",")
        ))
        .bind::<SqlUuid, _>(chain)
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(n)
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .execute(conn)
        .await
        .unwrap();
        from = to + 1;
    }
    diesel::sql_query("UPDATE audit_chains SET last_seq = $2, last_at = $3 WHERE chain_id = $1")
        .bind::<SqlUuid, _>(chain)
        .bind::<BigInt, _>(n)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await
        .unwrap();
    diesel::sql_query("ANALYZE audit_events").execute(conn).await.unwrap();
}

/// The id of the account with this (normalized) address.
async fn user_id(conn: &mut AsyncPgConnection, email: &str) -> Uuid {
    users::table.filter(users::email_normalized.eq(email)).select(users::id).first(conn).await.unwrap()
}

async fn chain_of(conn: &mut AsyncPgConnection, slug: &str) -> Uuid {
    workspaces::table.filter(workspaces::slug.eq(slug)).select(workspaces::id).first(conn).await.unwrap()
}

async fn time_pages(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    filter: &Filter,
    cursor: Cursor,
    runs: usize,
) -> (f64, f64) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let page = query::page(conn, reader, filter, cursor).await.unwrap();
        times.push(t.elapsed());
        assert!(!page.events.is_empty(), "{cursor:?} {filter:?}: empty page");
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99))
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    // cargo bench adds its own flags (`--bench`): the mode is the one known word.
    let mode =
        std::env::args().skip(1).find(|a| ["load", "measure", "prune"].contains(&a.as_str())).unwrap_or_default();
    let pool = db::build_pool(&url, 4).unwrap();
    let mut conn = pool.get().await.unwrap();
    let owner_email = std::env::var("BENCH_OWNER_EMAIL").unwrap_or_else(|_| "owner@example.test".into());
    match mode.as_str() {
        "load" => {
            let n: i64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
            let now = OffsetDateTime::now_utc();
            fluxi_core::audit::maintenance::ensure_partitions(&mut conn, now - time::Duration::days(400), now)
                .await
                .unwrap();
            let owner: Uuid = user_id(&mut conn, &owner_email).await;
            let audit = fluxi_core::testing::audit();
            let mut slugs = Vec::new();
            for name in ["Big Trail", "Small Trail"] {
                let ws = fluxi_core::workspaces::create_workspace(&mut conn, &audit, owner, name, now, u32::MAX)
                    .await
                    .unwrap();
                slugs.push(ws.slug);
            }
            // 20 member accounts act in both.
            let mut actors = Vec::new();
            for i in 0..20 {
                let email = format!("actor{i}@example.test");
                let user = fluxi_core::accounts::create_user(
                    &mut conn,
                    fluxi_core::accounts::NewUser {
                        email: &email,
                        email_normalized: &email,
                        display_name: &format!("Actor {i}"),
                        password_hash:
                            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNo",
                    },
                )
                .await
                .unwrap();
                actors.push(user.id);
            }
            let t = Instant::now();
            let big = chain_of(&mut conn, &slugs[0]).await;
            let small = chain_of(&mut conn, &slugs[1]).await;
            // Their creation events would sit at seq 1; start the bulk rows after a clean slate
            // (sealed first, so the running server's sealer cannot chain them later).
            fluxi_core::audit::seal_all(&mut conn).await.unwrap();
            diesel::sql_query("DELETE FROM audit_events WHERE chain_id = ANY($1)")
                .bind::<diesel::sql_types::Array<SqlUuid>, _>(vec![big, small])
                .execute(&mut conn)
                .await
                .unwrap();
            for (chain, count) in [(big, n), (small, 10_000)] {
                for actor in &actors {
                    diesel::insert_into(memberships::table)
                        .values((
                            memberships::workspace_id.eq(chain),
                            memberships::user_id.eq(actor),
                            memberships::role.eq("member"),
                        ))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
                load(&mut conn, chain, &actors, count, time::Duration::days(380)).await;
            }
            eprintln!("loaded {n} + 10,000 events in {:.0} s", t.elapsed().as_secs_f64());
            println!("{}", slugs[0]);
        }
        "measure" => {
            let slug_big = std::env::var("BENCH_SLUG").expect("BENCH_SLUG");
            let big = chain_of(&mut conn, &slug_big).await;
            let small: Uuid = workspaces::table
                .filter(workspaces::name.eq("Small Trail"))
                .select(workspaces::id)
                .first(&mut conn)
                .await
                .unwrap();
            let actor: Uuid = user_id(&mut conn, "actor3@example.test").await;
            let owner: Uuid = user_id(&mut conn, &owner_email).await;
            let mut readers = Vec::new();
            // Readers come from the owner's access, as in the app.
            for chain in [big, small] {
                let slug: String =
                    workspaces::table.find(chain).select(workspaces::slug).first(&mut conn).await.unwrap();
                let access = fluxi_core::workspaces::authorize(
                    &mut conn,
                    &fluxi_core::testing::audit(),
                    owner,
                    fluxi_core::sessions::SignedInWith::PasswordOnly,
                    &slug,
                )
                .await
                .unwrap();
                readers.push(AuditReader::for_workspace(&access).unwrap());
            }
            let filters = [
                ("unfiltered", Filter::default()),
                ("by actor", Filter { actor: Some(ActorFilter::Accounts(vec![actor])), ..Default::default() }),
                ("by action", Filter { action: Some(ActionFilter::One(Action::RoleChanged)), ..Default::default() }),
            ];
            let heads: Vec<i64> = {
                let mut h = Vec::new();
                for r in &readers {
                    h.push(query::head(&mut conn, r).await.unwrap());
                }
                h
            };
            println!("| Query | 5M events p50 / p99 (ms) | 10k events p50 / p99 (ms) | ratio of p50 |");
            println!("|---|---|---|---|");
            for (name, filter) in &filters {
                for (depth_name, depths) in [("first page", [0i64, 0]), ("deep page", [100_000, 5_000])] {
                    let mut results = Vec::new();
                    for (i, r) in readers.iter().enumerate() {
                        let cursor = if depths[i] == 0 { Cursor::Newest } else { Cursor::Before(heads[i] - depths[i]) };
                        // Warm-up, then measured runs.
                        time_pages(&mut conn, r, filter, cursor, 5).await;
                        results.push(time_pages(&mut conn, r, filter, cursor, 200).await);
                    }
                    println!(
                        "| {depth_name}, {name} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |",
                        results[0].0,
                        results[0].1,
                        results[1].0,
                        results[1].1,
                        results[0].0 / results[1].0
                    );
                }
            }
            // What an event adds to a member role change: the same write, with and
            // without its event, alternating, in transactions of their own; and, between
            // them, the role change as a person makes it (the owner's request through its
            // server function on the running server, another member, always audited).
            let member = actor;
            let requested: Uuid = user_id(&mut conn, "actor4@example.test").await;
            let small_slug: String =
                workspaces::table.find(small).select(workspaces::slug).first(&mut conn).await.unwrap();
            let server = std::env::var("BENCH_URL").ok().zip(std::env::var("BENCH_COOKIE").ok());
            let http = reqwest::Client::new();
            let audit = fluxi_core::testing::audit();
            let mut plain = Vec::new();
            let mut audited = Vec::new();
            let mut requests = Vec::new();
            for i in 0..3_000 {
                let role = if i % 2 == 0 { "viewer" } else { "member" };
                if i % 6 >= 4 {
                    let Some((url, cookie)) = &server else { continue };
                    let t = Instant::now();
                    let res = http
                        .post(format!("{url}/api/change_member_role"))
                        .header("cookie", cookie)
                        .header("sec-fetch-site", "same-origin")
                        .form(&[("slug", small_slug.as_str()), ("user_id", &requested.to_string()), ("role", role)])
                        .send()
                        .await
                        .unwrap();
                    assert!(res.status().is_success(), "change_member_role: {}", res.status());
                    res.bytes().await.unwrap();
                    if i >= 300 {
                        requests.push(t.elapsed());
                    }
                    continue;
                }
                let with_event = i % 6 >= 2;
                let t = Instant::now();
                conn.transaction::<_, diesel::result::Error, _>(|c| {
                    async move {
                        workspaces::table.find(small).select(workspaces::id).for_update().first::<Uuid>(c).await?;
                        let update = diesel::update(
                            memberships::table
                                .filter(memberships::workspace_id.eq(small))
                                .filter(memberships::user_id.eq(member)),
                        )
                        .set(memberships::role.eq(role));
                        if !with_event {
                            update.execute(c).await?;
                            return Ok(());
                        }
                        // As `workspaces::change_role` records it: behind the update.
                        let detail = Detail::RoleChange {
                            from: fluxi_core::workspaces::Role::Member,
                            to: fluxi_core::workspaces::Role::Viewer,
                        };
                        let event = Event::workspace(
                            small,
                            Action::RoleChanged,
                            Target::Member(member),
                            Outcome::Succeeded,
                            detail,
                        );
                        let c: &AsyncPgConnection = c;
                        audit.record_behind(c, update.execute(&mut &*c), event).await?;
                        Ok(())
                    }
                    .scope_boxed()
                })
                .await
                .unwrap();
                if i >= 300 {
                    if with_event {
                        audited.push(t.elapsed())
                    } else {
                        plain.push(t.elapsed())
                    }
                }
            }
            plain.sort();
            audited.sort();
            let (p, a) = (pct(&plain, 0.5), pct(&audited, 0.5));
            println!(
                "member role change: without event p50 {p:.3} ms, with event p50 {a:.3} ms: +{:.1} %",
                (a / p - 1.0) * 100.0
            );
            if !requests.is_empty() {
                // The request without its event is the request less what the event adds
                // to the same write (the difference just measured).
                requests.sort();
                let r = pct(&requests, 0.5);
                println!(
                    "member role change as a request: p50 {r:.3} ms, p99 {:.3} ms; the event's {:.3} ms: +{:.1} % over the request without it",
                    pct(&requests, 0.99),
                    a - p,
                    (a - p) / (r - (a - p)) * 100.0
                );
            }
        }
        "prune" => {
            // Retention that reaches exactly the oldest month with events.
            #[derive(QueryableByName)]
            struct Oldest {
                #[diesel(sql_type = Timestamptz)]
                at: OffsetDateTime,
            }
            let oldest = diesel::sql_query("SELECT min(occurred_at) AS at FROM audit_events")
                .get_result::<Oldest>(&mut conn)
                .await
                .unwrap()
                .at;
            // The second month is the first whole one (≈ 400,000 events): prune through it.
            let next = |at: OffsetDateTime| {
                let d = at.date();
                let (y, m) = if d.month() == time::Month::December {
                    (d.year() + 1, time::Month::January)
                } else {
                    (d.year(), d.month().next())
                };
                time::Date::from_calendar_date(y, m, 1).unwrap().midnight().assume_utc()
            };
            // The oldest month is partial (the load starts mid-month); the next one is the
            // first whole month (≈ 400,000 events). Prune the first, then time the second.
            let signer = fluxi_core::audit::AuditSigner::random();
            let clock = fluxi_core::clock::SystemClock;
            for (n, month_end) in [next(oldest), next(next(oldest))].into_iter().enumerate() {
                let retention = OffsetDateTime::now_utc() - month_end;
                let t = Instant::now();
                let report =
                    fluxi_core::audit::maintenance::prune(&mut conn, &signer, &clock, retention).await.unwrap();
                println!(
                    "prune {} month: {} event(s) in {} period(s), {} chain(s): {:.0} ms",
                    if n == 0 { "the oldest (partial)" } else { "the next (whole)" },
                    report.events,
                    report.periods,
                    report.chains,
                    t.elapsed().as_secs_f64() * 1e3
                );
                if let Some(problem) = &report.refused {
                    println!("  refused: {problem}");
                }
            }
        }
        other => panic!("unknown mode {other:?}: load, measure or prune"),
    }
}
