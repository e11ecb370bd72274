//! `cargo xtask bench`: speed and memory figures, each against a reference
//! measured in the same run on the same data. Prints a table; asserts
//! nothing (tests check behaviour, not timings).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Bench {
    /// Board whose image the figures are taken on.
    #[arg(long, default_value = "qemu-aarch64")]
    pub board: String,
    /// Size of the synthetic payload for the applier's memory figure, in MiB.
    #[arg(long, default_value_t = 200)]
    pub payload_mib: u64,
}

struct Row {
    what: String,
    ours: String,
    reference: String,
    ratio: String,
    target: &'static str,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

impl Bench {
    pub fn run(self) -> Result<()> {
        host::ensure_tools(&[("mksquashfs", "squashfs-tools"), ("dd", "coreutils")])?;
        let built = crate::build::Build::defaults(&self.board).run()?;
        let work = tempfile::tempdir()?;
        let mut rows = Vec::new();
        rows.push(self.squashfs(&built.image, &built.cfg, work.path())?);
        rows.extend(self.apply(&built.dir, work.path())?);
        rows.extend(self.binary_sizes(&built.cfg)?);
        rows.extend(self.boot(&built, work.path())?);

        println!(
            "\n{:<44} {:>14} {:>14} {:>8}  target",
            "measure", "keel", "reference", "ratio"
        );
        for r in rows {
            println!(
                "{:<44} {:>14} {:>14} {:>8}  {}",
                r.what, r.ours, r.reference, r.ratio, r.target
            );
        }
        Ok(())
    }

    /// Our squashfs writer against mksquashfs on slot A's root filesystem.
    fn squashfs(
        &self,
        img: &Path,
        cfg: &image_build::board::BoardConfig,
        work: &Path,
    ) -> Result<Row> {
        let card = image_build::check::read_card(img, cfg).map_err(anyhow::Error::msg)?;
        let tree = card.rootfs;
        let dir = work.join("rootfs");
        for (path, node) in tree.iter() {
            let p = dir.join(path);
            match &node.kind {
                image_build::fstree::NodeKind::Dir => std::fs::create_dir_all(&p)?,
                image_build::fstree::NodeKind::File(d) => std::fs::write(&p, d)?,
                image_build::fstree::NodeKind::Symlink(t) => std::os::unix::fs::symlink(t, &p)?,
                image_build::fstree::NodeKind::CharDevice { .. } => {}
            }
        }
        let (ours, size) = time(|| {
            let mut out = std::io::Cursor::new(Vec::new());
            Ok(image_build::squashfs::write(&tree, &mut out, 0)?)
        })?;
        let reference_out = work.join("ref.squashfs");
        let (reference, _) = time(|| {
            let st = Command::new("mksquashfs")
                .arg(&dir)
                .arg(&reference_out)
                .args([
                    "-comp",
                    "xz",
                    "-b",
                    "131072",
                    "-noappend",
                    "-all-root",
                    "-quiet",
                    "-processors",
                    "1",
                ])
                .status()?;
            if !st.success() {
                bail!("mksquashfs failed");
            }
            Ok(())
        })?;
        let ref_size = std::fs::metadata(&reference_out)?.len();
        Ok(Row {
            what: format!(
                "squashfs rootfs ({} KiB vs {} KiB)",
                size / 1024,
                ref_size / 1024
            ),
            ours: secs(ours),
            reference: format!("{} mksquashfs", secs(reference)),
            ratio: format!(
                "{:.2}",
                reference.as_secs_f64() / ours.as_secs_f64().max(1e-9)
            ),
            target: "speed vs mksquashfs -processors 1",
        })
    }

