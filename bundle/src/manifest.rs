//! The signed manifest: plain `key=value` lines, parsed strictly (unknown
//! keys, missing fields and inconsistent sizes are errors).

use crate::BundleError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Deflate,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Deflate => "deflate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInfo {
    /// What the payload is for the applier, e.g. "boot" or "rootfs".
    pub name: String,
    /// Bytes after decompression: what lands on the card.
    pub size: u64,
    /// Bytes in the bundle.
    pub stored: u64,
    pub compression: Compression,
    /// One entry per `chunk_size` piece of the payload, in order.
    pub chunks: Vec<Chunk>,
}

/// A chunk is compressed on its own, so its stored bytes can be verified
/// before the decompressor ever sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Length of the chunk's bytes in the bundle.
    pub stored: u64,
    /// sha256 of those stored bytes.
    pub stored_sha256: [u8; 32],
    /// sha256 of the chunk as it lands on the card (for delta updates).
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub board: String,
    pub version: String,
    /// The oldest running version this bundle may replace.
    pub min_version: String,
    pub build_id: String,
    pub chunk_size: u64,
    pub payloads: Vec<PayloadInfo>,
}

fn bad(msg: impl Into<String>) -> BundleError {
    BundleError::Manifest(msg.into())
}

/// Board names, build ids and payload names: 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// so they print safely and fit the boot state.
fn check_value(key: &str, v: &str) -> Result<(), BundleError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(bad(format!(
            "{key} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

fn check_version(key: &str, v: &str) -> Result<(), BundleError> {
    crate::version::check(v).map_err(|e| bad(format!("{key}: {e}")))
}

fn check_fields(m: &Manifest) -> Result<(), BundleError> {
    check_value("board", &m.board)?;
    check_version("version", &m.version)?;
    check_version("min_version", &m.min_version)?;
    check_value("build_id", &m.build_id)
}

impl Manifest {
    pub fn payload(&self, name: &str) -> Option<&PayloadInfo> {
        self.payloads.iter().find(|p| p.name == name)
    }

    /// Every payload's stored bytes together. [`Manifest::parse`] refuses
    /// a manifest whose sizes overflow, so this cannot.
    pub fn stored_total(&self) -> u64 {
        self.payloads
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.stored))
    }

    pub fn to_text(&self) -> Result<String, BundleError> {
        check_fields(self)?;
        let mut s = format!(
            "format=1\nboard={}\nversion={}\nmin_version={}\nbuild_id={}\nchunk_size={}\n",
            self.board, self.version, self.min_version, self.build_id, self.chunk_size
        );
        for p in &self.payloads {
            check_value("payload", &p.name)?;
            s.push_str(&format!(
                "payload={} size={} stored={} compression={}\n",
                p.name,
                p.size,
                p.stored,
                p.compression.name()
            ));
            for c in &p.chunks {
                s.push_str(&format!(
                    "chunk={} {} {}\n",
                    c.stored,
                    hex::encode(c.stored_sha256),
                    hex::encode(c.sha256)
                ));
            }
        }
        Ok(s)
    }

    pub fn parse(text: &str) -> Result<Self, BundleError> {
        let mut m = Manifest {
            board: String::new(),
            version: String::new(),
            min_version: String::new(),
            build_id: String::new(),
            chunk_size: 0,
            payloads: Vec::new(),
        };
        let mut format_seen = false;
        for (n, line) in text.lines().enumerate() {
            let (key, rest) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line {}: expected key=value", n + 1)))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("line {}: {key} is not a number", n + 1)))
            };
            match key {
                "format" => {
                    if rest != "1" {
                        return Err(bad(format!("manifest format {rest} is not supported")));
                    }
                    format_seen = true;
                }
                "board" => m.board = rest.to_string(),
                "version" => m.version = rest.to_string(),
                "min_version" => m.min_version = rest.to_string(),
                "build_id" => m.build_id = rest.to_string(),
                "chunk_size" => m.chunk_size = num(rest)?,
                "payload" => {
                    let mut words = rest.split(' ');
                    let name = words.next().unwrap_or_default().to_string();
                    let mut p = PayloadInfo {
                        name,
                        size: 0,
                        stored: 0,
                        compression: Compression::None,
                        chunks: Vec::new(),
                    };
                    let mut seen = 0;
                    for w in words {
                        match w.split_once('=') {
                            Some(("size", v)) => p.size = num(v)?,
                            Some(("stored", v)) => p.stored = num(v)?,
                            Some(("compression", "deflate")) => {
                                p.compression = Compression::Deflate
                            }
                            Some(("compression", "none")) => p.compression = Compression::None,
                            _ => {
                                return Err(bad(format!(
                                    "line {}: unknown payload field '{w}'",
                                    n + 1
                                )))
                            }
                        }
                        seen += 1;
                    }
                    if seen != 3 {
                        return Err(bad(format!(
                            "line {}: payload needs size, stored and compression",
                            n + 1
                        )));
                    }
                    m.payloads.push(p);
                }
                "chunk" => {
                    let p = m
                        .payloads
                        .last_mut()
                        .ok_or_else(|| bad("chunk before any payload"))?;
                    let hash = |v: Option<&str>| -> Result<[u8; 32], BundleError> {
                        let bytes = hex::decode(v.unwrap_or_default())
                            .map_err(|_| bad(format!("line {}: chunk hash is not hex", n + 1)))?;
                        bytes
                            .try_into()
                            .map_err(|_| bad(format!("line {}: chunk hash is not 32 bytes", n + 1)))
                    };
                    let mut words = rest.split(' ');
                    let stored = num(words.next().unwrap_or_default())?;
                    let chunk = Chunk {
                        stored,
                        stored_sha256: hash(words.next())?,
                        sha256: hash(words.next())?,
                    };
                    if words.next().is_some() {
                        return Err(bad(format!("line {}: chunk has extra fields", n + 1)));
                    }
                    p.chunks.push(chunk);
                }
                other => return Err(bad(format!("line {}: unknown key '{other}'", n + 1))),
            }
        }
        if !format_seen {
            return Err(bad("missing format"));
        }
        check_fields(&m)?;
        if m.chunk_size == 0
            || m.chunk_size > crate::MAX_CHUNK_SIZE
            || !m.chunk_size.is_multiple_of(512)
        {
            return Err(bad(
                "chunk_size must be a multiple of 512 between 512 B and 1 MiB (the applier's memory is a few chunks)",
            ));
        }
        if m.payloads.is_empty() {
            return Err(bad("no payloads"));
        }
        if m.payloads
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(p.stored))
            .is_none()
        {
            return Err(bad(
                "the payloads' stored sizes add up to more than 2^64 bytes",
            ));
        }
        for (i, p) in m.payloads.iter().enumerate() {
            check_value("payload", &p.name)?;
            if p.size == 0 {
                return Err(bad(format!("payload '{}' is empty", p.name)));
            }
            if m.payloads[..i].iter().any(|q| q.name == p.name) {
                return Err(bad(format!("payload '{}' appears twice", p.name)));
            }
            if p.chunks.len() as u64 != p.size.div_ceil(m.chunk_size) {
                return Err(bad(format!(
                    "payload '{}' has {} chunk hashes but its size needs {}",
                    p.name,
                    p.chunks.len(),
                    p.size.div_ceil(m.chunk_size)
                )));
            }
            let stored = p
                .chunks
                .iter()
                .try_fold(0u64, |sum, c| sum.checked_add(c.stored));
            if stored != Some(p.stored) {
                return Err(bad(format!(
                    "payload '{}': its chunks' stored sizes do not add up to stored",
                    p.name
                )));
            }
            // Bounds what a reader buffers per chunk: deflate never needs
            // more than a small overhead over the plain data.
            if p.chunks
                .iter()
                .any(|c| c.stored > m.chunk_size + m.chunk_size / 8 + 1024)
            {
                return Err(bad(format!(
                    "payload '{}' has a chunk larger than chunk_size allows",
                    p.name
                )));
            }
            if p.compression == Compression::None && p.stored != p.size {
                return Err(bad(format!(
                    "payload '{}' is uncompressed but stored size differs from size",
                    p.name
                )));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            board: "qemu-aarch64".into(),
            version: "0.2.0".into(),
            min_version: "0.1.0".into(),
            build_id: "abc".into(),
            chunk_size: 1024,
            payloads: vec![PayloadInfo {
                name: "rootfs".into(),
                size: 2000,
                stored: 100,
                compression: Compression::Deflate,
                chunks: vec![
                    Chunk {
                        stored: 60,
                        stored_sha256: [3; 32],
                        sha256: [1; 32],
                    },
                    Chunk {
                        stored: 40,
                        stored_sha256: [4; 32],
                        sha256: [2; 32],
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_text().unwrap()).unwrap(), m);
    }

    #[test]
    fn rejects_lies_and_unknowns() {
        let t = sample().to_text().unwrap();
        assert!(
            Manifest::parse(&t.replace("size=2000", "size=5000")).is_err(),
            "chunk count must follow size"
        );
        assert!(Manifest::parse(&t.replace("board=", "bored=")).is_err());
        assert!(Manifest::parse(&t.replace("format=1", "format=2")).is_err());
        assert!(Manifest::parse(&format!(
            "{t}payload=rootfs size=0 stored=0 compression=none\n"
        ))
        .is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = Manifest::parse(&s);
        }
    }
}
