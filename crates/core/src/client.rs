//! Who is asking: the client address a request came from, for per-client limits.
//!
//! Behind reverse proxies the TCP peer is the last proxy, and the client is named in
//! `X-Forwarded-For`, where every proxy appends the address it received the request from.
//! Only the entries written by our own proxies can be believed: anything to their left was
//! sent by the client and may be made up. So with `trusted_proxies = n` the client is the
//! n-th entry from the right; with 0 (the default: nothing in front of Fluxi) the header is
//! ignored and the peer is the client.

use std::net::{IpAddr, Ipv6Addr};

/// The client's address for a request from `peer` carrying these `X-Forwarded-For` header
/// values (in the order received), with `trusted_proxies` proxies of ours in front.
///
/// Falls back to `peer` when the header has fewer entries than there are trusted proxies
/// (a request that did not come through them all) or when the entry is not an address.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted_proxies: usize,
) -> IpAddr {
    if trusted_proxies == 0 {
        return peer.to_canonical();
    }
    let entries: Vec<&str> = forwarded_for.into_iter().flat_map(|v| v.split(',')).map(str::trim).collect();
    let Some(index) = entries.len().checked_sub(trusted_proxies) else {
        return peer.to_canonical();
    };
    parse_entry(entries[index]).unwrap_or(peer).to_canonical()
}

/// An `X-Forwarded-For` entry: an address, possibly in brackets or with a port
/// (`1.2.3.4:5678`, `[::1]`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())
}

/// The network a client address stands for in per-client limits: the address itself for
/// IPv4, its /64 for IPv6 (one subscriber usually holds a whole /64, and could otherwise
/// pick a fresh address for every try).
pub fn client_network(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client_address(ip("198.51.100.9"), ["203.0.113.5"], 0), ip("198.51.100.9"));
    }

    #[test]
    fn the_entry_our_first_proxy_wrote_names_the_client() {
        let peer = ip("10.0.0.2");
        // One proxy: it appended the address it saw; what the client sent is to its left.
        assert_eq!(client_address(peer, ["203.0.113.5"], 1), ip("203.0.113.5"));
        assert_eq!(client_address(peer, ["6.6.6.6, 203.0.113.5"], 1), ip("203.0.113.5"));
        // Two proxies: the client is second from the right, across several header lines too.
        assert_eq!(client_address(peer, ["6.6.6.6, 203.0.113.5", "10.0.0.1"], 2), ip("203.0.113.5"));
        assert_eq!(client_address(peer, ["203.0.113.5:41000"], 1), ip("203.0.113.5"));
        assert_eq!(client_address(peer, ["[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(client_address(peer, ["[2001:db8::1]"], 1), ip("2001:db8::1"));
        // An unreadable entry left of ours changes nothing (it is still one entry).
        assert_eq!(client_address(peer, ["g\u{fffd}rbage, 203.0.113.5"], 1), ip("203.0.113.5"));
    }

    #[test]
    fn too_few_or_unreadable_entries_fall_back_to_the_peer() {
        let peer = ip("198.51.100.9");
        assert_eq!(client_address(peer, [], 1), peer);
        assert_eq!(client_address(peer, ["203.0.113.5"], 2), peer);
        assert_eq!(client_address(peer, ["unknown"], 1), peer);
        assert_eq!(client_address(peer, [""], 1), peer);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        assert_eq!(client_address(ip("::ffff:198.51.100.9"), [], 0), ip("198.51.100.9"));
        assert_eq!(client_network(ip("::ffff:198.51.100.9")), "198.51.100.9");
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_bit_prefix() {
        assert_eq!(client_network(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(client_network(ip("2001:db8:1:2:bbbb::9")), client_network(ip("2001:db8:1:2::7")));
        assert_ne!(client_network(ip("2001:db8:1:3::1")), client_network(ip("2001:db8:1:2::1")));
        assert_eq!(client_network(ip("203.0.113.5")), "203.0.113.5");
    }
}
