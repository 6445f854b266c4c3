//! Sign-in benchmarks over HTTP against a running server (prints figures; run by
//! scripts/bench-sign-in). Needs BENCH_URL, BENCH_DATABASE_URL (sign-up links are read
//! from the outbox: the benchmark's server sends no mail), and the server started with
//! FLUXI_TRUSTED_PROXIES=1 (each timing sample comes from its own network, so the
//! per-network failure limit does not end the run).
//!
//! 1. Throughput: rounds of BENCH_DURATION seconds with BENCH_CONNECTIONS workers,
//!    alternating password-only sign-ins (one account, as `scripts/bench` does) and
//!    two-factor sign-ins (password, then a code computed from the account's key; each
//!    account's code is used once per 30 s step, so BENCH_ACCOUNTS accounts take turns).
//!    Prints each round, the means and the ratio.
//! 2. Password-only sign-ins while BENCH_FLOODERS (16) clients flood sign-up from many
//!    networks, against the undisturbed rate of (1).
//! 3. Timing of the password step, one request at a time in shuffled order: unknown email,
//!    wrong password, right password of an account with two-factor authentication (which
//!    stops at the second step). Prints p10/p50/p90 and the medians' differences.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

const COOKIE_NAME: &str = "__Host-fluxi_session";
const PASSWORD: &str = "correct horse battery staple";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

/// Calls a server function as the hydrated app does; `forwarded_for` names the client
/// through the one trusted proxy.
async fn call(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    pairs: &[(&str, &str)],
    cookie: Option<&str>,
    forwarded_for: Option<&str>,
) -> Reply {
    let mut req = http
        .post(format!("{base}/api/{name}"))
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(pairs));
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("{COOKIE_NAME}={c}"));
    }
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let location = res.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let cookie = res.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let first = v.to_str().ok()?.split(';').next()?;
        first.strip_prefix(&format!("{COOKIE_NAME}=")).filter(|v| !v.is_empty()).map(str::to_string)
    });
    let body = res.text().await.unwrap_or_default();
    Reply { status, location, cookie, body }
}

