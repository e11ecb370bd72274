//! U-Boot legacy images for boot scripts: the `boot.scr` that U-Boot's
//! `source` command runs, byte-identical to `mkimage -T script -C none`.

use thiserror::Error;

const MAGIC: u32 = 0x2705_1956;
const HEADER_LEN: usize = 64;
const NAME_LEN: usize = 32;
const IH_OS_LINUX: u8 = 5;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;

/// The CPU architecture recorded in the header. U-Boot's `source` does not
/// check it, but `dumpimage` shows it, so it should match the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UbootArch {
    Arm,
    Arm64,
}

impl UbootArch {
    fn code(self) -> u8 {
        match self {
            UbootArch::Arm => 2,    // IH_ARCH_ARM
            UbootArch::Arm64 => 22, // IH_ARCH_ARM64
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UbootError {
    #[error("boot script image is {0} bytes, shorter than the 64-byte U-Boot header; regenerate boot.scr")]
    TooShort(usize),
    #[error("boot script image has magic {0:#010x}, not 0x27051956; this is not a U-Boot legacy image (was boot.cmd copied instead of boot.scr?)")]
    BadMagic(u32),
    #[error("boot script header CRC is {stored:#010x} but the header hashes to {computed:#010x}; the file is corrupt, regenerate boot.scr")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("boot script header announces {announced} data bytes but only {present} follow; the file is truncated, regenerate boot.scr")]
    Truncated { announced: u32, present: usize },
    #[error("boot script data CRC is {stored:#010x} but the data hashes to {computed:#010x}; the file is corrupt, regenerate boot.scr")]
    DataCrc { stored: u32, computed: u32 },
    #[error("U-Boot image has type {found}, not 6 (script); pass a boot script image made with `mkimage -T script`")]
    NotScript { found: u8 },
    #[error(
        "U-Boot script image has compression {found}; only uncompressed (0) scripts are supported"
    )]
    Compressed { found: u8 },
    #[error("boot script payload is malformed: {0}; regenerate boot.scr")]
    BadPayload(&'static str),
    #[error(
        "boot script text is not valid UTF-8 (at byte {0}); regenerate boot.scr from a text file"
    )]
    NotUtf8(usize),
}

/// Wraps a script as `mkimage -A <arch> -O linux -T script -C none -n <name>`
/// does, with `timestamp` as the header time (mkimage's SOURCE_DATE_EPOCH).
pub fn script_image(script: &str, name: &str, arch: UbootArch, timestamp: u32) -> Vec<u8> {
    // mkimage treats a script like a multi-file image: a zero-terminated
    // table of big-endian lengths, then the files; the last file is not padded.
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script.as_bytes());
    wrap(data, name, arch, timestamp)
}

