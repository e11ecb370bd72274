//! `cargo xtask burn`: write a built image to cards (or image files),
//! each with its own device identity, refusing the wrong disk. The work
//! is in the `factory` crate; here are the flags and the terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use factory::batch::{self, Batch, Operator, TargetSpec};
use factory::burn::{BurnReport, ClaimFiles};
use factory::ca::DeviceCa;
use factory::copy::{Phase, Progress};
use factory::image::SourceImage;
use factory::ledger::{Ledger, MANIFEST};
use factory::target::Sysroot;
use factory::{serial, Serial};
use indicatif::{ProgressBar, ProgressStyle};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Burn {
    /// Burn target/images/<board>/sdcard.img (build it first).
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    pub board: Option<String>,
    /// Burn this image instead (its block map: IMAGE.bmap, or --bmap).
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// The card's whole-disk device, e.g. /dev/sdX or /dev/mmcblk0.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub device: Option<PathBuf>,
    /// An image file to write instead of a card ({serial} in the name
    /// gives each card of a batch its own file).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Give the card this serial's identity (needs --ca).
    #[arg(long, conflicts_with_all = ["serial_from", "serials"])]
    pub serial: Option<String>,
    /// A batch: one serial a line (# comments), one card each.
    #[arg(long, conflicts_with = "serials")]
    pub serial_from: Option<PathBuf>,
    /// A batch: FIRST..LAST, e.g. ACME-000100..ACME-000199.
    #[arg(long)]
    pub serials: Option<String>,
    /// The device CA's directory (`cargo xtask keys ca new DIR`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The broker's CA bundle for the cards' ca.pem (default: server-ca.pem
    /// in the CA's directory, or the claim directory's ca.pem).
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
    /// A claim directory (claim.pem, claim.key, ca.pem) for fleet
    /// provisioning by claim: every card gets the same claim.
    #[arg(long)]
    pub claim: Option<PathBuf>,
    /// Write a disk the kernel does not call removable.
    #[arg(long)]
    pub force: bool,
    /// Do not ask before erasing (scripts and production rigs).
    #[arg(long)]
    pub yes: bool,
    /// For tests only: read /sys, /proc and /dev under this directory.
    #[arg(long, hide = true)]
    pub sysroot: Option<PathBuf>,
}

/// The operator at this terminal.
struct Terminal {
    yes: bool,
    interactive: bool,
    bar: Option<(ProgressBar, Phase)>,
}

impl Terminal {
    fn ask(&self, prompt: &str) -> String {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        line.trim().to_string()
    }
}

fn bar(phase: Phase, total: u64, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let verb = match phase {
        Phase::Write => "writing  ",
        Phase::Verify => "verifying",
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(format!("{label} {verb}"));
    pb
}

impl Operator for Terminal {
    fn confirm(&mut self, what: &str) -> bool {
        if self.yes {
            eprintln!("burn: writing {what} (--yes)");
            return true;
        }
        let answer = self.ask(&format!(
            "burn: this ERASES {what}.\n      Type yes to go on: "
        ));
        answer == "yes"
    }

    fn next_card(&mut self, serial: &Serial, n: usize, total: usize) -> bool {
        if total == 1 {
            return true; // the card named is in the reader already
        }
        if !self.interactive {
            return false;
        }
        let a = self.ask(&format!(
            "burn: insert the card for {serial} ({n} of {total}) and press Enter (q to stop): "
        ));
        a != "q"
    }

    fn progress(&mut self, serial: Option<&Serial>, p: Progress) {
        let label = serial.map_or_else(|| "image".to_string(), ToString::to_string);
        let fresh = !matches!(&self.bar, Some((_, ph)) if *ph == p.phase);
        if fresh {
            if let Some((b, _)) = self.bar.take() {
                b.finish();
            }
            self.bar = Some((bar(p.phase, p.total, &label), p.phase));
        }
        if let Some((b, _)) = &self.bar {
            b.set_position(p.done);
        }
    }

    fn done(&mut self, serial: &Serial, r: &BurnReport) {
        if let Some((b, _)) = self.bar.take() {
            b.finish();
        }
        report(&serial.to_string(), r);
    }

    fn note(&mut self, line: &str) {
        if let Some((b, _)) = &self.bar {
            b.suspend(|| eprintln!("burn: {line}"));
        } else {
            eprintln!("burn: {line}");
        }
    }
}

fn report(label: &str, r: &BurnReport) {
    let mib = r.stats.bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "burn: {label}: {mib:.1} MiB written in {:.1} s ({:.1} MiB/s) and read back in {:.1} s; {} identity file(s)",
        r.stats.write.as_secs_f64(),
        mib / r.stats.write.as_secs_f64().max(1e-9),
        r.stats.verify.as_secs_f64(),
        r.identity_files
    );
}

