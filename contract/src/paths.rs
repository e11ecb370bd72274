//! Where things are on a running device. The image builder puts the
//! read-only ones into the root filesystem; init, the agent and the tests
//! use the same constants.

// --- The read-only root filesystem (signed, part of the slot) ---

/// What the image is ([`crate::release`]).
pub const RELEASE: &str = "/etc/keel/release";
/// Public keys the device accepts update bundles from, one file each.
pub const TRUSTED_KEYS_DIR: &str = "/etc/keel/trusted-keys";
/// The service tree PID 1 supervises (docs/services.md).
pub const SERVICES: &str = "/etc/keel/services.toml";
/// The static network configuration from the board config.
pub const NETWORK: &str = "/etc/keel/network";
/// The agent's settings (`key=value`).
pub const AGENT_CONF: &str = "/etc/keel/agent.conf";
/// The fleet client's settings (TOML, docs/fleet.md).
pub const FLEET_CONF: &str = "/etc/keel/fleet.toml";
/// Further CA certificates (PEM) the device trusts for downloads.
pub const EXTRA_CA_DIR: &str = "/etc/keel/ca-certificates";
/// Present only in the initramfs; selects init's first stage.
pub const INITRAMFS_MARKER: &str = "/etc/keel/initramfs";
/// The initramfs's list of modules to load, in order.
pub const INITRAMFS_MODULES: &str = "/etc/keel/modules.load";
/// The root filesystem's module list, inside `/lib/modules/<release>/`.
pub const ROOTFS_MODULES_FILE: &str = "modules.load";
pub const INIT: &str = "/sbin/init";
pub const AGENT: &str = "/usr/bin/agent";

// --- The writable data partition (kept across updates) ---

pub const DATA: &str = "/data";
/// Keel's own state on the data partition.
pub const DATA_KEEL: &str = "/data/keel";
/// A development override of [`SERVICES`] (docs/services.md).
pub const SERVICES_OVERRIDE: &str = "/data/keel/services.toml";
/// Updates, confirmations and rollbacks, one line each.
pub const EVENTS: &str = "/data/keel/events";
/// The update written to the inactive slot and not yet confirmed.
pub const PENDING: &str = "/data/keel/pending";
/// How many boots in a row ended with init rebooting because its services
/// failed (init/src/escalation.rs).
pub const FAILED_BOOTS: &str = "/data/keel/failed-boots";
pub const FAILED_BOOTS_NAME: &str = "failed-boots";
/// Overrides [`FLEET_CONF`] key by key (docs/fleet.md).
pub const FLEET_CONF_OVERRIDE: &str = "/data/keel/fleet.toml";
/// The fleet client's state: the job in progress, statuses owed to the
/// cloud, settings the cloud changed.
pub const FLEET_STATE_DIR: &str = "/data/keel/fleet";
/// The device's identity (certificate, key, CA bundle), written by
/// manufacturing (`cargo xtask burn --serial`) or by fleet provisioning on
/// first boot. The file names inside it are the `IDENTITY_*` names below.
pub const IDENTITY_DIR: &str = "/data/keel/identity";
/// In [`IDENTITY_DIR`]: the device certificate (PEM), followed by the CA
/// certificates it presents (AWS's just-in-time provisioning wants the
/// registered CA sent along).
pub const IDENTITY_CERTIFICATE: &str = "device.pem";
/// In [`IDENTITY_DIR`]: the device's private key (PEM), mode 0600, root.
pub const IDENTITY_KEY: &str = "device.key";
/// In [`IDENTITY_DIR`]: the CA certificates the broker's certificate must
/// chain to (AWS: Amazon Root CA 1).
pub const IDENTITY_CA_BUNDLE: &str = "ca.pem";
/// In [`IDENTITY_DIR`]: the thing name the cloud gave the device when it
/// provisioned itself by claim (an AWS-issued certificate's CN is not it).
pub const IDENTITY_THING_NAME: &str = "thing-name";
/// The claim credentials for fleet provisioning by claim: the same
/// certificate on every card of a batch, used only to obtain the device's
/// own certificate (docs/manufacturing.md).
pub const CLAIM_DIR: &str = "/data/keel/claim";
/// In [`CLAIM_DIR`]: the claim certificate (PEM).
pub const CLAIM_CERTIFICATE: &str = "claim.pem";
/// In [`CLAIM_DIR`]: the claim certificate's private key (PEM), 0600.
pub const CLAIM_KEY: &str = "claim.key";
/// Where the board's hardware serial number is (the Raspberry Pi's SoC
/// serial, from the firmware's device tree); the default serial a device
/// gives when it provisions itself by claim.
pub const BOARD_SERIAL: &str = "/sys/firmware/devicetree/base/serial-number";

// --- Run time (tmpfs) ---

pub const RUN_DIR: &str = "/run/keel";
/// init's control socket ([`crate::control`]), in [`RUN_DIR`].
pub const CONTROL_SOCKET_NAME: &str = "control.sock";
pub const CONTROL_SOCKET: &str = "/run/keel/control.sock";
/// Exists while init's supervision tree is up and stable, in [`RUN_DIR`].
pub const HEALTHY_NAME: &str = "healthy";
pub const HEALTHY: &str = "/run/keel/healthy";
/// Where init writes the resolver configuration (`/etc/resolv.conf` links here).
pub const RESOLV_CONF: &str = "/run/resolv.conf";

/// A path under [`DATA`] as seen from the data partition's own root
/// (`/data/keel/identity` is `keel/identity` there): where the host writes
/// onto a card's data partition. `None` for a path outside [`DATA`].
pub fn on_data_partition(path: &str) -> Option<&str> {
    path.strip_prefix(DATA)?
        .strip_prefix('/')
        .filter(|p| !p.is_empty())
}

/// The paths above inside a tree rooted at `root` (a root filesystem
/// being assembled, or a test's temporary directory).
pub fn under(root: &std::path::Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_names_agree() {
        assert_eq!(CONTROL_SOCKET, format!("{RUN_DIR}/{CONTROL_SOCKET_NAME}"));
        assert_eq!(HEALTHY, format!("{RUN_DIR}/{HEALTHY_NAME}"));
        assert_eq!(SERVICES_OVERRIDE, format!("{DATA_KEEL}/services.toml"));
        assert!(EVENTS.starts_with(DATA_KEEL) && PENDING.starts_with(DATA_KEEL));
        assert_eq!(on_data_partition(IDENTITY_DIR), Some("keel/identity"));
        assert_eq!(on_data_partition(CLAIM_DIR), Some("keel/claim"));
        assert_eq!(on_data_partition(DATA), None);
        assert_eq!(on_data_partition("/database"), None);
        assert_eq!(on_data_partition(RELEASE), None);
    }
}
