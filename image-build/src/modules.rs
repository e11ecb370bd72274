//! Kernel module dependencies, read from each module's `.modinfo` section:
//! Debian's kernel packages ship no modules.dep (depmod runs at install
//! time), and the image must know which modules to carry and in what order
//! to load them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("the module is {0}-compressed; Keel reads only plain .ko modules so far, so use a kernel package with uncompressed modules")]
    Compressed(&'static str),
    #[error("not a kernel module (not a readable ELF file: {0})")]
    NotElf(String),
    #[error("the module has no .modinfo section, so it is not a loadable kernel module")]
    NoModinfo,
    #[error("the module's .modinfo has no name= entry; the module was built for a kernel older than 4.x")]
    NoName,
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ModulesError>,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no kernel/ directory under {0}; expected lib/modules/<release> of a Debian linux-image package")]
    NoKernelDir(PathBuf),
    #[error("kernel module {name} is not in the kernel package{suggestion}; fix the module lists in the board config")]
    Unknown { name: String, suggestion: String },
    #[error("kernel module {module} depends on {dependency}, which is not in the kernel package; the package is incomplete")]
    MissingDependency { module: String, dependency: String },
    #[error("kernel modules depend on each other in a cycle ({0}); the kernel package is broken")]
    Cycle(String),
}

/// What a module says about itself in `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    /// Hard dependencies (`depends=`), which must be loaded first.
    pub depends: Vec<String>,
    /// `softdep=pre:` modules: loaded first when present; may be built in
    /// or be an alias rather than a module name.
    pub softdep_pre: Vec<String>,
}

/// Module names use '-' and '_' interchangeably; the kernel stores '_'.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses the `.modinfo` section of a plain (uncompressed) `.ko` file.
pub fn modinfo(ko: &[u8]) -> Result<ModInfo, ModulesError> {
    for (magic, kind) in [
        (&b"\xfd7zXZ\x00"[..], "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x1f\x8b", "gzip"),
    ] {
        if ko.starts_with(magic) {
            return Err(ModulesError::Compressed(kind));
        }
    }
    let file = object::File::parse(ko).map_err(|e| ModulesError::NotElf(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ModulesError::NoModinfo)?;
    let data = section
        .data()
        .map_err(|e| ModulesError::NotElf(e.to_string()))?;
    let mut info = ModInfo {
        name: String::new(),
        depends: Vec::new(),
        softdep_pre: Vec::new(),
    };
    for entry in data.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = normalise(value.trim()),
            "depends" => {
                info.depends.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(normalise),
                );
            }
            // As kmod reads it: "pre:" and "post:" switch lists, other words
            // are module names.
            "softdep" => {
                let mut pre = false;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        name if pre => info.softdep_pre.push(normalise(name)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if info.name.is_empty() {
        return Err(ModulesError::NoName);
    }
    Ok(info)
}

/// A module in load order, with its file relative to the modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    pub name: String,
    pub rel_path: PathBuf,
}

/// The modules of one kernel release, by name.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Normalised name (from the file name) -> path relative to `root`.
    by_name: BTreeMap<String, PathBuf>,
}

/// The module name a file provides, if it is a module file.
fn module_name(file_name: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(ext))
        .filter(|n| !n.is_empty())
        .map(normalise)
}

impl ModuleIndex {
    /// Indexes every module file under `modules_dir/kernel` (modules_dir is
    /// lib/modules/<release>). Only file names are read here; `.modinfo` is
    /// read for the modules a closure actually needs.
    pub fn scan(modules_dir: &Path) -> Result<Self, ModulesError> {
        let kernel = modules_dir.join("kernel");
        if !kernel.is_dir() {
            return Err(ModulesError::NoKernelDir(modules_dir.to_owned()));
        }
        let mut files = Vec::new();
        let mut dirs = vec![kernel];
        while let Some(dir) = dirs.pop() {
            let io = |source| ModulesError::Io {
                path: dir.clone(),
                source,
            };
            for entry in std::fs::read_dir(&dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let kind = entry.file_type().map_err(io)?;
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file() {
                    files.push(entry.path());
                }
            }
        }
        // Sorted, so a name found twice always resolves to the same file.
        files.sort();
        let mut by_name = BTreeMap::new();
        for path in files {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(module_name)
            else {
                continue;
            };
            if let Ok(rel) = path.strip_prefix(modules_dir) {
                by_name.entry(name).or_insert_with(|| rel.to_owned());
            }
        }
        Ok(Self {
            root: modules_dir.to_owned(),
            by_name,
        })
    }

