//! `cargo xtask build`: device binaries, board artifacts and the SD-card
//! image, checked before it is declared good.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use image::artifacts::{self, Apt, LockMode};
use image::assemble::{self, Inputs};
use image::board::{Arch, BoardConfig};
use image::lock::LockFile;
use sha2::{Digest, Sha256};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Build {
    /// Board to build: a file name in board-configs/ without .toml (e.g. rpi4, qemu-aarch64).
    #[arg(long)]
    pub board: String,
    /// Version recorded in the image (/etc/keel/release) and printed at boot.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub version: String,
    /// Fail instead of changing board-configs/<board>.lock (like cargo's --locked).
    #[arg(long)]
    pub locked: bool,
    /// Rebuild the image even if none of its inputs changed.
    #[arg(long)]
    pub force: bool,
    /// Output directory [default: target/images/<board>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory of board configs and lock files [default: board-configs/].
    #[arg(long)]
    pub board_dir: Option<PathBuf>,
    /// Directory copied verbatim into the root filesystem [default: rootfs-overlay/].
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Private key to sign update.fw with [default: $KEEL_SIGNING_KEY, else a development key in .keel/].
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// What a build produced.
pub struct Built {
    pub image: PathBuf,
    pub dir: PathBuf,
    pub cfg: BoardConfig,
}

impl Build {
    /// A build of `board` with every flag at its default.
    pub fn defaults(board: &str) -> Build {
        Build {
            board: board.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            locked: false,
            force: false,
            out: None,
            board_dir: None,
            key: None,
            overlay: None,
        }
    }

    pub fn run(self) -> Result<Built> {
        let root = host::workspace_root();
        let board_dir = self
            .board_dir
            .clone()
            .unwrap_or_else(|| root.join("board-configs"));
        let cfg = BoardConfig::load(&board_dir, &self.board)?;
        let out_dir = self
            .out
            .clone()
            .unwrap_or_else(|| root.join("target/images").join(&cfg.name));
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        // One build per output directory at a time: they share temporary names.
        let lock = std::fs::File::create(out_dir.join(".lock"))?;
        if lock.try_lock().is_err() {
            eprintln!(
                "keel: waiting for another build of {} to finish",
                out_dir.display()
            );
            lock.lock()?;
        }

        host::ensure_tools(host::BUILD_TOOLS)?;
        match cfg.arch {
            Arch::Armv7 => host::ensure_tools(host::ARMV7_TOOLS)?,
            Arch::Aarch64 => host::ensure_tools(host::AARCH64_TOOLS)?,
        }
        let (init, agent) = build_device_binaries(cfg.arch)?;

        let cache = artifacts::cache_dir();
        let lock_path = board_dir.join(format!("{}.lock", cfg.name));
        let lock = LockFile::load(&lock_path)?;
        let mode = if self.locked {
            LockMode::Locked
        } else {
            LockMode::Update
        };
        let mut apt = Apt::new(&cache, cfg.arch.debian_arch())?;
        let (fetched, new_lock, warnings) = artifacts::fetch_all(
            &mut apt,
            &cfg.packages(),
            lock.as_ref(),
            &lock_path,
            mode,
            &cache,
        )?;
        for w in &warnings {
            eprintln!("keel: warning: {w}");
        }
        if lock.as_ref() != Some(&new_lock) {
            if self.locked {
                bail!(
                    "{} would change; run without --locked to update it",
                    lock_path.display()
                );
            }
            new_lock.save(&lock_path)?;
        }
        let packages: BTreeMap<String, PathBuf> = fetched
            .iter()
            .map(|f| (f.locked.name.clone(), f.root.clone()))
            .collect();

        let (signing_key, key_path, dev_key) = crate::keys::signing_key(self.key.as_deref())?;
        let trusted = trusted_keys(&root, &cfg, &signing_key)?;
        let epoch = source_date_epoch(&root);
        let build_id = build_id(&root);
        let overlay = self
            .overlay
            .clone()
            .unwrap_or_else(|| root.join("rootfs-overlay"));
        let image_path = out_dir.join("sdcard.img");
        let keys_text: String = trusted
            .iter()
            .map(|(n, t)| format!("{n}={t}"))
            .collect::<String>()
            + &bundle::keys::verifying_key_text(&signing_key.verifying_key());
        let fingerprint = fingerprint(
            &cfg,
            &new_lock,
            &init,
            &agent,
            &overlay,
            &format!("{}\n{keys_text}", self.version),
            &build_id,
            epoch,
        )?;
        let stamp = out_dir.join(".inputs");
        let outputs_exist = OUTPUTS.iter().all(|f| out_dir.join(f).exists());
        if !self.force
            && outputs_exist
            && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&fingerprint)
        {
            eprintln!("keel: {} is up to date", image_path.display());
            print_outputs(&out_dir)?;
            return Ok(Built {
                image: image_path,
                dir: out_dir,
                cfg,
            });
        }
        let _ = std::fs::remove_file(&stamp);

        let inputs = Inputs {
            cfg: &cfg,
            packages: &packages,
            init: &init,
            agent: &agent,
            overlay: &overlay,
            version: &self.version,
            build_id: &build_id,
            epoch,
            trusted_keys: &trusted,
        };
        // Everything is written under temporary names and renamed only after
        // the checks pass: an interrupted or failed build leaves the previous
        // good image in place.
        let tmp_image = out_dir.join("sdcard.img.tmp");
        let progress = spinner(&format!("assembling {} image", cfg.name));
        let report = assemble::build_image(&inputs, &tmp_image);
        progress.finish_and_clear();
        let report = report.inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp_image);
        })?;
        let result = self.finish(&cfg, &out_dir, &tmp_image, &report, &signing_key, &build_id);
        let _ = std::fs::remove_file(&report.boot_b_image);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_image);
        }
        result?;
        std::fs::write(&stamp, &fingerprint)?;
        if dev_key {
            eprintln!(
                "keel: WARNING: update.fw is signed with the development key {} and the image trusts it:\n\
                 keel: WARNING: for development only. Sign releases with --key PATH or KEEL_SIGNING_KEY.",
                key_path.display()
            );
        }
        eprintln!(
            "keel: built {} (kernel {}, version {})",
            cfg.name, report.kernel_release, self.version
        );
        print_outputs(&out_dir)?;
        Ok(Built {
            image: image_path,
            dir: out_dir,
            cfg,
        })
    }

    /// Checks the assembled card, then writes the block map, the update
    /// bundle and the checksums, renaming each into place.
    fn finish(
        &self,
        cfg: &BoardConfig,
        out_dir: &Path,
        tmp_image: &Path,
        report: &image::assemble::Report,
        key: &ed25519_dalek::SigningKey,
        build_id: &str,
    ) -> Result<()> {
        let findings = image::check::check_card(tmp_image, cfg, &report.initramfs_modules);
        let mut problems = findings.problems;
        for u in &report.usage {
            let pct = u.used * 100 / u.size.max(1);
            let limit = 100 - cfg.partitions.slot_headroom_percent;
            eprintln!(
                "keel: partition {} ({:<13}) {:>6.1} MiB of {:>6.1} MiB used ({pct}%)",
                u.number,
                u.role,
                mib(u.used),
                mib(u.size)
            );
            if u.role != "boot selector" && pct > limit {
                problems.push(format!(
                    "{} is {pct}% full; the board config asks for {}% headroom so later updates fit; raise its size in board-configs/{}.toml",
                    u.role, cfg.partitions.slot_headroom_percent, cfg.name
                ));
            }
        }
        if !problems.is_empty() {
            bail!(
                "the {} image would not boot:\n  - {}",
                cfg.name,
                problems.join("\n  - ")
            );
        }

        let progress = spinner("writing the update bundle, block map and checksums");
        let header = bundle::Manifest {
            board: cfg.name.clone(),
            version: self.version.clone(),
            min_version: cfg.update.min_version.clone(),
            build_id: build_id.to_string(),
            chunk_size: bundle::DEFAULT_CHUNK_SIZE,
            payloads: Vec::new(),
        };
        let layout = image::layout::Layout::for_board(cfg);
        let (a_off, a_len) = layout.span(image::layout::PART_BOOT_A);
        let mut card = std::fs::File::open(tmp_image).with_context(|| {
            format!(
                "opening {} (another build of this board running?)",
                tmp_image.display()
            )
        })?;
        std::io::Seek::seek(&mut card, std::io::SeekFrom::Start(a_off))?;
        let mut boot_a = std::io::Read::take(card, a_len);
        let mut boot_b = std::fs::File::open(&report.boot_b_image)
            .with_context(|| format!("opening {}", report.boot_b_image.display()))?;
        let mut rootfs = &report.rootfs_image[..];
        let fw_tmp = out_dir.join("update.fw.tmp");
        let fw = std::io::BufWriter::new(
            std::fs::File::create(&fw_tmp)
                .with_context(|| format!("creating {}", fw_tmp.display()))?,
        );
        use bundle::{Compression::Deflate, PayloadSource};
        bundle::write_bundle(
            fw,
            &header,
            &mut [
                PayloadSource {
                    name: "boot-a",
                    data: &mut boot_a,
                    compression: Deflate,
                },
                PayloadSource {
                    name: "boot-b",
                    data: &mut boot_b,
                    compression: Deflate,
                },
                PayloadSource {
                    name: "rootfs",
                    data: &mut rootfs,
                    compression: Deflate,
                },
            ],
            &[key],
        )
        .context("writing update.fw")?;
        std::fs::rename(&fw_tmp, out_dir.join("update.fw"))
            .context("renaming update.fw into place")?;
        let bmap = image::bmap::generate(tmp_image, 4096)?;
        write_atomically(&out_dir.join("sdcard.img.bmap"), bmap.to_xml().as_bytes())?;
        std::fs::rename(tmp_image, out_dir.join("sdcard.img"))
            .context("renaming the finished image into place")?;
        let mut sums = String::new();
        for name in &OUTPUTS[..3] {
            let sum = artifacts::sha256_file(&out_dir.join(name))?;
            sums.push_str(&format!("{sum}  {name}\n"));
        }
        write_atomically(&out_dir.join("SHA256SUMS"), sums.as_bytes())?;
        progress.finish_and_clear();
        Ok(())
    }
}

