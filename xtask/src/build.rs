//! `cargo xtask build`: device binaries, board artifacts and the SD-card
//! image, checked before it is declared good.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use image_build::artifacts::{self, Apt, LockMode};
use image_build::assemble::{self, Inputs};
use image_build::board::{Arch, BoardConfig};
use image_build::lock::LockFile;
use image_build::outputs;
use keel_contract::Convenience;

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
    /// A release image: without the development conveniences (the /data override of the service tree, the console's command interpreter, trusting the development key); needs a release key (--key or KEEL_SIGNING_KEY).
    #[arg(long)]
    pub release: bool,
    /// With --release: keep this convenience anyway (services-override, console); repeatable.
    #[arg(long, value_name = "CONVENIENCE", requires = "release")]
    pub keep: Vec<String>,
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
            release: false,
            keep: Vec::new(),
        }
    }

    /// The conveniences the image keeps: all of them for a development
    /// image; for a release, only those named with --keep.
    fn conveniences(&self) -> Result<Vec<Convenience>> {
        if !self.release {
            return Ok(Convenience::ALL.to_vec());
        }
        self.keep
            .iter()
            .map(|n| match Convenience::parse(n) {
                Some(Convenience::DevelopmentKey) | None => bail!(
                    "--keep {n}: a release can keep services-override or console (the development key never)"
                ),
                Some(c) => Ok(c),
            })
            .collect()
    }

    pub fn run(self) -> Result<Built> {
        let root = host::workspace_root();
        // Everything a user typed is checked before any work starts.
        bundle::version::check(&self.version).context("--version")?;
        let conveniences = self.conveniences()?;
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

        let signer = crate::keys::signer_for(self.key.as_deref(), !self.release)?;
        let trusted = image_build::keys::trusted_keys(&root, &cfg, &signer.key)?;
        if self.release {
            image_build::keys::check_release(
                &signer,
                &trusted,
                image_build::keys::development_public(&crate::keys::dev_key_name()).as_ref(),
            )?;
        }
        let epoch = source_date_epoch(&root);
        let build_id = build_id(&root);
        let overlay = self
            .overlay
            .clone()
            .unwrap_or_else(|| root.join("rootfs-overlay"));
        let image_path = out_dir.join(outputs::IMAGE);
        let keys_text: String = trusted
            .iter()
            .map(|(n, t)| format!("{n}={t}"))
            .collect::<String>()
            + &bundle::keys::verifying_key_text(&signer.key.verifying_key());
        let assembler = std::env::current_exe()?;
        let fingerprint = outputs::fingerprint(&outputs::Fingerprint {
            cfg: &cfg,
            lock: &new_lock,
            assembler: &assembler,
            init: &init,
            agent: &agent,
            overlay: &overlay,
            extra: &format!(
                "{}\n{keys_text}\n{}",
                self.version,
                Convenience::list(&conveniences)
            ),
            build_id: &build_id,
            epoch,
        })?;
        let stamp = out_dir.join(".inputs");
        let outputs_exist = outputs::OUTPUTS.iter().all(|f| out_dir.join(f).exists());
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
            conveniences: &conveniences,
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
        let result = self.finish(&cfg, &out_dir, &tmp_image, &report, &signer.key, &build_id);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_image);
        }
        result?;
        durable::replace(&stamp, fingerprint.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", stamp.display()))?;
        if signer.development {
            eprintln!(
                "keel: WARNING: update.fw is signed with the development key {} and the image trusts it:\n\
                 keel: WARNING: for development only. Sign releases with --key PATH or KEEL_SIGNING_KEY.",
                signer.path.display()
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

    /// Checks the assembled card, then writes the update bundle, the block
    /// map and the checksums, renaming each into place.
    fn finish(
        &self,
        cfg: &BoardConfig,
        out_dir: &Path,
        tmp_image: &Path,
        report: &image_build::assemble::Report,
        key: &ed25519_dalek::SigningKey,
        build_id: &str,
    ) -> Result<()> {
        let findings = image_build::check::check_card(tmp_image, cfg, &report.initramfs_modules);
        let mut problems = findings.problems;
        for u in &report.usage {
            eprintln!(
                "keel: partition {} ({:<13}) {:>6.1} MiB of {:>6.1} MiB used ({}%)",
                u.number,
                u.role,
                mib(u.used),
                mib(u.size),
                u.used * 100 / u.size.max(1)
            );
        }
        problems.extend(image_build::check::headroom(cfg, &report.usage));
        if !problems.is_empty() {
            bail!(
                "the {} image would not boot:\n  - {}",
                cfg.name,
                problems.join("\n  - ")
            );
        }
        let progress = spinner("writing the update bundle, block map and checksums");
        outputs::write_update_bundle(
            tmp_image,
            &report.rootfs_image,
            &outputs::BundleHeader {
                cfg,
                version: &self.version,
                build_id,
            },
            key,
            &out_dir.join(outputs::BUNDLE),
        )?;
        outputs::finish_card(tmp_image, out_dir)?;
        progress.finish_and_clear();
        Ok(())
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn print_outputs(dir: &Path) -> Result<()> {
    for name in outputs::OUTPUTS {
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
