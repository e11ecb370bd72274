//! `/etc/keel/release`: what an image is, written by the image builder into
//! every root filesystem and read by init (the `ready` line, the clock),
//! the agent (board, version, boot backend) and the host tools (`inspect`,
//! `apply`).
//!
//! Format: `key=value` lines. Readers skip blank lines and `#` comments,
//! trim spaces around keys and values, remove os-release style double
//! quotes, ignore keys they do not know (a newer image may add some) and
//! take the last of repeated keys. The writer emits exactly the fields
//! below, in this order, and refuses values the reader could not return
//! unchanged.

use std::fmt;

pub const VERSION: &str = "version";
pub const BOARD: &str = "board";
pub const BUILD_ID: &str = "build_id";
pub const KERNEL: &str = "kernel";
pub const BOOT_BACKEND: &str = "boot_backend";
pub const MAX_TRIES: &str = "max_tries";
pub const BUILD_TIME: &str = "build_time";
pub const CONVENIENCES: &str = "conveniences";

/// The most trial boots a board may give a new slot before falling back
/// (the board config's `max_tries`; the boot script and the boot-state
/// records are generated for it).
pub const MAX_TRIES_LIMIT: u32 = 8;

/// How a card chooses the slot it boots (docs/boot.md). One backend today:
/// the release file names it so that an image with another one is refused
/// by name rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootBackend {
    /// Debian's U-Boot running Keel's boot script with the two-record
    /// boot state (every board, the Raspberry Pis included).
    Uboot,
}

impl BootBackend {
    pub fn name(self) -> &'static str {
        match self {
            BootBackend::Uboot => "uboot",
        }
    }

    pub fn parse(s: &str) -> Option<BootBackend> {
        match s {
            "uboot" => Some(BootBackend::Uboot),
            _ => None,
        }
    }
}

impl fmt::Display for BootBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    Missing(&'static str),
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The writer was given a value the reader would not return unchanged.
    Unwritable {
        key: &'static str,
        value: String,
    },
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::Missing(key) => write!(
                f,
                "/etc/keel/release has no {key}=; is this a root filesystem built by `cargo xtask build`?"
            ),
            ReleaseError::Invalid {
                key,
                value,
                expected,
            } => write!(
                f,
                "/etc/keel/release says {key}={:?}, which is not {expected}",
                value.chars().take(64).collect::<String>()
            ),
            ReleaseError::Unwritable { key, value } => write!(
                f,
                "{key} {:?} cannot go into /etc/keel/release: use printable characters without spaces or quotes",
                value.chars().take(64).collect::<String>()
            ),
        }
    }
}

impl std::error::Error for ReleaseError {}

/// The release file's fields, as text; typed accessors check them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: Option<String>,
    pub board: Option<String>,
    pub build_id: Option<String>,
    pub kernel: Option<String>,
    pub boot_backend: Option<String>,
    pub max_tries: Option<String>,
    pub build_time: Option<String>,
    /// The development conveniences the image has (see [`Convenience`]):
    /// a comma-separated list, or `none`.
    pub conveniences: Option<String>,
}

/// A convenience that hands control to whoever holds the card or the serial
/// line. A development image has them all; a release image none, unless its
/// owner keeps one (`cargo xtask build --release --keep NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convenience {
    /// init runs `/data/keel/services.toml` instead of the signed tree.
    ServicesOverride,
    /// The serial console takes commands (`cat`, `write`, `run`, …).
    Console,
    /// The image trusts the development signing key.
    DevelopmentKey,
}

impl Convenience {
    pub const ALL: [Convenience; 3] = [
        Convenience::ServicesOverride,
        Convenience::Console,
        Convenience::DevelopmentKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Convenience::ServicesOverride => "services-override",
            Convenience::Console => "console",
            Convenience::DevelopmentKey => "development-key",
        }
    }

    pub fn parse(s: &str) -> Option<Convenience> {
        Convenience::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The list as the release file writes it.
    pub fn list(cs: &[Convenience]) -> String {
        if cs.is_empty() {
            return "none".into();
        }
        cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
    }
}

