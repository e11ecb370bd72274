//! The connection kept alive: [`Client::poll`] connects, reconnects with
//! backoff and jitter after any failure, re-subscribes every filter after
//! every reconnect, and reports each of these as an [`Event`] so the caller
//! logs why it reconnected.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;

use crate::backoff::Backoff;
use crate::codec::{Publish, QoS, Will, SUBACK_FAILURE};
use crate::session::{Session, SessionError};

/// AWS IoT Core accepts keepalives from 30 to 1200 seconds.
pub const KEEP_ALIVE_RANGE: (u64, u64) = (30, 1200);

/// After a connection stayed up this long, the backoff starts over.
const STABLE: Duration = Duration::from_secs(60);

/// Everything a connection needs; [`Options::new`] fills the defaults.
#[derive(Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    /// AWS IoT Core wants the thing name here.
    pub client_id: String,
    /// Clamped to [`KEEP_ALIVE_RANGE`] by [`Options::new`].
    pub keep_alive: Duration,
    pub will: Option<Will>,
    pub tls: Arc<ClientConfig>,
    pub resolver: net::Resolver,
    /// Deadline for each step (TCP connect, handshake, CONNACK, SUBACK, a
    /// started packet, a ping's answer, a write).
    pub timeout: Duration,
    /// A wall clock before this is not set (see [`SessionError::ClockNotSet`]).
    pub clock_floor: SystemTime,
    pub backoff: Backoff,
}

impl Options {
    pub fn new(host: &str, port: u16, client_id: &str, tls: Arc<ClientConfig>) -> Options {
        Options {
            host: host.to_string(),
            port,
            client_id: client_id.to_string(),
            keep_alive: Duration::from_secs(300),
            will: None,
            tls,
            resolver: net::Resolver::default(),
            timeout: Duration::from_secs(20),
            clock_floor: SystemTime::UNIX_EPOCH + Duration::from_secs(crate::BUILD_EPOCH_FLOOR),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }

    /// Sets the keepalive, clamped to what AWS IoT Core accepts.
    pub fn keep_alive(mut self, secs: u64) -> Options {
        self.keep_alive = Duration::from_secs(secs.clamp(KEEP_ALIVE_RANGE.0, KEEP_ALIVE_RANGE.1));
        self
    }
}

#[derive(Debug)]
pub enum Event {
    /// Connected and every filter subscribed again (`refused` lists the
    /// filters the broker refused, e.g. by its policy or ACL).
    Connected { refused: Vec<String> },
    /// A message on a subscribed topic.
    Message(Publish),
    /// The connection failed or was lost; the next attempt is in
    /// `retry_in`. `expected` marks the close that just-in-time
    /// provisioning causes on a new certificate's first connection
    /// (reported once per client, so the caller logs it once).
    Disconnected {
        error: SessionError,
        retry_in: Duration,
        expected: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker (the client reconnects by itself; send it again after Event::Connected)")]
    NotConnected,
    #[error("the connection failed while sending ({0}); the client reconnects by itself")]
    Lost(String),
}

pub struct Client {
    opts: Options,
    subscriptions: Vec<(String, QoS)>,
    session: Option<(Session, Instant)>,
    retry_at: Option<Instant>,
    /// A failure seen while publishing, reported by the next poll.
    pending: Option<Event>,
    jitp_seen: bool,
}

impl Client {
    /// A client that connects on the first [`Client::poll`].
    pub fn new(opts: Options) -> Client {
        Client {
            opts,
            subscriptions: Vec::new(),
            session: None,
            retry_at: None,
            pending: None,
            jitp_seen: false,
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Adds filters that are subscribed on every (re)connect, before
    /// [`Event::Connected`] is reported; when connected, also at once (a
    /// failure then is reported by the next poll).
    pub fn subscribe(&mut self, filters: &[(&str, QoS)]) {
        let mut new = Vec::new();
        for (f, q) in filters {
            if !self.subscriptions.iter().any(|(g, _)| g == f) {
                self.subscriptions.push((f.to_string(), *q));
                new.push((f.to_string(), *q));
            }
        }
        let Some((session, _)) = &mut self.session else {
            return;
        };
        if new.is_empty() {
            return;
        }
        if let Err(e) = session.subscribe(&new) {
            let event = self.lost(e);
            self.pending = Some(event);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// Publishes on the current connection. On failure the connection is
    /// dropped and the reason reported by the next [`Client::poll`].
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<(), PublishError> {
        let Some((session, _)) = &mut self.session else {
            return Err(PublishError::NotConnected);
        };
        match session.publish(topic, payload, qos, retain) {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = e.to_string();
                let event = self.lost(e);
                self.pending = Some(event);
                Err(PublishError::Lost(why))
            }
        }
    }

    /// Waits up to `timeout` for something to happen: a message, a
    /// (re)connection, a failure. `None`: nothing did.
    pub fn poll(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(e) = self.pending.take() {
            return Some(e);
        }
        let until = Instant::now() + timeout;
        let Some((session, _)) = &mut self.session else {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at.min(until) - now);
                    if at > until {
                        return None;
                    }
                }
            }
            return Some(self.attempt());
        };
        match session.poll(until) {
            Ok(Some(p)) => Some(Event::Message(p)),
            Ok(None) => None,
            Err(e) => Some(self.lost(e)),
        }
    }

    /// Disconnects cleanly (no last will); the next poll connects again.
    pub fn disconnect(&mut self) {
        if let Some((s, _)) = self.session.take() {
            s.disconnect();
        }
    }

    fn attempt(&mut self) -> Event {
        match self.connect() {
            Ok((session, refused)) => {
                self.session = Some((session, Instant::now()));
                self.retry_at = None;
                Event::Connected { refused }
            }
            Err(error) => {
                let expected = matches!(error, SessionError::ClosedAfterConnect) && !self.jitp_seen;
                let retry_in = if expected {
                    // AWS registers the certificate within seconds: retry
                    // soon, without counting it as a failure.
                    self.jitp_seen = true;
                    Duration::from_secs(2)
                } else {
                    self.opts.backoff.next_delay()
                };
                self.retry_at = Some(Instant::now() + retry_in);
                Event::Disconnected {
                    error,
                    retry_in,
                    expected,
                }
            }
        }
    }

    fn connect(&mut self) -> Result<(Session, Vec<String>), SessionError> {
        let (mut session, _present) = Session::connect(&self.opts)?;
        let mut refused = Vec::new();
        if !self.subscriptions.is_empty() {
            let codes = session.subscribe(&self.subscriptions)?;
            for ((filter, _), code) in self.subscriptions.iter().zip(codes) {
                if code == SUBACK_FAILURE {
                    refused.push(filter.clone());
                }
            }
        }
        Ok((session, refused))
    }

    fn lost(&mut self, error: SessionError) -> Event {
        if let Some((_, since)) = self.session.take() {
            if since.elapsed() >= STABLE.max(self.opts.keep_alive) {
                self.opts.backoff.reset();
            }
        }
        let retry_in = self.opts.backoff.next_delay();
        self.retry_at = Some(Instant::now() + retry_in);
        Event::Disconnected {
            error,
            retry_in,
            expected: false,
        }
    }
}
