//! The applier's peak memory: a hidden child process (`xtask bench-apply`)
//! writes a bundle with a large pseudo-random payload cut into the largest
//! chunks the format allows, then applies it to a card image of its own and
//! reports its peak resident set, next to the same process only opening the
//! bundle.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Row;

/// Peak RSS of the applier (a child `xtask bench-apply`) for a payload of
/// `payload_mib` MiB, against the same process only opening the bundle.
pub fn row(payload_mib: u64, work: &Path) -> Result<Row> {
    let exe = std::env::current_exe()?;
    let run = |mode: &str| -> Result<u64> {
        let out = Command::new(&exe)
            .args(["bench-apply", mode, &payload_mib.to_string()])
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
        what: format!(
            "applier peak RSS, {payload_mib} MiB payload, {} KiB chunks",
            bundle::MAX_CHUNK_SIZE >> 10
        ),
        ours: format!("{:.1} MiB", full as f64 / 1024.0),
        reference: format!("{:.1} MiB idle", idle as f64 / 1024.0),
        ratio: format!("+{:.1}", (full.saturating_sub(idle)) as f64 / 1024.0),
        target: "< 16 MiB".into(),
    })
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
            // The largest chunks the format allows: the most the applier holds.
            chunk_size: bundle::MAX_CHUNK_SIZE,
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
