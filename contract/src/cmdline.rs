//! The kernel command line's `keel.*` parameters: written by the image
//! builder into each slot's boot files, read by init and the agent from
//! `/proc/cmdline`.
//!
//! The grammar is the kernel's own (`lib/cmdline.c: next_arg`): parameters
//! are separated by whitespace; double quotes group words and are removed;
//! a word without `=` is a flag with an empty value. **When a key appears
//! more than once the last occurrence wins**, as for the kernel's own
//! parameters: a bootloader appends its overrides at the end. Every reader
//! on the device goes through [`KernelCmdline::parse`], so init and the
//! agent always agree on which slot is running.

use std::fmt;

use crate::Slot;

pub const SLOT: &str = "keel.slot";
pub const ROOT: &str = "keel.root";
pub const DATA: &str = "keel.data";
/// `keel.watchdog=off` keeps init from arming the hardware watchdog: for
/// machines whose watchdog model cannot count (QEMU's raspi3b resets when
/// it is started). The Pi firmware's command line can carry it.
pub const WATCHDOG: &str = "keel.watchdog";
/// The prefix every Keel parameter shares; the board config's extra
/// command line may not use it (the builder owns these).
pub const PREFIX: &str = "keel.";

/// Splits a command line into `(key, value)` pairs in order; a bare word
/// has an empty value.
pub fn params(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut in_quote = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if c == '"' {
                in_quote = !in_quote;
            } else if c.is_whitespace() && !in_quote {
                end = i;
                break;
            }
        }
        let word = &rest[..end];
        rest = rest[end..].trim_start();
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        out.push((key.trim_matches('"'), value.trim_matches('"')));
    }
    out
}

/// The last value of `key`, by the grammar above.
pub fn param<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    params(text)
        .into_iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An MBR partition id, `SSSSSSSS-NN`: the disk signature (byte 440 of the
/// disk, little endian) and the partition number, both in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartUuid {
    pub disk: u32,
    pub partition: u8,
}

impl PartUuid {
    /// Parses `1234abcd-05`.
    pub fn parse(id: &str) -> Option<PartUuid> {
        let (sig, part) = id.split_once('-')?;
        let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
        if sig.len() != 8 || part.len() != 2 || !hex(sig) || !hex(part) {
            return None;
        }
        let disk = u32::from_str_radix(sig, 16).ok()?;
        let partition = u8::from_str_radix(part, 16).ok()?;
        (partition != 0).then_some(PartUuid { disk, partition })
    }

    /// Parses a parameter value, `PARTUUID=1234abcd-05`; the prefix is
    /// required so that a `/dev/…` value fails loudly instead of matching
    /// nothing.
    pub fn from_spec(spec: &str) -> Result<PartUuid, String> {
        spec.strip_prefix("PARTUUID=")
            .and_then(PartUuid::parse)
            .ok_or_else(|| format!("'{spec}' is not PARTUUID=<8 hex digits>-<2 hex digits>"))
    }

    /// The parameter value: `PARTUUID=1234abcd-05`.
    pub fn spec(self) -> String {
        format!("PARTUUID={self}")
    }
}

impl fmt::Display for PartUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:02x}", self.disk, self.partition)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    Missing(&'static str),
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Missing(key) => write!(
                f,
                "the kernel command line has no {key}=; was this card built by `cargo xtask build`?"
            ),
            CmdlineError::Invalid {
                key,
                value,
                expected,
            } => {
                let shown: String = value.chars().take(64).collect::<String>();
                write!(
                    f,
                    "the kernel command line says {key}={:?}, which is not {expected}",
                    shown
                )
            }
        }
    }
}

impl std::error::Error for CmdlineError {}

/// The `keel.*` parameters of a command line, as text, each the last
/// occurrence of its key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelCmdline {
    pub slot: Option<String>,
    pub root: Option<String>,
    pub data: Option<String>,
    pub watchdog: Option<String>,
}

