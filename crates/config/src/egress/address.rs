//! The address policy for provider URLs: which hosts and IP addresses the
//! gateway may connect to.
//!
//! Two classes are refused by default or by choice. Link-local addresses and
//! the cloud metadata services (refused unless `egress.allow_link_local`)
//! answer with the machine's cloud credentials. Loopback, private, CGNAT and
//! unique-local addresses (refused only when `egress.allow_private_networks`
//! is false) reach the gateway's own network: its database, its sidecars.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::EgressSettings;

/// Host names of cloud metadata services, refused like their addresses.
pub const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Addresses of cloud metadata and platform services outside 169.254.0.0/16:
/// Alibaba Cloud (100.100.100.200), Azure's WireServer (168.63.129.16),
/// Oracle Cloud (192.0.0.192) and AWS over IPv6 (fd00:ec2::254).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why a provider host or address is refused. Names the host and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRefusal {
    #[error("{host} is {what}; set egress.allow_link_local to allow it")]
    LinkLocal { host: String, what: &'static str },
    #[error("{host} is {what}; egress.allow_private_networks is false")]
    Private { host: String, what: &'static str },
}

/// The class of an address, when it is not a plain public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    LinkLocal(&'static str),
    Private(&'static str),
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) || ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some(Class::LinkLocal("a cloud metadata address"));
    }
    if ip.is_link_local() {
        return Some(Class::LinkLocal("a link-local address"));
    }
    if ip.is_loopback() {
        return Some(Class::Private("a loopback address"));
    }
    // 0.0.0.0/8 reaches the local host on Linux.
    if a == 0 {
        return Some(Class::Private("an unspecified address"));
    }
    if ip.is_private() {
        return Some(Class::Private("a private (RFC 1918) address"));
    }
    if a == 100 && (64..128).contains(&b) {
        return Some(Class::Private("a shared (CGNAT) address"));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry an IPv4
    // address that decides.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip == METADATA_V6 {
        return Some(Class::LinkLocal("a cloud metadata address"));
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some(Class::LinkLocal("a link-local address"));
    }
    if ip.is_loopback() {
        return Some(Class::Private("a loopback address"));
    }
    if ip.is_unspecified() {
        return Some(Class::Private("an unspecified address"));
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some(Class::Private("a unique-local address"));
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some(Class::Private("a site-local address"));
    }
    None
}

impl EgressSettings {
    /// Whether the gateway may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressRefusal> {
        let class = match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        };
        self.judge(class, || ip.to_string())
    }

    /// Whether the gateway may connect to `host` as written in a URL (IPv6 in
    /// brackets or not). IP literals, including the numeric IPv4 forms the
    /// system resolver accepts (`2852039166`, `0xa9.0xfe.0xa9.0xfe`), and the
    /// metadata names are judged here; other names are judged by the
    /// addresses they resolve to, where the connection is made.
    pub fn check_host(&self, host: &str) -> Result<(), EgressRefusal> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        // An IPv6 literal with a zone (`fe80::1%eth0`) is link-local or worse.
        if let Some((ip, _zone)) = bare.split_once('%') {
            if let Ok(ip) = ip.parse::<Ipv6Addr>() {
                return self.check_ip(IpAddr::V6(ip));
            }
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ip) = parse_loose_ipv4(&name) {
            return self.check_ip(IpAddr::V4(ip));
        }
        if METADATA_NAMES.contains(&name.as_str()) {
            return self.judge(Some(Class::LinkLocal("a cloud metadata name")), || {
                host.to_owned()
            });
        }
        Ok(())
    }

    fn judge(
        &self,
        class: Option<Class>,
        host: impl FnOnce() -> String,
    ) -> Result<(), EgressRefusal> {
        match class {
            Some(Class::LinkLocal(what)) if !self.allow_link_local => {
                Err(EgressRefusal::LinkLocal { host: host(), what })
            }
            Some(Class::Private(what)) if !self.allow_private_networks => {
                Err(EgressRefusal::Private { host: host(), what })
            }
            _ => Ok(()),
        }
    }
}

