//! The workspace's one rule for "this host is the machine itself".
//!
//! The client allows plain `http://` only to such a host (and never through a proxy there), the CLI
//! builds its HTTP clients by it, and the mock answers only requests whose `Host` names one. All of
//! them ask this function, so they cannot disagree.
//!
//! The name `localhost` is loopback only because every HTTP client the workspace builds pins it to
//! `127.0.0.1` and `::1` ([`pin_localhost`]): no resolver (DNS, `/etc/hosts`, a search domain) is
//! asked where it is, so none can send the API key elsewhere in clear text. `localhost.` (with
//! the trailing dot of a fully qualified name) is *not* loopback: resolvers treat it as a DNS
//! name, and the pinning above would not apply to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The only loopback name: matched in any case, never with a trailing dot.
const LOCALHOST: &str = "localhost";

/// Whether `host` (a host name or address as in a URL, without a port) is this machine's loopback:
/// `localhost` (any case, and *without* a trailing dot), an address in `127.0.0.0/8`, `::1`
/// (bracketed or not), or an IPv4-mapped IPv6 loopback address (`::ffff:127.0.0.1`).
///
/// ```
/// use chip_gate_api::is_loopback_host;
///
/// assert!(is_loopback_host("127.8.9.10"));
/// assert!(is_loopback_host("[::1]"));
/// assert!(is_loopback_host("LOCALHOST"));
/// // A trailing dot makes it a DNS name, which a resolver may point anywhere.
/// assert!(!is_loopback_host("localhost."));
/// assert!(!is_loopback_host("localhost.evil.example"));
/// assert!(!is_loopback_host("10.0.0.1"));
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    if is_localhost_name(host) {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    match bare.parse::<Ipv6Addr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| IpAddr::V4(v4).is_loopback())
        }
        Err(_) => false,
    }
}

/// Whether `host` is the loopback *name* `localhost` (any case, no trailing dot), as opposed to a
/// loopback address: the one host whose address comes from a resolver unless it is pinned
/// ([`pin_localhost`]).
///
/// ```
/// use chip_gate_api::is_localhost_name;
///
/// assert!(is_localhost_name("LocalHost"));
/// assert!(!is_localhost_name("localhost."));
/// assert!(!is_localhost_name("127.0.0.1"));
/// ```
pub fn is_localhost_name(host: &str) -> bool {
    host.eq_ignore_ascii_case(LOCALHOST)
}

/// `builder` with the name `localhost` pinned to `127.0.0.1` and `::1` (in that order; the port of
/// each request's URL is kept), so that a request to `http://localhost:PORT` never asks a resolver
/// and can only reach this machine.
///
/// Every HTTP client of the workspace that may send the API key over plain `http://` to
/// `localhost` is built through this. A resolver set on `builder` with
/// [`dns_resolver`](reqwest::ClientBuilder::dns_resolver) is still used for every other name.
///
/// ```
/// let client = chip_gate_api::pin_localhost(reqwest::Client::builder()).build();
/// assert!(client.is_ok());
/// ```
pub fn pin_localhost(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.resolve_to_addrs(
        LOCALHOST,
        &[
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_name_and_loopback_addresses() {
        for yes in [
            "localhost",
            "LOCALHOST",
            "LocalHost",
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in [
            "localhost.",
            "LOCALHOST.",
            "localhost..",
            ".localhost",
            "localhost.localdomain",
            "localhost.evil.example",
            "127.0.0.1.",
            "127.0.0.1.nip.io",
            "0.0.0.0",
            "10.0.0.1",
            "::",
            "[::2]",
            "[::ffff:10.0.0.1]",
            "",
            ".",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }
}
