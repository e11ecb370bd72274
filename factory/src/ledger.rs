//! The manifest: one CSV file per device CA (`manifest.csv` in its
//! directory) recording every serial the CA issued a certificate for, so
//! the factory's records say which card holds which certificate from
//! which image, and no serial is ever issued twice.
//!
//! ```text
//! serial,status,certificate_sha256,image_sha256,time,detail
//! ACME-0001,started,3f…,9a…,2026-11-30T16:49:02Z,/dev/sdb
//! ACME-0001,done,3f…,9a…,2026-11-30T16:49:31Z,/dev/sdb
//! ```
//!
//! Lines are only ever appended, each fsynced before the step it records
//! happens (`started` before the card is touched, `done` after it was
//! read back). The statuses:
//!
//! - `issued`: an identity written to a directory (`provision --out`);
//! - `started`: a card is being burned with this serial;
//! - `done`: that card was written and verified;
//! - `void`: a `started` serial whose card was never finished (an
//!   interrupted batch). It is not used again: the unfinished card may
//!   hold its identity, and two devices must never share one.
//!
//! Several burns may run with one CA at once (a station with several card
//! readers): the first record of a serial is written under an exclusive
//! lock on the manifest after reading it again ([`Ledger::claim`]), so two
//! processes never issue the same serial; and each burn holds a shared
//! lock on `manifest.csv.lock` while it runs ([`Ledger::session`]), so a
//! `started` line is only taken for abandoned when no other burn is
//! running (a crashed process holds no lock).

use std::path::{Path, PathBuf};

use crate::serial::Serial;

pub const MANIFEST: &str = "manifest.csv";
const HEADER: &str = "serial,status,certificate_sha256,image_sha256,time,detail";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read the manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot append to the manifest {path}: {source}; stop and fix this before burning more cards (the records would be incomplete)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serial {serial} was already used with this CA ({status} at {time}); a serial is never issued twice, use the next one")]
    Taken {
        serial: String,
        status: &'static str,
        time: String,
    },
    #[error("{path}:{line}: {detail}; the manifest is the factory's record, repair it by hand")]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Issued,
    Started,
    Done,
    Void,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::Started => "started",
            Status::Done => "done",
            Status::Void => "void",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "issued" => Status::Issued,
            "started" => Status::Started,
            "done" => Status::Done,
            "void" => Status::Void,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub serial: Serial,
    pub status: Status,
    pub certificate_sha256: String,
    pub image_sha256: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// Where it went (a device, a file, a directory), or why it is void.
    pub detail: String,
}

impl Record {
    pub fn new(serial: &Serial, status: Status, cert: &str, image: &str, detail: &str) -> Record {
        Record {
            serial: serial.clone(),
            status,
            certificate_sha256: cert.to_string(),
            image_sha256: image.to_string(),
            time: rfc3339(std::time::SystemTime::now()),
            detail: detail.to_string(),
        }
    }

    fn line(&self) -> String {
        // Serials, hashes and times hold no comma; the detail (a path or a
        // sentence) may, so it is kept free of them and of line breaks.
        let detail: String = self
            .detail
            .chars()
            .map(|c| if c == ',' || c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "{},{},{},{},{},{}",
            self.serial,
            self.status.name(),
            self.certificate_sha256,
            self.image_sha256,
            self.time,
            detail
        )
    }

    fn parse(line: &str) -> Result<Record, String> {
        let f: Vec<&str> = line.splitn(6, ',').collect();
        let [serial, status, cert, image, time, detail] = f.as_slice() else {
            return Err(format!("expected 6 fields, found {}", f.len()));
        };
        Ok(Record {
            serial: Serial::parse(serial).map_err(|e| e.to_string())?,
            status: Status::parse(status).ok_or_else(|| format!("unknown status {status:?}"))?,
            certificate_sha256: cert.to_string(),
            image_sha256: image.to_string(),
            time: time.to_string(),
            detail: detail.to_string(),
        })
    }
}

/// The manifest, read once and appended to.
#[derive(Debug)]
pub struct Ledger {
    pub path: PathBuf,
    records: Vec<Record>,
}

