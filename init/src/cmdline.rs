//! The `keel.*` parameters on the kernel command line (/proc/cmdline).
//!
//! The boot script or the Pi's cmdline.txt writes them; init only reads.
//! Parsing follows the kernel's own rules: parameters are separated by
//! spaces, a value may be double-quoted to contain spaces, and when a key
//! appears twice the last one wins (a bootloader appends overrides).

use std::fmt;

/// Which A/B slot the bootloader started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "a" | "A" => Some(Self::A),
            "b" | "B" => Some(Self::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "a",
            Self::B => "b",
        })
    }
}

/// The keel parameters, still as text: each consumer parses and reports its
/// own value so the error names the parameter that was wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub root: Option<String>,
    pub data: Option<String>,
    pub slot: Option<String>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for (key, value) in params(text) {
            let value = Some(value.to_string());
            match key {
                "keel.root" => out.root = value,
                "keel.data" => out.data = value,
                "keel.slot" => out.slot = value,
                _ => {}
            }
        }
        out
    }
}

/// Splits a command line into `(key, value)` pairs; a bare word has an
/// empty value. Quotes group words and are removed, as the kernel does.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_parameters() {
        let c = Cmdline::parse(
            "console=ttyAMA0 keel.root=PARTUUID=1234abcd-05 keel.data=PARTUUID=1234abcd-07 keel.slot=a rootwait\n",
        );
        assert_eq!(c.root.as_deref(), Some("PARTUUID=1234abcd-05"));
        assert_eq!(c.data.as_deref(), Some("PARTUUID=1234abcd-07"));
        assert_eq!(c.slot.as_deref(), Some("a"));
    }

    #[test]
    fn last_occurrence_wins_and_missing_is_none() {
        let c = Cmdline::parse("keel.slot=a quiet keel.slot=b");
        assert_eq!(c.slot.as_deref(), Some("b"));
        assert_eq!(c.root, None);
        assert_eq!(Cmdline::parse(""), Cmdline::default());
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let p = params(r#"a=1 dyndbg="file foo.c +p"  b "#);
        assert_eq!(p, vec![("a", "1"), ("dyndbg", "file foo.c +p"), ("b", "")]);
        // An unterminated quote swallows the rest, as in the kernel.
        assert_eq!(params(r#"x="a b"#), vec![("x", "a b")]);
    }

    #[test]
    fn keys_are_matched_exactly() {
        let c = Cmdline::parse("xkeel.slot=a keel.slotx=b keel.slot");
        assert_eq!(c.slot.as_deref(), Some(""));
    }

    #[test]
    fn slot_values() {
        assert_eq!(Slot::parse("a"), Some(Slot::A));
        assert_eq!(Slot::parse("B"), Some(Slot::B));
        assert_eq!(Slot::parse("c"), None);
        assert_eq!(Slot::parse(""), None);
        assert_eq!(Slot::B.to_string(), "b");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(text in "\\PC{0,300}") {
                let _ = Cmdline::parse(&text);
            }

            #[test]
            fn finds_slot_among_other_words(
                before in proptest::collection::vec("[a-z_.]{1,8}(=[a-z0-9]{0,6})?", 0..5),
                after in proptest::collection::vec("[a-z_]{1,8}(=[a-z0-9]{0,6})?", 0..5),
            ) {
                let text = format!("{} keel.slot=b {}", before.join(" "), after.join(" "));
                let parsed = Cmdline::parse(&text);
                prop_assert_eq!(parsed.slot.as_deref(), Some("b"));
            }
        }
    }
}
