//! The workspace's one rule for "this host is the machine itself".
//!
//! The client allows plain `http://` only to such a host (and never through a proxy there), the CLI
//! builds its HTTP clients by it, and the mock answers only requests whose `Host` names one. All of
//! them ask this function, so they cannot disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `host` (a host name or address as in a URL, without a port) is this machine's loopback:
/// `localhost` (any case, with or without a trailing dot), an address in `127.0.0.0/8`, `::1`
/// (bracketed or not), or an IPv4-mapped IPv6 loopback address (`::ffff:127.0.0.1`).
///
/// ```
/// use chip_gate_api::is_loopback_host;
///
/// assert!(is_loopback_host("127.8.9.10"));
/// assert!(is_loopback_host("[::1]"));
/// assert!(is_loopback_host("LOCALHOST."));
/// assert!(!is_loopback_host("localhost.evil.example"));
/// assert!(!is_loopback_host("10.0.0.1"));
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
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
