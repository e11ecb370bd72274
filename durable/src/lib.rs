//! Files that survive a power cut and cannot be redirected.
//!
//! Every state file Keel writes — the agent's records on /data, init's
//! files, the host's build outputs and keys — goes through here:
//!
//! - [`replace`] writes a temporary file beside the target, fsyncs it,
//!   renames it over the target and fsyncs the directory: after a power cut
//!   the target holds the old content or the new, never a mix;
//! - [`create_new`] refuses to touch anything already at the path (a
//!   file, a directory, a dangling symlink);
//! - [`append_line`] appends and fsyncs;
//! - [`read`] and every open here use `O_NOFOLLOW | O_NONBLOCK` and check
//!   for a regular file, so a symlink planted on the writable partition
//!   cannot redirect a root process's write, and a FIFO cannot block it;
//! - [`direct`] moves data between aligned buffers and the medium without
//!   the page cache (the update applier, the factory's card writer).

#![forbid(unsafe_code)]

pub mod direct;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Flags for every open: no symlinks, no blocking on FIFOs or devices.
const SAFE: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file (a symlink, FIFO or device there is refused)",
            path.display()
        ),
    )
}

fn check_regular(file: &File, path: &Path) -> io::Result<()> {
    if file.metadata()?.file_type().is_file() {
        Ok(())
    } else {
        Err(not_regular(path))
    }
}

/// Opens `path` for reading: a regular file only, never through a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(SAFE)
        .open(path)
        .map_err(|e| symlink_error(e, path))?;
    check_regular(&f, path)?;
    Ok(f)
}

/// `ELOOP` from `O_NOFOLLOW` means the last component is a symlink.
fn symlink_error(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a symlink; refusing to follow it", path.display()),
        )
    } else {
        e
    }
}

/// Reads a regular file of at most `limit` bytes; None if it does not exist.
pub fn read(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(Some(out))
}

/// Like [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> io::Result<Option<String>> {
    match read(path, limit)? {
        Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not UTF-8 text", path.display()),
            )
        }),
        None => Ok(None),
    }
}

/// Makes the directory entry changes in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The temporary name beside `path` that [`replace`] writes first.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Atomically replaces `path` with `bytes` (mode `mode`): temp file, fsync,
/// rename, fsync of the directory. A symlink at `path` is replaced, not
/// followed; a directory there is an error.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create_exclusive(&tmp, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        commit(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames a finished temporary file over `path` and makes both durable.
pub fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    sync_dir(parent(path))
}

fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    // A stale temporary from an earlier power cut (or anything planted at
    // its name) is removed first; unlink never follows a symlink.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(SAFE)
        .open(path)?;
    // The umask may have narrowed the mode; state it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Creates `path` with `bytes` (mode `mode`) only if nothing is there: not a
/// file, not a directory, not even a dangling symlink. Durable when it
/// returns.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(SAFE)
        .open(path)?;
    let result = (|| {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        sync_dir(parent(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Appends `line` and a newline to `path` (created with mode `mode`) and
/// fsyncs it.
pub fn append_line(path: &Path, line: &str, mode: u32) -> io::Result<()> {
    let existed = path.symlink_metadata().is_ok();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(SAFE)
        .open(path)
        .map_err(|e| symlink_error(e, path))?;
    check_regular(&f, path)?;
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    f.sync_all()?;
    if !existed {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Removes `path` (never what a symlink there points to) durably; a
/// missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its parents, then makes the new entries durable.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    sync_dir(parent(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn replace_writes_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state");
        replace(&p, b"one", 0o600).unwrap();
        replace(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left behind");
    }

    #[test]
    fn replace_does_not_write_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = d.path().join("state");
        symlink(&victim, &p).unwrap();
        replace(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(p.symlink_metadata().unwrap().file_type().is_file());
        // A symlink planted at the temporary name is not followed either.
        let p2 = d.path().join("other");
        symlink(&victim, temp_path(&p2)).unwrap();
        replace(&p2, b"x", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn reads_refuse_symlinks_and_fifos_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = d.path().join("link");
        symlink(&target, &link).unwrap();
        let e = read(&link, 10).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let fifo = d.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = read(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // Opening a FIFO for writing without a reader fails at once (ENXIO)
        // instead of blocking; with a reader, the type check refuses it.
        assert!(append_line(&fifo, "x", 0o600).is_err());
        assert_eq!(read(&d.path().join("none"), 10).unwrap(), None);
        std::fs::write(&target, b"0123456789ab").unwrap();
        assert!(read(&target, 10).is_err(), "size limit");
    }

    #[test]
    fn append_refuses_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"v").unwrap();
        let p = d.path().join("events");
        symlink(&victim, &p).unwrap();
        assert!(append_line(&p, "x", 0o600).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"v");
        let q = d.path().join("log");
        append_line(&q, "a", 0o600).unwrap();
        append_line(&q, "b", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "a\nb\n");
    }

    #[test]
    fn create_new_refuses_anything_in_the_way() {
        let d = tempfile::tempdir().unwrap();
        let dangling = d.path().join("k.pub");
        symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(create_new(&dangling, b"x", 0o644).is_err());
        assert!(!d.path().join("nowhere").exists());
        let p = d.path().join("k.key");
        create_new(&p, b"secret", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(create_new(&p, b"other", 0o600).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    }
}
