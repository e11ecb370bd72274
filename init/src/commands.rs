//! The console's file commands (`cat`, `write`, `ls`, `mounts`), written
//! against any `Write` so they are tested on the host.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Adds context to an error: `cat /x: No such file or directory (os error 2)`.
fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Copies a file to `out` in chunks (no size limit, no whole-file buffer),
/// adding a final newline if the file lacks one so `keel: ok` starts a line.
pub fn cat(path: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut file = fs::File::open(path).map_err(|e| ctx("cat", path, e))?;
    let mut buf = [0u8; 4096];
    let mut last = b'\n';
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ctx("cat", path, e)),
        };
        out.write_all(&buf[..n])?;
        last = buf[n - 1];
    }
    if last != b'\n' {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Replaces `path` with `text` plus a newline, durably and atomically
/// (`durable::replace`): a power cut after `keel: ok` cannot lose it, nor
/// leave half of it. A symlink at `path` is replaced, never followed.
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    durable::replace(path, format!("{text}\n").as_bytes(), 0o644).map_err(|e| ctx("write", path, e))
}

/// Adds `text` plus a newline to the end of `path` (creating it), made
/// durable like `write`. With `write`, builds a multi-line file one
/// console line at a time (a services.toml for tests, say).
pub fn append(path: &Path, text: &str) -> io::Result<()> {
    durable::append_line(path, text, 0o644).map_err(|e| ctx("append", path, e))
}

/// `mkdir -p`.
pub fn mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path).map_err(|e| ctx("mkdir", path, e))?;
    sync_parent(path)
}

/// Removes a file or an empty directory.
pub fn rm(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| ctx("rm", path, e))?;
    if meta.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| ctx("rm", path, e))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    durable::sync_dir(dir).map_err(|e| ctx("fsync directory", dir, e))
}

/// `ls -l`-style type and permission letters for a mode.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        m if m == libc::S_IFDIR => 'd',
        m if m == libc::S_IFLNK => 'l',
        m if m == libc::S_IFCHR => 'c',
        m if m == libc::S_IFBLK => 'b',
        m if m == libc::S_IFIFO => 'p',
        m if m == libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => set_char,
            (true, false) => set_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn ls_line(path: &Path, name: &str, out: &mut impl Write) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode();
    let ft = meta.file_type();
    let size = if ft.is_block_device() || ft.is_char_device() {
        let rdev = meta.rdev();
        format!("{},{}", libc::major(rdev), libc::minor(rdev))
    } else {
        meta.len().to_string()
    };
    write!(out, "{} {size:>10} {name}", mode_string(mode))?;
    if ft.is_symlink() {
        if let Ok(target) = fs::read_link(path) {
            write!(out, " -> {}", target.display())?;
        }
    }
    writeln!(out)
}

/// Lists a directory (sorted by name) or a single file, one line each:
/// mode, size (or major,minor for devices), name.
pub fn ls(path: &Path, out: &mut impl Write) -> io::Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| ctx("ls", path, e))?;
    if !meta.is_dir() {
        return ls_line(path, &path.display().to_string(), out);
    }
    let mut names: Vec<_> = fs::read_dir(path)
        .map_err(|e| ctx("ls", path, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let entry = path.join(&name);
        let shown = name.to_string_lossy();
        if let Err(e) = ls_line(&entry, &shown, out) {
            // A file that vanished mid-listing is not worth failing for.
            writeln!(out, "?          ? {shown} ({e})")?;
        }
    }
    out.flush()
}

/// The mount table, as the kernel reports it.
pub fn mounts(out: &mut impl Write) -> io::Result<()> {
    cat(Path::new("/proc/mounts"), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_copies_and_terminates_the_last_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, "version=1.2\nboard=qemu").unwrap();
        let mut out = Vec::new();
        cat(&p, &mut out).unwrap();
        assert_eq!(out, b"version=1.2\nboard=qemu\n");

        fs::write(&p, "").unwrap();
        let mut out = Vec::new();
        cat(&p, &mut out).unwrap();
        assert!(out.is_empty());

        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &big).unwrap();
        let mut out = Vec::new();
        cat(&p, &mut out).unwrap();
        assert_eq!(&out[..big.len()], &big[..]);
    }

    #[test]
    fn cat_missing_file_names_it() {
        let err = cat(Path::new("/nonexistent/x"), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().starts_with("cat /nonexistent/x: "), "{err}");
    }

    #[test]
    fn write_truncates_and_adds_newline() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("state");
        write(&p, "a much longer first value").unwrap();
        write(&p, "short").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "short\n");
        write(&p, "").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "\n");
    }

    #[test]
    fn append_mkdir_rm_build_and_remove_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keel/sub");
        mkdir(&dir).unwrap();
        mkdir(&dir).unwrap();
        let p = dir.join("services.toml");
        write(&p, "[supervisor.root]").unwrap();
        append(&p, "children = [\"a\"]").unwrap();
        append(&p, "").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "[supervisor.root]\nchildren = [\"a\"]\n\n"
        );
        rm(&p).unwrap();
        assert!(!p.exists());
        rm(&dir).unwrap();
        let err = rm(&dir).unwrap_err();
        assert!(err.to_string().starts_with("rm "), "{err}");
        let err = append(&tmp.path().join("none/x"), "y").unwrap_err();
        assert!(err.to_string().starts_with("append "), "{err}");
    }

    #[test]
    fn write_into_missing_dir_fails_with_context() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("no/such/dir/f");
        let err = write(&p, "x").unwrap_err();
        assert!(err.to_string().starts_with("write "), "{err}");
    }

    #[test]
    fn ls_lists_sorted_with_types() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("b"), "12345").unwrap();
        fs::create_dir(tmp.path().join("a")).unwrap();
        std::os::unix::fs::symlink("b", tmp.path().join("c")).unwrap();
        fs::set_permissions(tmp.path().join("b"), fs::Permissions::from_mode(0o644)).unwrap();
        let mut out = Vec::new();
        ls(tmp.path(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with('d') && lines[0].ends_with(" a"),
            "{text}"
        );
        assert_eq!(lines[1], "-rw-r--r--          5 b");
        assert!(
            lines[2].starts_with('l') && lines[2].ends_with(" c -> b"),
            "{text}"
        );

        let mut out = Vec::new();
        ls(&tmp.path().join("b"), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains(" 5 "));
        assert!(ls(&tmp.path().join("zz"), &mut Vec::new()).is_err());
    }

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(libc::S_IFCHR | 0o600), "crw-------");
    }
}