fn wrap(data: Vec<u8>, name: &str, arch: UbootArch, timestamp: u32) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    header[8..12].copy_from_slice(&timestamp.to_be_bytes());
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    // Load address and entry point stay 0: `source` runs scripts in place.
    header[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header[28] = IH_OS_LINUX;
    header[29] = arch.code();
    header[30] = IH_TYPE_SCRIPT;
    header[31] = IH_COMP_NONE;
    // strncpy semantics, as mkimage: truncated to 32 bytes, NUL only if shorter.
    let name = name.as_bytes();
    let n = name.len().min(NAME_LEN);
    header[32..32 + n].copy_from_slice(&name[..n]);
    let hcrc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a boot script image the way U-Boot would before running it and
/// returns the script text.
pub fn parse_script_image(bytes: &[u8]) -> Result<String, UbootError> {
    if bytes.len() < HEADER_LEN {
        return Err(UbootError::TooShort(bytes.len()));
    }
    let magic = be32(bytes, 0);
    if magic != MAGIC {
        return Err(UbootError::BadMagic(magic));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&bytes[..HEADER_LEN]);
    let stored = be32(&header, 4);
    header[4..8].fill(0);
    let computed = crc32fast::hash(&header);
    if stored != computed {
        return Err(UbootError::HeaderCrc { stored, computed });
    }
    let size = be32(bytes, 12);
    let rest = &bytes[HEADER_LEN..];
    let data = usize::try_from(size)
        .ok()
        .and_then(|s| rest.get(..s))
        .ok_or(UbootError::Truncated {
            announced: size,
            present: rest.len(),
        })?;
    let stored = be32(bytes, 24);
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(UbootError::DataCrc { stored, computed });
    }
    if bytes[30] != IH_TYPE_SCRIPT {
        return Err(UbootError::NotScript { found: bytes[30] });
    }
    if bytes[31] != IH_COMP_NONE {
        return Err(UbootError::Compressed { found: bytes[31] });
    }

    // U-Boot's `source` runs only the first file of the length table.
    if data.len() < 8 {
        return Err(UbootError::BadPayload("shorter than the length table"));
    }
    let len = be32(data, 0) as usize;
    let mut table_end = 4;
    loop {
        if table_end + 4 > data.len() {
            return Err(UbootError::BadPayload(
                "length table has no zero terminator",
            ));
        }
        let entry = be32(data, table_end);
        table_end += 4;
        if entry == 0 {
            break;
        }
    }
    let script = data
        .get(table_end..)
        .and_then(|d| d.get(..len))
        .ok_or(UbootError::BadPayload("script length exceeds the data"))?;
    String::from_utf8(script.to_vec())
        .map_err(|e| UbootError::NotUtf8(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const SCRIPT: &str = "setenv bootargs console=ttyS0\nload mmc 0:2 ${kernel_addr_r} Image\nbooti ${kernel_addr_r} - ${fdt_addr}\n";

    fn mkimage(script: &str, name: &str, arch: &str, epoch: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let cmd = dir.path().join("boot.cmd");
        let scr = dir.path().join("boot.scr");
        std::fs::write(&cmd, script).unwrap();
        let out = Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args([
                "-A", arch, "-O", "linux", "-T", "script", "-C", "none", "-n", name, "-d",
            ])
            .arg(&cmd)
            .arg(&scr)
            .output()
            .expect("mkimage not found: install the Debian package u-boot-tools");
        assert!(
            out.status.success(),
            "mkimage failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&scr).unwrap()
    }

    #[test]
    fn matches_host_mkimage_byte_for_byte() {
        for (arch, flag) in [(UbootArch::Arm64, "arm64"), (UbootArch::Arm, "arm")] {
            // Odd lengths check that the last (only) file is not padded.
            // (mkimage refuses an empty script, so none here.)
            for script in [SCRIPT, "echo hi\n", "ech\n", "é\n"] {
                for name in [
                    "keel boot selector",
                    "",
                    "a name that is longer than thirty-two bytes",
                ] {
                    let ours = script_image(script, name, arch, 1_700_000_000);
                    assert_eq!(
                        ours,
                        mkimage(script, name, flag, 1_700_000_000),
                        "{flag} {name:?} {script:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn dumpimage_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let scr = dir.path().join("boot.scr");
        std::fs::write(
            &scr,
            script_image(SCRIPT, "keel boot selector", UbootArch::Arm64, 1),
        )
        .unwrap();
        let out = Command::new("dumpimage")
            .arg("-l")
            .arg(&scr)
            .output()
            .expect("dumpimage not found: install the Debian package u-boot-tools");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dumpimage failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("AArch64 Linux Script (uncompressed)"),
            "{text}"
        );
        assert!(text.contains("keel boot selector"), "{text}");
    }

    #[test]
    fn round_trips() {
        let img = script_image(SCRIPT, "x", UbootArch::Arm, 42);
        assert_eq!(parse_script_image(&img).unwrap(), SCRIPT);
        assert_eq!(
            parse_script_image(&script_image("", "", UbootArch::Arm64, 0)).unwrap(),
            ""
        );
    }

    #[test]
    fn tampered_header_or_data_is_rejected() {
        let img = script_image(SCRIPT, "x", UbootArch::Arm64, 42);
        let mut bad = img.clone();
        bad[40] ^= 1; // inside the name
        assert!(matches!(
            parse_script_image(&bad),
            Err(UbootError::HeaderCrc { .. })
        ));
        let mut bad = img.clone();
        bad[HEADER_LEN + 10] ^= 1;
        let err = parse_script_image(&bad).unwrap_err();
        assert!(matches!(err, UbootError::DataCrc { .. }));
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(matches!(
            parse_script_image(&img[..img.len() - 1]),
            Err(UbootError::Truncated { .. })
        ));
        assert!(matches!(
            parse_script_image(&img[..10]),
            Err(UbootError::TooShort(10))
        ));
        assert!(matches!(
            parse_script_image(SCRIPT.as_bytes()),
            Err(UbootError::BadMagic(_))
        ));
    }

    #[test]
    fn non_script_type_is_rejected() {
        let mut img = script_image(SCRIPT, "x", UbootArch::Arm64, 42);
        img[30] = 2; // kernel
        img[4..8].fill(0);
        let crc = crc32fast::hash(&img[..HEADER_LEN]);
        img[4..8].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            parse_script_image(&img),
            Err(UbootError::NotScript { found: 2 })
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_script_image(&bytes);
        }

        // Random payloads behind valid CRCs reach the length-table parsing.
        #[test]
        fn parse_payload_never_panics(data in proptest::collection::vec(0u8..4, 0..64)) {
            let _ = parse_script_image(&wrap(data, "p", UbootArch::Arm64, 0));
        }
    }
}
