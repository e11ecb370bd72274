//! Just enough ELF to check a device binary before it goes on a card: which
//! CPU it is for, and whether it is statically linked (a rootfs without a
//! libc has no dynamic loader to run anything else). The parsing is the
//! `object` crate's (docs/dependencies.md); this module only decides.

use object::elf::{
    FileHeader32, FileHeader64, DT_NEEDED, DT_NULL, EM_AARCH64, EM_ARM, EM_X86_64, PT_INTERP,
};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

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
    /// The kernel can run it alone: no PT_INTERP (no dynamic loader) and
    /// no DT_NEEDED (no shared library to load). Static-pie, which is what
    /// Rust's musl targets produce, has a dynamic section but needs nothing,
    /// so it counts; a shared library has no PT_INTERP but does not.
    pub static_linked: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file (no \\x7fELF magic); check that the path names a compiled binary")]
    NotElf,
    #[error("big-endian ELF is not supported; build for a little-endian target")]
    BigEndian,
    #[error("malformed ELF file ({0}); rebuild or re-copy it")]
    Malformed(String),
}

impl From<object::Error> for ElfError {
    fn from(e: object::Error) -> Self {
        ElfError::Malformed(e.to_string())
    }
}

/// Reads the ELF header, program headers and dynamic section of a
/// little-endian ELF file.
pub fn inspect(b: &[u8]) -> Result<ElfInfo, ElfError> {
    if !b.starts_with(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    match FileKind::parse(b)? {
        FileKind::Elf32 => read::<FileHeader32<Endianness>>(b),
        FileKind::Elf64 => read::<FileHeader64<Endianness>>(b),
        _ => Err(ElfError::NotElf),
    }
}

fn read<H: FileHeader<Endian = Endianness>>(b: &[u8]) -> Result<ElfInfo, ElfError> {
    // Checks the class, data encoding and version bytes.
    let h = H::parse(b)?;
    if h.is_big_endian() {
        return Err(ElfError::BigEndian);
    }
    let e = h.endian()?;
    let mut interp = false;
    let mut needed = false;
    for p in h.program_headers(e, b)? {
        interp |= p.p_type(e) == PT_INTERP;
        if let Some(dynamic) = p.dynamic(e, b)? {
            needed |= dynamic
                .iter()
                .map(|d| d.tag32(e))
                .take_while(|&tag| tag != Some(DT_NULL))
                .any(|tag| tag == Some(DT_NEEDED));
        }
    }
    let arch = match h.e_machine(e) {
        EM_AARCH64 => ElfArch::Aarch64,
        EM_ARM => ElfArch::Arm,
        EM_X86_64 => ElfArch::X86_64,
        other => ElfArch::Other(other),
    };
    Ok(ElfInfo {
        arch,
        is_64: h.is_class_64(),
        static_linked: !interp && !needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// A minimal little-endian ELF file: the header, program headers of the
    /// given types and, when one is PT_DYNAMIC, a dynamic section holding
    /// `needed` DT_NEEDED entries and a DT_NULL.
    fn elf(is_64: bool, machine: u16, phdrs: &[u32], needed: usize) -> Vec<u8> {
        let (ehsize, phentsize, dynsize) = if is_64 { (64, 56, 16) } else { (52, 32, 8) };
        let dyn_at = ehsize + phentsize * phdrs.len();
        let dyn_len = dynsize * (needed + 1);
        let mut b = vec![0u8; dyn_at + dyn_len];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is_64 { 2 } else { 1 };
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        let n = phdrs.len() as u16;
        let put = |b: &mut Vec<u8>, at: usize, v: u64, wide: bool| {
            if wide {
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            } else {
                b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
            }
        };
        if is_64 {
            put(&mut b, 0x20, ehsize as u64, true);
            b[0x36..0x38].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x38..0x3A].copy_from_slice(&n.to_le_bytes());
        } else {
            put(&mut b, 0x1C, ehsize as u64, false);
            b[0x2A..0x2C].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x2C..0x2E].copy_from_slice(&n.to_le_bytes());
        }
        for (i, &t) in phdrs.iter().enumerate() {
            let at = ehsize + i * phentsize;
            b[at..at + 4].copy_from_slice(&t.to_le_bytes());
            if t == object::elf::PT_DYNAMIC {
                // p_offset and p_filesz.
                let (off, size) = if is_64 { (8, 32) } else { (4, 16) };
                put(&mut b, at + off, dyn_at as u64, is_64);
                put(&mut b, at + size, dyn_len as u64, is_64);
            }
        }
        for i in 0..needed {
            put(&mut b, dyn_at + i * dynsize, u64::from(DT_NEEDED), is_64);
        }
        b
    }

    const LOAD: u32 = object::elf::PT_LOAD;
    const DYNAMIC: u32 = object::elf::PT_DYNAMIC;

    fn info(arch: ElfArch, is_64: bool, static_linked: bool) -> ElfInfo {
        ElfInfo {
            arch,
            is_64,
            static_linked,
        }
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
        let aarch64 = inspect(&elf(true, EM_AARCH64, &[LOAD, 6], 0)).unwrap();
        assert_eq!(aarch64, info(ElfArch::Aarch64, true, true));
        let arm = inspect(&elf(false, EM_ARM, &[6, PT_INTERP, LOAD], 0)).unwrap();
        assert_eq!(arm, info(ElfArch::Arm, false, false));
        let riscv = inspect(&elf(true, 243, &[], 0)).unwrap();
        assert_eq!(riscv, info(ElfArch::Other(243), true, true));
    }

    #[test]
    fn static_pie_is_static_but_a_shared_library_is_not() {
        // static-pie: a dynamic section (for its own relocations), nothing needed.
        let pie = inspect(&elf(true, EM_X86_64, &[LOAD, DYNAMIC], 0)).unwrap();
        assert_eq!(pie, info(ElfArch::X86_64, true, true));
        // A shared library: no loader of its own, but it needs others.
        for is_64 in [true, false] {
            let lib = inspect(&elf(is_64, EM_ARM, &[LOAD, DYNAMIC], 2)).unwrap();
            assert_eq!(lib, info(ElfArch::Arm, is_64, false));
        }
    }

    /// Real files from the host's compiler and libc, cross-checking the
    /// hand-built headers above.
    #[test]
    fn host_compiled_static_static_pie_and_shared() {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("x.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\nint f(void) { return puts(\"x\"); }\nint main(void) { return f(); }\n",
        )
        .unwrap();
        let build = |flags: &[&str], out: &str| {
            let out = dir.path().join(out);
            let st = Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(&out)
                .arg(&src)
                .status()
                .expect("cc (the host C compiler) is needed for this test");
            assert!(st.success(), "cc {flags:?} failed");
            inspect(&std::fs::read(out).unwrap()).unwrap()
        };
        assert!(build(&["-static"], "static").static_linked);
        assert!(build(&["-static-pie"], "static-pie").static_linked);
        assert!(!build(&[], "dynamic").static_linked);
        // No PT_INTERP, one DT_NEEDED (libc.so.6).
        let lib = build(&["-shared", "-fPIC"], "libx.so");
        assert_eq!(lib, info(ElfArch::X86_64, true, false));
        let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        if libc.exists() {
            let libc = inspect(&std::fs::read(libc).unwrap()).unwrap();
            assert_eq!(libc, info(ElfArch::X86_64, true, false));
        }
    }

    #[test]
    fn any_alignment_of_the_bytes_is_fine() {
        let good = elf(true, EM_AARCH64, &[LOAD, DYNAMIC], 1);
        let mut shifted = vec![0u8; good.len() + 1];
        shifted[1..].copy_from_slice(&good);
        assert_eq!(inspect(&shifted[1..]), inspect(&good));
        assert!(!inspect(&shifted[1..]).unwrap().static_linked);
    }

    #[test]
    fn bad_files_are_errors() {
        let malformed = |b: &[u8]| matches!(inspect(b), Err(ElfError::Malformed(_)));
        assert_eq!(inspect(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(inspect(b""), Err(ElfError::NotElf));
        let good = elf(true, EM_AARCH64, &[LOAD, PT_INTERP], 0);
        assert!(malformed(&good[..good.len() - 60]), "program headers cut");
        assert!(malformed(&good[..30]), "header cut");
        let mut be = good.clone();
        be[5] = 2;
        assert_eq!(inspect(&be), Err(ElfError::BigEndian));
        let mut class = good.clone();
        class[4] = 9;
        assert!(malformed(&class), "class 9");
        let mut huge = good.clone();
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(malformed(&huge), "e_phoff out of the file");
        // The old reader walked this table with the wrong stride, missed the
        // PT_INTERP and called the file static.
        let mut stride = good;
        stride[0x36..0x38].copy_from_slice(&64u16.to_le_bytes());
        assert!(malformed(&stride), "e_phentsize 64");
        let dynamic = elf(true, EM_AARCH64, &[LOAD, DYNAMIC], 1);
        assert!(
            malformed(&dynamic[..dynamic.len() - 1]),
            "dynamic section cut"
        );
        let err = inspect(&dynamic[..dynamic.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("rebuild or re-copy it"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..256), keep_magic: bool) {
            if keep_magic && b.len() >= 7 {
                b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
            }
            let _ = inspect(&b);
        }

        /// A few bytes changed in a valid file with a dynamic section.
        #[test]
        fn never_panics_on_near_valid_files(
            is_64: bool,
            edits in proptest::collection::vec((0usize..512, proptest::num::u8::ANY), 1..4),
        ) {
            let mut b = elf(is_64, EM_ARM, &[LOAD, PT_INTERP, DYNAMIC], 2);
            for (at, v) in edits {
                let n = b.len();
                b[at % n] = v;
            }
            let _ = inspect(&b);
        }
    }
}
