//! The networks peers may not reach through the node: private, shared and link-local space,
//! cloud metadata addresses, and every network the host itself has an address in — minus the
//! tunnel's own subnets (isolation decides about peer-to-peer traffic) and minus what the
//! operator allows (`dataplane.allow_networks`).
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// RFC 1918, RFC 6598 shared space, link-local, and Alibaba's metadata address (AWS, GCP and
/// Azure use 169.254.169.254, inside link-local).
pub const FENCED_V4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "100.100.100.200/32",
];
/// Unique local, link-local, and AWS's IPv6 metadata address (inside unique local already, kept
/// explicit so that an allow-list for fd00::/8 does not open it by accident).
pub const FENCED_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "fd00:ec2::254/128"];

/// What the fence is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceInput {
    /// The prefix of every address the host has (any interface, any scope but loopback).
    pub host: Vec<IpNet>,
    pub tunnel: Vec<IpNet>,
    pub allow: Vec<IpNet>,
}

/// The fenced networks, aggregated, without the tunnel's subnets and the allowed networks.
/// Metadata addresses stay fenced unless allowed by a network that contains them.
pub fn fenced(input: &FenceInput) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4: Vec<Ipv4Net> = FENCED_V4.iter().filter_map(|s| s.parse().ok()).collect();
    let mut v6: Vec<Ipv6Net> = FENCED_V6.iter().filter_map(|s| s.parse().ok()).collect();
    for n in &input.host {
        match n.trunc() {
            IpNet::V4(n) if !n.network().is_loopback() => v4.push(n),
            IpNet::V6(n) if !n.network().is_loopback() => v6.push(n),
            _ => {}
        }
    }
    let mut v4 = Ipv4Net::aggregate(&v4);
    let mut v6 = Ipv6Net::aggregate(&v6);
    for hole in input.tunnel.iter().chain(&input.allow) {
        match hole.trunc() {
            IpNet::V4(h) => v4 = v4.into_iter().flat_map(|n| minus(n, h)).collect(),
            IpNet::V6(h) => v6 = v6.into_iter().flat_map(|n| minus(n, h)).collect(),
        }
    }
    (Ipv4Net::aggregate(&v4), Ipv6Net::aggregate(&v6))
}

/// The two address families' prefixes, for one subtraction routine.
trait Prefix: Copy + PartialEq + Sized {
    fn covers(&self, other: &Self) -> bool;
    fn halves(&self) -> Option<(Self, Self)>;
}

impl Prefix for Ipv4Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn halves(&self) -> Option<(Self, Self)> {
        let mut s = self.subnets(self.prefix_len().checked_add(1)?).ok()?;
        Some((s.next()?, s.next()?))
    }
}

impl Prefix for Ipv6Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn halves(&self) -> Option<(Self, Self)> {
        let mut s = self.subnets(self.prefix_len().checked_add(1)?).ok()?;
        Some((s.next()?, s.next()?))
    }
}

/// `net` without `hole`: at most one prefix per bit between the two lengths.
fn minus<P: Prefix>(net: P, hole: P) -> Vec<P> {
    if hole.covers(&net) {
        return Vec::new();
    }
    if !net.covers(&hole) {
        return vec![net];
    }
    match net.halves() {
        Some((a, b)) => {
            let mut v = minus(a, hole);
            v.extend(minus(b, hole));
            v
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn strs<T: ToString>(v: &[T]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn fixed_ranges_host_networks_and_holes() {
        let input = FenceInput {
            host: nets(&[
                "203.0.113.7/24",
                "127.0.0.1/8",
                "::1/128",
                "2001:db8:1::5/64",
                "10.1.2.3/16",
            ]),
            tunnel: nets(&["10.77.0.0/16", "fd77::/64"]),
            allow: vec![],
        };
        let (v4, v6) = fenced(&input);
        let fenced4 = |a: &str| {
            v4.iter()
                .any(|n| n.contains(&a.parse::<std::net::Ipv4Addr>().unwrap()))
        };
        for a in [
            "10.0.0.1",
            "10.76.255.255",
            "10.78.0.0",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "203.0.113.99",
        ] {
            assert!(fenced4(a), "{a} fenced: {v4:?}");
        }
        for a in ["10.77.0.2", "127.0.0.1", "8.8.8.8", "203.0.114.1"] {
            assert!(!fenced4(a), "{a} open: {v4:?}");
        }
        assert_eq!(strs(&v4).len(), v4.len());
        let fenced6 = |a: &str| {
            v6.iter()
                .any(|n| n.contains(&a.parse::<std::net::Ipv6Addr>().unwrap()))
        };
        for a in [
            "2001:db8:1::9",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "fd77:0:0:1::1",
        ] {
            assert!(fenced6(a), "{a} fenced: {v6:?}");
        }
        for a in ["fd77::2", "::1", "2001:db8:2::1"] {
            assert!(!fenced6(a), "{a} open: {v6:?}");
        }
    }

    #[test]
    fn every_address_of_a_hole_is_open_and_everything_else_stays_fenced() {
        let hole: Ipv4Net = "10.77.3.0/24".parse().unwrap();
        let net: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let rest = minus(net, hole);
        assert_eq!(rest.len(), 16, "one prefix per bit from /8 to /24");
        for probe in ["10.0.0.1", "10.77.2.255", "10.77.4.0", "10.255.255.255"] {
            let a: std::net::Ipv4Addr = probe.parse().unwrap();
            assert!(rest.iter().any(|n| n.contains(&a)), "{probe} stays fenced");
        }
        for probe in ["10.77.3.0", "10.77.3.255"] {
            let a: std::net::Ipv4Addr = probe.parse().unwrap();
            assert!(!rest.iter().any(|n| n.contains(&a)), "{probe} is open");
        }
        assert_eq!(minus(hole, net), vec![]);
        let other: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        assert_eq!(minus(other, hole), vec![other]);
    }

    #[test]
    fn an_allowed_service_opens_only_itself() {
        let input = FenceInput {
            host: vec![],
            tunnel: nets(&["10.77.0.0/16"]),
            allow: nets(&["172.20.5.10/32", "fd00:ec2::254/128"]),
        };
        let (v4, v6) = fenced(&input);
        let svc: std::net::Ipv4Addr = "172.20.5.10".parse().unwrap();
        let near: std::net::Ipv4Addr = "172.20.5.11".parse().unwrap();
        assert!(!v4.iter().any(|n| n.contains(&svc)));
        assert!(v4.iter().any(|n| n.contains(&near)));
        let md: std::net::Ipv6Addr = "fd00:ec2::254".parse().unwrap();
        assert!(!v6.iter().any(|n| n.contains(&md)));
        assert!(
            v6.iter()
                .any(|n| n.contains(&"fd00:ec2::253".parse::<std::net::Ipv6Addr>().unwrap()))
        );
    }
}
