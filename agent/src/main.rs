//! Keel's device agent: reports what the device runs, applies signed
//! updates to the inactive slot, and confirms or reverts slots.

mod device;

use std::io::Read;
use std::process::ExitCode;

use device::Device;
use update::{Card, Slot};

const USAGE: &str = "usage: agent <command>

commands:
  status                       both slots, the running one, versions and trial state
  update SOURCE [--allow-downgrade] [--reboot] [--ca FILE]...
                               apply a signed bundle (a file, a block device, - for
                               stdin, or an https:// URL) to the inactive slot; it
                               boots next on trial; --reboot then asks init to reboot
                               into it (with the Pi's one-shot '0 tryboot' argument
                               where needed); --ca trusts FILE's CA certificates (PEM)
                               for the download, besides the built-in public roots
                               and /etc/keel/ca-certificates/
  confirm                      mark the running slot good (after the health check)
  revert                       boot the other slot next (cancels a pending trial)
  run                          the boot-time daemon: confirms a slot on trial once init
                               reports the system healthy, reboots if it never does
  --version                    print the agent's version";

/// Where updates, confirmations and rollbacks are recorded (kept across updates).
const EVENTS: &str = "/data/keel/events";
const PENDING: &str = "/data/keel/pending";

fn main() -> ExitCode {
    // Hand-parsed arguments keep the binary small (no clap on the device).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("status") => status(),
        Some("update") => update_cmd(&args[1..]).inspect_err(|e| record_failure(e)),
        Some("confirm") => confirm(),
        Some("revert") => revert(),
        Some("run") => run(),
        Some("--version") => {
            println!("agent {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("--help") | Some("-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn record(line: &str) {
    let _ = std::fs::create_dir_all("/data/keel");
    append_event(line);
    println!("agent: {line}");
}

fn append_event(line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(EVENTS)
    {
        let _ = writeln!(f, "{line}");
        let _ = f.sync_all();
    }
}

/// A failed update is worth reporting too; only on a device, where
/// /data/keel exists (never create it on some other machine).
fn record_failure(e: &str) {
    if std::path::Path::new("/data/keel").is_dir() {
        append_event(&format!("update failed: {}", e.replace('\n', " ")));
    }
}

fn open_card(dev: &Device) -> Result<Card, String> {
    let path = dev.card_path()?;
    Card::open(&path).map_err(|e| e.to_string())
}

fn status() -> Result<(), String> {
    let dev = Device::load()?;
    let booted = dev.booted()?;
    println!("board={}", dev.get("board")?);
    println!("running_slot={}", booted.letter());
    println!("version={}", dev.get("version")?);
    println!("build_id={}", dev.get("build_id")?);
    let mut card = open_card(&dev)?;
    let state = dev.flow()?.read(&mut card).map_err(|e| e.to_string())?;
    println!("active_slot={}", state.active.letter());
    println!(
        "trial_slot={}",
        state
            .trial
            .map(|s| s.letter().to_string())
            .unwrap_or_else(|| "none".into())
    );
    println!("on_trial={}", state.on_trial(booted));
    if let Ok(p) = std::fs::read_to_string(PENDING) {
        println!("pending={}", p.trim());
    }
    Ok(())
}

fn update_cmd(args: &[String]) -> Result<(), String> {
    let mut source = None;
    let mut allow_downgrade = false;
    let mut reboot = false;
    let mut cas = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--allow-downgrade" => allow_downgrade = true,
            "--reboot" => reboot = true,
            "--ca" => cas.push(
                args.next()
                    .ok_or_else(|| format!("--ca needs a FILE\n{USAGE}"))?
                    .clone(),
            ),
            s if source.is_none() => source = Some(s.to_string()),
            s => return Err(format!("unexpected argument '{s}'\n{USAGE}")),
        }
    }
    let source = source.ok_or_else(|| format!("update needs a SOURCE\n{USAGE}"))?;
    let remote = source.contains("://");
    if !cas.is_empty() && !remote {
        return Err("--ca only applies to an https:// SOURCE".into());
    }
    // Fail on a bad URL or CA file before touching the card.
    let download = if remote {
        let mut trust = net::Trust::system().map_err(|e| e.to_string())?;
        for ca in &cas {
            trust
                .add_pem_file(std::path::Path::new(ca))
                .map_err(|e| e.to_string())?;
        }
        net::Url::parse(&source).map_err(|e| e.to_string())?;
        Some(trust)
    } else {
        None
    };
    let dev = Device::load()?;
    let booted = dev.booted()?;
    let trusted = dev.trusted_keys()?;
    let board = dev.get("board")?.to_string();
    let version = dev.get("version")?.to_string();
    let opts = update::ApplyOptions {
        board: &board,
        running_version: &version,
        booted,
        trusted: &trusted,
        allow_downgrade,
    };
    let flow = dev.flow()?;
    let mut card = open_card(&dev)?;
    let applied = if let Some(trust) = download {
        // A download is read once, each chunk checked before it is written
        // (see docs/bundle.md): the device neither stores the bundle nor
        // fetches it twice.
        let body = net::get(&source, &trust, &net::Resolver::default())
            .map_err(|e| format!("update not downloaded: {e}"))?;
        match body.length {
            Some(n) => println!(
                "agent: downloading {} ({:.1} MiB)",
                body.url,
                n as f64 / 1048576.0
            ),
            None => println!("agent: downloading {}", body.url),
        }
        update::apply(body, &mut card, flow.as_ref(), &opts)
    } else if source == "-" {
        update::apply(std::io::stdin().lock(), &mut card, flow.as_ref(), &opts)
    } else {
        let open =
            || std::fs::File::open(&source).map_err(|e| format!("cannot open {source}: {e}"));
        let meta = std::fs::metadata(&source).map_err(|e| format!("cannot open {source}: {e}"))?;
        // A bundle on a block device is padded to the device's size: read
        // exactly the bundle, which the manifest's sizes determine.
        let is_block = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
        let len = if is_block {
            bundle_len(open()?)?
        } else {
            meta.len()
        };
        // A file can be read twice: verify all of it before writing a byte.
        let verified = update::verify(std::io::BufReader::new(open()?).take(len), &opts)
            .map_err(|e| format!("update rejected: {e}"))?;
        update::apply_verified(
            std::io::BufReader::new(open()?).take(len),
            &mut card,
            flow.as_ref(),
            &opts,
            &verified,
        )
    }
    .map_err(|e| format!("update rejected: {e}"))?;
    let _ = std::fs::create_dir_all("/data/keel");
    let _ = std::fs::write(
        PENDING,
        format!(
            "slot={} version={}\n",
            applied.slot.letter(),
            applied.manifest.version
        ),
    );
    record(&format!(
        "update: slot {} now holds version {} ({} bytes written); it boots next on trial",
        applied.slot.letter(),
        applied.manifest.version,
        applied.bytes_written
    ));
    if reboot {
        request_reboot(applied.reboot_arg);
    } else if let Some(arg) = applied.reboot_arg {
        println!("agent: reboot with argument '{arg}' to try it (or pass --reboot)");
    }
    Ok(())
}

/// Total length of the bundle at the start of `r`, from its header and manifest.
fn bundle_len(mut r: impl Read) -> Result<u64, String> {
    let mut head = [0u8; 16];
    r.read_exact(&mut head)
        .map_err(|e| format!("cannot read the bundle header: {e}"))?;
    if &head[..8] != bundle::MAGIC {
        return Err("no Keel bundle at the start of the device".into());
    }
    let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if len > bundle::MAX_MANIFEST {
        return Err("bundle manifest too large".into());
    }
    let mut text = vec![0u8; len as usize];
    r.read_exact(&mut text)
        .map_err(|e| format!("bundle truncated: {e}"))?;
    let mut count = [0u8; 1];
    r.read_exact(&mut count)
        .map_err(|e| format!("bundle truncated: {e}"))?;
    let m = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| bundle::Manifest::parse(t).ok())
        .ok_or("bad manifest")?;
    let stored: u64 = m.payloads.iter().map(|p| p.stored).sum();
    Ok(16 + len as u64 + 1 + count[0] as u64 * 96 + stored)
}

fn confirm() -> Result<(), String> {
    let dev = Device::load()?;
    let booted = dev.booted()?;
    let flow = dev.flow()?;
    let mut card = open_card(&dev)?;
    let state = flow.read(&mut card).map_err(|e| e.to_string())?;
    if !state.on_trial(booted) && state.trial.is_none() {
        println!("agent: slot {} is already confirmed", booted.letter());
        let _ = std::fs::remove_file(PENDING);
        return Ok(());
    }
    flow.write(&mut card, &state.confirm(booted))
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(PENDING);
    record(&format!(
        "confirmed: slot {} version {}",
        booted.letter(),
        dev.get("version")?
    ));
    Ok(())
}

fn revert() -> Result<(), String> {
    let dev = Device::load()?;
    let booted = dev.booted()?;
    let flow = dev.flow()?;
    let mut card = open_card(&dev)?;
    let state = flow.read(&mut card).map_err(|e| e.to_string())?;
    let next = state.revert(booted).map_err(|e| e.to_string())?;
    flow.write(&mut card, &next).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(PENDING);
    record(&format!(
        "reverted: slot {} boots next",
        next.active.letter()
    ));
    Ok(())
}

/// Notes a rollback: an update was pending for a slot the device is not running.
fn note_rollback(booted: Slot) {
    if let Ok(p) = std::fs::read_to_string(PENDING) {
        if !p.contains(&format!("slot={}", booted.letter())) {
            record(&format!(
                "rolled back: pending update ({}) never confirmed; running slot {}",
                p.trim(),
                booted.letter()
            ));
            let _ = std::fs::remove_file(PENDING);
        }
    }
}

/// Settings from /etc/keel/agent.conf (`key=value` lines; all optional).
struct AgentConf {
    /// Seconds a slot on trial may take to become healthy before the agent
    /// reboots (so the bootloader counts another try, then falls back).
    trial_timeout: u64,
}

fn agent_conf() -> AgentConf {
    let text = std::fs::read_to_string("/etc/keel/agent.conf").unwrap_or_default();
    let num = |k: &str, d: u64| {
        device::field(&text, k)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(d)
    };
    AgentConf {
        trial_timeout: num("trial_timeout", 120),
    }
}

/// init keeps this file while the supervision tree is up and stable.
const HEALTHY: &str = "/run/keel/healthy";

fn run() -> Result<(), String> {
    let dev = Device::load()?;
    let booted = dev.booted()?;
    note_rollback(booted);
    let conf = agent_conf();
    let flow = dev.flow()?;
    let started = std::time::Instant::now();
    loop {
        let mut card = open_card(&dev)?;
        let state = flow.read(&mut card).map_err(|e| e.to_string())?;
        drop(card);
        if !state.on_trial(booted) {
            break;
        }
        if std::path::Path::new(HEALTHY).exists() {
            confirm()?;
            break;
        }
        if started.elapsed().as_secs() >= conf.trial_timeout {
            record(&format!(
                "health check failed: slot {} not healthy after {} s on trial; rebooting",
                booted.letter(),
                conf.trial_timeout
            ));
            request_reboot(None);
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    // Nothing else to do yet: stay up as a permanent service.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Asks init for an orderly reboot, passing `arg` to reboot(2) (the Pi's
/// "0 tryboot"): through its control socket, else with SIGTERM (init's
/// reboot signal, which carries no argument).
fn request_reboot(arg: Option<&str>) {
    use std::io::Write;
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect("/run/keel/control.sock") {
        let line = match arg {
            Some(a) => format!("reboot {a}\n"),
            None => "reboot\n".to_string(),
        };
        if s.write_all(line.as_bytes()).is_ok() {
            // Wait for init's answer so the request is not cut short.
            let mut reply = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut reply);
            return;
        }
    }
    // No kill binary on a Keel root filesystem: signal PID 1 directly.
    unsafe_kill_init();
}

fn unsafe_kill_init() {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) with constant arguments; SIGTERM (15) asks init to reboot.
    unsafe {
        kill(1, 15);
    }
}