impl Burn {
    pub fn run(self) -> Result<()> {
        host::ensure_tools(&[("debugfs", "e2fsprogs"), ("e2fsck", "e2fsprogs")])?;
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if !self.yes && !interactive {
            bail!("burn asks before it erases a card, and there is no terminal to ask on; pass --yes to skip the question (scripts, production rigs)");
        }
        let image = match (&self.board, &self.image) {
            (_, Some(i)) => i.clone(),
            (Some(b), None) => host::workspace_root()
                .join("target/images")
                .join(b)
                .join("sdcard.img"),
            (None, None) => bail!("name the image: --board B or --image FILE"),
        };
        if !image.exists() {
            match &self.board {
                Some(b) => bail!(
                    "{} is missing; build it first: cargo xtask build --board {b}",
                    image.display()
                ),
                None => bail!("{} is missing", image.display()),
            }
        }
        let src = SourceImage::open(&image, self.bmap.as_deref())?;
        let sys = self
            .sysroot
            .as_deref()
            .map_or_else(Sysroot::real, Sysroot::fake);
        let target = match (&self.device, &self.file) {
            (Some(d), _) => TargetSpec::Device(d.clone()),
            (None, Some(f)) => TargetSpec::File(f.clone()),
            (None, None) => bail!("name the target: --device /dev/sdX or --file FILE"),
        };
        let claim = self.claim.as_deref().map(ClaimFiles::read).transpose()?;
        let serials: Option<Vec<Serial>> = match (&self.serial, &self.serial_from, &self.serials) {
            (Some(s), _, _) => Some(vec![Serial::parse(s)?]),
            (_, Some(f), _) => Some(serial::read_list(f)?),
            (_, _, Some(r)) => Some(serial::range(r)?),
            _ => None,
        };
        eprintln!(
            "burn: {} ({:.1} MiB, {:.1} MiB mapped, sha256 {})",
            src.path.display(),
            src.size as f64 / f64::from(1 << 20),
            src.mapped_bytes() as f64 / f64::from(1 << 20),
            &src.sha256[..16]
        );
        let mut op = Terminal {
            yes: self.yes,
            interactive,
            bar: None,
        };
        let Some(serials) = serials else {
            if self.ca.is_some() {
                bail!("--ca issues device identities: name them with --serial, --serial-from or --serials");
            }
            let server = self
                .server_ca
                .as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            return match batch::burn_generic(
                &sys, &src, &target, claim, server, self.force, &mut op,
            )? {
                Some(r) => {
                    report("image", &r);
                    Ok(())
                }
                None => bail!("not confirmed; nothing was written"),
            };
        };
        let Some(ca_dir) = &self.ca else {
            bail!("serials need a device CA to sign their certificates: --ca DIR (make one with `cargo xtask keys ca new DIR`)");
        };
        if serials.len() > 1 && target.needs_swap() && !interactive {
            bail!("a batch on one card reader needs a terminal to ask for each card; use a terminal, or --file 'DIR/{{serial}}.img' for image files");
        }
        let ca = DeviceCa::open(ca_dir)?;
        let server_ca = crate::provision::server_ca(self.server_ca.as_ref(), &ca)?;
        if server_ca.is_none() && claim.as_ref().is_none_or(|c| c.ca_bundle.is_none()) {
            op.note("no broker CA (--server-ca, or server-ca.pem in the CA directory): the cards get no ca.pem, so the image must bring it");
        }
        let mut ledger = Ledger::open(&ca.dir.join(MANIFEST))?;
        let single = self.serial.is_some();
        let summary = Batch {
            sys,
            image: &src,
            target,
            ca: &ca,
            ledger: &mut ledger,
            server_ca,
            claim,
            force: self.force,
        }
        .run(&serials, single, &mut op)?;
        if summary.stopped && summary.done.is_empty() && summary.voided.is_empty() {
            bail!("stopped before any card was written; nothing was issued");
        }
        eprintln!(
            "burn: {} card(s) done, {} serial(s) void, {} skipped (already in {}){}",
            summary.done.len(),
            summary.voided.len(),
            summary.skipped.len(),
            ledger.path.display(),
            if summary.stopped {
                "; stopped before the end: run the same command again to resume"
            } else {
                ""
            }
        );
        Ok(())
    }
}
