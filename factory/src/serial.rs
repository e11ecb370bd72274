//! Serial numbers: one per device, its certificate's CN and its thing
//! name, so they obey AWS IoT's thing-name rule (1–128 of
//! `[A-Za-z0-9:_-]`, the `fleet` crate's check). Batches name them in a
//! file or as a range such as `ACME-000100..ACME-000199`.

use std::fmt;
use std::path::{Path, PathBuf};

/// The most serials one batch may name (a typo in a range should not
/// plan a million cards).
pub const MAX_BATCH: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial {0:?} cannot be a thing name: use 1 to 128 letters, digits, ':', '_' and '-' (AWS IoT's rule; the serial becomes the certificate's CN and the thing name)")]
    Invalid(String),
    #[error("serial range {0:?}: write FIRST..LAST with the same prefix and the same number of trailing digits, e.g. ACME-000100..ACME-000199")]
    BadRange(String),
    #[error("serial range {range:?} ends before it starts")]
    Backwards { range: String },
    #[error("{what} names {count} serials; one batch may have at most {MAX_BATCH}")]
    TooMany { what: String, count: u64 },
    #[error("{path}:{line}: {source}")]
    InFile {
        path: PathBuf,
        line: usize,
        source: Box<SerialError>,
    },
    #[error("{path}:{line}: serial {serial} is listed twice (first on line {first})")]
    Duplicate {
        path: PathBuf,
        line: usize,
        first: usize,
        serial: String,
    },
    #[error("cannot read the serial list {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("the serial list {0} names no serial")]
    Empty(PathBuf),
}

/// A valid serial number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(String);

impl Serial {
    pub fn parse(s: &str) -> Result<Serial, SerialError> {
        fleet::config::check_thing_name(s).map_err(|_| SerialError::Invalid(s.to_string()))?;
        Ok(Serial(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `s` into (prefix, trailing digits).
fn split_digits(s: &str) -> (&str, &str) {
    let start = s
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map_or(s.len(), |(i, _)| i);
    s.split_at(start)
}

/// `FIRST..LAST`, both included: the same prefix and digit count, counted
/// up with leading zeros kept.
pub fn range(spec: &str) -> Result<Vec<Serial>, SerialError> {
    let bad = || SerialError::BadRange(spec.to_string());
    let (first, last) = spec.split_once("..").ok_or_else(bad)?;
    let (first, last) = (Serial::parse(first)?, Serial::parse(last)?);
    let (p1, d1) = split_digits(first.as_str());
    let (p2, d2) = split_digits(last.as_str());
    if p1 != p2 || d1.len() != d2.len() || d1.is_empty() || d1.len() > 18 {
        return Err(bad());
    }
    let (a, b): (u64, u64) = (
        d1.parse().map_err(|_| bad())?,
        d2.parse().map_err(|_| bad())?,
    );
    if b < a {
        return Err(SerialError::Backwards {
            range: spec.to_string(),
        });
    }
    if b - a >= MAX_BATCH {
        return Err(SerialError::TooMany {
            what: format!("the range {spec}"),
            count: b - a + 1,
        });
    }
    let width = d1.len();
    (a..=b)
        .map(|n| Serial::parse(&format!("{p1}{n:0width$}")))
        .collect()
}

/// A list of serials, one a line; blank lines and `#` comments are
/// skipped; a serial listed twice is an error (it would be burned twice).
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<Serial>, SerialError> {
    let mut out: Vec<Serial> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let serial = Serial::parse(line).map_err(|e| SerialError::InFile {
            path: path.to_path_buf(),
            line: i + 1,
            source: Box::new(e),
        })?;
        if let Some(first) = seen.insert(serial.clone(), i + 1) {
            return Err(SerialError::Duplicate {
                path: path.to_path_buf(),
                line: i + 1,
                first,
                serial: serial.0,
            });
        }
        out.push(serial);
    }
    if out.is_empty() {
        return Err(SerialError::Empty(path.to_path_buf()));
    }
    if out.len() as u64 > MAX_BATCH {
        return Err(SerialError::TooMany {
            what: path.display().to_string(),
            count: out.len() as u64,
        });
    }
    Ok(out)
}

/// Reads a serial list file (see [`parse_list`]).
pub fn read_list(path: &Path) -> Result<Vec<Serial>, SerialError> {
    let text = durable::read_to_string(path, 16 << 20)
        .map_err(|e| SerialError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| SerialError::Read {
            path: path.to_path_buf(),
            detail: "no such file".into(),
        })?;
    parse_list(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serials_follow_the_thing_name_rule() {
        assert!(Serial::parse("ACME-0001").is_ok());
        assert!(Serial::parse("10000000c0ffee01").is_ok());
        assert!(Serial::parse("a:b_c-d").is_ok());
        for bad in ["", "a b", "a/b", "a+b", "a#b", "é", &"x".repeat(129)] {
            let e = Serial::parse(bad).unwrap_err();
            assert!(e.to_string().contains("thing name"), "{e}");
        }
    }

    #[test]
    fn ranges_keep_their_width() {
        let r = range("ACME-0098..ACME-0101").unwrap();
        let names: Vec<&str> = r.iter().map(Serial::as_str).collect();
        assert_eq!(names, ["ACME-0098", "ACME-0099", "ACME-0100", "ACME-0101"]);
        assert_eq!(range("7..7").unwrap().len(), 1);
        for bad in ["A-1..B-2", "A-01..A-100", "A..B", "A-1", "A-1..A/2"] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            range("A-9..A-1"),
            Err(SerialError::Backwards { .. })
        ));
        assert!(matches!(
            range("A-0000000..A-9999999"),
            Err(SerialError::TooMany { .. })
        ));
    }

    #[test]
    fn lists_skip_comments_and_refuse_twins() {
        let p = Path::new("serials.txt");
        let got = parse_list(p, "# batch 7\nSN-1\n\n  SN-2  # spare\n").unwrap();
        assert_eq!(
            got,
            [
                Serial::parse("SN-1").unwrap(),
                Serial::parse("SN-2").unwrap()
            ]
        );
        let e = parse_list(p, "SN-1\nSN-2\nSN-1\n").unwrap_err().to_string();
        assert!(e.contains("serials.txt:3") && e.contains("line 1"), "{e}");
        let e = parse_list(p, "SN-1\nSN 2\n").unwrap_err().to_string();
        assert!(e.contains("serials.txt:2"), "{e}");
        assert!(parse_list(p, "# nothing\n").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = range(&s);
            let _ = parse_list(Path::new("x"), &s);
        }
    }
}