impl KernelCmdline {
    pub fn parse(text: &str) -> KernelCmdline {
        let mut out = KernelCmdline::default();
        for (key, value) in params(text) {
            let value = Some(value.to_string());
            match key {
                SLOT => out.slot = value,
                ROOT => out.root = value,
                DATA => out.data = value,
                WATCHDOG => out.watchdog = value,
                _ => {}
            }
        }
        out
    }

    /// The slot the bootloader started.
    pub fn slot(&self) -> Result<Slot, CmdlineError> {
        let v = self.slot.as_deref().ok_or(CmdlineError::Missing(SLOT))?;
        Slot::parse(v).ok_or_else(|| CmdlineError::Invalid {
            key: SLOT,
            value: v.into(),
            expected: "a or b",
        })
    }

    /// The partition the slot's root filesystem is on.
    pub fn root(&self) -> Result<PartUuid, CmdlineError> {
        partuuid(ROOT, self.root.as_deref())
    }

    /// The data partition.
    pub fn data(&self) -> Result<PartUuid, CmdlineError> {
        partuuid(DATA, self.data.as_deref())
    }

    /// Whether init may arm the hardware watchdog: yes unless
    /// `keel.watchdog=off`.
    pub fn watchdog_allowed(&self) -> bool {
        self.watchdog.as_deref() != Some("off")
    }
}

fn partuuid(key: &'static str, value: Option<&str>) -> Result<PartUuid, CmdlineError> {
    let v = value.ok_or(CmdlineError::Missing(key))?;
    PartUuid::from_spec(v).map_err(|_| CmdlineError::Invalid {
        key,
        value: v.into(),
        expected: "PARTUUID=<8 hex digits>-<2 hex digits>",
    })
}

