//! MQTT 3.1.1 packets (OASIS standard, section 3), both directions: the
//! device encodes CONNECT/SUBSCRIBE/PUBLISH and decodes what a broker sends;
//! the tests' fake brokers use the other half.
//!
//! [`decode`] works on a buffer that may hold a partial packet and reads
//! the remaining length before anything else, so a peer that announces a
//! 200 MiB packet is refused at once instead of being buffered.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

impl QoS {
    fn from_bits(bits: u8) -> Result<QoS, CodecError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            // AWS IoT Core has no QoS 2, and neither do we.
            2 => Err(CodecError::Unsupported("QoS 2")),
            _ => Err(CodecError::Malformed("QoS 3 does not exist")),
        }
    }
}

/// The message a broker publishes for us when we vanish (MQTT's last will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub client_id: String,
    pub keep_alive_secs: u16,
    pub clean_session: bool,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    /// Zero for QoS 0.
    pub packet_id: u16,
    pub retain: bool,
    pub dup: bool,
}

impl fmt::Debug for Publish {
    // Payloads can be 128 KiB of JSON: show the size, not the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Publish({} qos={:?} id={} retain={} {} bytes)",
            self.topic,
            self.qos,
            self.packet_id,
            self.retain,
            self.payload.len()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck(u16),
    Subscribe {
        packet_id: u16,
        filters: Vec<(String, QoS)>,
    },
    /// One return code per filter: 0 or 1 is the granted QoS, 0x80 failure.
    SubAck {
        packet_id: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

/// The CONNACK return code for "connection accepted".
pub const CONNACK_ACCEPTED: u8 = 0;
/// The SUBACK return code for a refused subscription.
pub const SUBACK_FAILURE: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the peer announced a {size}-byte packet, more than the {max}-byte limit (AWS IoT Core's 128 KiB message limit); refused without reading it")]
    TooLarge { size: usize, max: usize },
    #[error("malformed MQTT packet: {0}")]
    Malformed(&'static str),
    #[error("MQTT packet type {0} is not one MQTT 3.1.1 defines")]
    UnknownType(u8),
    #[error("{0} is not supported (AWS IoT Core speaks QoS 0 and 1 only)")]
    Unsupported(&'static str),
    #[error("cannot encode: {0}")]
    Encode(&'static str),
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), CodecError> {
    let len =
        u16::try_from(b.len()).map_err(|_| CodecError::Encode("a string over 65535 bytes"))?;
    put_u16(out, len);
    out.extend_from_slice(b);
    Ok(())
}

/// Appends the fixed header (type and flags, remaining length) and `body`.
fn frame(out: &mut Vec<u8>, first: u8, body: &[u8]) -> Result<(), CodecError> {
    // Four length bytes at most: 268,435,455 (section 2.2.3).
    if body.len() > 268_435_455 {
        return Err(CodecError::Encode("a packet over 256 MiB"));
    }
    out.push(first);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    Ok(())
}

/// Appends the encoding of `packet` to `out`.
pub fn encode(packet: &Packet, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut body = Vec::new();
    let first = match packet {
        Packet::Connect(c) => {
            put_bytes(&mut body, b"MQTT")?;
            body.push(4); // protocol level 4 = 3.1.1
            let mut flags = 0u8;
            if c.clean_session {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            body.push(flags);
            put_u16(&mut body, c.keep_alive_secs);
            put_bytes(&mut body, c.client_id.as_bytes())?;
            if let Some(w) = &c.will {
                put_bytes(&mut body, w.topic.as_bytes())?;
                put_bytes(&mut body, &w.payload)?;
            }
            if let Some(u) = &c.username {
                put_bytes(&mut body, u.as_bytes())?;
            }
            if let Some(p) = &c.password {
                put_bytes(&mut body, p)?;
            }
            0x10
        }
        Packet::ConnAck {
            session_present,
            code,
        } => {
            body.push(u8::from(*session_present));
            body.push(*code);
            0x20
        }
        Packet::Publish(p) => {
            if p.topic.is_empty() || p.topic.contains(['+', '#']) {
                return Err(CodecError::Encode(
                    "a publish topic must be non-empty, without wildcards",
                ));
            }
            put_bytes(&mut body, p.topic.as_bytes())?;
            if p.qos != QoS::AtMostOnce {
                put_u16(&mut body, p.packet_id);
            }
            body.extend_from_slice(&p.payload);
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(id) => {
            put_u16(&mut body, *id);
            0x40
        }
        Packet::Subscribe { packet_id, filters } => {
            if filters.is_empty() {
                return Err(CodecError::Encode("a SUBSCRIBE needs at least one filter"));
            }
            put_u16(&mut body, *packet_id);
            for (f, q) in filters {
                put_bytes(&mut body, f.as_bytes())?;
                body.push(*q as u8);
            }
            0x82
        }
        Packet::SubAck { packet_id, codes } => {
            put_u16(&mut body, *packet_id);
            body.extend_from_slice(codes);
            0x90
        }
        Packet::Unsubscribe { packet_id, filters } => {
            if filters.is_empty() {
                return Err(CodecError::Encode(
                    "an UNSUBSCRIBE needs at least one filter",
                ));
            }
            put_u16(&mut body, *packet_id);
            for f in filters {
                put_bytes(&mut body, f.as_bytes())?;
            }
            0xa2
        }
        Packet::UnsubAck(id) => {
            put_u16(&mut body, *id);
            0xb0
        }
        Packet::PingReq => 0xc0,
        Packet::PingResp => 0xd0,
        Packet::Disconnect => 0xe0,
    };
    frame(out, first, &body)
}

/// A cursor over a packet's body that never reads past its end.
struct Body<'a> {
    bytes: &'a [u8],
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Malformed(
                "a field runs past the end of the packet",
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        // Section 1.5.3: UTF-8 without U+0000.
        let s =
            std::str::from_utf8(b).map_err(|_| CodecError::Malformed("a string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(CodecError::Malformed("a string contains U+0000"));
        }
        Ok(s.to_string())
    }
    fn end(&self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed(
                "bytes left over at the end of the packet",
            ))
        }
    }
}

/// Reads the remaining length after the first byte: `Ok(None)` if the
/// buffer ends inside it, otherwise (length, bytes it took).
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            // Section 1.5.5 asks for the shortest encoding; a longer one
            // is how a fuzzer smuggles ambiguity, so refuse it.
            if i > 0 && byte == 0 {
                return Err(CodecError::Malformed(
                    "a remaining length not in its shortest form",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(CodecError::Malformed(
        "a remaining length longer than four bytes",
    ))
}

/// Decodes the first packet in `buf`: `Ok(None)` if `buf` holds only part
/// of it (read more and call again), `Ok(Some((packet, consumed)))`
/// otherwise. A packet larger than `max` bytes is an error as soon as its
/// header is seen.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet, usize)>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, len_bytes)) = remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + len_bytes + len;
    if total > max {
        return Err(CodecError::TooLarge { size: total, max });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let packet = parse(first, &buf[1 + len_bytes..total])?;
    Ok(Some((packet, total)))
}

/// The smallest number of bytes that must be buffered before [`decode`]
/// can finish the packet starting `buf`, if its header is complete.
pub fn wanted(buf: &[u8]) -> Option<usize> {
    let (len, len_bytes) = remaining_length(buf.get(1..)?).ok()??;
    Some(1 + len_bytes + len)
}

fn expect_flags(first: u8, flags: u8) -> Result<(), CodecError> {
    if first & 0x0f == flags {
        Ok(())
    } else {
        Err(CodecError::Malformed("reserved flag bits are wrong"))
    }
}

fn parse(first: u8, body: &[u8]) -> Result<Packet, CodecError> {
    let mut b = Body { bytes: body };
    let packet = match first >> 4 {
        1 => {
            expect_flags(first, 0)?;
            if b.bytes()? != b"MQTT" {
                return Err(CodecError::Malformed("the protocol name is not MQTT"));
            }
            if b.u8()? != 4 {
                return Err(CodecError::Unsupported("a protocol level other than 3.1.1"));
            }
            let flags = b.u8()?;
            if flags & 0x01 != 0 {
                return Err(CodecError::Malformed("the reserved CONNECT flag is set"));
            }
            let keep_alive_secs = b.u16()?;
            let client_id = b.string()?;
            let will = if flags & 0x04 != 0 {
                Some(Will {
                    qos: QoS::from_bits((flags >> 3) & 0x03)?,
                    retain: flags & 0x20 != 0,
                    topic: b.string()?,
                    payload: b.bytes()?.to_vec(),
                })
            } else if flags & 0x38 != 0 {
                return Err(CodecError::Malformed("will flags without a will"));
            } else {
                None
            };
            let username = if flags & 0x80 != 0 {
                Some(b.string()?)
            } else {
                None
            };
            let password = if flags & 0x40 != 0 {
                Some(b.bytes()?.to_vec())
            } else {
                None
            };
            Packet::Connect(Connect {
                client_id,
                keep_alive_secs,
                clean_session: flags & 0x02 != 0,
                will,
                username,
                password,
            })
        }
        2 => {
            expect_flags(first, 0)?;
            let ack = b.u8()?;
            if ack & 0xfe != 0 {
                return Err(CodecError::Malformed("reserved CONNACK bits are set"));
            }
            Packet::ConnAck {
                session_present: ack & 1 != 0,
                code: b.u8()?,
            }
        }
        3 => {
            let qos = QoS::from_bits((first >> 1) & 0x03)?;
            let topic = b.string()?;
            if topic.is_empty() || topic.contains(['+', '#']) {
                return Err(CodecError::Malformed(
                    "a PUBLISH topic is empty or has wildcards",
                ));
            }
            let packet_id = if qos == QoS::AtMostOnce { 0 } else { b.u16()? };
            if qos != QoS::AtMostOnce && packet_id == 0 {
                return Err(CodecError::Malformed("a QoS 1 PUBLISH with packet id 0"));
            }
            Packet::Publish(Publish {
                topic,
                payload: b.take(b.bytes.len())?.to_vec(),
                qos,
                packet_id,
                retain: first & 0x01 != 0,
                dup: first & 0x08 != 0,
            })
        }
        4 => {
            expect_flags(first, 0)?;
            Packet::PubAck(b.u16()?)
        }
        5..=7 => return Err(CodecError::Unsupported("QoS 2 (PUBREC/PUBREL/PUBCOMP)")),
        8 => {
            expect_flags(first, 2)?;
            let packet_id = b.u16()?;
            let mut filters = Vec::new();
            while !b.bytes.is_empty() {
                let f = b.string()?;
                let q = b.u8()?;
                if q & 0xfc != 0 {
                    return Err(CodecError::Malformed("reserved bits in a requested QoS"));
                }
                filters.push((f, QoS::from_bits(q)?));
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("a SUBSCRIBE without filters"));
            }
            Packet::Subscribe { packet_id, filters }
        }
        9 => {
            expect_flags(first, 0)?;
            let packet_id = b.u16()?;
            let codes = b.take(b.bytes.len())?.to_vec();
            if codes.is_empty() || codes.iter().any(|&c| c > 2 && c != SUBACK_FAILURE) {
                return Err(CodecError::Malformed("bad SUBACK return codes"));
            }
            Packet::SubAck { packet_id, codes }
        }
        10 => {
            expect_flags(first, 2)?;
            let packet_id = b.u16()?;
            let mut filters = Vec::new();
            while !b.bytes.is_empty() {
                filters.push(b.string()?);
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("an UNSUBSCRIBE without filters"));
            }
            Packet::Unsubscribe { packet_id, filters }
        }
        11 => {
            expect_flags(first, 0)?;
            Packet::UnsubAck(b.u16()?)
        }
        12 => {
            expect_flags(first, 0)?;
            Packet::PingReq
        }
        13 => {
            expect_flags(first, 0)?;
            Packet::PingResp
        }
        14 => {
            expect_flags(first, 0)?;
            Packet::Disconnect
        }
        other => return Err(CodecError::UnknownType(other)),
    };
    b.end()?;
    Ok(packet)
}

/// Whether `topic` matches the subscription `filter` (`+` one level, `#`
/// the rest), as a broker decides it (section 4.7).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !topic.starts_with('$') || !filter.starts_with('#'),
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
