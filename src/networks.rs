//! Environments, the private networks they own, and the one question every other module asks:
//! may this instance connect to that address?
//!
//! Config validation and the upstream connector both answer it through [`Reach`], so the rule
//! checked at start-up is the very rule enforced on every resolved address at connect time.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ranges a network may be declared in: RFC 1918, shared address space (RFC 6598), loopback and
/// unique-local IPv6 (RFC 4193).
const PRIVATE_RANGES: [IpNet; 7] = [
    IpNet::V4(Ipv4Net::new_assert(std::net::Ipv4Addr::new(10, 0, 0, 0), 8)),
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(172, 16, 0, 0),
        12,
    )),
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(192, 168, 0, 0),
        16,
    )),
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(100, 64, 0, 0),
        10,
    )),
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    )),
    IpNet::V6(Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128)),
    IpNet::V6(Ipv6Net::new_assert(
        std::net::Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
    )),
];

/// Ranges that are never an upstream, whatever the config says: link-local hosts cloud metadata
/// services (169.254.169.254), which is where server-side request forgery goes first.
const FORBIDDEN_RANGES: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(169, 254, 0, 0),
        16,
    )),
    IpNet::V6(Ipv6Net::new_assert(
        std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
    )),
];

/// Why a declared network is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetworkRefusal {
    /// Inside link-local space, home of cloud metadata endpoints.
    #[error("is inside a link-local range (169.254.0.0/16, fe80::/10), which is never allowed")]
    LinkLocal,
    /// Not contained in one of the private ranges.
    #[error(
        "is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, ::1, fc00::/7)"
    )]
    NotPrivate,
}

/// Accepts `net` only if it lies wholly inside a private range and touches no forbidden one.
pub fn check_private(net: &IpNet) -> Result<(), NetworkRefusal> {
    let net = canonical_net(net);
    // A wider network holding link-local (`0.0.0.0/0`) is refused for being public, which is
    // what it mostly is; no private range holds a forbidden one.
    if FORBIDDEN_RANGES.iter().any(|bad| bad.contains(&net)) {
        return Err(NetworkRefusal::LinkLocal);
    }
    if PRIVATE_RANGES.iter().any(|ok| ok.contains(&net)) {
        Ok(())
    } else {
        Err(NetworkRefusal::NotPrivate)
    }
}

/// `::ffff:10.0.0.0/104` is the IPv4 network it spells; treat it so everywhere.
/// Cloud metadata services outside link-local: AWS's IPv6 IMDS (`fd00:ec2::254`) and Alibaba's
/// `100.100.100.200`. Like [`FORBIDDEN_RANGES`] (where AWS, GCP and Azure serve theirs), never an
/// upstream, whatever the environments say: they hand out cloud credentials.
pub const METADATA_ENDPOINTS: [IpNet; 2] = [
    IpNet::V6(Ipv6Net::new_assert(
        std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
    )),
    IpNet::V4(Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(100, 100, 100, 200),
        32,
    )),
];

/// True when `ip` is a metadata endpoint: link-local, built in, or one of `extra` (`[access]
/// metadata_endpoints`).
pub fn is_metadata(ip: IpAddr, extra: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    FORBIDDEN_RANGES
        .iter()
        .chain(&METADATA_ENDPOINTS)
        .chain(extra)
        .any(|net| net.contains(&ip))
}

/// A network as the rest of the program compares it: IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`)
/// written as IPv4 (`10.0.0.0/8`), so that one notation cannot slip past a rule written in the
/// other. Every network in the config goes through here once.
pub fn canonical_net(net: &IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(*net, IpNet::V4)
            }
            _ => *net,
        },
        IpNet::V4(_) => *net,
    }
}

/// Every environment with the validated networks it owns.
#[derive(Debug, Clone, Default)]
pub struct Environments {
    networks: BTreeMap<String, Vec<IpNet>>,
}

impl Environments {
    /// Builds the map from already validated networks.
    pub fn new(networks: BTreeMap<String, Vec<IpNet>>) -> Self {
        Self { networks }
    }