impl Ledger {
    /// Opens (or starts) the manifest at `path`. A last line cut short by
    /// a power cut is cut off: it recorded nothing, since every step waits
    /// for its line to be on disk before it happens.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let read_err = |source| LedgerError::Read {
            path: path.to_path_buf(),
            source,
        };
        let write_err = |source| LedgerError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = durable::read_to_string(path, 256 << 20).map_err(read_err)?;
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            durable::append_line(path, HEADER, 0o644).map_err(write_err)?;
            return Ok(Ledger {
                path: path.to_path_buf(),
                records: Vec::new(),
            });
        };
        let torn = !text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut records = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if i == 0 {
                if *line != HEADER {
                    return Err(LedgerError::Corrupt {
                        path: path.to_path_buf(),
                        line: 1,
                        detail: format!("the header is not {HEADER:?}"),
                    });
                }
                continue;
            }
            if torn && i == lines.len() - 1 {
                break;
            }
            records.push(Record::parse(line).map_err(|detail| LedgerError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                detail,
            })?);
        }
        if torn {
            let keep = text.rfind('\n').map_or(0, |i| i + 1) as u64;
            cut(path, keep).map_err(write_err)?;
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            records,
        })
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The serial's latest status, if it was ever used.
    pub fn status(&self, serial: &Serial) -> Option<Status> {
        self.latest(serial).map(|r| r.status)
    }

    pub fn latest(&self, serial: &Serial) -> Option<&Record> {
        self.records.iter().rev().find(|r| &r.serial == serial)
    }

    /// Appends the first record of a serial: under an exclusive lock, the
    /// manifest is read again (another burn with this CA may have written
    /// since) and the record refused if the serial is there.
    pub fn claim(&mut self, record: Record) -> Result<(), LedgerError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(write_err)?;
        crate::sys::lock(&f, crate::sys::Lock::Exclusive).map_err(write_err)?;
        self.records = Ledger::open(&self.path)?.records;
        if let Some(r) = self.latest(&record.serial) {
            return Err(LedgerError::Taken {
                serial: record.serial.to_string(),
                status: r.status.name(),
                time: r.time.clone(),
            });
        }
        let write_err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        f.write_all(format!("{}\n", record.line()).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(write_err)?;
        self.records.push(record);
        Ok(())
    }

    /// Marks a burn with this CA as running until the [`Session`] is
    /// dropped. [`Session::alone`] says whether another burn is running.
    pub fn session(&self) -> Result<Session, LedgerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let err = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(err)?;
        let alone = crate::sys::lock(&f, crate::sys::Lock::TryExclusive).map_err(err)?;
        Ok(Session {
            file: f,
            path,
            alone,
        })
    }

    /// Serials whose card was started and never finished nor voided.
    pub fn unfinished(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for r in &self.records {
            out.retain(|o| o.serial != r.serial);
            if r.status == Status::Started {
                out.push(r.clone());
            }
        }
        out
    }

    /// Appends a record and makes it durable before returning.
    pub fn append(&mut self, record: Record) -> Result<(), LedgerError> {
        durable::append_line(&self.path, &record.line(), 0o644).map_err(|source| {
            LedgerError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        self.records.push(record);
        Ok(())
    }
}

/// A running burn's hold on its CA's manifest.
#[derive(Debug)]
pub struct Session {
    file: std::fs::File,
    path: PathBuf,
    /// No other burn with this CA was running when the session began: a
    /// `started` serial without `done` was abandoned.
    pub alone: bool,
}

impl Session {
    /// Lets other burns start (after the abandoned serials were voided).
    pub fn share(&self) -> Result<(), LedgerError> {
        crate::sys::lock(&self.file, crate::sys::Lock::Shared)
            .map(|_| ())
            .map_err(|source| LedgerError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// Truncates `path` to `len` bytes, durably, without following a symlink.
fn cut(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn sn(s: &str) -> Serial {
        Serial::parse(s).unwrap()
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_793_491_200 + 3661)),
            "2026-11-01T01:01:01Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn records_survive_reopening_and_say_what_is_unfinished() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MANIFEST);
        let mut l = Ledger::open(&p).unwrap();
        l.append(Record::new(
            &sn("A-1"),
            Status::Started,
            "c1",
            "i",
            "/dev/sdb",
        ))
        .unwrap();
        l.append(Record::new(&sn("A-1"), Status::Done, "c1", "i", "/dev/sdb"))
            .unwrap();
        l.append(Record::new(
            &sn("A-2"),
            Status::Started,
            "c2",
            "i",
            "a, b\nc",
        ))
        .unwrap();
        let again = Ledger::open(&p).unwrap();
        assert_eq!(
            again.records(),
            l.records()
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.detail = r.detail.replace([',', '\n'], " ");
                    r
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(again.status(&sn("A-1")), Some(Status::Done));
        assert_eq!(again.status(&sn("A-3")), None);
        let open: Vec<_> = again.unfinished().into_iter().map(|r| r.serial).collect();
        assert_eq!(open, [sn("A-2")]);
    }

    #[test]
    fn two_burns_with_one_ca_never_issue_a_serial_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MANIFEST);
        let (mut a, mut b) = (Ledger::open(&p).unwrap(), Ledger::open(&p).unwrap());
        a.claim(Record::new(
            &sn("A-1"),
            Status::Started,
            "ca",
            "i",
            "/dev/sdb",
        ))
        .unwrap();
        // b read the manifest before a wrote: the claim reads it again.
        assert_eq!(b.status(&sn("A-1")), None);
        let e = b
            .claim(Record::new(
                &sn("A-1"),
                Status::Started,
                "cb",
                "i",
                "/dev/sdc",
            ))
            .unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::Taken {
                    status: "started",
                    ..
                }
            ),
            "{e}"
        );
        b.claim(Record::new(
            &sn("A-2"),
            Status::Started,
            "cb",
            "i",
            "/dev/sdc",
        ))
        .unwrap();
        assert_eq!(Ledger::open(&p).unwrap().records().len(), 2);
        // While a burn runs, another is not alone; once it ends, the next is.
        let first = a.session().unwrap();
        assert!(first.alone);
        first.share().unwrap();
        let second = b.session().unwrap();
        assert!(!second.alone, "a's session is still held");
        second.share().unwrap();
        drop((first, second));
        assert!(b.session().unwrap().alone);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_a_bad_one_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MANIFEST);
        std::fs::write(&p, format!("{HEADER}\nA-1,done,c,i,t,x\nA-2,sta")).unwrap();
        let mut l = Ledger::open(&p).unwrap();
        assert_eq!(l.records().len(), 1);
        l.append(Record::new(&sn("A-3"), Status::Started, "c", "i", ""))
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("t,x\nA-3,started"), "{text}");
        assert_eq!(Ledger::open(&p).unwrap().records().len(), 2);
        // A whole line that is not a record is for a person to look at.
        std::fs::write(&p, format!("{HEADER}\nA-1,finished,c,i,t,x\n")).unwrap();
        assert!(matches!(
            Ledger::open(&p),
            Err(LedgerError::Corrupt { line: 2, .. })
        ));
        std::fs::write(&p, "not,a,manifest\n").unwrap();
        assert!(matches!(
            Ledger::open(&p),
            Err(LedgerError::Corrupt { line: 1, .. })
        ));
    }
}