impl Release {
    pub fn parse(text: &str) -> Release {
        let mut out = Release::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = Some(unquote(value.trim()).to_string());
            match key.trim() {
                VERSION => out.version = value,
                BOARD => out.board = value,
                BUILD_ID => out.build_id = value,
                KERNEL => out.kernel = value,
                BOOT_BACKEND => out.boot_backend = value,
                MAX_TRIES => out.max_tries = value,
                BUILD_TIME => out.build_time = value,
                CONVENIENCES => out.conveniences = value,
                _ => {}
            }
        }
        out
    }

    fn fields(&self) -> [(&'static str, &Option<String>); 8] {
        [
            (VERSION, &self.version),
            (BOARD, &self.board),
            (BUILD_ID, &self.build_id),
            (KERNEL, &self.kernel),
            (BOOT_BACKEND, &self.boot_backend),
            (MAX_TRIES, &self.max_tries),
            (BUILD_TIME, &self.build_time),
            (CONVENIENCES, &self.conveniences),
        ]
    }

    /// The file's text. Every value must come back unchanged from
    /// [`Release::parse`]: one word of printable ASCII, no quotes.
    pub fn to_text(&self) -> Result<String, ReleaseError> {
        let mut out = String::new();
        for (key, value) in self.fields() {
            let Some(value) = value else { continue };
            if !is_word(value) {
                return Err(ReleaseError::Unwritable {
                    key,
                    value: value.clone(),
                });
            }
            out.push_str(key);
            out.push('=');
            out.push_str(value);
            out.push('\n');
        }
        Ok(out)
    }

    pub fn version(&self) -> Result<&str, ReleaseError> {
        required(VERSION, &self.version)
    }

    pub fn board(&self) -> Result<&str, ReleaseError> {
        required(BOARD, &self.board)
    }

    pub fn build_id(&self) -> Result<&str, ReleaseError> {
        required(BUILD_ID, &self.build_id)
    }

    pub fn boot_backend(&self) -> Result<BootBackend, ReleaseError> {
        let v = required(BOOT_BACKEND, &self.boot_backend)?;
        BootBackend::parse(v).ok_or_else(|| ReleaseError::Invalid {
            key: BOOT_BACKEND,
            value: v.into(),
            expected: "uboot",
        })
    }

    /// How many times the bootloader tries a new slot before it falls back.
    pub fn max_tries(&self) -> Result<u32, ReleaseError> {
        let v = required(MAX_TRIES, &self.max_tries)?;
        v.parse()
            .ok()
            .filter(|t| (1..=MAX_TRIES_LIMIT).contains(t))
            .ok_or_else(|| ReleaseError::Invalid {
                key: MAX_TRIES,
                value: v.into(),
                expected: "a number from 1 to 8",
            })
    }

    /// The image's development conveniences. An image from before the
    /// field existed had them all; an unknown name in the list is refused
    /// (a newer image's convenience must not be silently dropped or kept).
    pub fn conveniences(&self) -> Result<Vec<Convenience>, ReleaseError> {
        let Some(v) = self.conveniences.as_deref() else {
            return Ok(Convenience::ALL.to_vec());
        };
        if v == "none" {
            return Ok(Vec::new());
        }
        v.split(',')
            .map(|n| {
                Convenience::parse(n).ok_or_else(|| ReleaseError::Invalid {
                    key: CONVENIENCES,
                    value: v.into(),
                    expected: "none, or a list of services-override, console, development-key",
                })
            })
            .collect()
    }

    pub fn has(&self, c: Convenience) -> bool {
        self.conveniences().is_ok_and(|cs| cs.contains(&c))
    }

    /// Seconds since the epoch when the image was built, if recorded.
    pub fn build_time(&self) -> Option<i64> {
        self.build_time.as_deref()?.parse().ok().filter(|t| *t > 0)
    }
}

