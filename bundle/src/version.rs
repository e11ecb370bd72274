//! Dotted numeric versions ("1.2.10"), compared field by field, so a
//! bundle's minimum version can be checked without a semver dependency.

use std::cmp::Ordering;

/// Compares two versions; a missing field counts as 0 and a non-numeric
/// suffix ("1.2.0-rc1") compares below the plain release.
pub fn compare(a: &str, b: &str) -> Ordering {
    let parse = |v: &str| -> (Vec<u64>, bool) {
        let (core, pre) = match v.split_once('-') {
            Some((c, _)) => (c, true),
            None => (v, false),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            pre,
        )
    };
    let ((mut va, pa), (mut vb, pb)) = (parse(a), parse(b));
    let n = va.len().max(vb.len());
    va.resize(n, 0);
    vb.resize(n, 0);
    va.cmp(&vb).then(pb.cmp(&pa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically() {
        assert_eq!(compare("1.10.0", "1.9.9"), Ordering::Greater);
        assert_eq!(compare("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare("1.2.0-rc1", "1.2.0"), Ordering::Less);
        assert_eq!(compare("0.1.0", "0.2.0"), Ordering::Less);
    }
}
