//! Applies a bundle to the inactive slot in one pass: signature, board and
//! versions checked before a byte is written; the slot marked unbootable in
//! the boot state before its first write; each chunk verified before it is
//! written; the written slot re-read and checked; and only then the slot
//! marked complete and set to boot next on trial. A bundle rejected at any
//! point never changes the running slot nor which slot boots, and a partly
//! written slot is never bootable (docs/bundle.md, docs/power-cut.md).

use std::io::Read;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

use bundle::version::Version;
use bundle::{BundleError, BundleReader, Manifest, StoredChunk};
use durable::direct::AlignedBuf;
use ed25519_dalek::VerifyingKey;
use keel_contract::payload::{self, Destination};

use crate::card::{Card, CardError};
use crate::state::{BootFlow, Slot, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot compare versions: {0}")]
    Version(#[from] bundle::version::VersionError),
    #[error("this device runs {running}, but the bundle only updates {min} or newer; apply an intermediate update first")]
    TooOld { running: String, min: String },
    #[error("the bundle's version {bundle} is older than the running {running}; pass --allow-downgrade to install it anyway")]
    Downgrade { bundle: String, running: String },
    #[error("the bundle has a payload '{0}' this applier does not know; update the device's agent first")]
    UnknownPayload(String),
    #[error("the bundle has no '{0}' payload")]
    MissingPayload(String),
    #[error("payload '{name}' is {size} bytes but partition {partition} holds {room}")]
    TooBig {
        name: String,
        size: u64,
        partition: u8,
        room: u64,
    },
    #[error("partition {partition} does not read back what was written (chunk {chunk}); the card may be failing")]
    Readback { partition: u8, chunk: usize },
}

pub struct ApplyOptions<'a> {
    pub board: &'a str,
    pub running_version: &'a str,
    /// The slot the system runs from; the update goes to the other one.
    pub booted: Slot,
    pub trusted: &'a [VerifyingKey],
    pub allow_downgrade: bool,
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub slot: Slot,
    pub manifest: Manifest,
    pub bytes_written: u64,
}

/// How the boot state names the image in a slot.
pub fn image_id(m: &Manifest) -> String {
    format!("{}@{}", m.version, m.build_id)
}

/// Where each payload goes when `target` is the slot being written.
fn destination(name: &str, target: Slot) -> Result<Option<u8>, ApplyError> {
    match payload::destination(name, target) {
        Some(Destination::Partition(p)) => Ok(Some(p)),
        Some(Destination::Skip) => Ok(None),
        None => Err(ApplyError::UnknownPayload(name.to_string())),
    }
}

fn check_manifest(m: &Manifest, opts: &ApplyOptions) -> Result<(), ApplyError> {
    use std::cmp::Ordering::Less;
    let running = Version::parse(opts.running_version)?;
    if running < Version::parse(&m.min_version)? {
        return Err(ApplyError::TooOld {
            running: opts.running_version.into(),
            min: m.min_version.clone(),
        });
    }
    if !opts.allow_downgrade && Version::parse(&m.version)?.cmp(&running) == Less {
        return Err(ApplyError::Downgrade {
            bundle: m.version.clone(),
            running: opts.running_version.into(),
        });
    }
    let target = opts.booted.other();
    if m.payload(payload::ROOTFS).is_none() {
        return Err(ApplyError::MissingPayload(payload::ROOTFS.to_string()));
    }
    if m.payload(payload::BOOT)
        .or_else(|| m.payload(payload::legacy_boot(target)))
        .is_none()
    {
        return Err(ApplyError::MissingPayload(payload::BOOT.to_string()));
    }
    Ok(())
}

/// Decompressing and hashing run on this many threads beside the reader, so
/// the card, not the CPU, sets the pace. Two keep a 4-core SoC well ahead of
/// any SD card while memory stays a handful of chunks.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Where each expanded chunk goes: `partition` is the chunk's destination.
type Sink<'a> = dyn Fn(u8, &StoredChunk, &[u8]) -> Result<(), ApplyError> + Sync + 'a;

