//! Development-only routes, apart from the application's: none of them is routed in
//! production (see `Config::dev_mailbox`).

use app::ssr::AppState;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use html_escape::encode_quoted_attribute;

/// Development only: the newest outgoing mails, so invitations can be followed without
/// an SMTP server. Not routed at all in production or when mail is delivered over SMTP
/// (`Config::dev_mailbox`), and even then shown only to a browser on this machine: the
/// page lists invitation links, which let whoever reads them join a workspace.
pub async fn mailbox(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_local_request(peer.ip(), &headers) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut conn) = state.pool.get().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response();
    };
    let mails = match fluxi_core::outbox::recent(&mut conn, 50).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "dev mailbox query failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "could not read the outbox").into_response();
        }
    };
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Development mailbox</title></head>\
         <body><h1>Development mailbox</h1><p>Mails Fluxi wrote to its outbox (newest first).</p>",
    );
    for m in mails {
        html.push_str(&format!(
            "<article><h2>{}</h2><p>To: {}</p><pre>{}</pre></article>",
            encode_quoted_attribute(&m.subject),
            encode_quoted_attribute(&m.recipient),
            encode_quoted_attribute(&m.body)
        ));
    }
    html.push_str("</body></html>");
    axum::response::Html(html).into_response()
}

/// A request made on this machine, not relayed: a loopback peer, no proxy headers (a
/// reverse proxy on the same host connects from loopback too, and usually says whom it
/// relays), and a loopback host name (a web page that rebinds its own domain name to
/// 127.0.0.1 still sends that domain as `Host`).
fn is_local_request(peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> bool {
    let relayed = ["x-forwarded-for", "forwarded", "x-real-ip", "via"].iter().any(|h| headers.contains_key(*h));
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let host_name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let local_host = matches!(host_name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "[::1]");
    peer.to_canonical().is_loopback() && !relayed && local_host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unrelayed_loopback_requests_are_local() {
        let with_host = |host: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::HOST, host.parse().unwrap());
            h
        };
        let local = with_host("127.0.0.1:3000");
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_local_request(peer.parse().unwrap(), &local), "{peer}");
        }
        for host in ["localhost", "localhost:3000", "LOCALHOST:3000", "[::1]:3000", "127.0.0.1"] {
            assert!(is_local_request("127.0.0.1".parse().unwrap(), &with_host(host)), "{host}");
        }
        for peer in ["192.0.2.10", "10.0.0.1", "2001:db8::1"] {
            assert!(!is_local_request(peer.parse().unwrap(), &local), "{peer}");
        }
        for header in ["x-forwarded-for", "forwarded", "x-real-ip", "via"] {
            let mut relayed = with_host("127.0.0.1:3000");
            relayed.insert(header, "203.0.113.5".parse().unwrap());
            assert!(!is_local_request("127.0.0.1".parse().unwrap(), &relayed), "{header}");
        }
        // DNS rebinding: a page at evil.example whose name now points at 127.0.0.1.
        for host in ["evil.example", "evil.example:3000", "127.0.0.1.evil.example", ""] {
            assert!(!is_local_request("127.0.0.1".parse().unwrap(), &with_host(host)), "{host:?}");
        }
        assert!(!is_local_request("127.0.0.1".parse().unwrap(), &axum::http::HeaderMap::new()), "no Host");
    }
}