    /// The file of module `name`, relative to the modules directory.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.by_name.get(&normalise(name)).map(PathBuf::as_path)
    }

    /// Wanted modules plus their depends= and softdep pre: closure, in load
    /// order (each module after all its dependencies), deduplicated, and the
    /// same for the same inputs. A softdep not in the index is skipped (it
    /// may be built in, or an alias); a missing depends= is an error.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<ResolvedModule>, ModulesError> {
        let mut walk = Walk {
            index: self,
            info: BTreeMap::new(),
            done: BTreeSet::new(),
            stack: Vec::new(),
            out: Vec::new(),
        };
        for name in wanted {
            let name = normalise(name);
            if !self.by_name.contains_key(&name) {
                return Err(ModulesError::Unknown {
                    suggestion: self.suggest(&name),
                    name,
                });
            }
            walk.visit(&name)?;
        }
        Ok(walk.out)
    }

    fn modinfo_of(&self, name: &str) -> Result<ModInfo, ModulesError> {
        let rel = self
            .by_name
            .get(name)
            .ok_or_else(|| ModulesError::Unknown {
                name: name.into(),
                suggestion: String::new(),
            })?;
        let path = self.root.join(rel);
        let in_file = |source| ModulesError::InFile {
            path: path.clone(),
            source: Box::new(source),
        };
        let bytes = std::fs::read(&path).map_err(|source| ModulesError::Io {
            path: path.clone(),
            source,
        })?;
        modinfo(&bytes).map_err(in_file)
    }

    /// " (did you mean a, b?)" for names close to `name`, or nothing.
    fn suggest(&self, name: &str) -> String {
        let mut close: Vec<(usize, &str)> = self
            .by_name
            .keys()
            .map(|k| (distance(name, k), k.as_str()))
            .filter(|(d, k)| *d <= 2 || (name.len() >= 3 && k.contains(name)))
            .collect();
        close.sort();
        let names: Vec<&str> = close.iter().take(5).map(|(_, k)| *k).collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", names.join(", "))
        }
    }
}