fn totp(text_key: &str) -> totp_rs::Totp {
    let secret = totp_rs::Secret::try_from_base32(text_key.replace(' ', "")).expect("base 32 key");
    totp_rs::Builder::new().with_secret(secret).build_noncompliant()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

struct Enrolled {
    email: String,
    totp: totp_rs::Totp,
    /// The newest time step this benchmark has used (the server accepts each once).
    last_step: u64,
}

/// Signs up `email` through the whole flow — the form, the link from the outbox, the
/// password again — and returns the session cookie.
async fn sign_up(http: &reqwest::Client, base: &str, email: &str) -> String {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use fluxi_core::schema::outbox_emails;
    let form = [("display_name", "Bench"), ("email", email), ("password", PASSWORD)];
    let res = call(http, base, "signup", &form, None, None).await;
    assert_eq!(res.status, StatusCode::OK, "signup: {}", res.body);
    let db = std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL");
    let mut conn = fluxi_core::db::connect(&db).await.expect("the benchmark's database");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The mail is queued just after the answer.
    let token = loop {
        let body: Option<String> = outbox_emails::table
            .filter(outbox_emails::recipient.eq(email))
            .filter(outbox_emails::subject.eq("Finish creating your Fluxi account"))
            .select(outbox_emails::body)
            .first(&mut conn)
            .await
            .optional()
            .expect("outbox");
        if let Some(body) = body {
            let start = body.find("/confirm-sign-up/").expect("a link") + "/confirm-sign-up/".len();
            break body[start..start + 64].to_string();
        }
        assert!(Instant::now() < deadline, "no sign-up link mailed to {email}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let res = call(http, base, "confirm_sign_up", &[("token", &token), ("password", PASSWORD)], None, None).await;
    assert_eq!(res.status, StatusCode::OK, "confirm_sign_up: {}", res.body);
    res.cookie.expect("a session")
}

/// Signs up `email`, sets up an authenticator app and confirms it.
async fn enrol(http: &reqwest::Client, base: &str, email: String) -> Enrolled {
    let mut cookie = sign_up(http, base, &email).await;
    let res = call(http, base, "start_totp_setup", &[], Some(&cookie), None).await;
    assert_eq!(res.status, StatusCode::OK, "start_totp_setup: {}", res.body);
    cookie = res.cookie.unwrap_or(cookie);
    let page: serde_json::Value =
        serde_json::from_str(&call(http, base, "security_page", &[], Some(&cookie), None).await.body).unwrap();
    let totp = totp(page["pending"]["text_key"].as_str().expect("a pending set-up"));
    let step = unix_now() / 30;
    let code = totp.generate(step * 30).to_string();
    let res =
        call(http, base, "confirm_totp_setup", &[("code", &code), ("password", PASSWORD)], Some(&cookie), None).await;
    assert_eq!(res.status, StatusCode::OK, "confirm_totp_setup: {}", res.body);
    Enrolled { email, totp, last_step: step }
}

/// Takes the next account that still has an unused code for now or the next step, with
/// that code; puts it back at the end of the queue.
fn next_code(accounts: &Mutex<VecDeque<Enrolled>>) -> Option<(String, String)> {
    let mut queue = accounts.lock().unwrap();
    for _ in 0..queue.len() {
        let mut account = queue.pop_front().unwrap();
        let now = unix_now() / 30;
        let step = if account.last_step < now { Some(now) } else { (account.last_step == now).then_some(now + 1) };
        let found = step.map(|step| {
            account.last_step = step;
            (account.email.clone(), account.totp.generate(step * 30).to_string())
        });
        queue.push_back(account);
        if found.is_some() {
            return found;
        }
    }
    None
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    PasswordOnly,
    TwoFactor,
}

/// Runs `connections` workers for `duration`; returns complete sign-ins per second.
async fn round(
    http: &reqwest::Client,
    base: &str,
    kind: Kind,
    accounts: &Arc<Mutex<VecDeque<Enrolled>>>,
    connections: usize,
    duration: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (http, base, accounts, done) = (http.clone(), base.to_string(), accounts.clone(), done.clone());
            tokio::spawn(async move {
                while start.elapsed() < duration {
                    match kind {
                        Kind::PasswordOnly => {
                            let res = call(
                                &http,
                                &base,
                                "login",
                                &[("email", "plain@example.test"), ("password", PASSWORD)],
                                None,
                                None,
                            )
                            .await;
                            assert_eq!(res.status, StatusCode::OK, "login: {}", res.body);
                            assert_eq!(res.location.as_deref(), Some("/account"), "signed in");
                        }
                        Kind::TwoFactor => {
                            let (email, code) = next_code(&accounts).expect("enough accounts for the round");
                            let res =
                                call(&http, &base, "login", &[("email", &email), ("password", PASSWORD)], None, None)
                                    .await;
                            assert_eq!(res.location.as_deref(), Some("/login/mfa"), "login: {}", res.body);
                            let pending = res.cookie.expect("a pending session");
                            let res =
                                call(&http, &base, "verify_sign_in", &[("code", &code)], Some(&pending), None).await;
                            assert_eq!(res.status, StatusCode::OK, "verify_sign_in: {}", res.body);
                            assert_eq!(res.location.as_deref(), Some("/account"), "signed in");
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BENCH_URL").expect("BENCH_URL");
    let n_accounts = env_or("BENCH_ACCOUNTS", 1000) as usize;
    let connections = env_or("BENCH_CONNECTIONS", 4) as usize;
    let duration = Duration::from_secs(env_or("BENCH_DURATION", 10));
    let rounds = env_or("BENCH_ROUNDS", 3);
    let samples = env_or("BENCH_SAMPLES", 200) as usize;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    sign_up(&http, &base, "plain@example.test").await;
    let started = Instant::now();
    let mut enrolled = Vec::new();
    for batch in (0..n_accounts).collect::<Vec<_>>().chunks(connections) {
        let jobs = batch.iter().map(|i| enrol(&http, &base, format!("mfa-{i}@example.test")));
        enrolled.extend(futures::future::join_all(jobs).await);
    }
    eprintln!(
        "{n_accounts} accounts with two-factor authentication set up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let timing_accounts: Vec<String> = enrolled.iter().take(samples).map(|a| a.email.clone()).collect();
    let accounts = Arc::new(Mutex::new(enrolled.into_iter().collect::<VecDeque<_>>()));

    println!("## Sign-ins per second, {connections} connections, rounds of {} s", duration.as_secs());
    let (mut plain, mut mfa) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        let p = round(&http, &base, Kind::PasswordOnly, &accounts, connections, duration).await;
        let m = round(&http, &base, Kind::TwoFactor, &accounts, connections, duration).await;
        println!("round {r}: password only {p:.1}/s, password + code {m:.1}/s");
        plain.push(p);
        mfa.push(m);
    }
    let (p, m) = (plain.iter().sum::<f64>() / plain.len() as f64, mfa.iter().sum::<f64>() / mfa.len() as f64);
    println!("mean: password only {p:.1}/s, password + code {m:.1}/s = {:.1} % of password only", m / p * 100.0);

    // A sign-up flood from many networks (the limits raised by the script, as for a
    // distributed flood): what is left of the sign-ins of existing accounts.
    let flooders = env_or("BENCH_FLOODERS", 16) as usize;
    println!("## Password-only sign-ins while {flooders} clients flood sign-up, rounds of {} s", duration.as_secs());
    let signed_up = Arc::new(AtomicU64::new(0));
    let mut flooded = Vec::new();
    for r in 1..=rounds {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood: Vec<_> = (0..flooders)
            .map(|_| {
                let (http, base, stop, signed_up) = (http.clone(), base.clone(), stop.clone(), signed_up.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = signed_up.fetch_add(1, Ordering::Relaxed);
                        let (email, network) =
                            (format!("flood-{n}@example.test"), format!("10.{}.{}.1", n / 250 % 250, n % 250));
                        let form = [("display_name", "Flood"), ("email", email.as_str()), ("password", PASSWORD)];
                        call(&http, &base, "signup", &form, None, Some(&network)).await;
                    }
                })
            })
            .collect();
        let f = round(&http, &base, Kind::PasswordOnly, &accounts, connections, duration).await;
        stop.store(true, Ordering::Relaxed);
        for task in flood {
            task.await.unwrap();
        }
        println!("round {r}: {f:.1}/s");
        flooded.push(f);
    }
    let f = flooded.iter().sum::<f64>() / flooded.len() as f64;
    println!("mean: {f:.1}/s = {:.1} % of the undisturbed {p:.1}/s", f / p * 100.0);

    // Wrong passwords go to password-only accounts of their own, four each (the fifth
    // would be throttled): this times the check, not the refusal.
    let mut targets = Vec::new();
    for i in 0..samples.div_ceil(4) {
        let email = format!("target-{i}@example.test");
        sign_up(&http, &base, &email).await;
        targets.push(email);
    }
    println!("## Password step, one request at a time, {samples} of each in shuffled order (ms)");
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut order: Vec<usize> = (0..samples * 3).map(|i| i % 3).collect();
    // A fixed shuffle (xorshift), so runs compare.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut taken = [0usize; 3];
    for (n, which) in order.into_iter().enumerate() {
        let i = taken[which];
        taken[which] += 1;
        let (email, password, expect) = match which {
            0 => (format!("nobody-{i}@example.test"), PASSWORD, StatusCode::UNAUTHORIZED),
            1 => (targets[i / 4].clone(), "not the password at all", StatusCode::UNAUTHORIZED),
            _ => (timing_accounts[i].clone(), PASSWORD, StatusCode::OK),
        };
        let network = format!("10.{}.{}.7", n / 250, n % 250);
        let started = Instant::now();
        let res = call(&http, &base, "login", &[("email", &email), ("password", password)], None, Some(&network)).await;
        times[which].push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(res.status, expect, "{}", res.body);
    }
    let mut medians = [0.0; 3];
    for (which, label) in ["unknown email", "wrong password", "right password, code pending"].iter().enumerate() {
        let t = &mut times[which];
        t.sort_by(f64::total_cmp);
        medians[which] = pct(t, 0.5);
        println!("{label}: p10 {:.1}, p50 {:.1}, p90 {:.1}", pct(t, 0.1), pct(t, 0.5), pct(t, 0.9));
    }
    println!(
        "medians against unknown email: wrong password {:+.1} ms ({:+.1} %), right password + code pending {:+.1} ms ({:+.1} %)",
        medians[1] - medians[0],
        (medians[1] / medians[0] - 1.0) * 100.0,
        medians[2] - medians[0],
        (medians[2] / medians[0] - 1.0) * 100.0
    );
}
