//! Stage one: PID 1 inside the initramfs. Loads the storage drivers, finds
//! the slot's root partition by PARTUUID, mounts its squashfs and switches
//! root to it, then execs the same binary as /sbin/init.
//!
//! Any failure is printed with what was found on the disks and then PID 1
//! waits forever: exiting would panic the kernel and hide the message, and
//! on a trial boot the watchdog or boot counter brings the old slot back.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use keel_contract::{paths, KernelCmdline};

use crate::disk::{self, Roots};
use crate::{modules, mount, sys};

/// Present only in the initramfs; selects this stage.
pub const MARKER: &str = paths::INITRAMFS_MARKER;
const MODULE_DIR: &str = "/lib/modules";
const MODULE_LIST: &str = paths::INITRAMFS_MODULES;
const NEWROOT: &str = "/newroot";
const INIT: &str = paths::INIT;
/// Like the kernel's rootwait, but bounded so a missing card is reported.
const ROOT_WAIT: Duration = Duration::from_secs(10);
const ROOT_POLL: Duration = Duration::from_millis(50);

/// Reports a failure and everything the disk scan sees, then waits forever.
fn fail(what: &str) -> ! {
    crate::log!("initramfs: {what}");
    let (_, report) = disk::scan(&Roots::system(), None);
    for line in report.to_string().lines() {
        crate::log!("initramfs: {line}");
    }
    crate::log!("initramfs: cannot continue; waiting (PID 1 must not exit)");
    sys::halt_forever()
}

pub fn run() -> ! {
    // For the boot-time line the system stage prints (exec keeps the
    // environment). Nothing else runs yet, so setting it is sound.
    std::env::set_var(
        crate::system::STARTED_ENV,
        sys::boottime().as_millis().to_string(),
    );
    for m in &mount::API {
        if let Err(e) = m.ensure() {
            fail(&format!(
                "mount {} on {}: {}",
                m.fstype,
                m.target,
                sys::describe(&e)
            ));
        }
    }
    // devtmpfs now provides /dev/console and /dev/null should the kernel
    // not have opened a console for us.
    sys::ensure_std_fds();

    match modules::load_listed(Path::new(MODULE_DIR), Path::new(MODULE_LIST)) {
        Ok(failed) => {
            // Not fatal yet: if a needed driver is missing, the root
            // partition will not appear and the report below says so.
            for (path, e) in failed {
                crate::log!(
                    "initramfs: load module {}: {}",
                    path.display(),
                    sys::describe(&e)
                );
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => crate::log!("initramfs: read {MODULE_LIST}: {e}"),
    }

    let cmdline = match fs::read_to_string("/proc/cmdline") {
        Ok(text) => KernelCmdline::parse(&text),
        Err(e) => fail(&format!("read /proc/cmdline: {e}")),
    };
    let want = match cmdline.root() {
        Ok(p) => p,
        Err(e) => fail(&e.to_string()),
    };
    let found = match disk::wait_for(&Roots::system(), want, ROOT_WAIT, ROOT_POLL) {
        Ok(found) => found,
        Err(_) => fail(&format!(
            "root partition {} not found after {ROOT_WAIT:?}",
            want.spec()
        )),
    };
    let source = found.node.to_string_lossy();
    if let Err(e) = sys::mount(
        Some(&source),
        Path::new(NEWROOT),
        Some("squashfs"),
        libc::MS_RDONLY,
        None,
    ) {
        fail(&format!(
            "mount {source} ({}) as squashfs on {NEWROOT}: {}",
            want.spec(),
            sys::describe(&e)
        ));
    }
    crate::log!("initramfs: mounted {source} ({}) on {NEWROOT}", want.spec());
    let err = switch_root(Path::new(NEWROOT));
    fail(&format!("switch root to {NEWROOT}: {err}"))
}

/// Moves /dev into the new root, frees the initramfs, makes `newroot` the
/// root and execs its /sbin/init. Only returns on failure.
fn switch_root(newroot: &Path) -> io::Error {
    // Checked while the initramfs is still whole, so a bad image still gets
    // a full report.
    let init = newroot.join(INIT.trim_start_matches('/'));
    if !init.is_file() {
        return io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {INIT} in the root filesystem"),
        );
    }
    // Never delete files on anything but the RAM filesystem we booted from.
    match sys::is_ram_fs(Path::new("/")) {
        Ok(true) => {}
        Ok(false) => return io::Error::other("/ is not an initramfs; refusing to delete it"),
        Err(e) => return e,
    }
    if let Err(e) = sys::mount(
        Some("/dev"),
        &newroot.join("dev"),
        None,
        libc::MS_MOVE,
        None,
    ) {
        return io::Error::new(
            e.kind(),
            format!("move /dev to {}/dev: {e}", newroot.display()),
        );
    }
    for target in ["/proc", "/sys"] {
        // Detach: nothing should hold them, but a busy mount must not stop
        // the boot.
        let _ = sys::umount(Path::new(target), libc::MNT_DETACH);
    }
    match fs::symlink_metadata("/") {
        Ok(meta) => delete_tree(Path::new("/"), meta.dev()),
        Err(e) => return e,
    }
    if let Err(e) = std::env::set_current_dir(newroot) {
        return e;
    }
    if let Err(e) = sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None) {
        return io::Error::new(e.kind(), format!("move {} to /: {e}", newroot.display()));
    }
    if let Err(e) = std::os::unix::fs::chroot(".") {
        return io::Error::new(e.kind(), format!("chroot: {e}"));
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return e;
    }
    let err = sys::execv(Path::new(INIT));
    io::Error::new(err.kind(), format!("exec {INIT}: {err}"))
}

/// Deletes everything under `dir` that lives on device `dev`, without
/// following symlinks or crossing into other filesystems (the mounted new
/// root), like busybox's switch_root. Best effort: what cannot be deleted
/// only costs RAM.
pub fn delete_tree(dir: &Path, dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_tree(&path, dev);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_tree_empties_dir_and_keeps_symlink_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(root.join("lib/modules")).unwrap();
        fs::create_dir_all(root.join("newroot")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("init"), "x").unwrap();
        fs::write(root.join("lib/modules/a.ko"), "x").unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let dev = fs::metadata(&root).unwrap().dev();
        delete_tree(&root, dev);
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(outside.join("keep").exists(), "followed a symlink");
    }

    #[test]
    fn delete_tree_skips_other_devices() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), "x").unwrap();
        // A device number nothing has: every entry counts as another
        // filesystem (a mount point) and is left alone.
        delete_tree(tmp.path(), u64::MAX);
        assert!(tmp.path().join("f").exists());
    }
}
