//! Who and when the device is: the hostname from the board's serial
//! number, and a wall clock no earlier than the image's build time (TLS
//! certificates are "not yet valid" in 1970, and boards without an RTC
//! start there).

use std::path::Path;

use crate::sys;

/// Where the device tree exposes the board serial (Raspberry Pi: 16 hex
/// digits); the first is a symlink to the second on current kernels.
pub const SERIAL_PATHS: [&str; 2] = [
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
];
const HOSTNAME_FILE: &str = "/etc/hostname";
const DEFAULT_HOSTNAME: &str = "keel";
/// The kernel's limit (HOST_NAME_MAX).
const MAX_HOSTNAME: usize = 64;

/// The serial number, cleaned to lowercase letters and digits (the device
/// tree string ends in NUL and may be padded).
pub fn read_serial(paths: &[&Path]) -> Option<String> {
    paths.iter().find_map(|p| {
        let raw = std::fs::read(p).ok()?;
        let s: String = String::from_utf8_lossy(&raw)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .take(32)
            .collect();
        (!s.is_empty()).then_some(s)
    })
}

/// `/etc/hostname`'s name, plus `-SERIAL` when the board has one.
pub fn hostname(base: &str, serial: Option<&str>) -> String {
    let base: String = base
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    let base = if base.is_empty() {
        DEFAULT_HOSTNAME
    } else {
        &base
    };
    let mut name = match serial {
        Some(s) => format!("{base}-{s}"),
        None => base.to_string(),
    };
    name.truncate(MAX_HOSTNAME);
    name
}

pub fn set_hostname() {
    let base = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
    let paths: Vec<&Path> = SERIAL_PATHS.iter().map(Path::new).collect();
    let name = hostname(&base, read_serial(&paths).as_deref());
    match sys::sethostname(&name) {
        Ok(()) => crate::log!("hostname {name}"),
        Err(e) => crate::log!("sethostname {name}: {e}"),
    }
}

/// The build time: `build_time=SECONDS` in the release file, else the
/// file's mtime (the image builder stamps files with SOURCE_DATE_EPOCH).
pub fn build_time(release: &str, mtime: Option<i64>) -> Option<i64> {
    release
        .lines()
        .filter_map(|l| l.trim().strip_prefix("build_time="))
        .find_map(|v| v.trim().trim_matches('"').parse().ok())
        .or(mtime)
        .filter(|&t| t > 0)
}

/// Moves the clock forward to the build time if it is earlier.
pub fn clamp_clock(release_path: &Path) {
    let text = std::fs::read_to_string(release_path).unwrap_or_default();
    let mtime = std::fs::metadata(release_path).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.mtime()
    });
    let Some(build) = build_time(&text, mtime) else {
        crate::log!(
            "no build time in {}; clock left alone",
            release_path.display()
        );
        return;
    };
    let now = sys::realtime_secs();
    if now >= build {
        return;
    }
    match sys::set_realtime_secs(build) {
        Ok(()) => crate::log!(
            "clock was {}; set to the build time {}",
            utc(now),
            utc(build)
        ),
        Err(e) => crate::log!(
            "clock is {}, before the build time {}; cannot set it: {e}",
            utc(now),
            utc(build)
        ),
    }
}

/// `2024-05-01 12:00:00 UTC`, without a date library (days to civil date
/// after Howard Hinnant's algorithm).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_from_the_device_tree() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let pi = dir.path().join("serial-number");
        std::fs::write(&pi, b"10000000ABCD1234\0").unwrap();
        assert_eq!(
            read_serial(&[&missing, &pi]).as_deref(),
            Some("10000000abcd1234")
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"\0\0").unwrap();
        assert_eq!(read_serial(&[&empty, &missing]), None);
    }

    #[test]
    fn hostname_from_base_and_serial() {
        assert_eq!(hostname("keel\n", None), "keel");
        assert_eq!(
            hostname("keel\n", Some("10000000abcd1234")),
            "keel-10000000abcd1234"
        );
        assert_eq!(hostname("  \n", None), "keel");
        assert_eq!(hostname("my box!", None), "mybox");
        assert_eq!(hostname(&"a".repeat(100), Some("x")).len(), MAX_HOSTNAME);
    }

    #[test]
    fn build_time_prefers_the_release_key() {
        assert_eq!(
            build_time("version=1\nbuild_time=1700000000\n", Some(5)),
            Some(1_700_000_000)
        );
        assert_eq!(
            build_time("version=1\n", Some(1_600_000_000)),
            Some(1_600_000_000)
        );
        assert_eq!(build_time("build_time=soon\n", Some(7)), Some(7));
        assert_eq!(build_time("", None), None);
        assert_eq!(
            build_time("", Some(0)),
            None,
            "an unstamped file says nothing"
        );
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
