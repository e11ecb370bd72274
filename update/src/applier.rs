//! Applies a bundle to the inactive slot: signature and board checked before
//! a byte is written, each chunk verified before it is written, the written
//! slot re-read and re-hashed, and only then the boot state switched.

use std::io::Read;

use bundle::{BundleError, BundleReader, Manifest};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::card::{Card, CardError};
use crate::state::{BootFlow, Slot, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Card(#[from] CardError),
    #[error("{0}")]
    State(#[from] StateError),
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
    /// Reboot with this argument to boot the new slot (the Pi's "0 tryboot").
    pub reboot_arg: Option<&'static str>,
}

/// Where each payload goes when `target` is the slot being written.
fn destination(name: &str, target: Slot) -> Result<Option<u8>, ApplyError> {
    match name {
        "rootfs" => Ok(Some(target.rootfs_partition())),
        "boot-a" | "boot-b" => {
            let slot = if name == "boot-a" { Slot::A } else { Slot::B };
            Ok((slot == target).then(|| target.boot_partition()))
        }
        other => Err(ApplyError::UnknownPayload(other.to_string())),
    }
}

fn check_manifest(m: &Manifest, opts: &ApplyOptions) -> Result<(), ApplyError> {
    use std::cmp::Ordering::Less;
    if bundle::version::compare(opts.running_version, &m.min_version) == Less {
        return Err(ApplyError::TooOld {
            running: opts.running_version.into(),
            min: m.min_version.clone(),
        });
    }
    if !opts.allow_downgrade && bundle::version::compare(&m.version, opts.running_version) == Less {
        return Err(ApplyError::Downgrade {
            bundle: m.version.clone(),
            running: opts.running_version.into(),
        });
    }
    let target = opts.booted.other();
    for needed in ["rootfs".to_string(), format!("boot-{}", target.letter())] {
        if m.payload(&needed).is_none() {
            return Err(ApplyError::MissingPayload(needed));
        }
    }
    Ok(())
}

/// Reads and verifies a whole bundle without writing anything. Used first
/// when the source can be read twice (a file), so a bad bundle leaves the
/// card byte-identical.
pub fn verify<R: Read>(source: R, opts: &ApplyOptions) -> Result<Manifest, ApplyError> {
    let mut reader = BundleReader::open(source, opts.trusted)?;
    reader.check_board(opts.board)?;
    check_manifest(reader.manifest(), opts)?;
    let manifest = reader.manifest().clone();
    let mut buf = Vec::new();
    while let Some(mut p) = reader.next_payload()? {
        destination(&p.info().name, opts.booted.other())?;
        while p.next_chunk(&mut buf)?.is_some() {}
    }
    reader.finish()?;
    Ok(manifest)
}

/// Applies `source` to the inactive slot of `card` and sets it to boot next
/// on trial. On any error the boot state is untouched.
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
    let next_state = flow.read(card)?.set_trial(opts.booted, target)?;
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
    let chunk_size = manifest.chunk_size;
    let mut buf = Vec::new();
    let mut written = 0u64;
    while let Some(mut payload) = reader.next_payload()? {
        let part = destination(&payload.info().name, target)?;
        let mut offset = 0u64;
        while let Some(n) = payload.next_chunk(&mut buf)? {
            if let Some(part) = part {
                card.write_at(part, offset, &buf[..n])?;
                written += n as u64;
            }
            offset += n as u64;
        }
    }
    reader.finish()?;
    card.sync()?;

    // Re-read what landed on the card before letting it boot.
    for (part, info) in &plan {
        let mut offset = 0u64;
        for (i, chunk) in info.chunks.iter().enumerate() {
            let n = chunk_size.min(info.size - offset) as usize;
            buf.resize(n, 0);
            card.read_at(*part, offset, &mut buf)?;
            if <[u8; 32]>::from(Sha256::digest(&buf)) != chunk.sha256 {
                return Err(ApplyError::Readback {
                    partition: *part,
                    chunk: i,
                });
            }
            offset += n as u64;
        }
    }
    flow.write(card, &next_state)?;
    Ok(Applied {
        slot: target,
        manifest,
        bytes_written: written,
        reboot_arg: flow.trial_reboot_arg(),
    })
}