/// Every output of a build; SHA256SUMS covers the others.
pub const OUTPUTS: [&str; 4] = ["sdcard.img", "sdcard.img.bmap", "update.fw", "SHA256SUMS"];

/// The keys baked into the image: the board config's list, or else the key
/// this build signs with. A signing key the image would not trust is an error.
fn trusted_keys(
    root: &Path,
    cfg: &BoardConfig,
    key: &ed25519_dalek::SigningKey,
) -> Result<Vec<(String, String)>> {
    let signer = key.verifying_key();
    if cfg.update.trusted_keys.is_empty() {
        return Ok(vec![(
            "build.pub".into(),
            bundle::keys::verifying_key_text(&signer),
        )]);
    }
    let mut out = Vec::new();
    let mut signer_trusted = false;
    for rel in &cfg.update.trusted_keys {
        let path = root.join(rel);
        let k = bundle::keys::load_verifying_key(&path)?;
        signer_trusted |= k == signer;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| rel.clone());
        out.push((name, bundle::keys::verifying_key_text(&k)));
    }
    if !signer_trusted {
        bail!(
            "the signing key is not among the board's [update] trusted_keys, so devices would reject this update; add its .pub file there or sign with a listed key"
        );
    }
    Ok(out)
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn print_outputs(dir: &Path) -> Result<()> {
    for name in OUTPUTS {
        let p = dir.join(name);
        let len = std::fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        println!("{}  {:.1} MiB", p.display(), mib(len));
    }
    Ok(())
}

