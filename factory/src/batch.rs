//! Burning cards one after another, each with the next serial's identity,
//! recorded in the CA's manifest ([`crate::ledger`]) as it goes.
//!
//! For each serial: the certificate is issued in memory and kept in the
//! CA's `certs/`; a `started` line is made durable; the card is burned and
//! read back; a `done` line follows. A card that fails (a bad card, pulled
//! out too early) has its serial voided at once and the batch carries on
//! with the next serial on the next card. A batch that was interrupted
//! (power cut, Ctrl-C) finds `started` lines without `done` when it runs
//! again: those serials are voided, never re-used, because the unfinished
//! card may hold that identity and two devices must never share one.

use std::path::{Path, PathBuf};

use crate::burn::{self, BurnError, BurnReport, CardIdentity, ClaimFiles, Target};
use crate::ca::DeviceCa;
use crate::copy::{CopyError, Progress};
use crate::image::SourceImage;
use crate::ledger::{Ledger, LedgerError, Record, Status};
use crate::serial::Serial;
use crate::target::{self, Sysroot, TargetError};

/// The person (or test) at the machine.
pub trait Operator {
    /// May `what` be erased? Asked once, before the first card.
    fn confirm(&mut self, what: &str) -> bool;
    /// Waits for the card for `serial` (`n` of `total`) to be inserted;
    /// `false` stops the batch.
    fn next_card(&mut self, serial: &Serial, n: usize, total: usize) -> bool;
    /// How the card being burned is coming along (`None`: no serial).
    fn progress(&mut self, serial: Option<&Serial>, p: Progress);
    fn done(&mut self, serial: &Serial, report: &BurnReport);
    /// A line worth telling (a voided serial, a refused card).
    fn note(&mut self, line: &str);
}

/// Where the cards go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A card reader; each card is checked when it is inserted.
    Device(PathBuf),
    /// Image files; `{serial}` in the name gives each card its own file.
    File(PathBuf),
}

impl TargetSpec {
    fn resolve(
        &self,
        sys: &Sysroot,
        image: &SourceImage,
        serial: Option<&Serial>,
        force: bool,
    ) -> Result<Target, TargetError> {
        match self {
            TargetSpec::Device(p) => Ok(Target::Device(target::check_device(
                sys, p, image.size, force,
            )?)),
            TargetSpec::File(p) => {
                let name = p.to_string_lossy();
                let name = match serial {
                    Some(s) => name.replace("{serial}", s.as_str()),
                    None => name.into_owned(),
                };
                let path = PathBuf::from(name);
                target::check_file(sys, &path)?;
                Ok(Target::File(path))
            }
        }
    }

    /// Whether every card of a batch lands in the same place, so the
    /// operator must swap cards between them.
    pub fn needs_swap(&self) -> bool {
        match self {
            TargetSpec::Device(_) => true,
            TargetSpec::File(p) => !p.to_string_lossy().contains("{serial}"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TargetSpec::Device(p) => p.display().to_string(),
            TargetSpec::File(p) => format!("the image file {}", p.display()),
        }
    }
}

/// Everything a batch burns with.
pub struct Batch<'a> {
    pub sys: Sysroot,
    pub image: &'a SourceImage,
    pub target: TargetSpec,
    pub ca: &'a DeviceCa,
    pub ledger: &'a mut Ledger,
    pub server_ca: Option<Vec<u8>>,
    pub claim: Option<ClaimFiles>,
    pub force: bool,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub done: Vec<Serial>,
    /// Voided in this run: interrupted earlier, or their card failed now.
    pub voided: Vec<Serial>,
    /// Already in the manifest, so not burned again.
    pub skipped: Vec<Serial>,
    pub stopped: bool,
}

/// Errors that belong to one card rather than to the whole batch: the
/// batch voids that card's serial and goes on with another card. Only a
/// card in a reader fails like that; a file target that cannot be
/// written is a mistake to fix before going on.
fn card_failure(e: &BurnError, target: &Target) -> bool {
    matches!(target, Target::Device(_))
        && matches!(
            e,
            BurnError::Copy(
                CopyError::Write { .. }
                    | CopyError::ReadBack { .. }
                    | CopyError::Mismatch { .. }
                    | CopyError::Open { .. }
            ) | BurnError::Card(_)
                | BurnError::Loader(_)
        )
}

