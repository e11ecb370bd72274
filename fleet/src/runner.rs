//! The fleet client's I/O loop: one thread that polls the MQTT client,
//! feeds messages to the shadow and jobs state machines, runs what they
//! decide on the [`Device`], and polls the channel manifest when that
//! mode is configured.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqtt::{Event, QoS};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::device::{Device, DeviceStatus, Settings, UpdateStarted};
use crate::identity::{self, CertError};
use crate::jobdoc::UpdateOrder;
use crate::jobs::{Jobs, Step};
use crate::log::{Level, Log};
use crate::poll::{self, Decision, Poller};
use crate::shadow::Shadow;
use crate::store::{self, StoreError};

/// How often owed statuses, trials and status changes are looked at.
const TICK: Duration = Duration::from_secs(2);
/// Events kept while an update runs; a flood beyond it is dropped.
const BACKLOG: usize = 256;
pub const SETTINGS_FILE: &str = "settings.json";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no device identity: {0}; the fleet client stays off (local updates still work)")]
    Identity(#[from] mqtt::TlsError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{0}")]
    BadThingName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSettings {
    update_channel: String,
    telemetry_interval_secs: u64,
    log_level: String,
}

struct Mqtt {
    client: mqtt::Client,
    thing: String,
    shadow: Shadow,
    jobs: Jobs,
    presence: Option<String>,
    /// Why the last connection ended, said again when it is back.
    last_failure: Option<String>,
    jitp_logged: bool,
    last_report: Option<(Instant, DeviceStatus)>,
}

pub struct Runner<D: Device> {
    device: D,
    pub log: Log,
    config: Config,
    mqtt: Option<Mqtt>,
    poller: Option<Poller>,
    trust: net::Trust,
    resolver: net::Resolver,
    /// Events that arrived while an update ran, and whether they were
    /// logged already.
    backlog: VecDeque<(Event, bool)>,
    next_tick: Instant,
    rebooting: bool,
}

pub(crate) fn floor(cert_not_before: Option<i64>, root: &Path) -> SystemTime {
    let release = std::fs::read_to_string(keel_contract::paths::under(
        root,
        keel_contract::paths::RELEASE,
    ))
    .ok()
    .and_then(|t| keel_contract::release::Release::parse(&t).build_time());
    let secs = [
        Some(mqtt::BUILD_EPOCH_FLOOR as i64),
        cert_not_before,
        release,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl<D: Device> Runner<D> {
    /// Reads the configuration under `root` ("/" on the device). `Ok(None)`
    /// (after a log line) when there is none: the caller carries on
    /// without a fleet client.
    pub fn start(root: &Path, device: D, mut log: Log) -> Result<Option<Runner<D>>, FleetError> {
        match Config::load(root)? {
            None => {
                log.info(format_args!(
                    "no fleet configuration ({} or {}); not connecting to a fleet service",
                    keel_contract::paths::FLEET_CONF,
                    keel_contract::paths::FLEET_CONF_OVERRIDE
                ));
                Ok(None)
            }
            Some(config) => Runner::new(config, root, device, log).map(Some),
        }
    }

    pub fn new(
        config: Config,
        root: &Path,
        mut device: D,
        mut log: Log,
    ) -> Result<Runner<D>, FleetError> {
        let mut settings = config.settings.clone();
        let settings_path = config.state_dir.join(SETTINGS_FILE);
        if let Some(saved) = store::load::<Option<SavedSettings>>(&settings_path)? {
            settings.update_channel = saved.update_channel;
            settings.telemetry_interval = Duration::from_secs(saved.telemetry_interval_secs);
            settings.log_level = Level::parse(&saved.log_level).unwrap_or(settings.log_level);
        }
        log.level = settings.log_level;
        device.apply_settings(&settings);
        let status = device.status();
        let outcome = device.update_outcome();
        let mut poller = match &config.polling {
            Some(p) => Some(Poller::open(p.clone(), &config.state_dir)?),
            None => None,
        };
        if let Some(line) = poller
            .as_mut()
            .map(|p| p.settle(&outcome, &status))
            .transpose()?
            .flatten()
        {
            log.info(line);
        }
        // What the polling mode fetches its manifest with: the agent's
        // trust for downloads, plus the fleet's own CA bundle.
        let mut trust = net::Trust::system().unwrap_or_else(|e| {
            log.warn(format_args!("{e}; trusting only the built-in roots"));
            net::Trust::public_roots()
        });
        if config.identity.ca_bundle.exists() {
            if let Err(e) = trust.add_pem_file(&config.identity.ca_bundle) {
                log.warn(e);
            }
        }
        let mqtt = match &config.mqtt {
            None => None,
            Some(m) => {
                let tls = config.identity.client_config(m.port == 443)?;
                let info = identity::inspect(&config.identity.leaf_certificate()?)?;
                // The configured name, else the one the cloud gave at
                // provisioning by claim (an AWS-issued certificate's CN is
                // not the thing name), else the CN manufacturing wrote.
                let stored = crate::provision::stored_thing_name(&config.identity);
                let thing = match (&m.thing_name, stored, info.common_name) {
                    (Some(t), _, _) => t.clone(),
                    (None, Some(t), _) => t,
                    (None, None, Some(cn)) => cn,
                    (None, None, None) => return Err(CertError::NoCommonName.into()),
                };
                crate::config::check_thing_name(&thing).map_err(FleetError::BadThingName)?;
                let mut opts = mqtt::Options::new(&m.endpoint, m.port, &thing, tls)
                    .keep_alive(m.keepalive_secs);
                opts.clock_floor = floor(Some(info.not_before), root);
                let presence = (!m.presence_topic.is_empty())
                    .then(|| m.presence_topic.replace("{thing}", &thing));
                opts.will = presence.as_ref().map(|t| mqtt::Will {
                    topic: t.clone(),
                    payload: br#"{"online":false}"#.to_vec(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                });
                let shadow = Shadow::new(&thing, settings.clone());
                let jobs = Jobs::open(&thing, &config.state_dir)?;
                let mut client = mqtt::Client::new(opts);
                let filters: Vec<String> =
                    shadow.filters().into_iter().chain(jobs.filters()).collect();
                client.subscribe(
                    &filters
                        .iter()
                        .map(|f| (f.as_str(), QoS::AtLeastOnce))
                        .collect::<Vec<_>>(),
                );
                log.info(format_args!(
                    "fleet client for thing {thing} at {}:{}",
                    m.endpoint, m.port
                ));
                Some(Mqtt {
                    client,
                    thing,
                    shadow,
                    jobs,
                    presence,
                    last_failure: None,
                    jitp_logged: false,
                    last_report: None,
                })
            }
        };
        Ok(Runner {
            device,
            log,
            config,
            mqtt,
            poller,
            trust,
            resolver: net::Resolver::default(),
            backlog: VecDeque::new(),
            next_tick: Instant::now(),
            rebooting: false,
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn thing(&self) -> Option<&str> {
        self.mqtt.as_ref().map(|m| m.thing.as_str())
    }

    pub fn settings(&self) -> &Settings {
        &self.config.settings
    }

    /// Whether the device was told to reboot (tests stop there; on a
    /// device the reboot does not return).
    pub fn rebooting(&self) -> bool {
        self.rebooting
    }

    /// Runs until `stop` is set or the device reboots.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) && !self.rebooting {
            self.step(Duration::from_millis(500));
        }
        if let Some(m) = &mut self.mqtt {
            m.client.disconnect();
        }
    }

    /// Does one round of work, waiting up to `timeout` for the network.
    pub fn step(&mut self, timeout: Duration) {
        if self.rebooting {
            return;
        }
        let event = match self.backlog.pop_front() {
            Some((e, logged)) => Some((e, logged)),
            None => match &mut self.mqtt {
                Some(m) => m
                    .client
                    .poll(timeout.min(self.next_tick.saturating_duration_since(Instant::now())))
                    .map(|e| (e, false)),
                None => {
                    std::thread::sleep(timeout.min(TICK));
                    None
                }
            },
        };
        if let Some((e, logged)) = event {
            self.on_event(e, logged);
        }
        if !self.rebooting && Instant::now() >= self.next_tick {
            self.next_tick = Instant::now() + TICK;
            self.tick();
        }
    }

    fn tick(&mut self) {
        let status = self.device.status();
        if let Some(m) = &mut self.mqtt {
            if m.client.is_connected() {
                let outcome = self.device.update_outcome();
                let steps = m
                    .jobs
                    .tick(&outcome, &status)
                    .unwrap_or_else(|e| vec![Step::Log(Level::Error, e.to_string())]);
                self.steps(steps);
                self.report_if_changed(&status);
            }
        }
        let busy = self.mqtt.as_ref().is_some_and(|m| m.jobs.is_busy());
        if !busy && self.poller.as_ref().is_some_and(Poller::due) {
            self.poll_manifest(&status);
        }
    }

    /// Reports when the status changed (uptime aside) or the telemetry
    /// interval passed.
    fn report_if_changed(&mut self, status: &DeviceStatus) {
        let Some(m) = &mut self.mqtt else { return };
        let Some((at, last)) = &m.last_report else {
            return;
        };
        let mut a = status.clone();
        a.uptime = Duration::ZERO;
        let due = at.elapsed() >= m.shadow.settings.telemetry_interval;
        if *last != a || due {
            let out = m.shadow.report(status);
            m.last_report = Some((Instant::now(), a));
            let _ = m
                .client
                .publish(&out.topic, &out.payload, QoS::AtLeastOnce, false);
        }
    }

    fn on_event(&mut self, event: Event, logged: bool) {
        let Some(m) = &mut self.mqtt else { return };
        if !logged {
            note_connection(&mut self.log, m, &event);
        }
        match event {
            Event::Connected { .. } => {
                if let Some(t) = &m.presence {
                    let online = serde_json::json!({"online": true}).to_string();
                    let _ = m
                        .client
                        .publish(t, online.as_bytes(), QoS::AtLeastOnce, true);
                }
                let status = self.device.status();
                let outcome = self.device.update_outcome();
                let mut steps: Vec<Step> = shadow_steps(m.shadow.on_connect());
                m.last_report = None;
                match m.jobs.on_connect(&outcome, &status) {
                    Ok(s) => steps.extend(s),
                    Err(e) => steps.push(Step::Log(Level::Error, e.to_string())),
                }
                self.steps(steps);
            }
            Event::Disconnected { .. } => {}
            Event::Message(p) => {
                let status = self.device.status();
                let steps = if p
                    .topic
                    .starts_with(&format!("$aws/things/{}/shadow/", m.thing))
                {
                    let r = m.shadow.on_message(&p.topic, &p.payload, &status);
                    if r.settings_changed {
                        self.config.settings = m.shadow.settings.clone();
                        self.settings_changed();
                    }
                    let mut steps = shadow_steps(r);
                    if let Some(m) = &mut self.mqtt {
                        if steps.iter().any(|s| matches!(s, Step::Publish(o) if o.topic.ends_with("/shadow/update"))) {
                            let mut a = status.clone();
                            a.uptime = Duration::ZERO;
                            m.last_report = Some((Instant::now(), a));
                        }
                    }
                    std::mem::take(&mut steps)
                } else {
                    match m.jobs.on_message(&p.topic, &p.payload) {
                        Ok(s) => s,
                        Err(e) => vec![Step::Log(Level::Error, e.to_string())],
                    }
                };
                self.steps(steps);
            }
        }
    }

    fn settings_changed(&mut self) {
        let s = &self.config.settings;
        self.log.level = s.log_level;
        let saved = SavedSettings {
            update_channel: s.update_channel.clone(),
            telemetry_interval_secs: s.telemetry_interval.as_secs(),
            log_level: s.log_level.name().into(),
        };
        if let Err(e) = store::save(&self.config.state_dir.join(SETTINGS_FILE), &Some(saved)) {
            self.log.error(e);
        }
        let s = self.config.settings.clone();
        self.device.apply_settings(&s);
    }

    fn steps(&mut self, steps: Vec<Step>) {
        for step in steps {
            if self.rebooting {
                // Nothing after the reboot call: on a device it does not
                // return, and the state on disk says what comes next.
                return;
            }
            match step {
                Step::Log(level, line) => self.log.write(level, format_args!("{line}")),
                Step::Publish(out) => {
                    let Some(m) = &mut self.mqtt else { continue };
                    if let Err(e) =
                        m.client
                            .publish(&out.topic, &out.payload, QoS::AtLeastOnce, false)
                    {
                        // Owed statuses are re-sent after the reconnect.
                        self.log
                            .debug(format_args!("not sent to {}: {e}", out.topic));
                    }
                }
                Step::RunUpdate(order) => {
                    let result = self.update(&order);
                    let Some(m) = &mut self.mqtt else { continue };
                    match m.jobs.after_update(result) {
                        Ok(s) => self.steps(s),
                        Err(e) => self.log.error(e),
                    }
                }
                Step::Reboot => {
                    self.log.info("rebooting into the new slot");
                    self.rebooting = true;
                    self.device.reboot();
                    return;
                }
            }
        }
    }

    /// Runs the device's update, keeping the connection alive and
    /// reporting progress from its progress calls.
    fn update(&mut self, order: &UpdateOrder) -> Result<UpdateStarted, crate::UpdateError> {
        let (mqtt, backlog, device, log) = (
            &mut self.mqtt,
            &mut self.backlog,
            &mut self.device,
            &mut self.log,
        );
        let mut last = 0u8;
        let mut progress = |pct: u8| {
            let Some(m) = mqtt.as_mut() else { return };
            if pct >= last.saturating_add(10) || (pct == 100 && last != 100) {
                last = pct;
                if let Some(out) = m.jobs.progress(pct) {
                    let _ = m
                        .client
                        .publish(&out.topic, &out.payload, QoS::AtLeastOnce, false);
                }
            }
            while backlog.len() < BACKLOG {
                match m.client.poll(Duration::ZERO) {
                    // Said now, handled after the update.
                    Some(e) => {
                        note_connection(log, m, &e);
                        backlog.push_back((e, true));
                    }
                    None => break,
                }
            }
        };
        device.start_update(&order.url, order.sha256_bytes(), &mut progress)
    }

    fn poll_manifest(&mut self, status: &DeviceStatus) {
        let Some(p) = &mut self.poller else { return };
        p.checked();
        let url = p.url(&self.config.settings.update_channel);
        let manifest = match poll::fetch(&url, &self.trust, &self.resolver) {
            Ok(m) => m,
            Err(e) => {
                self.log.warn(format_args!("polling: {e}"));
                return;
            }
        };
        let order = match poll::decide(&manifest, &status.firmware_version, &p.state) {
            Decision::UpToDate => {
                self.log.debug(format_args!(
                    "polling: {} is current",
                    status.firmware_version
                ));
                return;
            }
            Decision::Skipped(v) => {
                self.log.debug(format_args!(
                    "polling: {v} failed here before; not trying it again"
                ));
                return;
            }
            Decision::Update(order) => order,
        };
        let version = manifest.version.clone();
        self.log.info(format_args!(
            "polling: updating to {version} from {}",
            order.url
        ));
        if let Err(e) = p.begin(&version) {
            self.log.error(e);
            return;
        }
        let result = self.update(&order);
        let Some(p) = &mut self.poller else { return };
        let saved = match result {
            Ok(UpdateStarted::RebootRequired) => {
                self.steps(vec![Step::Reboot]);
                Ok(())
            }
            Ok(UpdateStarted::AlreadyRunning) => p.done(),
            Err(e) => {
                self.log.warn(format_args!(
                    "polling: {version} failed: {e}; it will not be tried again"
                ));
                p.failed(&version)
            }
        };
        if let Err(e) = saved {
            self.log.error(e);
        }
    }
}

/// Logs a connection change, saying why the connection had ended when it
/// is back (a just-in-time provisioning close only once).
fn note_connection(log: &mut Log, m: &mut Mqtt, event: &Event) {
    match event {
        Event::Connected { refused } => {
            match m.last_failure.take() {
                Some(why) => log.info(format_args!(
                    "reconnected as {} (the connection had ended: {why})",
                    m.thing
                )),
                None => log.info(format_args!("connected as {}", m.thing)),
            }
            if !refused.is_empty() {
                log.error(format_args!(
                    "the broker refused the subscriptions {refused:?}: the certificate's policy (or ACL) must allow $aws/things/{}/#",
                    m.thing
                ));
            }
        }
        Event::Disconnected {
            error,
            retry_in,
            expected,
        } => {
            if *expected {
                if !m.jitp_logged {
                    m.jitp_logged = true;
                    log.info(format_args!(
                        "the broker closed the first connection right after CONNECT, as AWS IoT does while it registers a new certificate (just-in-time provisioning); retrying in {} s",
                        retry_in.as_secs()
                    ));
                }
            } else {
                log.warn(format_args!(
                    "{error}; retrying in {:.1} s",
                    retry_in.as_secs_f32()
                ));
            }
            m.last_failure = Some(error.to_string());
        }
        Event::Message(_) => {}
    }
}

fn shadow_steps(r: crate::shadow::Reaction) -> Vec<Step> {
    r.log
        .into_iter()
        .map(|(l, s)| Step::Log(l, s))
        .chain(r.publish.into_iter().map(Step::Publish))
        .collect()
}
