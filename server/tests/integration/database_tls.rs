//! Fluxi speaks TLS to PostgreSQL when `DATABASE_URL` asks for it, always verifies the
//! server's certificate chain and name (`require` included), and never falls back to
//! clear text. A TLS front on loopback (what a managed database or a TLS-terminating
//! proxy looks like) forwards to the test cluster, which itself stays untouched.
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use fluxi_core::db;
use fluxi_core::testing::TestDb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(diesel::QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    one: i32,
}

/// A fresh certificate authority and its certificate as PEM.
fn authority(name: &str) -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let pem = issuer.pem();
    (issuer, pem)
}

fn pem_file(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("fluxi-test-db-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Answers SSLRequests on loopback with a certificate for `localhost` only (issued by
/// `ca`), then forwards the decrypted stream to `backend`. Counts the TLS sessions that
/// carried traffic to the backend.
async fn tls_front(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, backend: String) -> (u16, Arc<AtomicUsize>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let carried = Arc::new(AtomicUsize::new(0));
    let count = carried.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let (acceptor, backend, count) = (acceptor.clone(), backend.clone(), count.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                    return;
                }
                client.write_all(b"S").await.unwrap();
                let Ok(mut tls) = acceptor.accept(client).await else { return };
                let mut db = tokio::net::TcpStream::connect(&backend).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut db).await;
            });
        }
    });
    (port, carried)
}

/// The test database's URL (application role) at another host and port, with `query`.
fn at(url: &str, host_port: &str, query: &str) -> String {
    let (credentials, rest) = url.split_once('@').unwrap();
    let (_, path) = rest.split_once('/').unwrap();
    format!("{credentials}@{host_port}/{path}{}{query}", if path.contains('?') { '&' } else { '?' })
}

fn backend_of(url: &str) -> String {
    let rest = url.split_once('@').unwrap().1;
    rest.split_once('/').unwrap().0.to_string()
}

#[tokio::test]
async fn database_connections_use_verified_tls_when_the_url_asks_for_it() {
    let test_db = TestDb::new().await;
    let (ca, ca_pem) = authority("Fluxi test database CA");
    let ca_file = pem_file(&ca_pem);
    let (port, carried) = tls_front(&ca, backend_of(&test_db.url)).await;
    let verified = at(
        &test_db.url,
        &format!("localhost:{port}"),
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );

    // A connection and the pool the server uses both go through TLS, and work.
    let mut conn = db::connect(&verified).await.unwrap();
    let one: One = diesel::sql_query("SELECT 1 AS one").get_result(&mut conn).await.unwrap();
    assert_eq!(one.one, 1);
    let pool = db::build_pool(&verified, 2).unwrap();
    let mut pooled = pool.get().await.unwrap();
    assert_eq!(diesel::sql_query("SELECT 1 AS one").get_result::<One>(&mut pooled).await.unwrap().one, 1);
    assert_eq!(AtomicUsize::load(&carried, Ordering::SeqCst), 2, "both connections came through the TLS front");

    // Every mode that uses TLS verifies: `require` without our authority does not trust
    // the server (its authority is in no public root store) …
    let err = db::connect(&at(&test_db.url, &format!("localhost:{port}"), "sslmode=require")).await.err().unwrap();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // … another authority is refused …
    let (_, other_pem) = authority("Someone else's CA");
    let other = pem_file(&other_pem);
    let wrong_ca =
        at(&test_db.url, &format!("localhost:{port}"), &format!("sslmode=verify-ca&sslrootcert={}", other.display()));
    assert!(db::connect(&wrong_ca).await.err().unwrap().to_string().contains("UnknownIssuer"));
    // … and so is a name the certificate does not carry (it names localhost only).
    let by_address = at(
        &test_db.url,
        &format!("127.0.0.1:{port}"),
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let err = db::connect(&by_address).await.err().unwrap();
    assert!(err.to_string().contains("certificate not valid for name"), "{err}");
    assert_eq!(AtomicUsize::load(&carried, Ordering::SeqCst), 2, "no refused handshake reached the database");

    // A missing authority file is a clear configuration error, without the password.
    let missing = at(&test_db.url, &format!("localhost:{port}"), "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let err = db::build_pool(&missing, 1).err().expect("missing CA file").to_string();
    assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
    let password = fluxi_core::testing::password_of(&test_db.url);
    assert!(password.is_empty() || !err.contains(&password), "{err}");

    for file in [ca_file, other] {
        let _ = std::fs::remove_file(file);
    }
}

/// A server (or someone in the middle) that answers "no TLS" gets no connection, and not
/// one byte after the SSLRequest: neither the startup message (user name) nor a password.
#[tokio::test]
async fn required_tls_never_falls_back_to_clear_text() {
    let test_db = TestDb::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refuser = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        client.read_exact(&mut request).await.unwrap();
        assert_eq!(request, SSL_REQUEST);
        client.write_all(b"N").await.unwrap();
        // Everything the client sends until it closes the connection.
        let mut after = Vec::new();
        client.read_to_end(&mut after).await.unwrap();
        after
    });
    let url = at(&test_db.url, &format!("localhost:{port}"), "sslmode=require");
    assert!(db::connect(&url).await.is_err());
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), refuser).await.unwrap().unwrap();
    assert!(after.is_empty(), "sent after the refusal: {} bytes", after.len());
}
