//! Name resolution without libc: IP literals, then `/etc/hosts`, then A and
//! AAAA queries over UDP to the nameservers in `/etc/resolv.conf`.
//!
//! A lookup ends in bounded time whatever arrives on the socket: each
//! attempt at a nameserver has a fixed deadline, set when the queries go
//! out, that stray datagrams cannot push back. Only a reply to a query
//! actually sent counts: the same id, a response, and the same question
//! (name, type, class); anything else is dropped, and so are answer records
//! for names other than the one asked for and its aliases.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Secs;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("'{0}' is not a valid host name")]
    BadName(String),
    #[error("cannot resolve '{name}': no nameserver in {conf} and no entry in the hosts file; configure the network (nameserver lines in {conf})")]
    NoNameserver { name: String, conf: String },
    #[error("cannot resolve '{name}': no answer from {servers} within {}; check the network and the nameserver lines in {conf}", Secs(*.waited))]
    NoAnswer {
        name: String,
        servers: String,
        conf: String,
        waited: Duration,
    },
    #[error("cannot resolve '{name}': {detail}")]
    Failed { name: String, detail: String },
    #[error("'{0}' does not exist (the nameserver says so)")]
    NoSuchName(String),
}

const A: u16 = 1;
const AAAA: u16 = 28;
const IN: u16 = 1;
const CNAME: u16 = 5;
/// Rounds over the nameservers.
const ATTEMPTS: u32 = 2;

/// Where the resolver reads its configuration; the defaults are the
/// system's files, tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// How long one attempt at one nameserver waits for its answers (A and
    /// AAAA are asked together). A lookup makes two rounds over the
    /// nameservers, so it ends within `2 × timeout × nameservers` (1.2 s for
    /// one server at 600 ms), or by the caller's deadline if sooner.
    pub timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            hosts: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// What one attempt at one nameserver came to.
enum Attempt {
    /// Addresses, or none when the name exists without any.
    Found(Vec<IpAddr>),
    NoSuchName,
    /// The server answered with an error, or the socket failed.
    Failed(String),
    /// Nothing that matched arrived in time.
    Silent,
}

/// What one datagram says about one query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Not a reply to this query (another id, not a response, another
    /// question): ignored.
    NotOurs,
    Addresses(Vec<IpAddr>),
    NoSuchName,
    Error(String),
}

impl Resolver {
    /// The addresses of `name`, IPv4 first (embedded networks are more
    /// often v4-only than v6-only).
    pub fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        self.lookup(name, port, None)
    }

    /// [`resolve`](Self::resolve), giving up at `deadline` if that comes
    /// before the resolver's own limit.
    pub fn resolve_before(
        &self,
        name: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        self.lookup(name, port, Some(deadline))
    }

    fn lookup(
        &self,
        name: &str,
        port: u16,
        deadline: Option<Instant>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let started = Instant::now();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if !valid_name(name) {
            return Err(ResolveError::BadName(name.to_string()));
        }
        let from_hosts = self.hosts_lookup(name);
        if !from_hosts.is_empty() {
            return Ok(sorted(from_hosts, port));
        }
        let servers = self.nameservers();
        if servers.is_empty() {
            return Err(ResolveError::NoNameserver {
                name: name.to_string(),
                conf: self.resolv_conf.display().to_string(),
            });
        }
        let mut failure = None;
        'rounds: for _ in 0..ATTEMPTS {
            for server in &servers {
                let now = Instant::now();
                let mut until = now.checked_add(self.timeout).unwrap_or(now);
                if let Some(d) = deadline {
                    if d <= now {
                        break 'rounds;
                    }
                    until = until.min(d);
                }
                match self.ask(*server, name, until) {
                    Attempt::Found(ips) if ips.is_empty() => {
                        return Err(ResolveError::Failed {
                            name: name.to_string(),
                            detail: "the nameserver returned no address".into(),
                        })
                    }
                    Attempt::Found(ips) => return Ok(sorted(ips, port)),
                    Attempt::NoSuchName => return Err(ResolveError::NoSuchName(name.to_string())),
                    Attempt::Failed(why) => failure = Some(format!("{server}: {why}")),
                    Attempt::Silent => {}
                }
            }
        }
        Err(match failure {
            Some(detail) => ResolveError::Failed {
                name: name.to_string(),
                detail,
            },
            None => ResolveError::NoAnswer {
                name: name.to_string(),
                servers: servers
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                conf: self.resolv_conf.display().to_string(),
                waited: started.elapsed(),
            },
        })
    }

    fn hosts_lookup(&self, name: &str) -> Vec<IpAddr> {
        let Ok(text) = std::fs::read_to_string(&self.hosts) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let l = l.split('#').next()?;
                let mut words = l.split_whitespace();
                let ip = words.next()?.parse::<IpAddr>().ok()?;
                words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
            })
            .collect()
    }

    fn nameservers(&self) -> Vec<SocketAddr> {
        let Ok(text) = std::fs::read_to_string(&self.resolv_conf) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                if w.next()? != "nameserver" {
                    return None;
                }
                // Non-standard but handy: "nameserver 127.0.0.1#5353".
                let spec = w.next()?;
                let (ip, port) = match spec.split_once('#') {
                    Some((ip, port)) => (ip, port.parse().ok()?),
                    None => (spec, 53),
                };
                Some(SocketAddr::new(ip.parse().ok()?, port))
            })
            .collect()
    }

    /// Asks one server for A and AAAA at once, from a fresh socket (a new
    /// source port each time), and waits for both answers until `until`.
    fn ask(&self, server: SocketAddr, name: &str, until: Instant) -> Attempt {
        match ask(server, name, until) {
            Ok(a) => a,
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }
}

