//! Name resolution without libc: IP literals, then `/etc/hosts`, then A and
//! AAAA queries over UDP to the nameservers in `/etc/resolv.conf`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("'{0}' is not a valid host name")]
    BadName(String),
    #[error("cannot resolve '{name}': no nameserver in {conf} and no entry in the hosts file; configure the network (nameserver lines in {conf})")]
    NoNameserver { name: String, conf: String },
    #[error("cannot resolve '{name}': {detail}")]
    Failed { name: String, detail: String },
    #[error("'{0}' does not exist (the nameserver says so)")]
    NoSuchName(String),
}

const A: u16 = 1;
const AAAA: u16 = 28;

/// Where the resolver reads its configuration; the defaults are the
/// system's files, tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// Per query and nameserver; each is tried twice.
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

impl Resolver {
    /// The addresses of `name`, IPv4 first (embedded networks are more
    /// often v4-only than v6-only).
    pub fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
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
        let mut found = Vec::new();
        let mut last_err = None;
        for qtype in [A, AAAA] {
            match self.query_any(&servers, name, qtype) {
                Ok(ips) => found.extend(ips),
                Err(e @ ResolveError::NoSuchName(_)) => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        if found.is_empty() {
            return Err(last_err.unwrap_or_else(|| ResolveError::Failed {
                name: name.to_string(),
                detail: "the nameserver returned no address".into(),
            }));
        }
        Ok(sorted(found, port))
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

    fn query_any(
        &self,
        servers: &[SocketAddr],
        name: &str,
        qtype: u16,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let mut last = String::from("no answer");
        for _attempt in 0..2 {
            for server in servers {
                match self.query(*server, name, qtype) {
                    Ok(r) => return r,
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        Err(ResolveError::Failed {
            name: name.to_string(),
            detail: last,
        })
    }

    /// One query; the outer error is transport trouble (try the next
    /// server), the inner result is the server's answer.
    fn query(
        &self,
        server: SocketAddr,
        name: &str,
        qtype: u16,
    ) -> std::io::Result<Result<Vec<IpAddr>, ResolveError>> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(self.timeout))?;
        let id = query_id();
        sock.send(&encode_query(id, name, qtype))?;
        let mut buf = [0u8; 1500];
        loop {
            let n = sock.recv(&mut buf)?;
            // Ignore stray datagrams (wrong id); the timeout bounds the wait.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                return Ok(parse_answer(&buf[..n], name, qtype));
            }
        }
    }
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

/// Unpredictable enough to make spoofed answers guesswork, without a RNG
/// dependency: the clock's nanoseconds and the process id.
fn query_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16) ^ std::process::id()) as u16
}

pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    q
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l,
        }
    }
}

pub(crate) fn parse_answer(
    msg: &[u8],
    name: &str,
    qtype: u16,
) -> Result<Vec<IpAddr>, ResolveError> {
    let failed = |detail: &str| ResolveError::Failed {
        name: name.to_string(),
        detail: detail.to_string(),
    };
    if msg.len() < 12 {
        return Err(failed("short answer"));
    }
    let rcode = msg[3] & 0x0f;
    match rcode {
        0 => {}
        3 => return Err(ResolveError::NoSuchName(name.to_string())),
        other => {
            return Err(failed(&format!(
                "the nameserver answered with error code {other}"
            )))
        }
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at).ok_or_else(|| failed("malformed answer"))? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at).ok_or_else(|| failed("malformed answer"))?;
        let rr = msg
            .get(at..at + 10)
            .ok_or_else(|| failed("malformed answer"))?;
        let rtype = u16::from_be_bytes([rr[0], rr[1]]);
        let len = u16::from_be_bytes([rr[8], rr[9]]) as usize;
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or_else(|| failed("malformed answer"))?;
        // CNAME records come first; the addresses that follow belong to
        // the name asked for.
        match (rtype, len) {
            (A, 4) if qtype == A => ips.push(IpAddr::from(<[u8; 4]>::try_from(data).expect("4"))),
            (AAAA, 16) if qtype == AAAA => {
                ips.push(IpAddr::from(<[u8; 16]>::try_from(data).expect("16")))
            }
            _ => {}
        }
        at += 10 + len;
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_hosts_need_no_nameserver() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hosts"),
            "127.0.0.1 localhost\n# 10.0.0.9 commented\n192.0.2.7  updates.example  upd # alias\n::1 localhost\n",
        )
        .unwrap();
        let r = Resolver {
            hosts: dir.path().join("hosts"),
            resolv_conf: dir.path().join("none"),
            timeout: Duration::from_millis(200),
        };
        assert_eq!(
            r.resolve("192.0.2.1", 443).unwrap(),
            vec!["192.0.2.1:443".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("[::1]", 8443).unwrap(),
            vec!["[::1]:8443".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("UPD", 1).unwrap(),
            vec!["192.0.2.7:1".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("localhost", 2).unwrap(),
            vec!["127.0.0.1:2".parse().unwrap(), "[::1]:2".parse().unwrap()]
        );
        let err = r.resolve("elsewhere.example", 1).unwrap_err().to_string();
        assert!(err.contains("no nameserver"), "{err}");
        assert!(r.resolve("bad name", 1).is_err());
        assert!(r.resolve("a..b", 1).is_err());
    }

    #[test]
    fn answers_are_parsed_through_cnames_and_errors_named() {
        // A hand-built answer: www.example -> CNAME -> A 192.0.2.5.
        let mut m = encode_query(7, "www.example", A);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // two answers
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 5]);
        assert_eq!(
            parse_answer(&m, "www.example", A).unwrap(),
            vec![IpAddr::from([192, 0, 2, 5])]
        );
        let mut nx = encode_query(7, "nope.example", A);
        nx[3] = 0x83;
        assert!(matches!(
            parse_answer(&nx, "nope.example", A),
            Err(ResolveError::NoSuchName(_))
        ));
        // Truncated records are errors, never panics.
        for cut in 0..m.len() {
            let _ = parse_answer(&m[..cut], "www.example", A);
        }
    }
}
