//! The listener's bounds (server/src/listen.rs): slow clients, connection caps, TLS and
//! the redirect to HTTPS, over real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use server::listen::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{self, TestApp};

fn addr_of(app: &TestApp) -> SocketAddr {
    let authority = app.base.split("://").nth(1).unwrap();
    let port: u16 = authority.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A connection from `source` (any address in 127.0.0.0/8 is this machine).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes `stream` within `limit`: reads until end of stream or a
/// reset, ignoring anything it sends first.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Starts a request and then sends its headers one byte at a time, never finishing:
/// until the server closes the connection (a write fails), or for 60 s.
async fn trickle(mut stream: TcpStream) -> TcpStream {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let dripping = async {
        for byte in b"X-Slow: ".iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), dripping).await;
    stream
}

/// A slowloris — many connections from one network trickling header bytes — neither
/// holds connections past the header time limit nor takes slots from other clients.
#[tokio::test]
async fn slow_clients_cannot_hold_connections() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 1000,
        max_per_network: Some(20),
        ..ConnectionLimits::default()
    };
    let app = TestApp::spawn_with(common::Options { connection_limits: limits, ..Default::default() }).await;
    let server = addr_of(&app);
    let attacker = [127, 0, 0, 2];
    let mut drips = Vec::new();
    for _ in 0..20 {
        let stream = connect_from(attacker, server).await;
        drips.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut stream = trickle(stream).await;
            let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
            (closed, started.elapsed())
        }));
    }
    // One more from the same network is closed at once: its slots are all taken.
    let mut extra = connect_from(attacker, server).await;
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "no answer beyond the network's slots: {}", String::from_utf8_lossy(&answer));
    // Everyone else is served meanwhile.
    for _ in 0..5 {
        assert_eq!(app.client().get("/healthz").await.status, StatusCode::OK);
    }
    // Each trickling connection is closed by the server after the header time limit,
    // although it kept sending.
    for drip in drips {
        let (closed, after) = drip.await.unwrap();
        assert!(closed, "closed by the server");
        assert!(after < Duration::from_secs(30), "closed after {after:?}, not when the client gave up");
    }
    // Their slots are given back: the network is served again.
    let mut again = connect_from(attacker, server).await;
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), again.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

/// Beyond the total number of connections a new one is closed at once, and a slot given
/// back serves the next.
#[tokio::test]
async fn connections_beyond_the_total_are_closed_at_once() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 5,
        max_per_network: None,
        ..ConnectionLimits::default()
    };
    let app = TestApp::spawn_with(common::Options { connection_limits: limits, ..Default::default() }).await;
    let server = addr_of(&app);
    let mut idle = Vec::new();
    for i in 0..5u8 {
        idle.push(connect_from([127, 0, 1, i], server).await);
    }
    let mut refused = connect_from([127, 0, 2, 1], server).await;
    assert!(closed_within(&mut refused, Duration::from_secs(10)).await, "closed without a request");
    drop(idle.pop());
    // The server notices the hang-up and the slot serves the next connection.
    let mut served = false;
    for _ in 0..100 {
        let mut next = connect_from([127, 0, 2, 2], server).await;
        let _ = next.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed slot serves a new connection");
}

/// Whether a connection from `source` gets an answer to one request within a few seconds.
async fn served_from(source: [u8; 4], server: SocketAddr) -> bool {
    let mut stream = connect_from(source, server).await;
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// A client that asks for a lot and stops reading cannot hold its connection: a response
/// write that makes no progress for the stall limit ends it, and its slot comes back.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    let limits = ConnectionLimits {
        max_per_network: Some(1),
        write_stall_limit: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let app = TestApp::spawn_with(common::Options { connection_limits: limits, ..Default::default() }).await;
    let server = addr_of(&app);
    let reader = [127, 0, 3, 1];
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((reader, 0))).unwrap();
    let mut greedy = socket.connect(server).await.unwrap();
    // A thousand pipelined page requests: more answers than the socket buffers hold,
    // never read.
    let request = b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let pipelined: Vec<u8> = request.iter().copied().cycle().take(request.len() * 1000).collect();
    let _ = tokio::time::timeout(Duration::from_secs(5), greedy.write_all(&pipelined)).await;
    // The network's one slot is taken while the server is stuck writing...
    assert!(!served_from(reader, server).await, "the slot is held while the write stalls");
    // ...until the stall limit drops the connection.
    let mut served = false;
    for _ in 0..300 {
        if served_from(reader, server).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the stalled connection was dropped and its slot given back");
    drop(greedy);
}

struct TestCertificate {
    _dir: tempdir::Dir,
    files: server::listen::TlsFiles,
    pem: String,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn test_certificate() -> TestCertificate {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("fluxi-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = certified.cert.pem();
    let (certificate_chain, private_key) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&certificate_chain, &pem).unwrap();
    std::fs::write(&private_key, certified.signing_key.serialize_pem()).unwrap();
    TestCertificate { _dir: tempdir::Dir(dir), files: server::listen::TlsFiles { certificate_chain, private_key }, pem }
}

/// The server terminates TLS itself: pages and server functions over HTTPS with HSTS,
/// nothing in clear on that port, and plain HTTP elsewhere redirected to the same path.
#[tokio::test]
async fn tls_is_terminated_and_plain_http_redirected() {
    let certificate = test_certificate();
    let app = TestApp::spawn_with(common::Options { tls: Some(certificate.files.clone()), ..Default::default() }).await;
    assert!(app.base.starts_with("https://localhost:"));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate.pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap();
    let page = client.get(format!("{}/login", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("strict-transport-security").is_some());
    let healthz = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    // A server function over TLS (the edge's checks apply as over HTTP).
    let r = client
        .post(format!("{}/api/login", app.base))
        .header("origin", &app.base)
        .form(&[("email", "nobody@example.test"), ("password", "not the password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", r.text().await.unwrap());
    // Plain HTTP on the TLS port gets no page.
    let plain = reqwest::Client::new().get(format!("http://{}/login", addr_of(&app))).send().await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_addr = listener.local_addr().unwrap();
    tokio::spawn(server::listen::serve_https_redirect(
        listener,
        app.base.clone(),
        ConnectionLimits::default(),
        std::future::pending(),
    ));
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_follow.post(format!("http://{redirect_addr}/login?next=%2Faccount")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, format!("{}/login?next=%2Faccount", app.base));
}

/// A certificate file that is not one is named in the error; its content is not shown.
#[test]
fn unusable_tls_files_are_named_not_shown() {
    let certificate = test_certificate();
    let swapped = server::listen::TlsFiles {
        certificate_chain: certificate.files.private_key.clone(),
        private_key: certificate.files.private_key.clone(),
    };
    let err = swapped.acceptor().err().expect("a key is not a certificate").to_string();
    assert!(err.contains("FLUXI_TLS_CERT") && err.contains("key.pem"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}