    /// Apply throughput against dd writing the same bytes, and the
    /// applier's peak memory for a large payload.
    fn apply(&self, dir: &Path, work: &Path) -> Result<Vec<Row>> {
        let card = work.join("card.img");
        std::fs::copy(dir.join("sdcard.img"), &card)?;
        let exe = std::env::current_exe()?;
        let bundle = dir.join("update.fw");
        let run = |streamed: bool| -> Result<Duration> {
            let mut cmd = Command::new(&exe);
            cmd.args(["apply", "--allow-downgrade", "--image"])
                .arg(&card);
            if streamed {
                cmd.arg("-")
                    .stdin(std::fs::File::open(&bundle).context("opening update.fw")?);
            } else {
                cmd.arg(&bundle);
            }
            let (took, out) = time(|| Ok(cmd.output()?))?;
            if !out.status.success() {
                bail!("apply failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(took)
        };
        // Page-cache writeback makes single runs noisy: median of three.
        let median = |f: &dyn Fn() -> Result<Duration>| -> Result<Duration> {
            let mut runs = [f()?, f()?, f()?];
            runs.sort();
            Ok(runs[1])
        };
        let ours = median(&|| run(false))?;
        let streamed = median(&|| run(true))?;
        let m = bundle::Manifest::parse(&manifest_text(&bundle)?)?;
        let written: u64 = m
            .payloads
            .iter()
            .filter(|p| {
                matches!(
                    keel_contract::payload::destination(&p.name, keel_contract::Slot::B),
                    Some(keel_contract::payload::Destination::Partition(_))
                )
            })
            .map(|p| p.size)
            .sum();
        let src = work.join("plain.bin");
        std::fs::write(&src, vec![0x5au8; written as usize])?;
        let dst = work.join("dd.img");
        let dd = median(&|| {
            let _ = std::fs::remove_file(&dst);
            let (took, ()) = time(|| {
                let st = Command::new("dd")
                    .arg(format!("if={}", src.display()))
                    .arg(format!("of={}", dst.display()))
                    .args(["bs=1M", "conv=fsync", "status=none"])
                    .status()?;
                if !st.success() {
                    bail!("dd failed");
                }
                Ok(())
            })?;
            Ok(took)
        })?;
        let rate = |d: Duration| written as f64 / 1048576.0 / d.as_secs_f64().max(1e-9);
        let mib = written as f64 / 1048576.0;
        let mut rows = vec![
            Row {
                what: format!("apply update.fw, verify + write ({mib:.0} MiB)"),
                ours: format!("{:.0} MiB/s", rate(ours)),
                reference: format!("{:.0} MiB/s dd", rate(dd)),
                ratio: format!("{:.2}", rate(ours) / rate(dd)),
                target: ">= 0.9 of dd; file: verify pass first",
            },
            Row {
                what: format!("apply update.fw from stdin ({mib:.0} MiB)"),
                ours: format!("{:.0} MiB/s", rate(streamed)),
                reference: format!("{:.0} MiB/s dd", rate(dd)),
                ratio: format!("{:.2}", rate(streamed) / rate(dd)),
                target: ">= 0.9 of dd; stream: one pass",
            },
        ];
        let _ = std::fs::remove_file(&src);
        rows.push(self.apply_memory(work)?);
        Ok(rows)
    }

    /// Peak RSS of the applier (a child `xtask bench-apply`) for a payload of
    /// `payload_mib` MiB, against the same process only opening the bundle.
    fn apply_memory(&self, work: &Path) -> Result<Row> {
        let exe = std::env::current_exe()?;
        let run = |mode: &str| -> Result<u64> {
            let out = Command::new(&exe)
                .args(["bench-apply", mode, &self.payload_mib.to_string()])
                .arg(work)
                .output()
                .context("running the applier child")?;
            if !out.status.success() {
                bail!(
                    "bench-apply {mode}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        run("make")?;
        let full = run("apply")?;
        let idle = run("open")?;
        Ok(Row {
            what: format!("applier peak RSS, {} MiB payload", self.payload_mib),
            ours: format!("{:.1} MiB", full as f64 / 1024.0),
            reference: format!("{:.1} MiB idle", idle as f64 / 1024.0),
            ratio: format!("+{:.1}", (full.saturating_sub(idle)) as f64 / 1024.0),
            target: "< 16 MiB",
        })
    }

    /// init's memory and time to ready on the booted QEMU device, next to
    /// busybox booting the same kernel to a shell.
    fn boot(&self, built: &crate::build::Built, work: &Path) -> Result<Vec<Row>> {
        if built.cfg.qemu.as_ref().is_none_or(|q| q.pi_model.is_some()) {
            return Ok(Vec::new());
        }
        let layout = image_build::layout::Layout::for_board(&built.cfg);
        let (off, len) = layout.span(keel_contract::partition::BOOT_A);
        let read = |name: &str| -> Result<Vec<u8>> {
            let f = std::fs::File::open(&built.image)?;
            Ok(image_build::fat::read_file(
                image_build::slice::PartitionSlice::new(f, off, len)?,
                name,
            )?)
        };
        let kernel = work.join("vmlinuz");
        std::fs::write(&kernel, read("vmlinuz")?)?;
        let initrd = work.join("initrd.img");
        std::fs::write(&initrd, read("initrd.img")?)?;
        let (rss, ready, busybox) =
            crate::bench_boot::figures(&built.cfg, &built.image, &kernel, &initrd, work)?;
        Ok(vec![
            Row {
                what: "init resident memory (VmRSS, booted)".into(),
                ours: format!("{:.2} MiB", rss / 1024.0),
                reference: "-".into(),
                ratio: "-".into(),
                target: "< 2 MiB",
            },
            Row {
                what: "kernel start to ready (uptime)".into(),
                ours: format!("{ready:.2} s"),
                reference: format!("{busybox:.2} s busybox sh"),
                ratio: format!("{:.2}", busybox / ready.max(1e-9)),
                target: "keel also loads modules, mounts root and /data",
            },
        ])
    }

    fn binary_sizes(&self, cfg: &image_build::board::BoardConfig) -> Result<Vec<Row>> {
        let dir = host::cargo_target_dir()
            .join(cfg.arch.rust_target())
            .join("device");
        let mut rows = Vec::new();
        for bin in ["init", "agent"] {
            let len = std::fs::metadata(dir.join(bin))?.len();
            rows.push(Row {
                what: format!("{bin} binary ({})", cfg.arch.rust_target()),
                ours: format!("{} KiB", len / 1024),
                reference: "-".into(),
                ratio: "-".into(),
                target: "small (opt-level z, LTO)",
            });
        }
        Ok(rows)
    }
}

fn manifest_text(bundle: &Path) -> Result<String> {
    let mut f = std::io::BufReader::new(std::fs::File::open(bundle)?);
    Ok(bundle::Header::read(&mut f)?.manifest_text()?.to_string())
}

/// Hidden child for the memory figure: `make` writes a bundle with a
/// `mib`-MiB rootfs payload into `work`; `apply` applies it to a fresh card,
/// `open` only opens it; each prints its own peak RSS in KiB.
pub fn bench_apply_child(mode: &str, mib: u64, work: &Path) -> Result<()> {
    let card_path = work.join(format!("mem-card-{mode}.img"));
    let bundle_path = work.join("mem.fw");
    bench_card(&card_path, mib + 8)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    if mode == "make" {
        // Pseudo-random data: compression must not make the payload small.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut gen = std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        });
        let mut rootfs = tempfile::tempfile()?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for c in buf.chunks_mut(8) {
                c.copy_from_slice(&gen.next().unwrap_or(0).to_le_bytes());
            }
            std::io::Write::write_all(&mut rootfs, &buf)?;
        }
        std::io::Seek::rewind(&mut rootfs)?;
        let boot = vec![0u8; 1 << 20];
        let header = bundle::Manifest {
            board: "bench".into(),
            version: "2".into(),
            min_version: "0".into(),
            build_id: "bench".into(),
            chunk_size: bundle::DEFAULT_CHUNK_SIZE,
            payloads: vec![],
        };
        let out = std::io::BufWriter::new(std::fs::File::create(&bundle_path)?);
        bundle::write_bundle(
            out,
            &header,
            &mut [
                bundle::PayloadSource {
                    name: keel_contract::payload::BOOT,
                    data: &mut &boot[..],
                    compression: bundle::Compression::Deflate,
                },
                bundle::PayloadSource {
                    name: keel_contract::payload::ROOTFS,
                    data: &mut rootfs,
                    compression: bundle::Compression::Deflate,
                },
            ],
            &[&key],
        )?;
    }
    if mode == "make" {
        println!("0");
        return Ok(());
    }
    let trusted = [key.verifying_key()];
    let opts = update::ApplyOptions {
        board: "bench",
        running_version: "1",
        booted: update::Slot::A,
        trusted: &trusted,
        allow_downgrade: false,
    };
    let src = std::io::BufReader::new(std::fs::File::open(&bundle_path)?);
    let mut card = update::Card::open(&card_path)?;
    if mode == "apply" {
        update::apply(
            src,
            &mut card,
            &update::uboot::Uboot { max_tries: 3 },
            &opts,
        )?;
    } else {
        bundle::BundleReader::open(src, &trusted)?;
    }
    let _ = std::fs::remove_file(&card_path);
    println!("{}", peak_rss_kib());
    Ok(())
}

/// A card with the Keel layout, rootfs slots of `slot_mib`, slot A
/// marked complete: what the applier accepts.
fn bench_card(path: &Path, slot_mib: u64) -> Result<()> {
    use card_format::bootstate::{Record, COPIES};
    use card_format::mbr::{
        Partition, PartitionTable, KIND_EXTENDED_LBA, KIND_FAT32_LBA, KIND_LINUX,
    };
    let mib = 2048;
    let p = |number, start: u64, size: u64, kind| Partition {
        number,
        start_lba: start * mib,
        sectors: size * mib,
        kind,
        bootable: number == 1,
    };
    let ext = 16;
    let r5 = ext + 4;
    let r6 = r5 + slot_mib + 4;
    let d7 = r6 + slot_mib + 4;
    let end = d7 + 4;
    let table = PartitionTable {
        disk_id: 1,
        partitions: vec![
            p(1, 4, 4, KIND_FAT32_LBA),
            p(2, 8, 4, KIND_FAT32_LBA),
            p(3, 12, 4, KIND_FAT32_LBA),
            p(4, ext, end - ext, KIND_EXTENDED_LBA),
            p(5, r5, slot_mib, KIND_LINUX),
            p(6, r6, slot_mib, KIND_LINUX),
            p(7, d7, 4, KIND_LINUX),
        ],
    };
    let mut f = std::fs::File::create(path)?;
    f.set_len(end * mib * 512)?;
    table.write_to(&mut f)?;
    for off in COPIES {
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(off))?;
        f.write_all(&Record::initial("1@bench").encode()?)?;
    }
    Ok(())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .flatten()
        .unwrap_or(0)
}
