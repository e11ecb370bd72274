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
/// The device's identity (certificate, key, CA bundle) from manufacturing.
pub const IDENTITY_DIR: &str = "/data/keel/identity";

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
    }
}
