//! Slowloris load for `scripts/bench` (a load generator, not a measurement): holds
//! `BENCH_SLOW_CONNECTIONS` connections to `BENCH_URL`'s host, each from its own loopback
//! address (as a distributed attack would), each sending a request's headers one byte a
//! second and never finishing them; a connection the server closes is opened again.
//! Runs for `BENCH_SLOW_SECONDS`, then prints what the server did with them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed_to_open: AtomicU64,
    closed_by_server: AtomicU64,
    open_now: AtomicU64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let url = std::env::var("BENCH_URL").expect("BENCH_URL");
    let port: u16 = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("a port");
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let connections: u32 = env_or("BENCH_SLOW_CONNECTIONS", 1000);
    let seconds: u64 = env_or("BENCH_SLOW_SECONDS", 20);
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..connections {
        // 127.1.x.y: a different client network for each connection.
        let source = SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250 + 1) as u8], 0));
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let socket = TcpSocket::new_v4().and_then(|s| s.bind(source).map(|_| s));
                let mut stream = match socket {
                    Ok(socket) => match socket.connect(target).await {
                        Ok(stream) => stream,
                        Err(_) => {
                            counts.failed_to_open.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                    Err(_) => return,
                };
                counts.opened.fetch_add(1, Ordering::Relaxed);
                counts.open_now.fetch_add(1, Ordering::Relaxed);
                let mut alive = stream.write_all(b"GET /account HTTP/1.1\r\nHost: localhost\r\n").await.is_ok();
                while alive && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    alive = stream.write_all(b"X").await.is_ok();
                }
                counts.open_now.fetch_sub(1, Ordering::Relaxed);
                if !alive {
                    counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    // Samples how many are held, once a second.
    let sampler = {
        let counts = counts.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push(counts.open_now.load(Ordering::Relaxed));
            }
            samples
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    let samples = sampler.await.unwrap_or_default();
    let mean = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    println!(
        "SLOWLORIS connections={connections} opened={} closed_by_server={} failed_to_open={} held_mean={mean:.0}",
        counts.opened.load(Ordering::Relaxed),
        counts.closed_by_server.load(Ordering::Relaxed),
        counts.failed_to_open.load(Ordering::Relaxed),
    );
}
