//! Host figures for the applier, one pass: `xtask apply` of update.fw from
//! a file and from stdin (the stream path) in the same run, and the raw cost
//! of the work no applier can avoid — inflate and sha256 of exactly the
//! bundle's chunks, with the same libraries, in this process, without I/O —
//! as the floor the applier's CPU cost is held against.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bundle::{Compression, Manifest};
use flate2::{Decompress, FlushDecompress};
use keel_contract::payload::{self, Destination};
use keel_contract::Slot;
use sha2::{Digest, Sha256};

use super::{median, Row};

/// The kernel reports a process's CPU time in these ticks (USER_HZ, 100 on
/// every Linux architecture Keel builds on).
const USER_HZ: f64 = 100.0;

/// One `xtask apply` run.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// CPU time of all the applier's threads, user and system.
    cpu: Duration,
    /// The system part of `cpu`: the kernel's work, mostly I/O.
    sys: Duration,
}

/// File vs stream, the applier's CPU cost against the floor.
pub fn rows(dir: &Path, work: &Path) -> Result<Vec<Row>> {
    let card = work.join("card.img");
    std::fs::copy(dir.join("sdcard.img"), &card)?;
    let bundle = dir.join("update.fw");
    let bytes = std::fs::read(&bundle).context("reading update.fw")?;
    let (manifest, chunks) = chunks(&bytes)?;
    // A fresh card runs slot A, so `apply` writes slot B.
    let plain: u64 = chunks.iter().filter(|c| c.write).map(|c| c.len).sum();

    // The copy's writeback must not land in the first run, and the first
    // run warms the caches: neither is counted.
    std::fs::File::open(&card)?.sync_all()?;
    apply_once(&card, &bundle, false)?;
    // Interleaved, floor included, so that a change in the machine's load
    // (a shared VM's neighbours) hits all three alike.
    let (mut file, mut stream, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        file.push(apply_once(&card, &bundle, false)?);
        floors.push(floor(&chunks)?);
        stream.push(apply_once(&card, &bundle, true)?);
    }
    let wall = |runs: &[Run]| median(runs.iter().map(|r| r.wall).collect());
    // CPU time comes in 10 ms ticks: per core is taken over the three runs
    // together, (3 × plain bytes) / (their CPU time), not as a median.
    let total = |runs: &[Run], f: fn(&Run) -> Duration| runs.iter().map(f).sum::<Duration>();
    let floor = median(floors);

    let mib = plain as f64 / 1048576.0;
    let rate = |d: Duration| mib / d.as_secs_f64().max(1e-9);
    let (file_rate, stream_rate, floor_rate) =
        (rate(wall(&file)), rate(wall(&stream)), rate(floor));
    let mut rows = vec![Row {
        what: format!("apply from a file, one pass ({mib:.0} MiB plain)"),
        ours: format!("{file_rate:.0} MiB/s"),
        reference: format!("{stream_rate:.0} MiB/s stdin"),
        ratio: format!("{:.2}", file_rate / stream_rate),
        target: "file >= 0.9 of stream".into(),
    }];
    for (name, runs) in [("a file", &file), ("stdin", &stream)] {
        let (cpu, sys) = (total(runs, |r| r.cpu), total(runs, |r| r.sys));
        let per_core = runs.len() as f64 * rate(cpu);
        rows.push(Row {
            what: format!(
                "apply from {name}, per core ({:.1} cores, {:.0}% system)",
                cpu.as_secs_f64() / total(runs, |r| r.wall).as_secs_f64().max(1e-9),
                100.0 * sys.as_secs_f64() / cpu.as_secs_f64().max(1e-9)
            ),
            ours: format!("{per_core:.0} MiB/s"),
            reference: format!("{floor_rate:.0} MiB/s floor"),
            ratio: format!("{:.2}", per_core / floor_rate),
            target: ">= 0.8 of the floor (per core)".into(),
        });
    }
    rows.push(Row {
        what: format!(
            "floor: inflate + sha256 of its {} chunks, 1 thread",
            chunks.len()
        ),
        ours: format!("{floor_rate:.0} MiB/s"),
        reference: "-".into(),
        ratio: "-".into(),
        target: format!(
            "report (the work; {} MiB chunks)",
            manifest.chunk_size >> 20
        ),
    });
    Ok(rows)
}

