//! Builds every board and reads the images back with Keel's own parsers:
//! partition table, boot files, initramfs, slot A's root filesystem.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use image_build::check::{check_card, read_card};
use image_build::elf::ElfArch;
use image_build::fstree::NodeKind;
use image_build::layout::{Layout, ALIGN};
use image_build::modules::ModuleIndex;
use image_build::pi_firmware::{boot_files, PiModel};

fn file_names(files: &[(String, u64)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

fn check_board(board: &str) {
    let dir = build(board);
    let cfg = board_config(board);
    let img = dir.join("sdcard.img");
    let card = read_card(&img, &cfg).unwrap_or_else(|e| panic!("{board}: {e}"));

    // Partition table: MBR, 1-3 primary FAT, 4 extended holding 5-7.
    let numbers: Vec<u8> = card.table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7], "{board}");
    for p in &card.table.partitions {
        assert_eq!(
            p.start_lba % ALIGN,
            0,
            "{board}: partition {} is not 4 MiB aligned",
            p.number
        );
        assert_eq!(
            p.bootable,
            p.number == 1,
            "{board}: only partition 1 is active"
        );
    }
    assert_eq!(
        card.table.get(5).unwrap().sectors,
        card.table.get(6).unwrap().sectors,
        "{board}: slots differ"
    );
    assert_eq!(card.table, Layout::for_board(&cfg).table, "{board}");
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        Layout::for_board(&cfg).image_size
    );

    // sfdisk, an independent reader, sees the same partitions.
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(&img)
        .output()
        .expect("sfdisk (Debian package fdisk)");
    let dump = String::from_utf8_lossy(&dump.stdout);
    for p in &card.table.partitions {
        assert!(
            dump.contains(&format!(
                "start={:>12}, size={:>12}",
                p.start_lba, p.sectors
            )),
            "{board}: sfdisk:\n{dump}"
        );
    }

    let sel = file_names(&card.selector);
    let boot = file_names(&card.boot_a);
    assert!(
        boot.contains(&"vmlinuz") && boot.contains(&"initrd.img"),
        "{board}: {boot:?}"
    );
    assert!(sel.contains(&"boot.scr"), "{board}: {sel:?}");
    assert!(
        boot.contains(&"bootargs-a.env") && boot.contains(&"bootargs-b.env"),
        "{board}: {boot:?}"
    );
    // Both boot state records say: slot a holds this build, slot b nothing.
    let release = match card.rootfs.get("etc/keel/release").map(|n| &n.kind) {
        Some(NodeKind::File(d)) => keel_contract::Release::parse(&String::from_utf8_lossy(d)),
        _ => panic!("{board}: no release file"),
    };
    let image_id = format!(
        "{}@{}",
        release.version().unwrap(),
        release.build_id().unwrap()
    );
    let max_tries = cfg.uboot.as_ref().unwrap().max_tries;
    let mut f = std::fs::File::open(&img).unwrap();
    for off in card_format::bootstate::COPIES {
        let mut rec = [0u8; 512];
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off)).unwrap();
        std::io::Read::read_exact(&mut f, &mut rec).unwrap();
        assert_eq!(
            card_format::bootstate::Record::decode(&rec, max_tries),
            Some(card_format::bootstate::Record::initial(&image_id)),
            "{board}"
        );
    }
    match board {
        "rpi4" | "rpi3" => check_pi(board, &img, &card, &sel),
        "bbb" => {
            assert!(
                sel.contains(&"MLO") && sel.contains(&"u-boot.img"),
                "{sel:?}"
            );
            assert!(boot.contains(&"am335x-boneblack.dtb"), "{boot:?}");
        }
        _ => {}
    }
    assert!(
        card.cmdline.contains("keel.slot=a"),
        "{board}: {}",
        card.cmdline
    );
    assert!(
        card.cmdline
            .contains(&format!("keel.root=PARTUUID={}", card.table.partuuid(5))),
        "{}",
        card.cmdline
    );

    // Slot A's root filesystem: our init, for this board's architecture.
    let want = match cfg.arch {
        image_build::board::Arch::Aarch64 => ElfArch::Aarch64,
        image_build::board::Arch::Armv7 => ElfArch::Arm,
    };
    for path in ["sbin/init", "usr/bin/agent"] {
        let Some(NodeKind::File(bytes)) = card.rootfs.get(path).map(|n| &n.kind) else {
            panic!("{board}: rootfs lacks {path}")
        };
        let info = image_build::elf::inspect(bytes).unwrap();
        assert_eq!(info.arch, want, "{board}: {path}");
        assert!(info.static_linked, "{board}: {path} must be static");
    }
    let init_in_initramfs = &card.initramfs.get("init").unwrap().kind;
    assert_eq!(
        init_in_initramfs,
        &card.rootfs.get("sbin/init").unwrap().kind,
        "{board}: one init for both stages"
    );
    assert!(
        card.rootfs.get("etc/hostname").is_some(),
        "{board}: rootfs-overlay is copied"
    );
    assert!(card.rootfs.get("data").is_some() && card.rootfs.get("proc").is_some());

    // Modules: the initramfs has the closure of what reaches root; the rootfs
    // has exactly the configured modules' closure.
    let kernel_root = kernel_package_root(board);
    let kver = image_build::assemble::kernel_release(&kernel_root).unwrap();
    let index = ModuleIndex::scan(&kernel_root.join("lib/modules").join(&kver)).unwrap();
    let early = index.closure(&cfg.kernel.initramfs_modules).unwrap();
    let early_names: Vec<String> = early.iter().map(|m| m.name.clone()).collect();
    for m in &early_names {
        assert!(
            card.initramfs.get(&format!("lib/modules/{m}.ko")).is_some(),
            "{board}: initramfs lacks {m}"
        );
    }
    let late: Vec<String> = index
        .closure(&cfg.kernel.rootfs_modules)
        .unwrap()
        .iter()
        .map(|m| format!("lib/modules/{kver}/{}", m.rel_path.display()))
        .collect();
    let shipped: Vec<String> = card
        .rootfs
        .iter()
        .filter(|(p, n)| p.ends_with(".ko") && matches!(n.kind, NodeKind::File(_)))
        .map(|(p, _)| p.to_string())
        .collect();
    let mut late_sorted = late.clone();
    late_sorted.sort();
    assert_eq!(shipped, late_sorted, "{board}: rootfs modules");

    // The build's own boot check agrees, and the side files are right.
    let findings = check_card(&img, &cfg, &early_names);
    assert!(
        findings.problems.is_empty(),
        "{board}: {:?}",
        findings.problems
    );
    let bmap = image_build::bmap::Bmap::parse(
        &std::fs::read_to_string(dir.join("sdcard.img.bmap")).unwrap(),
    )
    .unwrap();
    bmap.verify(&img).unwrap();
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{board}: {}",
        String::from_utf8_lossy(&sums.stdout)
    );
}

