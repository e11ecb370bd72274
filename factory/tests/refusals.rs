//! Every reason `burn` refuses a disk, each on a fake /sys, /proc and
//! /dev tree: no real disk is looked at, let alone written.

mod common;

use common::{FakeSys, Scripted, MIB};
use factory::batch::{self, TargetSpec};
use factory::image::SourceImage;
use factory::target::{check_device, check_file, Refusal, Sysroot};

const IMAGE: u64 = 80 * MIB;

fn refusals(sys: &FakeSys, name: &str, force: bool) -> Vec<Refusal> {
    match check_device(&sys.sysroot(), &sys.dev(name), IMAGE, force) {
        Ok(dev) => panic!("{name} was accepted: {dev:?}"),
        Err(factory::target::TargetError::Refused { reasons, .. }) => reasons,
    }
}

#[test]
fn a_blank_removable_card_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdb", 32 << 30, true, 2);
    let dev = check_device(&sys.sysroot(), &sys.dev("sdb"), IMAGE, false).unwrap();
    assert_eq!(
        (dev.name.as_str(), dev.size, dev.removable),
        ("sdb", 32 << 30, true)
    );
    assert_eq!(dev.description, "Generic SD/MMC Reader");
}

#[test]
fn a_mounted_card_is_refused_with_where() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdb", 32 << 30, true, 2);
    sys.mount("sdb1", "/media/op/BOOT CARD");
    let r = refusals(&sys, "sdb", false);
    assert_eq!(
        r,
        [Refusal::Mounted {
            what: "/dev/sdb1".into(),
            at: "/media/op/BOOT CARD".into()
        }]
    );
    assert!(r[0].to_string().contains("umount"));
}

#[test]
fn the_disk_holding_the_root_filesystem_is_refused_even_with_force() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sda", 500 << 30, false, 3);
    sys.mount("sda2", "/");
    sys.mount("sda1", "/boot/efi");
    let r = refusals(&sys, "sda", true);
    assert_eq!(
        r,
        [Refusal::HoldsRoot {
            via: "/dev/sda2".into()
        }]
    );
    assert!(r[0].to_string().contains("running system's root"));
}

#[test]
fn a_root_on_lvm_is_traced_to_its_disk() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("nvme0n1", 500 << 30, false, 2);
    sys.disk("dm-0", 400 << 30, false, 0);
    // dm-0 is built on nvme0n12 (slaves), which holds it (holders).
    let slaves = sys.root.join("sys/class/block/dm-0/slaves/nvme0n12");
    std::fs::create_dir_all(slaves).unwrap();
    sys.hold("nvme0n12", "dm-0");
    sys.mount("dm-0", "/");
    let r = refusals(&sys, "nvme0n1", true);
    assert!(
        r.contains(&Refusal::HoldsRoot {
            via: "/dev/nvme0n12".into()
        }),
        "{r:?}"
    );
    assert!(
        r.contains(&Refusal::Held {
            what: "/dev/nvme0n12".into(),
            by: "dm-0".into()
        }),
        "{r:?}"
    );
}

#[test]
fn swap_and_holders_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdc", 32 << 30, true, 2);
    sys.swap("sdc2");
    sys.hold("sdc1", "md0");
    let r = refusals(&sys, "sdc", false);
    assert_eq!(
        r,
        [
            Refusal::Swap {
                what: "sdc2".into()
            },
            Refusal::Held {
                what: "/dev/sdc1".into(),
                by: "md0".into()
            }
        ]
    );
}

#[test]
fn a_fixed_disk_needs_force_and_a_built_in_sd_slot_does_not() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdd", 1 << 40, false, 1);
    assert_eq!(refusals(&sys, "sdd", false), [Refusal::NotRemovable]);
    assert!(Refusal::NotRemovable.to_string().contains("--force"));
    check_device(&sys.sysroot(), &sys.dev("sdd"), IMAGE, true).unwrap();
    // A laptop's mmc slot reports removable 0, but the card in it is one.
    sys.disk("mmcblk0", 16 << 30, false, 0);
    sys.sd_slot("mmcblk0");
    check_device(&sys.sysroot(), &sys.dev("mmcblk0"), IMAGE, false).unwrap();
}

#[test]
fn too_small_and_empty_readers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sde", 64 * MIB, true, 0);
    assert_eq!(
        refusals(&sys, "sde", false),
        [Refusal::TooSmall {
            size: 64 * MIB,
            needed: IMAGE
        }]
    );
    sys.disk("sdf", 0, true, 0);
    assert_eq!(refusals(&sys, "sdf", false), [Refusal::NoMedium]);
}

#[test]
fn partitions_missing_devices_and_non_devices_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdg", 32 << 30, true, 2);
    std::fs::File::create(sys.root.join("dev/sdg1")).unwrap();
    assert_eq!(
        refusals(&sys, "sdg1", false)[0],
        Refusal::Partition {
            disk: Some("sdg".into())
        }
    );
    assert_eq!(refusals(&sys, "sdx", false), [Refusal::Missing]);
    std::fs::create_dir(sys.root.join("dev/disk")).unwrap();
    assert!(matches!(
        refusals(&sys, "disk", false)[0],
        Refusal::NotBlockDevice {
            kind: "a directory"
        }
    ));
    // On the real system a regular file is never a device: --file names it.
    let file = d.path().join("card.img");
    std::fs::write(&file, b"").unwrap();
    let err = check_device(&Sysroot::real(), &file, IMAGE, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a block device") && err.contains("--file"),
        "{err}"
    );
    // And a file target that is a loop device's backing file is refused.
    let loop0 = sys.root.join("sys/block/loop0/loop");
    std::fs::create_dir_all(&loop0).unwrap();
    std::fs::write(
        loop0.join("backing_file"),
        format!("{}\n", std::fs::canonicalize(&file).unwrap().display()),
    )
    .unwrap();
    let err = check_file(&sys.sysroot(), &file).unwrap_err().to_string();
    assert!(err.contains("losetup -d /dev/loop0"), "{err}");
}

#[test]
fn a_refused_card_is_never_written_and_no_confirmation_means_no_write() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdb", 128 * MIB, true, 2);
    let node = sys.root.join("dev/sdb");
    common::used_card(&node, 128 * MIB);
    let before = std::fs::read(&node).unwrap();
    sys.mount("sdb2", "/media/card");
    let target = TargetSpec::Device(sys.dev("sdb"));
    let err = batch::burn_generic(
        &sys.sysroot(),
        &src,
        &target,
        None,
        None,
        true,
        &mut Scripted::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("refusing to write /dev/sdb") && err.contains("mounted at /media/card"),
        "{err}"
    );
    // Not mounted any more, but the operator says no.
    let mut sys = FakeSys::new(&d.path().join("again"));
    sys.disk("sdb", 128 * MIB, true, 2);
    std::fs::copy(&node, sys.root.join("dev/sdb")).unwrap();
    let mut op = Scripted {
        refuse: true,
        ..Scripted::default()
    };
    let done = batch::burn_generic(
        &sys.sysroot(),
        &src,
        &TargetSpec::Device(sys.dev("sdb")),
        None,
        None,
        false,
        &mut op,
    )
    .unwrap();
    assert!(done.is_none());
    assert!(
        op.asked[0].contains("Generic SD/MMC Reader") && op.asked[0].contains("removable"),
        "{:?}",
        op.asked
    );
    assert_eq!(std::fs::read(sys.root.join("dev/sdb")).unwrap(), before);
    assert_eq!(std::fs::read(&node).unwrap(), before);
}
