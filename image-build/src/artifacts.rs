//! Board artifacts from Debian bookworm: resolved and downloaded with
//! `apt-get` against a private state directory (no dpkg architecture changes,
//! no root needed), pinned by the lock file, cached and verified by sha256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::lock::{LockFile, LockedPackage};

pub const SUITE: &str = "bookworm";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{tool}` not found: install it with `apt-get install {package}`")]
    MissingTool { tool: String, package: String },
    #[error("Debian's archive keyring {KEYRING} is missing: install it with `apt-get install debian-archive-keyring`")]
    MissingKeyring,
    #[error("no Debian {SUITE} archive found in /etc/apt/sources.list or sources.list.d; set KEEL_DEBIAN_MIRROR to the URL of a Debian archive")]
    NoMirror,
    #[error("{what} failed: {detail}")]
    Apt { what: String, detail: String },
    #[error("package '{0}' is not in Debian {SUITE} for this architecture; check the package name in the board config")]
    NotFound(String),
    #[error("{package} {version} is pinned in {lock} but the archive no longer has it, and --locked forbids another version; run without --locked to update the lock")]
    LockedUnavailable {
        package: String,
        version: String,
        lock: String,
    },
    #[error("{package}: --locked but {lock} has no entry for it; run without --locked to add it")]
    LockedMissing { package: String, lock: String },
    #[error("{path}: sha256 {found} does not match the pinned {expected} even after a fresh download; the archive changed a pinned version, remove the entry from the lock file to accept it")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One package, fetched, verified and unpacked.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub locked: LockedPackage,
    pub deb: PathBuf,
    /// The package's files, unpacked (`dpkg-deb -x`).
    pub root: PathBuf,
}

/// The user's cache: `$KEEL_CACHE_DIR`, else `$XDG_CACHE_HOME/keel`, else `~/.cache/keel`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEEL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("keel");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("keel")
}

pub fn sha256_file(path: &Path) -> Result<String, ArtifactError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The Debian archive to fetch from: `KEEL_DEBIAN_MIRROR`, else the host's
/// own apt configuration (which already reaches an archive).
pub fn mirror() -> Result<String, ArtifactError> {
    if let Ok(m) = std::env::var("KEEL_DEBIAN_MIRROR") {
        return Ok(m.trim_end_matches('/').to_string());
    }
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("list") | Some("sources")) {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push(t);
                }
            }
        }
    }
    texts
        .iter()
        .find_map(|t| find_mirror(t))
        .ok_or(ArtifactError::NoMirror)
}

/// First archive URI serving the bookworm suite itself (not security), from
/// either one-line or deb822 sources.
fn find_mirror(text: &str) -> Option<String> {
    let serves = |uri: &str, suites: &str| {
        suites.split_whitespace().any(|s| s == SUITE)
            && !uri.contains("security")
            && uri.starts_with("http")
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("deb ") {
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').map(|(_, r)| r).unwrap_or(""),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                if serves(uri, suite) {
                    return Some(uri.trim_end_matches('/').to_string());
                }
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types:"), field("URIs:"), field("Suites:"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if let Some(uri) = uris.split_whitespace().find(|u| serves(u, &suites)) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// Fields of one `apt-cache show` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub depends: Vec<String>,
}

pub fn parse_record(text: &str) -> Option<PackageRecord> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    Some(PackageRecord {
        package: field("Package")?,
        version: field("Version")?,
        arch: field("Architecture")?,
        filename: field("Filename")?,
        size: field("Size")?.parse().ok()?,
        sha256: field("SHA256")?,
        depends: field("Depends")
            .map(|d| {
                d.split(',')
                    .filter_map(|alt| alt.split('|').next())
                    .filter_map(|dep| dep.split_whitespace().next())
                    .map(|n| n.split(':').next().unwrap_or(n).to_string())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// apt-get against a private state directory for one Debian architecture.
pub struct Apt {
    dir: PathBuf,
    arch: String,
    updated: bool,
}

impl Apt {
    pub fn new(cache: &Path, debian_arch: &str) -> Result<Self, ArtifactError> {
        for (tool, package) in [("apt-get", "apt"), ("dpkg-deb", "dpkg")] {
            if which(tool).is_none() {
                return Err(ArtifactError::MissingTool {
                    tool: tool.into(),
                    package: package.into(),
                });
            }
        }
        if !Path::new(KEYRING).exists() {
            return Err(ArtifactError::MissingKeyring);
        }
        let dir = cache.join("apt").join(debian_arch);
        for sub in ["lists/partial", "archives/partial", "etc"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir))?;
        }
        Ok(Apt {
            dir,
            arch: debian_arch.to_string(),
            updated: false,
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            "Dir::State::status=/dev/null".to_string(),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::archives={d}/archives"),
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            "Debug::NoLocking=1".to_string(),
            // The cache belongs to the user running the build; apt's _apt
            // sandbox user could not write into it.
            "APT::Sandbox::User=root".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// Refreshes the package lists once per build, and only when a package
    /// has to be resolved or downloaded.
    pub fn update(&mut self) -> Result<(), ArtifactError> {
        if self.updated {
            return Ok(());
        }
        let sources = format!(
            "deb [signed-by={KEYRING}] {} {SUITE} main non-free-firmware\n",
            mirror()?
        );
        let path = self.dir.join("etc/sources.list");
        std::fs::write(&path, sources).map_err(io(&path))?;
        eprintln!(
            "keel: refreshing Debian {SUITE} package lists ({})",
            self.arch
        );
        let out = Command::new("apt-get")
            .args(self.options())
            .args(["-q", "update"])
            .output()
            .map_err(io(&path))?;
        if !out.status.success() {
            return Err(ArtifactError::Apt {
                what: "apt-get update".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.updated = true;
        Ok(())
    }

    /// The candidate record for `package` (optionally `=version`).
    pub fn show(&mut self, package: &str) -> Result<PackageRecord, ArtifactError> {
        self.update()?;
        let out = Command::new("apt-cache")
            .args(self.options())
            .args(["show", "--no-all-versions", package])
            .output()
            .map_err(io(&self.dir))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_record(&text) {
            Some(r) if out.status.success() => Ok(r),
            _ => Err(ArtifactError::NotFound(package.to_string())),
        }
    }

    /// Resolves a board's package name: a kernel metapackage is followed to
    /// the versioned image package it depends on.
    pub fn resolve(&mut self, name: &str) -> Result<LockedPackage, ArtifactError> {
        let mut rec = self.show(name)?;
        if name.starts_with("linux-image-") {
            if let Some(dep) = rec
                .depends
                .iter()
                .find(|d| d.starts_with("linux-image-") && *d != name)
                .cloned()
            {
                rec = self.show(&dep)?;
            }
        }
        Ok(LockedPackage {
            name: name.to_string(),
            resolved: rec.package,
            version: rec.version,
            arch: rec.arch,
            filename: rec.filename,
            size: rec.size,
            sha256: rec.sha256,
        })
    }

    /// Downloads exactly the pinned version into `dest` (apt checks the
    /// archive's signed sha256 on the way).
    pub fn download(&mut self, pkg: &LockedPackage, dest: &Path) -> Result<PathBuf, ArtifactError> {
        self.update()?;
        std::fs::create_dir_all(dest).map_err(io(dest))?;
        eprintln!(
            "keel: downloading {} {} ({:.1} MiB)",
            pkg.resolved,
            pkg.version,
            pkg.size as f64 / 1048576.0
        );
        let spec = format!("{}:{}={}", pkg.resolved, pkg.arch, pkg.version);
        let status = Command::new("apt-get")
            .args(self.options())
            .args(["-q", "download", &spec])
            .current_dir(dest)
            .stdout(Stdio::inherit())
            .status()
            .map_err(io(dest))?;
        let file = dest.join(deb_name(pkg));
        if !status.success() || !file.exists() {
            return Err(ArtifactError::Apt {
                what: format!("apt-get download {spec}"),
                detail: format!("exit {status}"),
            });
        }
        Ok(file)
    }
}

/// apt-get download's file name: epoch colons are escaped as %3a.
fn deb_name(pkg: &LockedPackage) -> String {
    format!(
        "{}_{}_{}.deb",
        pkg.resolved,
        pkg.version.replace(':', "%3a"),
        pkg.arch
    )
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// What to do when the lock and the archive disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Honour pins where possible; re-resolve and warn otherwise.
    Update,
    /// Fail if the lock cannot be honoured exactly (`--locked`).
    Locked,
}

/// Fetches every package, honouring `lock`; returns the packages and the
/// lock to write back plus warnings for the user.
pub fn fetch_all(
    apt: &mut Apt,
    names: &[String],
    lock: Option<&LockFile>,
    lock_path: &Path,
    mode: LockMode,
    cache: &Path,
) -> Result<(Vec<Fetched>, LockFile, Vec<String>), ArtifactError> {
    let mut fetched = Vec::new();
    let mut warnings = Vec::new();
    for name in names {
        let pinned = lock.and_then(|l| l.get(name)).cloned();
        let pkg = match (pinned, mode) {
            (Some(p), _) => p,
            (None, LockMode::Locked) => {
                return Err(ArtifactError::LockedMissing {
                    package: name.clone(),
                    lock: lock_path.display().to_string(),
                })
            }
            (None, LockMode::Update) => {
                let p = apt.resolve(name)?;
                warnings.push(format!(
                    "{name}: pinned {} {} in {}",
                    p.resolved,
                    p.version,
                    lock_path.display()
                ));
                p
            }
        };
        let result = fetch_one(apt, &pkg, cache);
        let (deb, pkg) = match (result, mode) {
            (Ok(deb), _) => (deb, pkg),
            (Err(ArtifactError::Apt { .. }), LockMode::Locked) => {
                return Err(ArtifactError::LockedUnavailable {
                    package: pkg.resolved,
                    version: pkg.version,
                    lock: lock_path.display().to_string(),
                })
            }
            (Err(ArtifactError::Apt { .. }), LockMode::Update) => {
                // The archive keeps only the newest kernel; move the pin.
                let fresh = apt.resolve(name)?;
                warnings.push(format!(
                    "{name}: pinned {} {} is gone from the archive; lock updated to {} {}",
                    pkg.resolved, pkg.version, fresh.resolved, fresh.version
                ));
                (fetch_one(apt, &fresh, cache)?, fresh)
            }
            (Err(e), _) => return Err(e),
        };
        let root = extract(&deb, &pkg.sha256, cache)?;
        fetched.push(Fetched {
            locked: pkg,
            deb,
            root,
        });
    }
    let new_lock = LockFile::new(fetched.iter().map(|f| f.locked.clone()).collect());
    Ok((fetched, new_lock, warnings))
}

/// Cached .deb if its sha256 matches the pin, else a fresh download checked
/// the same way: a corrupted cache entry is replaced, never used.
fn fetch_one(apt: &mut Apt, pkg: &LockedPackage, cache: &Path) -> Result<PathBuf, ArtifactError> {
    let debs = cache.join("debs");
    let path = debs.join(deb_name(pkg));
    if path.exists() {
        if sha256_file(&path)? == pkg.sha256 {
            return Ok(path);
        }
        eprintln!(
            "keel: warning: cached {} does not match its pinned sha256; fetching it again",
            path.display()
        );
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    let partial = debs.join("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let got = apt.download(pkg, &partial)?;
    let found = sha256_file(&got)?;
    if found != pkg.sha256 {
        return Err(ArtifactError::Checksum {
            path: got,
            expected: pkg.sha256.clone(),
            found,
        });
    }
    std::fs::rename(&got, &path).map_err(io(&path))?;
    Ok(path)
}

/// Unpacks a verified .deb once into a directory named by its sha256.
fn extract(deb: &Path, sha256: &str, cache: &Path) -> Result<PathBuf, ArtifactError> {
    let root = cache.join("unpacked").join(&sha256[..sha256.len().min(24)]);
    if root.join(".keel-complete").exists() {
        return Ok(root);
    }
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&tmp)
        .output()
        .map_err(io(deb))?;
    if !out.status.success() {
        return Err(ArtifactError::Apt {
            what: format!("dpkg-deb -x {}", deb.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::write(tmp.join(".keel-complete"), b"").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &root).map_err(io(&root))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mirror_in_both_source_formats() {
        let one = "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\ndeb http://m.example/debian-security bookworm-security main\n";
        assert_eq!(find_mirror(one).as_deref(), Some("http://m.example/debian"));
        let deb822 = "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://m.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            find_mirror(deb822).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            find_mirror("deb http://m.example/debian trixie main\n"),
            None
        );
    }

    #[test]
    fn parses_apt_cache_record() {
        let rec = parse_record(
            "Package: linux-image-arm64\nVersion: 6.1.176-1\nArchitecture: arm64\nDepends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)\nFilename: pool/main/l/x.deb\nSize: 1234\nSHA256: abc\n",
        )
        .unwrap();
        assert_eq!(rec.depends, ["linux-image-6.1.0-50-arm64"]);
        assert_eq!(rec.size, 1234);
        assert!(parse_record("Package: x\n").is_none());
    }

    #[test]
    fn deb_name_escapes_epoch() {
        let p = LockedPackage {
            name: "u".into(),
            resolved: "u-boot-qemu".into(),
            version: "1:2023.01".into(),
            arch: "all".into(),
            filename: String::new(),
            size: 0,
            sha256: String::new(),
        };
        assert_eq!(deb_name(&p), "u-boot-qemu_1%3a2023.01_all.deb");
    }
}
