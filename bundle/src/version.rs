//! Versions and their order. One grammar for every version Keel writes or
//! compares (`build --version`, the manifest's `version` and
//! `min_version`, the release file), so a downgrade can never hide behind a
//! spelling the comparison does not understand:
//!
//! ```text
//! version    = core [ "-" prerelease ] [ "+" build ]
//! core       = number *( "." number )          1 to 8 numbers, each 1 to 9 digits
//! prerelease = ident *( "." ident )            ident: 1*( ALPHA / DIGIT / "-" )
//! build      = ident *( "." ident )
//! ```
//!
//! at most 64 characters. Order follows Semantic Versioning 2.0 with any
//! number of core fields (missing ones count as 0, leading zeros are
//! allowed, so `2025.01.15` works): cores compare numerically; a version
//! with a pre-release sorts before the same core without one
//! (`1.2.0-rc1 < 1.2.0`); pre-release identifiers compare numerically when
//! both are digits, else by ASCII, digits before letters, and a shorter list
//! first; build metadata does not order.

use std::cmp::Ordering;
use std::fmt;

pub const MAX_LEN: usize = 64;
const MAX_CORE_FIELDS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionError {
    pub version: String,
    pub reason: &'static str,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a Keel version ({}); use numbers separated by dots, optionally followed by -prerelease and +build, e.g. 1.4.2, 2025.01.15, 2.0.0-rc.1",
            self.version.chars().take(MAX_LEN + 8).collect::<String>(),
            self.reason
        )
    }
}

impl std::error::Error for VersionError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Number(u64),
    Text(String),
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Ident::Number(a), Ident::Number(b)) => a.cmp(b),
            (Ident::Number(_), Ident::Text(_)) => Ordering::Less,
            (Ident::Text(_), Ident::Number(_)) => Ordering::Greater,
            (Ident::Text(a), Ident::Text(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed version; `Ord` is the order above.
#[derive(Debug, Clone)]
pub struct Version {
    core: Vec<u64>,
    pre: Vec<Ident>,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err = |reason| VersionError {
            version: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > MAX_LEN {
            return Err(err("it must be 1 to 64 characters"));
        }
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let idents = |t: &str| {
            t.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if let Some(b) = build {
            if !idents(b) {
                return Err(err(
                    "the build part after + has an empty or invalid identifier",
                ));
            }
        }
        let mut fields = Vec::new();
        for f in core.split('.') {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    "every dot-separated part before - or + must be a number of 1 to 9 digits",
                ));
            }
            fields.push(f.parse().map_err(|_| err("a number is out of range"))?);
        }
        if fields.len() > MAX_CORE_FIELDS {
            return Err(err("more than 8 numbers"));
        }
        let mut pre_ids = Vec::new();
        if let Some(p) = pre {
            if !idents(p) {
                return Err(err(
                    "the pre-release part after - has an empty or invalid identifier",
                ));
            }
            for i in p.split('.') {
                pre_ids.push(if i.bytes().all(|b| b.is_ascii_digit()) {
                    // At most 63 characters: a long digit run still parses
                    // as u64 after trimming leading zeros, or is compared as text.
                    match i.trim_start_matches('0').parse::<u64>() {
                        Ok(n) => Ident::Number(n),
                        Err(_) if i.trim_start_matches('0').is_empty() => Ident::Number(0),
                        Err(_) => Ident::Text(i.to_string()),
                    }
                } else {
                    Ident::Text(i.to_string())
                });
            }
        }
        while fields.len() > 1 && fields.last() == Some(&0) {
            fields.pop();
        }
        Ok(Version {
            core: fields,
            pre: pre_ids,
        })
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.core.len().max(other.core.len());
        let field = |v: &Version, i: usize| v.core.get(i).copied().unwrap_or(0);
        (0..n)
            .map(|i| field(self, i).cmp(&field(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Checks that `s` follows the grammar.
pub fn check(s: &str) -> Result<(), VersionError> {
    Version::parse(s).map(|_| ())
}

/// Compares two versions; an error names the one that is not a version.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(a, b).unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert_eq!(cmp("1.10.0", "1.9.9"), Greater);
        assert_eq!(cmp("1.2", "1.2.0"), Equal);
        assert_eq!(cmp("1.2.0-rc1", "1.2.0"), Less);
        assert_eq!(cmp("0.1.0", "0.2.0"), Less);
        assert_eq!(cmp("1.0.0+abc", "1.0.0+def"), Equal);
    }

    #[test]
    fn downgrades_cannot_hide() {
        // The cases that used to compare equal or upside down.
        assert_eq!(cmp("0.2.0-rc1", "0.2.0-rc2"), Less);
        assert_eq!(cmp("2025.01.15-0", "2025.01.15-1"), Less);
        assert_eq!(cmp("1.0.0-alpha", "1.0.0-alpha.1"), Less);
        assert_eq!(cmp("1.0.0-alpha.1", "1.0.0-alpha.beta"), Less);
        assert_eq!(cmp("1.0.0-beta.2", "1.0.0-beta.11"), Less);
        assert_eq!(cmp("1.0.0-rc.1", "1.0.0"), Less);
        assert!(
            compare("v1.5.0", "v2.0.0").is_err(),
            "a leading v is refused, not read as 0"
        );
    }

    #[test]
    fn refuses_what_it_cannot_order() {
        for bad in [
            "",
            "v1",
            "1..2",
            "1.2.",
            ".1",
            "1.x",
            "1.2.3-",
            "1.2.3+",
            "1.2-rc..1",
            "1 2",
            "1.2.3\n",
            "1.2.3-é",
            "1234567890",
            "1.2.3.4.5.6.7.8.9",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&"1.".repeat(40)).is_err());
        for good in [
            "0",
            "1.2.3",
            "2025.01.15",
            "2.0.0-rc.1+build.7",
            "1.0.0-x-y",
        ] {
            assert!(check(good).is_ok(), "{good:?}");
        }
        let e = check("v2.0.0").unwrap_err().to_string();
        assert!(e.contains("v2.0.0") && e.contains("e.g."), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(a in "\\PC{0,80}", b in "[0-9.a-z+-]{0,20}") {
            let _ = compare(&a, &b);
        }

        #[test]
        fn order_is_total_and_antisymmetric(
            a in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-z0-9]{1,3}(\\.[a-z0-9]{1,3}){0,2})?",
            b in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-z0-9]{1,3}(\\.[a-z0-9]{1,3}){0,2})?",
        ) {
            proptest::prop_assert_eq!(cmp(&a, &b), cmp(&b, &a).reverse());
        }
    }
}