fn spinner(msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", path.display()))
}

/// Builds init and agent for the board with the `device` profile.
fn build_device_binaries(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let target = arch.rust_target();
    host::ensure_rust_target(target)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(host::workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "init",
            "-p",
            "agent",
            "--profile",
            "device",
            "--target",
            target,
        ])
        .status()
        .context("running cargo build for the device binaries")?;
    if !status.success() {
        bail!("building init and agent for {target} failed (see cargo's output above)");
    }
    let dir = host::cargo_target_dir().join(target).join("device");
    Ok((dir.join("init"), dir.join("agent")))
}

/// SOURCE_DATE_EPOCH, else the last commit's time, else 0: never "now".
pub fn source_date_epoch(root: &Path) -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return e;
    }
    Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn build_id(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Hash of everything the image is made of, so an unchanged rebuild is a no-op.
#[allow(clippy::too_many_arguments)]
fn fingerprint(
    cfg: &BoardConfig,
    lock: &LockFile,
    init: &Path,
    agent: &Path,
    overlay: &Path,
    version: &str,
    build_id: &str,
    epoch: u64,
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "{cfg:?}\n{}\n{version}\n{build_id}\n{epoch}\n",
        lock.to_toml()
    ));
    // The assembler itself is an input: a new xtask may lay out bytes differently.
    h.update(std::fs::read(std::env::current_exe()?)?);
    for p in [init, agent] {
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    let mut stack = vec![overlay.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            h.update(p.to_string_lossy().as_bytes());
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                h.update(bytes);
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