/// The host of an absolute `scheme://[userinfo@]host[:port]/...` URL, IPv6
/// literals with their brackets; `None` when there is no host.
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.find(']').map(|end| &host_port[..=end])?
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some(host)
}

/// The IPv4 address of a host written the way `inet_aton` reads it: one to
/// four parts, each decimal, octal (leading `0`) or hex (`0x`), the last
/// filling the remaining bytes. The system resolver accepts these forms, so a
/// name check must too.
fn parse_loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut n: u64 = *last;
    for (i, v) in leading.iter().enumerate() {
        n |= v << (24 - 8 * i as u32);
    }
    u32::try_from(n).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EgressSettings {
        EgressSettings {
            allow_private_networks: false,
            ..EgressSettings::default()
        }
    }

    #[test]
    fn link_local_and_metadata_are_refused_by_default_and_private_allowed() {
        let d = EgressSettings::default();
        let refused = [
            "169.254.169.254",
            "169.254.1.1",
            "[fe80::1]",
            "fe80::1%eth0",
            "[fd00:ec2::254]",
            "100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
            "[::ffff:169.254.169.254]",
            "[64:ff9b::a9fe:a9fe]",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "2852039166",
            "0xa9.0xfe.0xa9.0xfe",
            "0251.0376.0251.0376",
            "169.254.43518",
        ];
        for host in refused {
            let e = d.check_host(host).unwrap_err();
            assert!(matches!(e, EgressRefusal::LinkLocal { .. }), "{host}: {e}");
            assert!(e.to_string().contains("egress.allow_link_local"), "{e}");
        }
        let allowed = [
            "127.0.0.1",
            "[::1]",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "[fd12::1]",
            "api.openai.com",
            "8.8.8.8",
            "model-server.default.svc",
            "0.0.0.0",
        ];
        for host in allowed {
            d.check_host(host).unwrap();
        }
        let open = EgressSettings {
            allow_link_local: true,
            ..EgressSettings::default()
        };
        open.check_host("169.254.169.254").unwrap();
        open.check_host("metadata.google.internal").unwrap();
    }

    #[test]
    fn private_ranges_are_refused_only_when_the_setting_says_so() {
        let s = strict();
        for host in [
            "127.0.0.1",
            "127.1",
            "[::1]",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "100.127.0.1",
            "[fc00::1]",
            "[fd12:3456::1]",
            "0.0.0.0",
            "[::]",
            "[::ffff:10.0.0.1]",
            "2130706433",
        ] {
            let e = s.check_host(host).unwrap_err();
            assert!(matches!(e, EgressRefusal::Private { .. }), "{host}: {e}");
        }
        for host in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "[2001:db8::1]",
            "example.com",
        ] {
            s.check_host(host).unwrap();
        }
    }

    #[test]
    fn url_host_finds_the_host_past_userinfo_and_port() {
        let cases = [
            ("https://api.openai.com/v1", Some("api.openai.com")),
            ("http://10.0.0.1:8000/v1", Some("10.0.0.1")),
            ("http://[fe80::1]:80/x", Some("[fe80::1]")),
            (
                "http://user:pw@169.254.169.254/latest",
                Some("169.254.169.254"),
            ),
            ("http://169.254.169.254@example.com/", Some("example.com")),
            ("http://example.com#@169.254.169.254", Some("example.com")),
            ("http:///path", None),
            ("not a url", None),
        ];
        for (url, host) in cases {
            assert_eq!(url_host(url), host, "{url}");
        }
    }

    #[test]
    fn loose_ipv4_forms_parse_like_inet_aton() {
        let cases = [
            ("1.2.3.4", Some([1, 2, 3, 4])),
            ("16909060", Some([1, 2, 3, 4])),
            ("1.131844", Some([1, 2, 3, 4])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("017700000001", Some([127, 0, 0, 1])),
            ("256.1.1.1", None),
            ("1.2.3.4.5", None),
            ("example.com", None),
            ("1.2.3.x", None),
            ("4294967296", None),
        ];
        for (host, expected) in cases {
            assert_eq!(
                parse_loose_ipv4(host),
                expected.map(Ipv4Addr::from),
                "{host}"
            );
        }
    }
}
