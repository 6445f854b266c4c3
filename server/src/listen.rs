//! Accepting connections, with bounds a slow or greedy client cannot get around.
//!
//! - Every connection holds a slot: at most `max_connections` at once, and at most
//!   `max_per_network` from one client network (an IPv4 address or IPv6 /64). Beyond
//!   either, a new connection is closed at once, so the slots left are for everyone else.
//! - A request's headers must arrive within `header_read_timeout`, counted from when the
//!   server starts waiting for them (an idle keep-alive connection included), and a TLS
//!   handshake within the same time. A client that trickles bytes (slowloris) holds its
//!   slot that long at most. Bodies and handlers are bounded by the request time limit,
//!   and a response write that makes no progress for `write_stall_limit` (a client that
//!   stopped reading) ends the connection.
//! - TLS is optional (rustls, [`TlsFiles`]); HTTP/1.1 only, so no HTTP/2 stream
//!   bookkeeping to abuse (put an HTTP/2 proxy in front for that).
//!
//! axum's own `serve` has no header-read timeout (it sets no timer) and no connection cap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Bounds on connections (`FLUXI_MAX_CONNECTIONS`, `FLUXI_MAX_CONNECTIONS_PER_NETWORK`,
/// `FLUXI_HEADER_READ_TIMEOUT_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// `None` behind a reverse proxy, where every connection comes from the proxy.
    pub max_per_network: Option<usize>,
    /// How long a response write may make no progress before the connection is dropped.
    pub write_stall_limit: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_per_network: Some(256),
            write_stall_limit: Duration::from_secs(30),
        }
    }
}

/// How long shutdown waits for open connections to finish their current request.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The process's soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// when unknown or unlimited.
pub fn open_file_limit() -> Option<u64> {
    soft_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn soft_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Warns when `max_connections` could run the process out of file descriptors before
/// the cap is reached: accepting would then fail, and so would new database connections.
pub fn check_file_limit(limits: &ConnectionLimits, other_files: usize) {
    if let Some(soft) = open_file_limit() {
        let needed = (limits.max_connections + other_files) as u64;
        if soft < needed {
            tracing::warn!(
                soft_limit = soft,
                needed,
                "the open-file limit is below FLUXI_MAX_CONNECTIONS plus the database pool: raise `ulimit -n` \
                 (LimitNOFILE) or lower FLUXI_MAX_CONNECTIONS"
            );
        }
    }
}

/// Certificate chain and private key, PEM files (`FLUXI_TLS_CERT`, `FLUXI_TLS_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate_chain: std::path::PathBuf,
    pub private_key: std::path::PathBuf,
}

impl TlsFiles {
    /// A TLS acceptor for these files: TLS 1.2 and 1.3 with rustls' safe defaults,
    /// HTTP/1.1 by ALPN. The error names the file, never its content.
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        use anyhow::Context;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&self.certificate_chain)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("FLUXI_TLS_CERT {}: {e}", self.certificate_chain.display()))?;
        if chain.is_empty() {
            anyhow::bail!("FLUXI_TLS_CERT {}: no certificate in the file", self.certificate_chain.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .map_err(|e| anyhow::anyhow!("FLUXI_TLS_KEY {}: {e}", self.private_key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("FLUXI_TLS_CERT and FLUXI_TLS_KEY do not make a usable certificate and key pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections
/// finish their current request. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Slots::new(limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stopping = stop_rx.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it was
                    // accepted: not fatal; wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => break,
        };
        let Some(slot) = slots.take(peer) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, tls, stop) = (router.clone(), tls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, peer, router, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, router, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Stop accepting, then wait for every slot to come back (every connection done), for
    // a while: a connection stuck anyway must not keep the process from exiting.
    drop(listener);
    let drained = slots.total.acquire_many(limits.max_connections as u32);
    if tokio::time::timeout(DRAIN_LIMIT, drained).await.is_err() {
        tracing::warn!("connections still open after the shutdown wait; closing them");
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_stall_limit));
    let stream = Box::pin(stream);
    let service = router.map_request(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result),
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Header timeouts, hang-ups and malformed requests: the client's doing.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The connection slots: a semaphore for the total, a count per client network.
struct Slots {
    total: Arc<Semaphore>,
    per_network: Mutex<HashMap<String, usize>>,
    max_per_network: Option<usize>,
}

impl Slots {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_network: Mutex::new(HashMap::new()),
            max_per_network: limits.max_per_network,
        }
    }

    fn take(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let network = fluxi_core::client::client_network(peer.ip());
        if let Some(max) = self.max_per_network {
            let mut counts = self.per_network.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(network.clone()).or_insert(0);
            if *count >= max {
                return None;
            }
            *count += 1;
        }
        Some(Slot { _permit: permit, network, slots: self.clone() })
    }
}

/// One connection's slot, given back when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    network: String,
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.slots.max_per_network.is_none() {
            return;
        }
        let mut counts = self.slots.per_network.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.network);
            }
        }
    }
}

/// Serves plain HTTP that sends every request to the same path on `base_url` (the HTTPS
/// site): 308, so a form post is repeated there rather than turned into a GET. Under the
/// same connection bounds.
pub async fn serve_https_redirect(
    listener: TcpListener,
    base_url: String,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let base = Arc::new(base_url.trim_end_matches('/').to_string());
    let router = Router::new().fallback(move |uri: axum::http::Uri| {
        let base = base.clone();
        async move {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            axum::response::Redirect::permanent(&format!("{base}{path}"))
        }
    });
    serve(listener, router, limits, None, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95524                95524                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_open_file_limit(limits), Some(1024));
        assert_eq!(soft_open_file_limit("Max open files            unlimited            unlimited  files"), None);
        assert!(open_file_limit().is_some(), "this machine has one");
    }
}
