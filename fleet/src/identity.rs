//! The facts the fleet client reads from the device certificate: its
//! subject's common name (the default thing name: manufacturing puts the
//! serial there), its notBefore (a clock before it is certainly wrong) and
//! its public key (a certificate the cloud sends back when the device
//! provisions itself must carry the device's own key).
//!
//! A tiny DER walk rather than x509-parser: these two fields need about a
//! hundred lines, x509-parser brings nom, asn1-rs and time (see
//! docs/dependencies.md). The certificate's signature is checked by the
//! broker, not here; this only reads.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the device certificate is not valid DER X.509: {0}")]
    Malformed(&'static str),
    #[error("the device certificate's subject has no common name (CN); set `thing_name` in the fleet configuration")]
    NoCommonName,
}

struct Der<'a> {
    bytes: &'a [u8],
}

impl<'a> Der<'a> {
    /// Reads one element: (tag, contents).
    fn next(&mut self) -> Result<(u8, &'a [u8]), CertError> {
        let bad = CertError::Malformed;
        let (&tag, rest) = self.bytes.split_first().ok_or(bad("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(bad("a multi-byte tag"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(bad("truncated length"))?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return Err(bad("a bad length"));
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(bad("an element runs past its parent"));
        }
        let (contents, rest) = rest.split_at(len);
        self.bytes = rest;
        Ok((tag, contents))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], CertError> {
        match self.next()? {
            (t, c) if t == tag => Ok(c),
            _ => Err(CertError::Malformed(what)),
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// 2.5.4.3, id-at-commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// What the fleet client needs from the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    /// Seconds since 1970.
    pub not_before: i64,
    /// The subjectPublicKey bits (for P-256: the 65-byte uncompressed point).
    pub public_key: Vec<u8>,
}

/// Reads the subject CN and notBefore of a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, CertError> {
    let bad = CertError::Malformed;
    let cert = Der { bytes: der }.expect(SEQUENCE, "not a SEQUENCE")?;
    let tbs = Der { bytes: cert }.expect(SEQUENCE, "no tbsCertificate")?;
    let mut tbs = Der { bytes: tbs };
    let (mut tag, _) = tbs.next()?;
    if tag == 0xa0 {
        // [0] version, then the serial number.
        tag = tbs.next()?.0;
    }
    if tag != 0x02 {
        return Err(bad("no serial number"));
    }
    tbs.expect(SEQUENCE, "no signature algorithm")?;
    tbs.expect(SEQUENCE, "no issuer")?;
    let mut validity = Der {
        bytes: tbs.expect(SEQUENCE, "no validity")?,
    };
    let not_before = match validity.next()? {
        (UTC_TIME, t) => parse_time(t, false)?,
        (GENERALIZED_TIME, t) => parse_time(t, true)?,
        _ => return Err(bad("notBefore is not a time")),
    };
    let mut subject = Der {
        bytes: tbs.expect(SEQUENCE, "no subject")?,
    };
    let mut common_name = None;
    while !subject.bytes.is_empty() {
        let mut rdn = Der {
            bytes: subject.expect(SET, "a subject RDN is not a SET")?,
        };
        while !rdn.bytes.is_empty() {
            let mut atv = Der {
                bytes: rdn.expect(SEQUENCE, "a subject attribute is not a SEQUENCE")?,
            };
            let oid = atv.expect(OID, "a subject attribute without a type")?;
            let (_string_tag, value) = atv.next()?;
            if oid == OID_CN {
                let cn = std::str::from_utf8(value).map_err(|_| bad("the CN is not UTF-8"))?;
                common_name = Some(cn.to_string());
            }
        }
    }
    let mut spki = Der {
        bytes: tbs.expect(SEQUENCE, "no subject public key info")?,
    };
    spki.expect(SEQUENCE, "no public key algorithm")?;
    let public_key = match spki.expect(0x03, "no public key")?.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(bad("a public key that is not whole bytes")),
    };
    Ok(CertInfo {
        common_name,
        not_before,
        public_key,
    })
}

fn digits(b: &[u8]) -> Result<i64, CertError> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return Err(CertError::Malformed("a time with non-digits"));
    }
    Ok(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// `YYMMDDHHMMSSZ` (UTCTime, RFC 5280: 50–99 are 19xx) or
/// `YYYYMMDDHHMMSSZ` (GeneralizedTime), to seconds since 1970.
fn parse_time(t: &[u8], generalized: bool) -> Result<i64, CertError> {
    let year_len = if generalized { 4 } else { 2 };
    if t.len() != year_len + 11 || t.last() != Some(&b'Z') {
        return Err(CertError::Malformed(
            "a time not in the form RFC 5280 requires",
        ));
    }
    let mut year = digits(&t[..year_len])?;
    if !generalized {
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let f = |i: usize| digits(&t[year_len + i..year_len + i + 2]);
    let (month, day, h, m, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(CertError::Malformed("a time out of range"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_time(b"000301000000Z", false), Ok(951_868_800));
        assert_eq!(parse_time(b"20261101000000Z", true), Ok(1_793_491_200));
        assert_eq!(parse_time(b"991231235959Z", false), Ok(946_684_799));
        assert!(parse_time(b"2026110100000Z", true).is_err());
    }

    proptest! {
        #[test]
        fn inspect_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = inspect(&bytes);
        }
    }
}
