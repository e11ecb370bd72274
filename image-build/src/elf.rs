//! Just enough ELF to check a device binary before it goes on a card: which
//! CPU it is for, and whether it is statically linked (a rootfs without a
//! libc has no dynamic loader to run anything else).

/// The CPU an ELF file is built for (`e_machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfArch {
    Aarch64,
    Arm,
    X86_64,
    Other(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    pub arch: ElfArch,
    pub is_64: bool,
    /// No PT_INTERP: the kernel runs it without a dynamic loader (this
    /// includes static-pie, which is what Rust's musl targets produce).
    pub static_linked: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file (no \\x7fELF magic); check that the path names a compiled binary")]
    NotElf,
    #[error("ELF file is truncated ({0}); rebuild or re-copy it")]
    Truncated(&'static str),
    #[error("ELF class {0} is neither 32- nor 64-bit; the file is corrupt")]
    BadClass(u8),
    #[error("big-endian ELF is not supported; build for a little-endian target")]
    BigEndian,
    #[error(
        "ELF program header entries are {0} bytes, too small to hold one; the file is corrupt"
    )]
    BadProgramHeaderSize(u16),
}

const PT_INTERP: u32 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

fn bytes<const N: usize>(b: &[u8], at: u64, what: &'static str) -> Result<[u8; N], ElfError> {
    let at = usize::try_from(at).map_err(|_| ElfError::Truncated(what))?;
    let end = at.checked_add(N).ok_or(ElfError::Truncated(what))?;
    let mut out = [0u8; N];
    out.copy_from_slice(b.get(at..end).ok_or(ElfError::Truncated(what))?);
    Ok(out)
}

fn u16_at(b: &[u8], at: u64, what: &'static str) -> Result<u16, ElfError> {
    Ok(u16::from_le_bytes(bytes(b, at, what)?))
}

fn u32_at(b: &[u8], at: u64, what: &'static str) -> Result<u32, ElfError> {
    Ok(u32::from_le_bytes(bytes(b, at, what)?))
}

fn u64_at(b: &[u8], at: u64, what: &'static str) -> Result<u64, ElfError> {
    Ok(u64::from_le_bytes(bytes(b, at, what)?))
}

/// Reads the ELF header and program headers of a little-endian ELF file.
pub fn inspect(b: &[u8]) -> Result<ElfInfo, ElfError> {
    if b.len() < 4 || &b[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let [class, data] = bytes(b, 4, "identification")?;
    let is_64 = match class {
        1 => false,
        2 => true,
        other => return Err(ElfError::BadClass(other)),
    };
    if data != 1 {
        return Err(ElfError::BigEndian);
    }
    let machine = u16_at(b, 18, "header")?;
    // Offsets of e_phoff, e_phentsize and e_phnum differ between classes.
    let (phoff, phentsize, phnum) = if is_64 {
        (
            u64_at(b, 0x20, "header")?,
            u16_at(b, 0x36, "header")?,
            u16_at(b, 0x38, "header")?,
        )
    } else {
        (
            u64::from(u32_at(b, 0x1C, "header")?),
            u16_at(b, 0x2A, "header")?,
            u16_at(b, 0x2C, "header")?,
        )
    };
    if phnum > 0 && phentsize < 4 {
        return Err(ElfError::BadProgramHeaderSize(phentsize));
    }
    let mut static_linked = true;
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or(ElfError::Truncated("program headers"))?;
        if u32_at(b, at, "program headers")? == PT_INTERP {
            static_linked = false;
        }
    }
    let arch = match machine {
        EM_AARCH64 => ElfArch::Aarch64,
        EM_ARM => ElfArch::Arm,
        EM_X86_64 => ElfArch::X86_64,
        other => ElfArch::Other(other),
    };
    Ok(ElfInfo {
        arch,
        is_64,
        static_linked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF header followed by program headers of
    /// the given types.
    fn elf(is_64: bool, machine: u16, phdrs: &[u32]) -> Vec<u8> {
        let (ehsize, phentsize) = if is_64 { (64usize, 56usize) } else { (52, 32) };
        let mut b = vec![0u8; ehsize + phentsize * phdrs.len()];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is_64 { 2 } else { 1 };
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        let n = phdrs.len() as u16;
        if is_64 {
            b[0x20..0x28].copy_from_slice(&(ehsize as u64).to_le_bytes());
            b[0x36..0x38].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x38..0x3A].copy_from_slice(&n.to_le_bytes());
        } else {
            b[0x1C..0x20].copy_from_slice(&(ehsize as u32).to_le_bytes());
            b[0x2A..0x2C].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x2C..0x2E].copy_from_slice(&n.to_le_bytes());
        }
        for (i, t) in phdrs.iter().enumerate() {
            let at = ehsize + i * phentsize;
            b[at..at + 4].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_the_host_test_binary() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let info = inspect(&me).unwrap();
        let want = if cfg!(target_arch = "x86_64") {
            ElfArch::X86_64
        } else if cfg!(target_arch = "aarch64") {
            ElfArch::Aarch64
        } else {
            info.arch
        };
        assert_eq!(info.arch, want);
        assert_eq!(info.is_64, cfg!(target_pointer_width = "64"));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                !info.static_linked,
                "a glibc test binary has a dynamic loader"
            );
        }
    }

    #[test]
    fn hand_built_headers() {
        let info = inspect(&elf(true, EM_AARCH64, &[1, 2, 6])).unwrap();
        assert_eq!(
            info,
            ElfInfo {
                arch: ElfArch::Aarch64,
                is_64: true,
                static_linked: true
            }
        );
        let info = inspect(&elf(false, EM_ARM, &[6, PT_INTERP, 1])).unwrap();
        assert_eq!(
            info,
            ElfInfo {
                arch: ElfArch::Arm,
                is_64: false,
                static_linked: false
            }
        );
        let info = inspect(&elf(true, 243, &[])).unwrap();
        assert_eq!(info.arch, ElfArch::Other(243)); // RISC-V
    }

    #[test]
    fn bad_files_are_errors() {
        assert_eq!(inspect(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(inspect(b""), Err(ElfError::NotElf));
        let good = elf(true, EM_AARCH64, &[1, PT_INTERP]);
        assert_eq!(
            inspect(&good[..good.len() - 60]),
            Err(ElfError::Truncated("program headers"))
        );
        assert_eq!(inspect(&good[..30]), Err(ElfError::Truncated("header")));
        let mut be = good.clone();
        be[5] = 2;
        assert_eq!(inspect(&be), Err(ElfError::BigEndian));
        let mut class = good.clone();
        class[4] = 9;
        assert_eq!(inspect(&class), Err(ElfError::BadClass(9)));
        let mut huge = good;
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(inspect(&huge), Err(ElfError::Truncated(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..256), keep_magic: bool) {
            if keep_magic && b.len() >= 6 {
                b[..6].copy_from_slice(b"\x7fELF\x02\x01");
            }
            let _ = inspect(&b);
        }
    }
}