/// Runs `xtask apply` on `card`, the bundle given as a file or on stdin.
fn apply_once(card: &Path, bundle: &Path, streamed: bool) -> Result<Run> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["apply", "--allow-downgrade", "--image"])
        .arg(card);
    if streamed {
        cmd.arg("-")
            .stdin(std::fs::File::open(bundle).context("opening update.fw")?);
    } else {
        cmd.arg(bundle);
    }
    let (user0, sys0) = children_cpu()?;
    let started = Instant::now();
    let out = cmd.output().context("running xtask apply")?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!(
            "xtask apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (user1, sys1) = children_cpu()?;
    let sys = sys1.saturating_sub(sys0);
    Ok(Run {
        wall,
        cpu: user1.saturating_sub(user0) + sys,
        sys,
    })
}

/// The CPU time (user, system) of this process's children that have been
/// waited for: the kernel adds a child's, all its threads included, when
/// it is reaped.
fn children_cpu() -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may itself hold spaces: state is
    // field 3, cutime 16 and cstime 17 (proc(5)).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unreadable /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |n: usize| -> Result<f64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    let time = |n: usize| -> Result<Duration> { Ok(Duration::from_secs_f64(ticks(n)? / USER_HZ)) };
    Ok((time(16)?, time(17)?))
}

/// One chunk of the bundle, as the applier meets it.
struct StoredChunk<'a> {
    stored: &'a [u8],
    stored_sha256: [u8; 32],
    sha256: [u8; 32],
    compression: Compression,
    /// Plain length.
    len: u64,
    /// Written to the card (else only checked: a payload for the other slot).
    write: bool,
}

/// The manifest and every chunk's stored bytes, for a card running slot A.
fn chunks(bytes: &[u8]) -> Result<(Manifest, Vec<StoredChunk<'_>>)> {
    let mut r = bytes;
    let header = bundle::Header::read(&mut r)?;
    let manifest = Manifest::parse(header.manifest_text()?)?;
    let mut pos = header.len() as usize;
    let mut out = Vec::new();
    for p in &manifest.payloads {
        let write = matches!(
            payload::destination(&p.name, Slot::B),
            Some(Destination::Partition(_))
        );
        let mut left = p.size;
        for c in &p.chunks {
            let stored = bytes
                .get(pos..pos + c.stored as usize)
                .context("update.fw ends early")?;
            pos += stored.len();
            let len = left.min(manifest.chunk_size);
            left -= len;
            out.push(StoredChunk {
                stored,
                stored_sha256: c.stored_sha256,
                sha256: c.sha256,
                compression: p.compression,
                len,
                write,
            });
        }
    }
    Ok((manifest, out))
}

/// The work no applier can avoid, on one thread: each chunk's stored bytes
/// hashed, inflated into a reused buffer and the result hashed — what the
/// applier does before a chunk may be written, nothing else. Returns the
/// thread's CPU time.
fn floor(chunks: &[StoredChunk]) -> Result<Duration> {
    let mut out = vec![0u8; bundle::MAX_CHUNK_SIZE as usize];
    let started = thread_cpu();
    for c in chunks {
        if <[u8; 32]>::from(Sha256::digest(c.stored)) != c.stored_sha256 {
            bail!("a chunk of update.fw does not match its signed hash");
        }
        if !c.write || c.compression == Compression::None {
            continue;
        }
        let plain = &mut out[..c.len as usize];
        let mut z = Decompress::new(false);
        z.decompress(c.stored, plain, FlushDecompress::Finish)?;
        if z.total_out() != c.len || <[u8; 32]>::from(Sha256::digest(&plain[..])) != c.sha256 {
            bail!("a chunk of update.fw does not inflate to its signed hash");
        }
    }
    Ok(thread_cpu().saturating_sub(started))
}

/// This thread's CPU time in nanoseconds (the first field of schedstat).
fn thread_cpu() -> Duration {
    let mut text = String::new();
    let ns = std::fs::File::open("/proc/thread-self/schedstat")
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()
        .and_then(|_| text.split_whitespace().next()?.parse().ok());
    // Without schedstat, the wall clock: the floor then reads lower when
    // the machine is busy, never higher.
    ns.map(Duration::from_nanos).unwrap_or_else(|| {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    })
}
