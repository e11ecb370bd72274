//! The seam between the fleet client and the rest of the agent: what the
//! fleet needs to know about the device, and the three things it asks the
//! device to do (update, reboot, apply settings). The agent implements
//! [`Device`] over its store, the applier and init; tests use a fake.

use std::time::Duration;

/// What the device reports to the cloud (shadow `reported` and job status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    /// The running firmware's version (`/etc/keel/release`).
    pub firmware_version: String,
    /// The slot running now: "a" or "b".
    pub running_slot: String,
    /// False while the running slot is on trial (not yet confirmed healthy).
    pub confirmed: bool,
    /// One line on the last update (e.g. "1.4.0 confirmed", "1.5.0 rolled
    /// back: health check failed"); `None` if there never was one.
    pub last_update: Option<String>,
    pub uptime: Duration,
    pub agent_version: String,
    /// Free bytes on /data; `None` if it could not be measured.
    pub data_free_bytes: Option<u64>,
}

/// What became of the update the device last staged, as the fleet sees it
/// after a restart: the job that started it is finished from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// No update is staged or on trial.
    Idle,
    /// Written to the inactive slot, waiting for the reboot into it.
    Staged,
    /// Running the new slot on trial; its health is not decided yet.
    Trial,
    /// The new slot booted and was confirmed (its version).
    Confirmed { version: String },
    /// It did not take: rolled back, abandoned or refused; the reason.
    Failed { reason: String },
}

/// The result of a successful [`Device::start_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStarted {
    /// Written and verified; the device must reboot into it.
    RebootRequired,
    /// The bundle's version is already running: nothing to do.
    AlreadyRunning,
}

/// Why an update could not be applied, in words for the job's
/// `statusDetails` (signature, board, downgrade, download error…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct UpdateError {
    pub reason: String,
}

/// Settings the cloud may change through the shadow's `desired` state
/// (the whitelist, docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The update channel the polling mode follows ("stable", "beta"…).
    pub update_channel: String,
    /// How often the shadow's `reported` state is refreshed.
    pub telemetry_interval: Duration,
    pub log_level: crate::log::Level,
}

/// The device as the fleet client sees it. Calls come from the fleet
/// client's single thread; none of them may block for long except
/// [`Device::start_update`], which reports progress as it goes.
pub trait Device {
    /// The state to report now.
    fn status(&self) -> DeviceStatus;

    /// Downloads the bundle at `url` (HTTPS), checks it (signature, board,
    /// version, and `expected_sha256` of the whole file when given) and
    /// writes it to the inactive slot. `progress` is called with the
    /// percentage done (0–100) as the download goes; the fleet client uses
    /// those calls to keep its connection alive.
    fn start_update(
        &mut self,
        url: &str,
        expected_sha256: Option<[u8; 32]>,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateStarted, UpdateError>;

    /// What became of the last staged update (see [`UpdateOutcome`]).
    fn update_outcome(&self) -> UpdateOutcome;

    /// Reboots into the staged slot. Returns only in tests (a real reboot
    /// never returns; the fleet state is on disk before this is called).
    fn reboot(&mut self);

    /// Settings changed by the cloud; the device applies what it owns
    /// (e.g. the log level of other services). Default: nothing to do.
    fn apply_settings(&mut self, _settings: &Settings) {}
}
