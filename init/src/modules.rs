//! Loading kernel modules with finit_module(2), from a list the image build
//! has already put in dependency order (Debian ships no modules.dep and
//! there is no modprobe on the device).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::sys;

/// Module paths from a `modules.load` file: one per line, relative to its
/// directory; blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Loads one module file. A module that is already loaded (EEXIST) is
/// fine: the initramfs may have loaded what the root filesystem lists too.
pub fn load(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    match sys::finit_module(file.as_raw_fd()) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Loads every module listed in `list_file` (paths relative to `dir`), in
/// order, and returns the ones that failed. A failure does not stop the
/// rest: one missing driver should not hide the others' errors, and the
/// caller decides whether the boot can go on.
pub fn load_listed(dir: &Path, list_file: &Path) -> io::Result<Vec<(PathBuf, io::Error)>> {
    let text = std::fs::read_to_string(list_file)?;
    let mut failed = Vec::new();
    for name in parse_list(&text) {
        let path = dir.join(name);
        if let Err(e) = load(&path) {
            failed.push((path, e));
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_module_list() {
        let text =
            "# initramfs modules\nvirtio_mmio.ko\n\n  virtio_blk.ko  \r\nkernel/fs/ext4/ext4.ko\n";
        assert_eq!(
            parse_list(text),
            vec!["virtio_mmio.ko", "virtio_blk.ko", "kernel/fs/ext4/ext4.ko"]
        );
        assert!(parse_list("").is_empty());
    }

    #[test]
    fn missing_files_are_reported_and_do_not_stop_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let list = tmp.path().join("modules.load");
        std::fs::write(&list, "a.ko\nb.ko\n").unwrap();
        let failed = load_listed(tmp.path(), &list).unwrap();
        let names: Vec<_> = failed.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            names,
            vec![tmp.path().join("a.ko"), tmp.path().join("b.ko")]
        );
        assert_eq!(failed[0].1.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_list_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_listed(tmp.path(), &tmp.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