fn required<'a>(key: &'static str, v: &'a Option<String>) -> Result<&'a str, ReleaseError> {
    match v.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ReleaseError::Missing(key)),
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// One non-empty word of printable ASCII without quotes or `#`.
pub fn is_word(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Release {
        Release {
            version: Some("1.2.3".into()),
            board: Some("qemu-aarch64".into()),
            build_id: Some("abc123".into()),
            kernel: Some("6.1.0-31-arm64".into()),
            boot_backend: Some("uboot".into()),
            max_tries: Some("3".into()),
            build_time: Some("1700000000".into()),
            conveniences: Some("none".into()),
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let text = r.to_text().unwrap();
        assert_eq!(
            text,
            "version=1.2.3\nboard=qemu-aarch64\nbuild_id=abc123\nkernel=6.1.0-31-arm64\nboot_backend=uboot\nmax_tries=3\nbuild_time=1700000000\nconveniences=none\n"
        );
        assert_eq!(Release::parse(&text), r);
        assert_eq!(r.boot_backend(), Ok(BootBackend::Uboot));
        assert_eq!(r.max_tries(), Ok(3));
        assert_eq!(r.build_time(), Some(1_700_000_000));
    }

    #[test]
    fn reads_comments_quotes_spaces_and_unknown_keys() {
        let r = Release::parse(
            "# keel\nversion=1.2.3\nboard=\"qemu-aarch64\"\n\nbuild_id = abc123 \nnonsense\nfuture=1\nversion=1.2.4\n",
        );
        assert_eq!(r.version(), Ok("1.2.4"));
        assert_eq!(r.board(), Ok("qemu-aarch64"));
        assert_eq!(r.build_id(), Ok("abc123"));
        assert_eq!(Release::parse(""), Release::default());
    }

    #[test]
    fn missing_and_invalid_fields_are_named() {
        let r = Release::parse("boot_backend=tryboot\nmax_tries=99\nbuild_time=soon\n");
        assert_eq!(r.version(), Err(ReleaseError::Missing(VERSION)));
        assert!(r
            .boot_backend()
            .unwrap_err()
            .to_string()
            .contains("tryboot"));
        assert!(r.max_tries().is_err());
        assert_eq!(r.build_time(), None);
        assert_eq!(
            Release::parse("version=\n").version(),
            Err(ReleaseError::Missing(VERSION))
        );
    }

    #[test]
    fn conveniences() {
        assert_eq!(sample().conveniences(), Ok(vec![]));
        let old = Release::parse("version=1\n");
        assert_eq!(old.conveniences(), Ok(Convenience::ALL.to_vec()));
        let dev = Release::parse("conveniences=console,services-override\n");
        assert!(dev.has(Convenience::Console) && !dev.has(Convenience::DevelopmentKey));
        assert!(Release::parse("conveniences=console,root-shell\n")
            .conveniences()
            .is_err());
        assert!(!Release::parse("conveniences=root-shell\n").has(Convenience::Console));
        assert_eq!(Convenience::list(&[]), "none");
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would_change() {
        for bad in ["", "1.0 beta", "\"1\"", "a\nb", "v#1", "é"] {
            let r = Release {
                version: Some(bad.into()),
                ..sample()
            };
            assert!(r.to_text().is_err(), "{bad:?}");
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn word() -> impl Strategy<Value = Option<String>> {
            proptest::option::of("[!$-~]{1,20}")
        }

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC{0,400}") {
                let r = Release::parse(&text);
                let _ = (r.version(), r.boot_backend(), r.max_tries(), r.build_time());
            }

            /// Whatever the builder writes, every reader reads back.
            #[test]
            fn what_the_builder_writes_is_read_back(
                version in word(), board in word(), build_id in word(), kernel in word(),
                boot_backend in word(), max_tries in word(), build_time in word(),
                conveniences in word(),
            ) {
                let r = Release { version, board, build_id, kernel, boot_backend, max_tries, build_time, conveniences };
                let text = r.to_text().unwrap();
                prop_assert_eq!(Release::parse(&text), r);
            }
        }
    }
}