/// Streams every payload of `reader`: this thread reads chunks in order;
/// worker threads check their stored bytes against the signed hashes,
/// decompress, check the plain hash and hand the result to `sink`, in any
/// order. Payloads with no destination in `target`
/// are only read and hash-checked: their bytes are never used. Memory is a
/// few chunks whatever the bundle size. The error reported is the one of the
/// earliest chunk, as a sequential reader would have found it.
fn stream<R: Read>(
    reader: &mut BundleReader<R>,
    target: Slot,
    sink: &Sink,
) -> Result<(), ApplyError> {
    struct Job {
        seq: usize,
        /// None: a payload read past, whose stored bytes are only checked.
        part: Option<u8>,
        chunk: StoredChunk,
        stored: Vec<u8>,
    }
    let first_error: Mutex<Option<(usize, ApplyError)>> = Mutex::new(None);
    let fail = |seq: usize, e: ApplyError| {
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(s, _)| seq < *s) {
            *slot = Some((seq, e));
        }
    };
    // A job is skipped only when an earlier one has failed: a chunk queued
    // before the first bad one must still be checked, or a later error met
    // first by another worker would be the one reported.
    let failed_before = |seq: usize| {
        first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(s, _)| *s < seq)
    };
    let (jobs, queue) = sync_channel::<Job>(1);
    let queue = Mutex::new(queue);
    let (recycle, spare) = channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        for _ in 0..workers() {
            let (queue, recycle, fail, failed_before) =
                (&queue, recycle.clone(), &fail, &failed_before);
            scope.spawn(move || {
                // Aligned, so that the card writes it to the medium as is.
                let mut out = AlignedBuf::new();
                loop {
                    let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    };
                    if !failed_before(job.seq) {
                        let done = match job.part {
                            Some(part) => {
                                let out = out.get(job.chunk.len);
                                job.chunk
                                    .expand_into(&job.stored, out, true)
                                    .map_err(ApplyError::from)
                                    .and_then(|()| sink(part, &job.chunk, out))
                            }
                            None => job.chunk.check(&job.stored).map_err(ApplyError::from),
                        };
                        if let Err(e) = done {
                            fail(job.seq, e);
                        }
                    }
                    let _ = recycle.send(job.stored);
                }
            });
        }
        let mut seq = 0;
        'payloads: loop {
            let mut payload = match reader.next_payload() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    fail(seq, e.into());
                    break;
                }
            };
            let part = match destination(&payload.info().name, target) {
                Ok(part) => part,
                Err(e) => {
                    fail(seq, e);
                    break;
                }
            };
            loop {
                if failed_before(usize::MAX) {
                    break 'payloads;
                }
                let mut stored = spare.try_recv().unwrap_or_default();
                match payload.next_stored(&mut stored) {
                    Ok(Some(chunk)) => {
                        let job = Job {
                            seq,
                            part,
                            chunk,
                            stored,
                        };
                        if jobs.send(job).is_err() {
                            break 'payloads;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        fail(seq, e.into());
                        break 'payloads;
                    }
                }
                seq += 1;
            }
        }
        drop(jobs);
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Applies `source` to the inactive slot of `card` and sets it to boot next
/// on trial, checking every chunk before it is written. A file and a stream
/// are treated alike: read once (docs/bundle.md).
pub fn apply<R: Read>(
    source: R,
    card: &mut Card,
    flow: &dyn BootFlow,
    opts: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let mut reader = BundleReader::open(source, opts.trusted)?;
    reader.check_board(opts.board)?;
    check_manifest(reader.manifest(), opts)?;
    let target = opts.booted.other();
    // Decide everything that can be decided before the first write.
    let marked = flow.read(card)?.begin_write(opts.booted, target)?;
    let mut plan = Vec::new();
    for p in &reader.manifest().payloads {
        if let Some(part) = destination(&p.name, target)? {
            let (_, room) = card.span(part)?;
            if p.size > room {
                return Err(ApplyError::TooBig {
                    name: p.name.clone(),
                    size: p.size,
                    partition: part,
                    room,
                });
            }
            plan.push((part, p.clone()));
        }
    }
    let manifest = reader.manifest().clone();
    // From here on the target slot is not bootable, until the read-back.
    flow.write(card, &marked)?;
    // CRC32 of every written chunk, for the read-back: it looks for a card
    // that drops or garbles writes, not for an attacker, whom the signed
    // hashes already stopped before the write.
    let sums: Mutex<Vec<(u8, usize, u32)>> = Mutex::new(Vec::new());
    let written = Mutex::new(0u64);
    {
        let card = Mutex::new(&mut *card);
        stream(&mut reader, target, &|part, chunk, data| {
            let crc = crc32fast::hash(data);
            card.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_at(part, chunk.offset, data)?;
            sums.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((part, chunk.index, crc));
            *written.lock().unwrap_or_else(|p| p.into_inner()) += data.len() as u64;
            Ok(())
        })?;
    }
    reader.finish()?;
    card.sync()?;

    // Re-read what landed on the card before letting it boot: on a block
    // device from the medium rather than the page cache.
    let mut sums = sums.into_inner().unwrap_or_else(|p| p.into_inner());
    sums.sort_unstable();
    let chunk_size = manifest.chunk_size;
    for (part, info) in &plan {
        card.drop_cached(*part)?;
        let expect: Vec<u32> = sums
            .iter()
            .filter(|(p, ..)| p == part)
            .map(|&(.., crc)| crc)
            .collect();
        let mut offset = 0u64;
        for i in 0..info.chunks.len() {
            let n = chunk_size.min(info.size - offset) as usize;
            let crc = card.read_with(*part, offset, n, crc32fast::hash)?;
            if expect.get(i) != Some(&crc) {
                return Err(ApplyError::Readback {
                    partition: *part,
                    chunk: i,
                });
            }
            offset += n as u64;
        }
    }
    let done = marked.finish_write(target, &image_id(&manifest))?;
    flow.write(card, &done)?;
    Ok(Applied {
        slot: target,
        manifest,
        bytes_written: written.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}
