//! The resolver against a fake nameserver on loopback that sends what an
//! attacker on the path or a confused network would: replies with the
//! wrong id every 100 ms, and a reply with the right id for another name.
//! The lookup must neither accept them nor wait longer because of them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use net::{ResolveError, Resolver};

const NAME: &str = "update.keel.test";
const GOOD: [u8; 4] = [192, 0, 2, 10];
const EVIL: [u8; 4] = [192, 0, 2, 66];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Junk only, for 15 s after each query.
    Hostile,
    /// Junk, then the right answer after 300 ms.
    NoisyButGood,
}

struct FakeDns {
    port: u16,
    junk: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A query seen: who asked, its id and its question section.
struct Query {
    from: SocketAddr,
    id: u16,
    question: Vec<u8>,
    qtype: u16,
    at: Instant,
    answered: bool,
}

fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A reply: `question` is the wire name, type and class; `ips` become A
/// records owned by the question's name.
fn reply(id: u16, question: &[u8], ips: &[[u8; 4]]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, ips.len() as u8, 0, 0, 0, 0]);
    m.extend_from_slice(question);
    for ip in ips {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(ip);
    }
    m
}

fn fake_dns(mode: Mode) -> FakeDns {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let junk = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (junk2, stop2) = (junk.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut queries: Vec<Query> = Vec::new();
        let mut last_junk = Instant::now();
        let mut buf = [0u8; 512];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if n > 16 {
                    let q = Query {
                        from,
                        id: u16::from_be_bytes([buf[0], buf[1]]),
                        question: buf[12..n].to_vec(),
                        qtype: u16::from_be_bytes([buf[n - 4], buf[n - 3]]),
                        at: Instant::now(),
                        answered: false,
                    };
                    // The right id, another name, an address for it.
                    let mut other = wire("other.keel.test");
                    other.extend_from_slice(&buf[n - 4..n]);
                    let _ = sock.send_to(&reply(q.id, &other, &[EVIL]), from);
                    queries.push(q);
                }
            }
            if last_junk.elapsed() >= Duration::from_millis(100) {
                last_junk = Instant::now();
                for q in queries
                    .iter()
                    .filter(|q| q.at.elapsed() < Duration::from_secs(15))
                {
                    // The question asked, an address, a wrong id.
                    let _ = sock.send_to(&reply(q.id ^ 0x0101, &q.question, &[EVIL]), q.from);
                    junk2.fetch_add(1, Ordering::Relaxed);
                }
            }
            if mode == Mode::NoisyButGood {
                for q in queries.iter_mut().filter(|q| !q.answered) {
                    if q.at.elapsed() >= Duration::from_millis(300) {
                        let ips: &[[u8; 4]] = if q.qtype == 1 { &[GOOD] } else { &[] };
                        let _ = sock.send_to(&reply(q.id, &q.question, ips), q.from);
                        q.answered = true;
                    }
                }
            }
        }
    });
    FakeDns { port, junk, stop }
}

fn resolver(dir: &tempfile::TempDir, dns: &FakeDns, timeout: Duration) -> Resolver {
    std::fs::write(dir.path().join("hosts"), "").unwrap();
    std::fs::write(
        dir.path().join("resolv.conf"),
        format!("nameserver 127.0.0.1#{}\n", dns.port),
    )
    .unwrap();
    Resolver {
        hosts: dir.path().join("hosts"),
        resolv_conf: dir.path().join("resolv.conf"),
        timeout,
    }
}

/// Runs `f` in a thread and fails the test if it is not done within
/// `limit`: a resolver that regresses to waiting for ever fails, not hangs.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

#[test]
fn junk_and_answers_for_other_names_neither_count_nor_extend_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let dns = fake_dns(Mode::Hostile);
    // One server, 600 ms an attempt, two attempts: 1.2 s in all.
    let r = resolver(&dir, &dns, Duration::from_millis(600));
    let budget = Duration::from_millis(1200);
    let slack = Duration::from_millis(1500);
    let r2 = r.clone();
    let (result, elapsed) = within(Duration::from_secs(20), move || {
        let started = Instant::now();
        (r2.resolve(NAME, 443), started.elapsed())
    });
    let err = result.unwrap_err();
    assert!(matches!(err, ResolveError::NoAnswer { .. }), "{err}");
    assert!(
        err.to_string().contains("no answer from 127.0.0.1:"),
        "{err}"
    );
    assert!(
        elapsed >= budget - Duration::from_millis(50) && elapsed < budget + slack,
        "{elapsed:?}"
    );
    assert!(
        dns.junk.load(Ordering::Relaxed) >= 10,
        "the server sent no junk: no test"
    );

    // The caller's deadline, when nearer, ends it sooner.
    let (result, elapsed) = within(Duration::from_secs(20), move || {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        (r.resolve_before(NAME, 443, deadline), started.elapsed())
    });
    assert!(result.is_err());
    assert!(elapsed < Duration::from_millis(300) + slack, "{elapsed:?}");
}

#[test]
fn a_server_that_answers_through_the_noise_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let dns = fake_dns(Mode::NoisyButGood);
    let r = resolver(&dir, &dns, Duration::from_secs(2));
    let addrs = within(Duration::from_secs(20), move || r.resolve(NAME, 443)).unwrap();
    assert_eq!(addrs, vec![SocketAddr::new(IpAddr::from(GOOD), 443)]);
    assert!(
        dns.junk.load(Ordering::Relaxed) >= 2,
        "the server sent no junk: no test"
    );
}
