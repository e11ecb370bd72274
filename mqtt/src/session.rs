//! One MQTT connection over TLS: connect, subscribe, publish, keepalive.
//!
//! Every read has a deadline: the handshake, CONNACK and SUBACK must arrive
//! within [`Options::timeout`]; a packet, once started, must be finished
//! within it; a PINGREQ must be answered within it. A broker that falls
//! silent, dribbles, or sends more than [`crate::MAX_PACKET`] gets an error
//! (and the client reconnects), never a hang or a large allocation.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::client::Options;
use crate::codec::{self, CodecError, Connect, Packet, Publish, QoS, CONNACK_ACCEPTED};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the wall clock says {now}s since 1970, before {floor}s (when this software or its certificate was made): TLS cannot check certificates until the clock is set (NTP or an RTC); not connecting")]
    ClockNotSet { now: u64, floor: u64 },
    #[error("cannot resolve the broker: {0}")]
    Resolve(#[from] net::ResolveError),
    #[error("cannot reach the broker at {addrs}: {source}")]
    Connect { addrs: String, source: io::Error },
    #[error("TLS with {host} failed: {detail}")]
    Tls { host: String, detail: String },
    #[error("'{0}' is not a host name or IP address TLS can verify")]
    BadHost(String),
    #[error("the broker closed the connection right after CONNECT (expected once when AWS IoT registers a new certificate by just-in-time provisioning; otherwise the certificate or its policy is not accepted)")]
    ClosedAfterConnect,
    #[error("the broker refused the connection: {0}")]
    Refused(&'static str),
    #[error("the broker closed the connection")]
    Closed,
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("the broker sent {0}, which it must not at this point")]
    Unexpected(&'static str),
    #[error("the broker broke the protocol: {0}")]
    Protocol(#[from] CodecError),
    #[error("connection lost: {0}")]
    Io(io::Error),
}

/// What a CONNACK return code means (MQTT 3.1.1 table 3.1).
fn connack_reason(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized (check the certificate's policy, or the thing name used as client id)",
        _ => "an unknown CONNACK return code",
    }
}

const MAX_QUEUED: usize = 1000;

type Tls = StreamOwned<ClientConnection, TcpStream>;

pub struct Session {
    stream: Tls,
    host: String,
    /// Bytes received but not yet decoded; never more than one read beyond
    /// a packet, and no packet beyond the limit.
    rx: Vec<u8>,
    /// When the first byte of the packet being received arrived.
    rx_started: Option<Instant>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    keep_alive: Duration,
    timeout: Duration,
    max_packet: usize,
    next_id: u16,
    /// Publishes that arrived while we waited for an acknowledgement.
    queued: VecDeque<Publish>,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Session {
    /// Opens TCP and TLS, sends CONNECT and waits for CONNACK.
    pub fn connect(opts: &Options) -> Result<(Session, bool), SessionError> {
        let now = SystemTime::now();
        if now < opts.clock_floor {
            return Err(SessionError::ClockNotSet {
                now: seconds(now),
                floor: seconds(opts.clock_floor),
            });
        }
        // SNI goes with every DNS name (rustls's default); an IP address
        // has none by RFC 6066 and is verified against the certificate's
        // IP subject alternative names instead.
        let name = ServerName::try_from(opts.host.clone())
            .map_err(|_| SessionError::BadHost(opts.host.clone()))?;
        let addrs = opts.resolver.resolve(&opts.host, opts.port)?;
        let mut last = io::Error::other("no address");
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, opts.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(tcp) = tcp else {
            let addrs = addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SessionError::Connect {
                addrs,
                source: last,
            });
        };
        tcp.set_nodelay(true).map_err(SessionError::Io)?;
        tcp.set_write_timeout(Some(opts.timeout))
            .map_err(SessionError::Io)?;
        tcp.set_read_timeout(Some(opts.timeout))
            .map_err(SessionError::Io)?;
        let conn =
            ClientConnection::new(opts.tls.clone(), name).map_err(|e| SessionError::Tls {
                host: opts.host.clone(),
                detail: e.to_string(),
            })?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(tls_failure(&opts.host, e, "during the TLS handshake"));
            }
        }
        let mut session = Session {
            stream,
            host: opts.host.clone(),
            rx: Vec::new(),
            rx_started: None,
            last_sent: Instant::now(),
            ping_sent: None,
            keep_alive: opts.keep_alive,
            timeout: opts.timeout,
            max_packet: crate::MAX_PACKET,
            next_id: 0,
            queued: VecDeque::new(),
        };
        session.send(&Packet::Connect(Connect {
            client_id: opts.client_id.clone(),
            keep_alive_secs: opts.keep_alive.as_secs().min(u16::MAX as u64) as u16,
            clean_session: true,
            will: opts.will.clone(),
            username: None,
            password: None,
        }))?;
        let deadline = Instant::now() + opts.timeout;
        let reply = match session.read_packet(deadline) {
            Ok(Some(p)) => p,
            Ok(None) => return Err(SessionError::Timeout("no CONNACK from the broker")),
            Err(SessionError::Closed) => return Err(SessionError::ClosedAfterConnect),
            Err(SessionError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(SessionError::ClosedAfterConnect)
            }
            Err(e) => return Err(e),
        };
        match reply {
            Packet::ConnAck {
                code: CONNACK_ACCEPTED,
                session_present,
            } => Ok((session, session_present)),
            Packet::ConnAck { code, .. } => Err(SessionError::Refused(connack_reason(code))),
            _ => Err(SessionError::Unexpected("another packet before CONNACK")),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn packet_id(&mut self) -> u16 {
        // Zero is not a valid packet id.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    pub fn send(&mut self, packet: &Packet) -> Result<(), SessionError> {
        let mut buf = Vec::new();
        codec::encode(packet, &mut buf)?;
        if buf.len() > self.max_packet {
            return Err(SessionError::Protocol(CodecError::Encode(
                "a message over AWS IoT Core's 128 KiB limit",
            )));
        }
        let host = self.host.clone();
        self.stream
            .write_all(&buf)
            .and_then(|()| self.stream.flush())
            .map_err(|e| tls_failure(&host, e, "while sending"))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Publishes a message; returns its packet id (0 for QoS 0). QoS 1
    /// acknowledgements are consumed by [`Session::poll`]; what the cloud
    /// must not miss is re-sent by the caller after a reconnect.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u16, SessionError> {
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            self.packet_id()
        };
        self.send(&Packet::Publish(Publish {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos,
            packet_id,
            retain,
            dup: false,
        }))?;
        Ok(packet_id)
    }

    /// Subscribes and waits for the SUBACK; returns one code per filter
    /// (0x80: refused, e.g. by a policy or an ACL).
    pub fn subscribe(&mut self, filters: &[(String, QoS)]) -> Result<Vec<u8>, SessionError> {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe {
            packet_id,
            filters: filters.to_vec(),
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.read_packet(deadline)? {
                None => return Err(SessionError::Timeout("no SUBACK from the broker")),
                Some(Packet::SubAck {
                    packet_id: id,
                    codes,
                }) if id == packet_id => {
                    if codes.len() != filters.len() {
                        return Err(SessionError::Unexpected(
                            "a SUBACK with the wrong number of codes",
                        ));
                    }
                    return Ok(codes);
                }
                Some(p) => self.handle(p)?,
            }
        }
    }

    /// Waits until `until` for a message; keeps the connection alive
    /// meanwhile. `Ok(None)`: nothing arrived in time.
    pub fn poll(&mut self, until: Instant) -> Result<Option<Publish>, SessionError> {
        loop {
            if let Some(p) = self.queued.pop_front() {
                return Ok(Some(p));
            }
            match self.read_packet(until)? {
                None => return Ok(None),
                Some(p) => self.handle(p)?,
            }
        }
    }

    /// Sends DISCONNECT (so the broker does not publish the last will) and
    /// closes the TLS stream.
    pub fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect);
        self.stream.conn.send_close_notify();
        let _ = self.stream.flush();
    }

    fn handle(&mut self, packet: Packet) -> Result<(), SessionError> {
        match packet {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(p.packet_id))?;
                }
                // Only filled while we wait for an acknowledgement; a broker
                // that floods us meanwhile is cut off, not buffered.
                if self.queued.len() >= MAX_QUEUED {
                    return Err(SessionError::Unexpected(
                        "more than 1000 messages while we waited for an acknowledgement",
                    ));
                }
                self.queued.push_back(p);
                Ok(())
            }
            Packet::PubAck(_) | Packet::UnsubAck(_) | Packet::SubAck { .. } => Ok(()),
            Packet::PingResp => {
                self.ping_sent = None;
                Ok(())
            }
            Packet::ConnAck { .. } => Err(SessionError::Unexpected("a second CONNACK")),
            Packet::Disconnect => Err(SessionError::Unexpected(
                "DISCONNECT (a client-only packet)",
            )),
            Packet::Connect(_)
            | Packet::Subscribe { .. }
            | Packet::Unsubscribe { .. }
            | Packet::PingReq => Err(SessionError::Unexpected("a client-only packet")),
        }
    }

    /// Reads one packet, sending PINGREQs when due; `Ok(None)` at `until`.
    fn read_packet(&mut self, until: Instant) -> Result<Option<Packet>, SessionError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some((packet, used)) = codec::decode(&self.rx, self.max_packet)? {
                self.rx.drain(..used);
                self.rx_started = (!self.rx.is_empty()).then(Instant::now);
                return Ok(Some(packet));
            }
            let now = Instant::now();
            let mut deadline = until;
            if let Some(sent) = self.ping_sent {
                if now >= sent + self.timeout {
                    return Err(SessionError::Timeout(
                        "the broker did not answer a keepalive ping",
                    ));
                }
                deadline = deadline.min(sent + self.timeout);
            } else if now >= self.last_sent + self.keep_alive {
                self.send(&Packet::PingReq)?;
                self.ping_sent = Some(now);
                continue;
            } else {
                deadline = deadline.min(self.last_sent + self.keep_alive);
            }
            if let Some(started) = self.rx_started {
                if now >= started + self.timeout {
                    return Err(SessionError::Timeout(
                        "the broker started a packet and did not finish it",
                    ));
                }
                deadline = deadline.min(started + self.timeout);
            }
            if now >= until {
                return Ok(None);
            }
            let wait = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.stream
                .sock
                .set_read_timeout(Some(wait))
                .map_err(SessionError::Io)?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(SessionError::Closed),
                Ok(n) => {
                    if self.rx.is_empty() {
                        self.rx_started = Some(Instant::now());
                    }
                    self.rx.extend_from_slice(&buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(SessionError::Closed)
                }
                Err(e) => return Err(tls_failure(&self.host.clone(), e, "while receiving")),
            }
        }
    }
}

/// Says what a TLS-level failure means and what to do about it.
fn tls_failure(host: &str, e: io::Error, when: &str) -> SessionError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return SessionError::Timeout("the broker stopped answering");
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return SessionError::Closed;
    }
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return SessionError::Io(e);
    };
    let detail = match tls {
        rustls::Error::InvalidCertificate(cert) => format!(
            "{when}: the broker's certificate is not acceptable ({cert:?}); check the CA bundle in the device identity and the endpoint name"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "{when}: the broker sent the alert {alert:?} (usually: it does not accept this device certificate, or wants ALPN on port 443)"
        ),
        rustls::Error::NoApplicationProtocol => format!("{when}: the server accepts none of the offered ALPN protocols"),
        other => format!("{when}: {other}"),
    };
    SessionError::Tls {
        host: host.to_string(),
        detail,
    }
}