/// The command line the builder writes for a slot. `extra` (from the board
/// config) goes last and may not contain `keel.*` parameters (the board
/// config is checked for that), so the `keel.*` values here are the ones
/// the device reads.
pub fn render(console: &str, slot: Slot, root: PartUuid, data: PartUuid, extra: &str) -> String {
    let mut line = format!(
        "console={console} {SLOT}={slot} {ROOT}={} {DATA}={}",
        root.spec(),
        data.spec()
    );
    let extra = extra.trim();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// The `keel.*` keys in `extra`, which a board config may not set.
pub fn reserved_keys(extra: &str) -> Vec<String> {
    params(extra)
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, _)| k.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_parameters() {
        let c = KernelCmdline::parse(
            "console=ttyAMA0 keel.root=PARTUUID=1234abcd-05 keel.data=PARTUUID=1234abcd-07 keel.slot=a rootwait\n",
        );
        assert_eq!(c.slot(), Ok(Slot::A));
        assert_eq!(
            c.root(),
            Ok(PartUuid {
                disk: 0x1234_abcd,
                partition: 5
            })
        );
        assert_eq!(c.data().unwrap().partition, 7);
    }

    #[test]
    fn the_last_repeat_wins() {
        let c = KernelCmdline::parse("keel.slot=a quiet keel.slot=b");
        assert_eq!(c.slot(), Ok(Slot::B));
        assert_eq!(param("keel.slot=a x keel.slot=b", SLOT), Some("b"));
        let c =
            KernelCmdline::parse("keel.root=PARTUUID=00000001-05 keel.root=PARTUUID=00000001-06");
        assert_eq!(c.root().unwrap().partition, 6);
    }

    #[test]
    fn quotes_group_and_are_removed() {
        let p = params(r#"a=1 dyndbg="file foo.c +p"  b "#);
        assert_eq!(p, vec![("a", "1"), ("dyndbg", "file foo.c +p"), ("b", "")]);
        // An unterminated quote swallows the rest, as in the kernel.
        assert_eq!(params(r#"x="a b"#), vec![("x", "a b")]);
        assert_eq!(KernelCmdline::parse(r#"keel.slot="b""#).slot(), Ok(Slot::B));
        assert_eq!(
            KernelCmdline::parse(r#""keel.slot=b" x"#).slot(),
            Ok(Slot::B)
        );
    }

    #[test]
    fn the_watchdog_is_allowed_unless_switched_off() {
        assert!(KernelCmdline::parse("keel.slot=a").watchdog_allowed());
        assert!(!KernelCmdline::parse("keel.watchdog=off keel.slot=a").watchdog_allowed());
        assert!(KernelCmdline::parse("keel.watchdog=off keel.watchdog=on").watchdog_allowed());
    }

    #[test]
    fn upper_case_slots_are_slots() {
        assert_eq!(KernelCmdline::parse("keel.slot=A").slot(), Ok(Slot::A));
    }

    #[test]
    fn unknown_and_near_miss_keys_are_ignored() {
        let c = KernelCmdline::parse("xkeel.slot=a keel.slotx=b keel.bogus=1 keel.slot");
        assert_eq!(c.slot.as_deref(), Some(""));
        assert!(matches!(c.slot(), Err(CmdlineError::Invalid { .. })));
        assert_eq!(
            KernelCmdline::parse("quiet").slot(),
            Err(CmdlineError::Missing(SLOT))
        );
        let e = KernelCmdline::parse("keel.slot=c").slot().unwrap_err();
        assert!(e.to_string().contains("keel.slot=\"c\""), "{e}");
    }

    #[test]
    fn partuuids() {
        assert_eq!(PartUuid::parse("1234ABCD-0a").unwrap().partition, 10);
        for bad in [
            "1234abcd-00",
            "1234abc-05",
            "1234abcd-5",
            "1234abcd05",
            "g234abcd-05",
            "-05",
        ] {
            assert_eq!(PartUuid::parse(bad), None, "{bad}");
        }
        for bad in [
            "",
            "1234abcd-05",
            "/dev/mmcblk0p5",
            "PARTUUID=1234abc-05",
            "PARTUUID=1234abcd-5",
            "PARTUUID=1234abcd05",
            "PARTUUID=+234abcd-05",
            "PARTUUID=1234abcd-00",
            "PARTUUID=6e3b1c0a-8c2f-4d3e-9a53-0b3c2f1a7e11",
        ] {
            assert!(PartUuid::from_spec(bad).is_err(), "{bad:?} accepted");
        }
        let p = PartUuid::from_spec("PARTUUID=0000abcd-07").unwrap();
        assert_eq!(p.spec(), "PARTUUID=0000abcd-07");
    }

    #[test]
    fn reserved_keys_are_found() {
        assert_eq!(reserved_keys("rootwait keel.slot=b quiet"), ["keel.slot"]);
        assert!(reserved_keys("rootwait quiet=1").is_empty());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn slot() -> impl Strategy<Value = Slot> {
            prop_oneof![Just(Slot::A), Just(Slot::B)]
        }

        proptest! {
            #[test]
            fn never_panics(text in "\\PC{0,300}") {
                let c = KernelCmdline::parse(&text);
                let _ = (c.slot(), c.root(), c.data());
            }

            /// Whatever the builder writes, the device reads back.
            #[test]
            fn what_the_builder_writes_is_read_back(
                s in slot(),
                disk in any::<u32>(),
                console in "[a-zA-Z0-9,]{1,16}",
                extra in proptest::collection::vec("[a-z_]{1,8}(=[a-z0-9\"]{0,6})?", 0..5),
            ) {
                let extra = extra.join(" ");
                prop_assume!(reserved_keys(&extra).is_empty());
                let root = PartUuid { disk, partition: s.rootfs_partition() };
                let data = PartUuid { disk, partition: crate::partition::DATA };
                let line = render(&console, s, root, data, &extra);
                let c = KernelCmdline::parse(&line);
                prop_assert_eq!(c.slot(), Ok(s));
                prop_assert_eq!(c.root(), Ok(root));
                prop_assert_eq!(c.data(), Ok(data));
            }

            #[test]
            fn finds_slot_among_other_words(
                before in proptest::collection::vec("[a-z_.]{1,8}(=[a-z0-9]{0,6})?", 0..5),
                after in proptest::collection::vec("[a-z_]{1,8}(=[a-z0-9]{0,6})?", 0..5),
                s in slot(),
            ) {
                let text = format!("{} keel.slot={s} {}", before.join(" "), after.join(" "));
                prop_assert_eq!(KernelCmdline::parse(&text).slot(), Ok(s));
            }
        }
    }
}