/// Depth-first walk emitting each module after its dependencies.
struct Walk<'a> {
    index: &'a ModuleIndex,
    info: BTreeMap<String, ModInfo>,
    done: BTreeSet<String>,
    /// Modules being visited, to report a cycle as a chain.
    stack: Vec<String>,
    out: Vec<ResolvedModule>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str) -> Result<(), ModulesError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(at) = self.stack.iter().position(|s| s == name) {
            let mut chain = self.stack[at..].to_vec();
            chain.push(name.to_string());
            return Err(ModulesError::Cycle(chain.join(" -> ")));
        }
        let info = match self.info.get(name) {
            Some(i) => i.clone(),
            None => {
                let i = self.index.modinfo_of(name)?;
                self.info.insert(name.to_string(), i.clone());
                i
            }
        };
        self.stack.push(name.to_string());
        for dep in &info.softdep_pre {
            if self.index.by_name.contains_key(dep) {
                self.visit(dep)?;
            }
        }
        for dep in &info.depends {
            if !self.index.by_name.contains_key(dep) {
                return Err(ModulesError::MissingDependency {
                    module: name.to_string(),
                    dependency: dep.clone(),
                });
            }
            self.visit(dep)?;
        }
        self.stack.pop();
        self.done.insert(name.to_string());
        let rel_path = self.index.by_name.get(name).cloned().unwrap_or_default();
        self.out.push(ResolvedModule {
            name: name.to_string(),
            rel_path,
        });
        Ok(())
    }
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable object with a `.modinfo` section holding
    /// `entries` NUL-separated, the way modpost lays it out.
    fn ko(entries: &[&str]) -> Vec<u8> {
        let mut modinfo: Vec<u8> = entries.iter().flat_map(|e| e.bytes().chain([0])).collect();
        modinfo.resize(modinfo.len().next_multiple_of(8), 0);
        let shstrtab = b"\0.modinfo\0.shstrtab\0\0\0\0\0".to_vec(); // 24 bytes
        let modinfo_at = 64;
        let shstrtab_at = modinfo_at + modinfo.len();
        let sh_at = shstrtab_at + shstrtab.len();
        let mut b = vec![0u8; 64];
        b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        b[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        b[18..20].copy_from_slice(&183u16.to_le_bytes()); // aarch64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&(sh_at as u64).to_le_bytes());
        b[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        b[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        b[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
        b.extend(&modinfo);
        b.extend(&shstrtab);
        // Section headers: null, .modinfo (PROGBITS, alloc), .shstrtab.
        let sh = |name: u32, kind: u32, flags: u64, at: usize, size: usize| {
            let mut h = Vec::with_capacity(64);
            h.extend(name.to_le_bytes());
            h.extend(kind.to_le_bytes());
            h.extend(flags.to_le_bytes());
            h.extend(0u64.to_le_bytes());
            h.extend((at as u64).to_le_bytes());
            h.extend((size as u64).to_le_bytes());
            h.extend([0u8; 8]);
            h.extend(1u64.to_le_bytes());
            h.extend(0u64.to_le_bytes());
            h
        };
        b.extend(vec![0u8; 64]);
        b.extend(sh(1, 1, 2, modinfo_at, modinfo.len()));
        b.extend(sh(10, 3, 0, shstrtab_at, shstrtab.len()));
        b
    }

    fn tree(mods: &[(&str, &[&str])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, entries) in mods {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, ko(entries)).unwrap();
        }
        dir
    }

    fn names(v: &[ResolvedModule]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    fn wanted(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// ext4 as Debian's 6.1 kernel describes it (crc32c is an alias of
    /// crc32c_generic, so that softdep is not a module name).
    fn debian_like() -> tempfile::TempDir {
        tree(&[
            (
                "kernel/fs/ext4/ext4.ko",
                &[
                    "license=GPL",
                    "softdep=pre: crc32c",
                    "depends=jbd2,mbcache,crc16",
                    "name=ext4",
                ],
            ),
            ("kernel/fs/jbd2/jbd2.ko", &["depends=", "name=jbd2"]),
            ("kernel/fs/mbcache.ko", &["depends=", "name=mbcache"]),
            ("kernel/lib/crc16.ko", &["depends=", "name=crc16"]),
            (
                "kernel/crypto/crc32c_generic.ko",
                &["alias=crc32c", "depends=", "name=crc32c_generic"],
            ),
            (
                "kernel/drivers/block/virtio_blk.ko",
                &["depends=virtio_ring,virtio", "name=virtio_blk"],
            ),
            (
                "kernel/drivers/virtio/virtio.ko",
                &["depends=", "name=virtio"],
            ),
            (
                "kernel/drivers/virtio/virtio_ring.ko",
                &["depends=virtio", "name=virtio_ring"],
            ),
            (
                "kernel/drivers/md/dm-mod.ko",
                &["softdep=pre: virtio post: crc16", "depends=", "name=dm_mod"],
            ),
        ])
    }

    #[test]
    fn parses_modinfo() {
        let info = modinfo(&ko(&[
            "author=x",
            "softdep=pre: crc32c-generic foo post: bar",
            "depends=a-b,c",
            "name=my-mod",
        ]))
        .unwrap();
        assert_eq!(
            info,
            ModInfo {
                name: "my_mod".into(),
                depends: vec!["a_b".into(), "c".into()],
                softdep_pre: vec!["crc32c_generic".into(), "foo".into()]
            }
        );
        assert!(modinfo(&ko(&["depends=", "name=x"]))
            .unwrap()
            .depends
            .is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_plain_module() {
        assert!(matches!(
            modinfo(b"\xfd7zXZ\x00rest"),
            Err(ModulesError::Compressed("xz"))
        ));
        assert!(matches!(
            modinfo(b"\x28\xb5\x2f\xfd..."),
            Err(ModulesError::Compressed("zstd"))
        ));
        assert!(matches!(modinfo(b"hello"), Err(ModulesError::NotElf(_))));
        assert!(matches!(
            modinfo(&ko(&["depends="])),
            Err(ModulesError::NoName)
        ));
        let mut no_modinfo = ko(&["name=x"]);
        let at = no_modinfo
            .windows(8)
            .position(|w| w == b".modinfo")
            .unwrap();
        no_modinfo[at + 1] = b'X';
        assert!(matches!(modinfo(&no_modinfo), Err(ModulesError::NoModinfo)));
    }

    #[test]
    fn closure_is_in_load_order() {
        let dir = debian_like();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        assert_eq!(
            index.path("ext4"),
            Some(Path::new("kernel/fs/ext4/ext4.ko"))
        );
        assert_eq!(
            index.path("dm-mod"),
            Some(Path::new("kernel/drivers/md/dm-mod.ko"))
        );
        let ext4 = index.closure(&wanted(&["ext4"])).unwrap();
        assert_eq!(names(&ext4), ["jbd2", "mbcache", "crc16", "ext4"]);
        assert_eq!(ext4[3].rel_path, Path::new("kernel/fs/ext4/ext4.ko"));
        let both = index
            .closure(&wanted(&[
                "crc32c_generic",
                "virtio-blk",
                "ext4",
                "virtio_ring",
            ]))
            .unwrap();
        assert_eq!(
            names(&both),
            [
                "crc32c_generic",
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        // softdep pre: loads first, post: does not count.
        assert_eq!(
            names(&index.closure(&wanted(&["dm_mod"])).unwrap()),
            ["virtio", "dm_mod"]
        );
        assert!(index.closure(&[]).unwrap().is_empty());
    }

    #[test]
    fn unknown_missing_and_cyclic_modules_are_errors() {
        let dir = debian_like();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        let err = index.closure(&wanted(&["ext3"])).unwrap_err();
        assert!(
            matches!(&err, ModulesError::Unknown { suggestion, .. } if suggestion.contains("ext4")),
            "{err}"
        );
        assert!(err.to_string().contains("board config"), "{err}");
        let err = index.closure(&wanted(&["blk"])).unwrap_err();
        assert!(err.to_string().contains("virtio_blk"), "{err}");

        let broken = tree(&[
            ("kernel/a.ko", &["depends=b", "name=a"]),
            ("kernel/b.ko", &["depends=c", "name=b"]),
            ("kernel/c.ko", &["softdep=pre: a", "name=c"]),
            ("kernel/d.ko", &["depends=nowhere", "name=d"]),
            ("kernel/e.ko.xz", &["name=e"]),
        ]);
        let index = ModuleIndex::scan(broken.path()).unwrap();
        let err = index.closure(&wanted(&["a"])).unwrap_err();
        assert!(
            matches!(&err, ModulesError::Cycle(c) if c == "a -> b -> c -> a"),
            "{err}"
        );
        let err = index.closure(&wanted(&["d"])).unwrap_err();
        assert!(
            matches!(&err, ModulesError::MissingDependency { module, dependency } if module == "d" && dependency == "nowhere")
        );
        // Only the file's name says .xz here; its bytes are plain, so make them xz.
        std::fs::write(broken.path().join("kernel/e.ko.xz"), b"\xfd7zXZ\x00").unwrap();
        let err = index.closure(&wanted(&["e"])).unwrap_err();
        assert!(
            err.to_string().contains("e.ko.xz") && err.to_string().contains("xz-compressed"),
            "{err}"
        );
        assert!(matches!(
            ModuleIndex::scan(Path::new("/nonexistent")),
            Err(ModulesError::NoKernelDir(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn modinfo_never_panics(entries in proptest::collection::vec("[a-z_=:, -]{0,20}", 0..8), cut in 0usize..400) {
            let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
            let mut bytes = ko(&refs);
            let _ = modinfo(&bytes);
            bytes.truncate(cut);
            let _ = modinfo(&bytes);
        }
    }
}