    /// The networks of `environment`, if it is declared.
    pub fn networks(&self, environment: &str) -> Option<&[IpNet]> {
        self.networks.get(environment).map(Vec::as_slice)
    }

    /// The environment that owns `ip`, if any.
    pub fn environment_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .find(|(_, nets)| nets.iter().any(|net| net.contains(&ip)))
            .map(|(name, _)| name.as_str())
    }

    /// Every environment and its networks, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[IpNet])> {
        self.networks
            .iter()
            .map(|(name, nets)| (name.as_str(), nets.as_slice()))
    }
}

/// The set of addresses one upstream may be connected to: the networks of its environment,
/// less every metadata endpoint.
#[derive(Debug, Clone)]
pub struct Reach {
    networks: Vec<IpNet>,
    metadata: Vec<IpNet>,
}

impl Reach {
    /// The reach of an upstream living in these networks; `metadata` adds to the built-in
    /// [`METADATA_ENDPOINTS`].
    pub fn new(networks: Vec<IpNet>, metadata: Vec<IpNet>) -> Self {
        Self { networks, metadata }
    }

    /// True when `ip` (IPv4-mapped IPv6 counted as IPv4) lies in one of the networks and is
    /// no metadata endpoint.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip)) && !is_metadata(ip, &self.metadata)
    }
}

/// Clients closed at accept: denied ranges and every network of every other environment (no
/// environment reaches ours; a peering is one-way, from us).
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    refused: Vec<IpNet>,
}

impl ClientFilter {
    /// Refuses clients in `refused`.
    pub fn new(refused: Vec<IpNet>) -> Self {
        Self { refused }
    }

    /// True when `client` (IPv4-mapped IPv6 counted as IPv4) lies in a refused network.
    pub fn refuses(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.refused.iter().any(|net| net.contains(&client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges_are_accepted() {
        for ok in [
            "10.1.0.0/16",
            "172.20.0.0/16",
            "192.168.1.0/24",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "::1/128",
            "fd00::/8",
            "::ffff:10.0.0.0/104",
        ] {
            assert_eq!(check_private(&net(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn public_and_link_local_ranges_are_refused() {
        for (bad, why) in [
            ("8.8.8.0/24", NetworkRefusal::NotPrivate),
            ("0.0.0.0/0", NetworkRefusal::NotPrivate),
            ("::/0", NetworkRefusal::NotPrivate),
            ("169.254.0.0/24", NetworkRefusal::LinkLocal),
            ("10.0.0.0/7", NetworkRefusal::NotPrivate),
            ("169.254.169.254/32", NetworkRefusal::LinkLocal),
            ("fe80::/64", NetworkRefusal::LinkLocal),
            ("2001:db8::/32", NetworkRefusal::NotPrivate),
            ("::ffff:8.8.8.8/128", NetworkRefusal::NotPrivate),
        ] {
            assert_eq!(check_private(&net(bad)), Err(why), "{bad}");
        }
    }

    #[test]
    fn client_filter_matches_mapped_ipv6_as_ipv4() {
        let filter = ClientFilter::new(vec![net("10.50.0.0/16"), net("fd00:50::/32")]);
        assert!(filter.refuses("::ffff:10.50.1.2".parse().unwrap()));
        assert!(filter.refuses("10.50.1.2".parse().unwrap()));
        assert!(filter.refuses("fd00:50::1".parse().unwrap()));
        assert!(!filter.refuses("::ffff:10.51.1.2".parse().unwrap()));
        assert!(!ClientFilter::default().refuses("10.50.1.2".parse().unwrap()));
    }

    #[test]
    fn reach_matches_mapped_ipv6_as_ipv4() {
        let reach = Reach::new(vec![net("10.0.0.0/8")], vec![]);
        assert!(reach.allows("10.2.3.4".parse().unwrap()));
        assert!(reach.allows("::ffff:10.2.3.4".parse().unwrap()));
        assert!(!reach.allows("11.0.0.1".parse().unwrap()));
    }
}