/// Where the build unpacked the board's kernel package (from its lock file).
fn kernel_package_root(board: &str) -> std::path::PathBuf {
    let cfg = board_config(board);
    let lock = image_build::lock::LockFile::load(
        &root().join("board-configs").join(format!("{board}.lock")),
    )
    .unwrap()
    .unwrap();
    let sha = &lock.get(&cfg.kernel.package).unwrap().sha256;
    image_build::artifacts::cache_dir()
        .join("unpacked")
        .join(&sha[..24])
}

#[test]
fn qemu_aarch64_image() {
    check_board("qemu-aarch64");
}

#[test]
fn qemu_armv7_image() {
    check_board("qemu-armv7");
}

#[test]
fn rpi4_image() {
    check_board("rpi4");
}

#[test]
fn rpi3_image() {
    check_board("rpi3");
}

#[test]
fn bbb_image() {
    check_board("bbb");
}

#[test]
fn rebuilds_are_reproducible_and_reuse_work() {
    let dir = build("qemu-aarch64");
    let _guard = lock_builds();
    let again = xtask(&["build", "--board", "qemu-aarch64"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is up to date"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // A from-scratch assembly elsewhere is byte-identical.
    let other = tempfile::tempdir().unwrap();
    let out = xtask(&[
        "build",
        "--board",
        "qemu-aarch64",
        "--force",
        "--out",
        other.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["sdcard.img", "sdcard.img.bmap", "SHA256SUMS"] {
        assert!(
            std::fs::read(dir.join(name)).unwrap()
                == std::fs::read(other.path().join(name)).unwrap(),
            "{name} differs between two builds of the same inputs"
        );
    }
}

#[test]
fn unknown_board_lists_known_boards() {
    let out = xtask(&["build", "--board", "rpi5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown board 'rpi5'")
            && err.contains("bbb, qemu-aarch64, qemu-armv7, rpi3, rpi4"),
        "{err}"
    );
}

#[test]
fn interrupted_build_keeps_the_previous_image() {
    let dir = build("qemu-armv7");
    let _guard = lock_builds();
    let img = dir.join("sdcard.img");
    let before = std::fs::read(&img).unwrap();
    // Warm the xtask binary so the kill lands inside the build itself.
    assert!(xtask(&["--help"]).status.success());
    let mut child = xtask_command(&["build", "--board", "qemu-armv7", "--force"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = dir.join("sdcard.img.tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !tmp.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(tmp.exists(), "the build never started writing its image");
    // Kill the whole process group (cargo run and xtask under it).
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", "xtask build --board qemu-armv7 --force"])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        std::fs::read(&img).unwrap() == before,
        "sdcard.img changed after an interrupted build"
    );
    // The next build recovers.
    drop(_guard);
    build("qemu-armv7");
}

#[test]
fn corrupted_cached_download_is_fetched_again() {
    build("qemu-aarch64");
    let _guard = lock_builds();
    let real = image_build::artifacts::cache_dir();
    let cache = tempfile::tempdir().unwrap();
    let debs = cache.path().join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let lock = image_build::lock::LockFile::load(&root().join("board-configs/qemu-aarch64.lock"))
        .unwrap()
        .unwrap();
    let mut corrupted = None;
    for p in &lock.packages {
        let name = Path::new(&p.filename).file_name().unwrap().to_owned();
        let src = real.join("debs").join(&name);
        let dst = debs.join(&name);
        std::fs::copy(&src, &dst).unwrap();
        if p.name == "u-boot-qemu" {
            let mut bytes = std::fs::read(&dst).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&dst, bytes).unwrap();
            corrupted = Some(dst.clone());
        }
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = xtask_command(&[
        "build",
        "--board",
        "qemu-aarch64",
        "--locked",
        "--out",
        out_dir.path().to_str().unwrap(),
    ])
    .env("KEEL_CACHE_DIR", cache.path())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("does not match its pinned sha256; fetching it again"),
        "{err}"
    );
    let fixed = image_build::artifacts::sha256_file(&corrupted.unwrap()).unwrap();
    assert_eq!(fixed, lock.get("u-boot-qemu").unwrap().sha256);
}

#[test]
fn locked_refuses_a_lock_it_cannot_honour() {
    let boards = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("board-configs/qemu-aarch64.toml"),
        boards.path().join("qemu-aarch64.toml"),
    )
    .unwrap();
    // No lock at all: --locked must not invent one.
    let out = xtask(&[
        "build",
        "--board",
        "qemu-aarch64",
        "--locked",
        "--board-dir",
        boards.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--locked") && err.contains("no entry"),
        "{err}"
    );
    assert!(!boards.path().join("qemu-aarch64.lock").exists());
}

/// The Pi boot chain at the file level: what the firmware reads from
/// partition 1, per model, is there and is that model's build.
fn check_pi(
    board: &str,
    img: &std::path::Path,
    card: &image_build::check::CardContents,
    sel: &[&str],
) {
    let config = card
        .config_txt
        .as_deref()
        .expect("config.txt in partition 1");
    let pkg_dir = |name: &str| package_root(board, name);
    let selector = |name: &str| -> Vec<u8> {
        let t = &card.table;
        let p = t.get(1).unwrap();
        let f = std::fs::File::open(img).unwrap();
        image_build::fat::read_file(
            image_build::slice::PartitionSlice::new(f, p.start_lba * 512, p.sectors * 512).unwrap(),
            name,
        )
        .unwrap()
    };
    let uboot = pkg_dir("u-boot-rpi").join("usr/lib/u-boot");
    let (models, uboot_build, firmware, compat): (&[PiModel], &str, &[&str], &[&str]) = match board
    {
        "rpi4" => (
            &[PiModel::Pi4B],
            "rpi_4",
            &["start4.elf", "fixup4.dat"],
            &["raspberrypi,4-model-b"],
        ),
        _ => (
            &[PiModel::Pi3B, PiModel::Pi3BPlus],
            "rpi_3",
            &["bootcode.bin", "start.elf", "fixup.dat"],
            &["raspberrypi,3-model-b\0", "raspberrypi,3-model-b-plus\0"],
        ),
    };
    for f in firmware {
        assert!(sel.contains(f), "{board}: partition 1 lacks {f}: {sel:?}");
    }
    for (model, compat) in models.iter().zip(compat) {
        let (kernel, dtb) = boot_files(config, *model);
        let kernel = kernel.unwrap_or_else(|| panic!("{board}: no kernel= for {model:?}"));
        let dtb = dtb.unwrap_or_else(|| panic!("{board}: no device_tree= for {model:?}"));
        // The firmware starts this board's U-Boot build, not another Pi's.
        let started = selector(&kernel);
        assert_eq!(
            started,
            std::fs::read(uboot.join(uboot_build).join("u-boot.bin")).unwrap(),
            "{board}: {kernel} is not Debian's {uboot_build} U-Boot"
        );
        for other in ["rpi_3", "rpi_4", "rpi_arm64"]
            .iter()
            .filter(|b| **b != uboot_build)
        {
            assert_ne!(
                started,
                std::fs::read(uboot.join(other).join("u-boot.bin")).unwrap()
            );
        }
        // The device tree the firmware loads for the model is the model's.
        let tree = selector(&dtb);
        assert!(
            tree.windows(compat.len()).any(|w| w == compat.as_bytes()),
            "{board}: {dtb} for {model:?} is not compatible with {compat:?}"
        );
    }
}

fn lock_of(board: &str) -> image_build::lock::LockFile {
    image_build::lock::LockFile::load(&root().join("board-configs").join(format!("{board}.lock")))
        .unwrap()
        .unwrap()
}

/// Where the build unpacked one of the board's packages.
fn package_root(board: &str, name: &str) -> std::path::PathBuf {
    let lock = lock_of(board);
    let pkg = lock.get(name).unwrap();
    image_build::artifacts::cache_dir()
        .join("unpacked")
        .join(&pkg.sha256[..24])
}
