//! The client's IP address of a direct request: the peer, or, when the peer is a configured
//! trusted proxy, the nearest untrusted address of `X-Forwarded-For`.
//!
//! Only addresses added by trusted proxies can be believed: a client can put anything at the
//! left of the header, so it is read from the right, skipping trusted hops.

use std::net::IpAddr;

use ipnet::IpNet;

/// The address to attribute the request to.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut hops = header.split(',').rev().map(str::trim).filter(|s| !s.is_empty());
    let mut last_good = peer;
    for hop in hops.by_ref() {
        // A hop that does not parse ends what can be believed; use the last good one.
        let Ok(ip) = hop.parse::<IpAddr>().or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip())) else {
            return last_good;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        last_good = ip;
    }
    last_good
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(peer: &str, xff: Option<&str>, trusted: &[&str], expected: &str) {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        assert_eq!(
            client_ip(peer.parse().unwrap(), xff, &trusted),
            expected.parse::<IpAddr>().unwrap(),
            "{peer} {xff:?}"
        );
    }

    #[test]
    fn table() {
        // No trusted proxies: the header is ignored.
        check("203.0.113.9", Some("1.2.3.4"), &[], "203.0.113.9");
        // Untrusted peer: ignored too.
        check("203.0.113.9", Some("1.2.3.4"), &["10.0.0.0/8"], "203.0.113.9");
        // Trusted peer: the right-most untrusted hop.
        check("10.0.0.2", Some("1.2.3.4"), &["10.0.0.0/8"], "1.2.3.4");
        check("10.0.0.2", Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &["10.0.0.0/8"], "1.2.3.4");
        // A forged left part does not win.
        check("10.0.0.2", Some("8.8.8.8, 1.2.3.4"), &["10.0.0.0/8"], "1.2.3.4");
        // Garbage stops the walk at the last good hop.
        check("10.0.0.2", Some("1.2.3.4, junk, 10.0.0.7"), &["10.0.0.0/8"], "10.0.0.7");
        check("10.0.0.2", None, &["10.0.0.0/8"], "10.0.0.2");
        check("::1", Some("2001:db8::1"), &["::1/128"], "2001:db8::1");
        check("10.0.0.2", Some("1.2.3.4:5678"), &["10.0.0.0/8"], "1.2.3.4");
    }
}