fn ask(server: SocketAddr, name: &str, until: Instant) -> io::Result<Attempt> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    let random = random_u64();
    let (id_a, mut id_aaaa) = (random as u16, (random >> 16) as u16);
    if id_aaaa == id_a {
        id_aaaa ^= 0x8000;
    }
    let queries = [(id_a, A), (id_aaaa, AAAA)];
    for (id, qtype) in queries {
        sock.send(&encode_query(id, name, qtype))?;
    }
    let mut replies: [Option<Reply>; 2] = [None, None];
    let mut buf = [0u8; 1500];
    while replies.iter().any(Option::is_none) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            // ICMP port unreachable and the like: try the next server now.
            Err(e) => return Err(e),
        };
        for (slot, (id, qtype)) in replies.iter_mut().zip(queries) {
            if slot.is_none() {
                match parse_reply(&buf[..n], id, name, qtype) {
                    Reply::NotOurs => {}
                    Reply::NoSuchName => return Ok(Attempt::NoSuchName),
                    reply => *slot = Some(reply),
                }
            }
        }
    }
    let mut found = Vec::new();
    let mut error = None;
    let mut answered = 0;
    for reply in replies.into_iter().flatten() {
        match reply {
            Reply::Addresses(ips) => {
                answered += 1;
                found.extend(ips);
            }
            Reply::Error(e) => error = Some(e),
            Reply::NotOurs | Reply::NoSuchName => {}
        }
    }
    Ok(match (found.is_empty(), answered, error) {
        (false, _, _) => Attempt::Found(found),
        (true, 2, _) => Attempt::Found(found),
        (true, _, Some(e)) => Attempt::Failed(e),
        // One type answered empty, the other never came: say nothing yet.
        (true, _, None) => Attempt::Silent,
    })
}

fn sorted(mut ips: Vec<IpAddr>, port: u16) -> Vec<SocketAddr> {
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Unpredictable query ids without a RNG dependency: std's `RandomState`
/// keys SipHash from the OS's random source, and every instance differs.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

/// `name` in wire form, lower-cased: length-prefixed labels, then 0.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    out
}

pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    q.extend_from_slice(&wire_name(name));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&IN.to_be_bytes());
    q
}

/// Reads a (possibly compressed) name at `at`, lower-cased in wire form;
/// returns it and the offset after it in the record.
fn read_name(msg: &[u8], mut at: usize) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    let mut after = None;
    // Each pointer must go backwards, so following them ends.
    let mut limit = at;
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => {
                name.push(0);
                return Some((name, after.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = ((l & 0x3f) << 8) | *msg.get(at + 1)? as usize;
                if target >= limit {
                    return None;
                }
                after.get_or_insert(at + 2);
                limit = target;
                at = target;
            }
            l if l & 0xc0 != 0 => return None,
            l => {
                let label = msg.get(at + 1..at + 1 + l)?;
                name.push(l as u8);
                name.extend(label.iter().map(u8::to_ascii_lowercase));
                if name.len() > 255 {
                    return None;
                }
                at += 1 + l;
            }
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// What `msg` says about the query `id` for `name` and `qtype`.
pub(crate) fn parse_reply(msg: &[u8], id: u16, name: &str, qtype: u16) -> Reply {
    let asked = wire_name(name);
    if msg.len() < 12 || u16_at(msg, 0) != Some(id) {
        return Reply::NotOurs;
    }
    let flags = msg[2];
    // QR set (a response), opcode 0 (a standard query).
    if flags & 0x80 == 0 || flags & 0x78 != 0 {
        return Reply::NotOurs;
    }
    let (qd, an) = (u16_at(msg, 4), u16_at(msg, 6));
    if qd != Some(1) {
        return Reply::NotOurs;
    }
    let question = read_name(msg, 12).and_then(|(qname, at)| {
        let rest = msg.get(at..at + 4)?;
        Some((qname, u16_at(rest, 0)?, u16_at(rest, 2)?, at + 4))
    });
    let Some((qname, qt, qclass, mut at)) = question else {
        return Reply::NotOurs;
    };
    if qname != asked || qt != qtype || qclass != IN {
        return Reply::NotOurs;
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Reply::NoSuchName,
        other => return Reply::Error(format!("the nameserver answered with error code {other}")),
    }
    let malformed = || Reply::Error("malformed answer".into());
    // The name asked for and the aliases (CNAME targets) it leads to; CNAME
    // records come before the addresses they lead to.
    let mut owners = vec![asked];
    let mut ips = Vec::new();
    for _ in 0..an.unwrap_or(0) {
        let Some((owner, next)) = read_name(msg, at) else {
            return malformed();
        };
        let Some(rr) = msg.get(next..next + 10) else {
            return malformed();
        };
        let (rtype, class) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            u16::from_be_bytes([rr[2], rr[3]]),
        );
        let len = u16::from_be_bytes([rr[8], rr[9]]) as usize;
        let Some(data) = msg.get(next + 10..next + 10 + len) else {
            return malformed();
        };
        if class == IN && owners.contains(&owner) {
            match (rtype, data.len()) {
                (CNAME, _) => match read_name(msg, next + 10) {
                    Some((target, _)) => owners.push(target),
                    None => return malformed(),
                },
                (A, 4) if qtype == A => {
                    ips.push(IpAddr::from([data[0], data[1], data[2], data[3]]))
                }
                (AAAA, 16) if qtype == AAAA => {
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(data);
                    ips.push(IpAddr::from(v6));
                }
                _ => {}
            }
        }
        at = next + 10 + len;
    }
    if ips.is_empty() && flags & 0x02 != 0 {
        return Reply::Error("the answer was truncated (TC) and this resolver has no TCP".into());
    }
    Reply::Addresses(ips)
}

#[cfg(test)]
mod tests;