impl Batch<'_> {
    /// Voids the serials an earlier run started and never finished.
    pub fn void_unfinished(&mut self, op: &mut dyn Operator) -> Result<Vec<Serial>, BurnError> {
        let mut voided = Vec::new();
        for r in self.ledger.unfinished() {
            let why = "interrupted before its card was verified; never used again (set that card aside and burn it anew)";
            self.ledger.append(Record::new(
                &r.serial,
                Status::Void,
                &r.certificate_sha256,
                &r.image_sha256,
                why,
            ))?;
            op.note(&format!(
                "serial {} was started at {} on {} and not finished: void. If its card shows up in the field, revoke certificate {}",
                r.serial, r.time, r.detail, r.certificate_sha256
            ));
            voided.push(r.serial);
        }
        Ok(voided)
    }

    /// Burns one card per serial, resuming: serials the manifest already
    /// has are skipped. With `single`, such a serial is an error instead
    /// (one card named by `--serial`).
    pub fn run(
        &mut self,
        serials: &[Serial],
        single: bool,
        op: &mut dyn Operator,
    ) -> Result<Summary, BurnError> {
        // Held until the batch ends: other burns with this CA see it, and
        // only a burn that runs alone may take a `started` serial for
        // abandoned.
        let session = self.ledger.session()?;
        let mut summary = Summary::default();
        if session.alone {
            summary.voided = self.void_unfinished(op)?;
        } else if !self.ledger.unfinished().is_empty() {
            op.note("another burn with this CA is running: serials started and not finished are left to it (they are voided by the next burn that runs alone)");
        }
        session.share()?;
        let mut todo = Vec::new();
        for s in serials {
            match self.ledger.latest(s) {
                None => todo.push(s.clone()),
                Some(r) if single => {
                    return Err(LedgerError::Taken {
                        serial: s.to_string(),
                        status: r.status.name(),
                        time: r.time.clone(),
                    }
                    .into())
                }
                Some(_) if summary.voided.contains(s) => {}
                Some(_) => summary.skipped.push(s.clone()),
            }
        }
        if !summary.skipped.is_empty() {
            op.note(&format!(
                "{} serial(s) already in the manifest, skipped (first: {})",
                summary.skipped.len(),
                summary.skipped[0]
            ));
        }
        if todo.is_empty() {
            return Ok(summary);
        }
        let total = todo.len();
        // One card: it is in the reader, so it is checked first and the
        // question names it (vendor, model, size). A batch asks once for
        // the reader and checks each card as it is inserted.
        let mut first = None;
        let question = if total == 1 {
            let t = self
                .target
                .resolve(&self.sys, self.image, Some(&todo[0]), self.force)?;
            let q = format!("{} with serial {}", t.describe(), todo[0]);
            first = Some(t);
            q
        } else {
            format!(
                "{total} cards ({} .. {}) on {}",
                todo[0],
                todo[total - 1],
                self.target.describe()
            )
        };
        if !op.confirm(&question) {
            summary.stopped = true;
            return Ok(summary);
        }
        for (n, serial) in todo.iter().enumerate() {
            let target = loop {
                if let Some(t) = first.take() {
                    break t;
                }
                if self.target.needs_swap() && !op.next_card(serial, n + 1, total) {
                    summary.stopped = true;
                    return Ok(summary);
                }
                match self
                    .target
                    .resolve(&self.sys, self.image, Some(serial), self.force)
                {
                    Ok(t) => break t,
                    // Checked per card: an inserted card may be automounted,
                    // missing, or too small. Ask for another card for this
                    // serial.
                    Err(e) if self.target.needs_swap() => op.note(&e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            };
            let id = self.ca.issue(serial)?;
            let fingerprint = id.fingerprint.clone();
            let shown = target.path().display().to_string();
            match self.ledger.claim(Record::new(
                serial,
                Status::Started,
                &fingerprint,
                &self.image.sha256,
                &shown,
            )) {
                Ok(()) => {}
                // Another burn with this CA took the serial meanwhile: this
                // card (still in the reader) gets the next one.
                Err(e @ LedgerError::Taken { .. }) if !single => {
                    op.note(&e.to_string());
                    summary.skipped.push(serial.clone());
                    first = Some(target);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.ca.record_certificate(&id)?;
            let identity = CardIdentity {
                device: Some(id),
                server_ca: self.server_ca.clone(),
                claim: self.claim.clone(),
            };
            match burn::burn(&self.sys, self.image, &target, &identity, &mut |p| {
                op.progress(Some(serial), p)
            }) {
                Ok(report) => {
                    self.ledger.append(Record::new(
                        serial,
                        Status::Done,
                        &fingerprint,
                        &self.image.sha256,
                        &shown,
                    ))?;
                    op.done(serial, &report);
                    summary.done.push(serial.clone());
                }
                Err(e) if card_failure(&e, &target) && !single => {
                    let why = format!("card failed: {e}");
                    self.ledger.append(Record::new(
                        serial,
                        Status::Void,
                        &fingerprint,
                        &self.image.sha256,
                        &why,
                    ))?;
                    op.note(&format!(
                        "serial {serial}: {e}\nserial {serial} is void; set that card aside"
                    ));
                    summary.voided.push(serial.clone());
                }
                Err(e) => {
                    if single {
                        let why = format!("card failed: {e}");
                        self.ledger.append(Record::new(
                            serial,
                            Status::Void,
                            &fingerprint,
                            &self.image.sha256,
                            &why,
                        ))?;
                    }
                    return Err(e);
                }
            }
        }
        Ok(summary)
    }
}

/// Burns the image alone (no serial), or with the batch's claim
/// certificate: nothing is recorded, nothing is device-specific.
pub fn burn_generic(
    sys: &Sysroot,
    image: &SourceImage,
    target: &TargetSpec,
    claim: Option<ClaimFiles>,
    server_ca: Option<Vec<u8>>,
    force: bool,
    op: &mut dyn Operator,
) -> Result<Option<BurnReport>, BurnError> {
    let t = target.resolve(sys, image, None, force)?;
    if !op.confirm(&t.describe()) {
        return Ok(None);
    }
    let identity = CardIdentity {
        device: None,
        server_ca,
        claim,
    };
    burn::burn(sys, image, &t, &identity, &mut |p| op.progress(None, p)).map(Some)
}

/// `provision --out DIR`: one identity into a directory (device.pem with
/// the chain, device.key 0600, ca.pem if a broker CA is known), recorded
/// in the manifest as `issued`. Refuses a serial already used and any
/// file already in `out`.
pub fn provision_to_dir(
    ca: &DeviceCa,
    ledger: &mut Ledger,
    serial: &Serial,
    out: &Path,
    server_ca: Option<&[u8]>,
) -> Result<crate::ca::IssuedIdentity, BurnError> {
    use keel_contract::paths;
    if let Some(r) = ledger.latest(serial) {
        return Err(LedgerError::Taken {
            serial: serial.to_string(),
            status: r.status.name(),
            time: r.time.clone(),
        }
        .into());
    }
    let names = [
        paths::IDENTITY_KEY,
        paths::IDENTITY_CERTIFICATE,
        paths::IDENTITY_CA_BUNDLE,
    ];
    if let Some(p) = names
        .iter()
        .map(|n| out.join(n))
        .find(|p| p.symlink_metadata().is_ok())
    {
        return Err(BurnError::Read {
            path: p,
            detail:
                "already exists; refusing to overwrite an identity (use an empty --out directory)"
                    .into(),
        });
    }
    let id = ca.issue(serial)?;
    // Recorded before the key is written: a serial whose files may exist
    // is never handed out again.
    ledger.claim(Record::new(
        serial,
        Status::Issued,
        &id.fingerprint,
        "",
        &out.display().to_string(),
    ))?;
    ca.record_certificate(&id)?;
    let write = |name: &str, bytes: &[u8], mode| -> Result<(), BurnError> {
        let p = out.join(name);
        durable::create_new(&p, bytes, mode).map_err(|e| BurnError::Read {
            path: p,
            detail: if e.kind() == std::io::ErrorKind::AlreadyExists {
                "already exists; refusing to overwrite an identity (use an empty --out directory)"
                    .into()
            } else {
                e.to_string()
            },
        })
    };
    durable::create_dir_all(out).map_err(|e| BurnError::Read {
        path: out.to_path_buf(),
        detail: e.to_string(),
    })?;
    write(paths::IDENTITY_KEY, id.key_pem.as_bytes(), 0o600)?;
    write(paths::IDENTITY_CERTIFICATE, id.chain_pem.as_bytes(), 0o644)?;
    if let Some(ca_pem) = server_ca {
        write(paths::IDENTITY_CA_BUNDLE, ca_pem, 0o644)?;
    }
    Ok(id)
}
