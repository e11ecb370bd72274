//! Brings up the loopback interface and, when the image has a static
//! configuration in /etc/keel/network, one Ethernet interface with its
//! address, default route and nameservers (written to /run/resolv.conf,
//! which the read-only /etc/resolv.conf points at). DHCP is not done here;
//! see docs/network.md.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys;

pub const CONFIG: &str = keel_contract::paths::NETWORK;
pub const RESOLV_CONF: &str = keel_contract::paths::RESOLV_CONF;
/// How long a late interface (a USB adapter still enumerating) is waited
/// for, off the boot path.
const LINK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub nameservers: Vec<std::net::IpAddr>,
}

/// `key=value` lines: interface, address (a.b.c.d/len), gateway,
/// nameserver (repeatable).
pub fn parse(text: &str) -> Result<Static, String> {
    let (mut interface, mut address, mut gateway, mut nameservers) = (None, None, None, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected key=value", n + 1))?;
        let bad = |what: &str| format!("line {}: {what} '{value}'", n + 1);
        match key.trim() {
            "interface" => interface = Some(value.trim().to_string()),
            "address" => {
                let (ip, len) = value
                    .trim()
                    .split_once('/')
                    .ok_or_else(|| bad("address needs /prefix:"))?;
                let ip: Ipv4Addr = ip.parse().map_err(|_| bad("bad address"))?;
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| bad("bad prefix length"))?;
                address = Some((ip, len));
            }
            "gateway" => gateway = Some(value.trim().parse().map_err(|_| bad("bad gateway"))?),
            "nameserver" => {
                nameservers.push(value.trim().parse().map_err(|_| bad("bad nameserver"))?)
            }
            other => return Err(format!("line {}: unknown key '{other}'", n + 1)),
        }
    }
    let interface = interface.ok_or("no interface=")?;
    if interface.is_empty() || interface.len() >= 16 || interface.contains('/') {
        return Err(format!("bad interface name '{interface}'"));
    }
    let (address, prefix) = address.ok_or("no address=")?;
    Ok(Static {
        interface,
        address,
        prefix,
        gateway,
        nameservers,
    })
}

/// Loopback up: the kernel gives it 127.0.0.1/8 itself.
pub fn loopback() -> io::Result<()> {
    sys::net::Socket::new()?.interface_up("lo")
}

pub fn configure(cfg: &Static) -> io::Result<()> {
    let s = sys::net::Socket::new()?;
    let deadline = Instant::now() + LINK_WAIT;
    while !Path::new("/sys/class/net").join(&cfg.interface).exists() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no interface {} (is its driver in the board's rootfs_modules?)",
                    cfg.interface
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    s.set_address(&cfg.interface, cfg.address)?;
    s.set_netmask(&cfg.interface, netmask(cfg.prefix))?;
    s.interface_up(&cfg.interface)?;
    if let Some(gw) = cfg.gateway {
        s.add_default_route(gw)?;
    }
    let mut resolv = String::new();
    for ns in &cfg.nameservers {
        resolv.push_str(&format!("nameserver {ns}\n"));
    }
    std::fs::write(RESOLV_CONF, resolv)
}

/// Boot-time entry: loopback always, then the static configuration if the
/// image has one. Failures are logged; boot goes on without the network.
pub fn bring_up() {
    if let Err(e) = loopback() {
        crate::log!("network: lo: {e}");
    }
    let text = match std::fs::read_to_string(CONFIG) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            crate::log!("network: read {CONFIG}: {e}");
            return;
        }
    };
    let cfg = match parse(&text) {
        Ok(c) => c,
        Err(e) => {
            crate::log!("network: {CONFIG}: {e}");
            return;
        }
    };
    if Path::new("/sys/class/net").join(&cfg.interface).exists() {
        report(&cfg, configure(&cfg));
        return;
    }
    // The driver has not made the interface yet: wait for it in a child
    // process, so boot does not wait for the network. PID 1 is still
    // single-threaded here, so fork is safe; the runtime reaps the child.
    if let Err(e) = sys::fork_child(|| report(&cfg, configure(&cfg))) {
        crate::log!("network: fork: {e}");
    }
}

/// The netmask of a prefix length (24 -> 255.255.255.0).
fn netmask(prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(mask)
}

fn report(cfg: &Static, result: io::Result<()>) {
    match result {
        Ok(()) => crate::log!(
            "network: {} {}/{}{}",
            cfg.interface,
            cfg.address,
            cfg.prefix,
            cfg.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        ),
        Err(e) => crate::log!("network: {}: {e}", cfg.interface),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_static_configuration_and_names_mistakes() {
        let cfg = parse(
            "# QEMU user networking\ninterface=eth0\naddress=10.0.2.15/24\ngateway=10.0.2.2\nnameserver=10.0.2.3\nnameserver=::1\n",
        )
        .unwrap();
        assert_eq!(cfg.interface, "eth0");
        assert_eq!(cfg.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(cfg.prefix, 24);
        assert_eq!(cfg.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(cfg.nameservers.len(), 2);
        for (text, needle) in [
            ("address=10.0.2.15/24", "no interface"),
            ("interface=eth0", "no address"),
            ("interface=eth0\naddress=10.0.2.15", "needs /prefix"),
            ("interface=eth0\naddress=10.0.2.15/33", "prefix length"),
            (
                "interface=eth0\naddress=10.0.2.15/8\ngateway=x",
                "bad gateway",
            ),
            ("interface=eth0\nmtu=1500", "unknown key 'mtu'"),
            ("interface=eth0\nbogus", "key=value"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn prefix_lengths_become_netmasks() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }
}
