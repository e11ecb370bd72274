//! Brings up the loopback interface and, when the image has a static
//! configuration in /etc/keel/network, one Ethernet interface with its
//! address, default route and nameservers (written to /run/resolv.conf,
//! which the read-only /etc/resolv.conf points at). DHCP is not done here;
//! see docs/network.md.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const CONFIG: &str = "/etc/keel/network";
pub const RESOLV_CONF: &str = "/run/resolv.conf";
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

#[repr(C, align(8))]
struct IfReq {
    name: [u8; 16],
    // The kernel's union (sockaddr, flags, ifmap): 24 bytes on 64-bit,
    // 16 on 32-bit; the larger size is harmless there.
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }
    fn set_addr(&mut self, ip: Ipv4Addr) {
        let sa = sockaddr_in(ip);
        // SAFETY: sockaddr is 16 plain bytes and data has room for them.
        let bytes: [u8; 16] = unsafe { std::mem::transmute(sa) };
        self.data[..16].copy_from_slice(&bytes);
    }
    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_flags(&mut self, f: libc::c_short) {
        self.data[..2].copy_from_slice(&f.to_ne_bytes());
    }
}

/// `struct rtentry` from <linux/route.h>.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const SIOCADDRT: libc::c_ulong = 0x890b;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 plain bytes.
    unsafe { std::mem::transmute(sin) }
}

struct Sock(libc::c_int);
impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this wrapper owns.
        unsafe { libc::close(self.0) };
    }
}

fn socket() -> io::Result<Sock> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sock(fd))
}

fn ioctl<T>(s: &Sock, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure this request expects, and lives
    // across the call. The request type differs between libcs.
    let rc = unsafe { libc::ioctl(s.0, req as _, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn up(s: &Sock, name: &str) -> io::Result<()> {
    let mut r = IfReq::new(name);
    ioctl(s, SIOCGIFFLAGS, &mut r)?;
    r.set_flags(r.flags() | libc::IFF_UP as libc::c_short);
    ioctl(s, SIOCSIFFLAGS, &mut r)
}

/// Loopback up: the kernel gives it 127.0.0.1/8 itself.
pub fn loopback() -> io::Result<()> {
    up(&socket()?, "lo")
}

pub fn configure(cfg: &Static) -> io::Result<()> {
    let s = socket()?;
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
    let mut r = IfReq::new(&cfg.interface);
    r.set_addr(cfg.address);
    ioctl(&s, SIOCSIFADDR, &mut r)?;
    let mask = if cfg.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(cfg.prefix))
    };
    let mut r = IfReq::new(&cfg.interface);
    r.set_addr(Ipv4Addr::from(mask));
    ioctl(&s, SIOCSIFNETMASK, &mut r)?;
    up(&s, &cfg.interface)?;
    if let Some(gw) = cfg.gateway {
        // SAFETY: all-zero is a valid rtentry (null pointers, zero fields).
        let mut rt: RtEntry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        ioctl(&s, SIOCADDRT, &mut rt)?;
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
    // SAFETY: fork in a single-threaded process; the child only makes
    // syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            report(&cfg, configure(&cfg));
            // SAFETY: ends the child without running PID 1's destructors.
            unsafe { libc::_exit(0) }
        }
        -1 => crate::log!("network: fork: {}", io::Error::last_os_error()),
        _ => {}
    }
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
    fn kernel_structures_have_the_kernel_layout() {
        let ptr = std::mem::size_of::<usize>();
        assert_eq!(
            std::mem::size_of::<RtEntry>(),
            if ptr == 8 { 120 } else { 84 }
        );
        assert!(std::mem::size_of::<IfReq>() >= if ptr == 8 { 40 } else { 32 });
    }
}
