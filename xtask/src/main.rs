//! `cargo xtask`: Keel's host command line. Parses flags and dispatches; each
//! command lives in its own module as `run(self)` on its flags struct.

#![forbid(unsafe_code)]

mod apply;
mod aws;
mod bench;
mod build;
mod burn;
mod host;
mod hub;
mod inspect;
mod keys;
mod provision;
mod qemu;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test Keel images",
    version
)]
struct Cli {
    /// Print the full error chain and the commands being run.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build target/images/<board>/sdcard.img (+ .bmap and SHA256SUMS).
    Build(build::Build),
    /// Boot a built image in QEMU with the serial console on this terminal.
    Qemu(qemu::Qemu),
    /// Run the whole test suite: unit tests, every board's image, QEMU boots.
    Test(test::Test),
    /// Manage ed25519 keys that sign update bundles.
    Keys(keys::Keys),
    /// Check an update bundle's signature and every chunk hash.
    Verify(inspect::Verify),
    /// Show an update bundle's manifest, or a card image's slots and boot state.
    Inspect(inspect::Inspect),
    /// Apply an update bundle to a card image's inactive slot, as the device would.
    Apply(apply::Apply),
    /// The cloud side locally: mosquitto (TLS, client certificates, a
    /// per-thing ACL), the shadow and jobs services, an HTTPS bundle server.
    Hub(hub::Hub),
    /// Write an image to cards (or image files), each with its own device
    /// identity; refuses mounted, system, fixed and too-small disks.
    Burn(burn::Burn),
    /// One device identity (key, certificate from a device CA) into a directory.
    Provision(provision::Provision),
    /// AWS IoT set-up: provisioning templates, policies, CLI commands.
    Aws(aws::Aws),
    /// Print speed and memory figures against references measured in the same run.
    Bench(bench::Bench),
    /// (internal) the applier memory probe run by `bench`.
    #[command(hide = true)]
    BenchApply {
        mode: String,
        mib: u64,
        work: std::path::PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(b) => b.run().map(|_| ()),
        Command::Qemu(q) => q.run(),
        Command::Test(t) => t.run(),
        Command::Keys(k) => k.run(),
        Command::Verify(v) => v.run(),
        Command::Inspect(i) => i.run(),
        Command::Apply(a) => a.run(),
        Command::Bench(b) => b.run(),
        Command::Hub(h) => h.run(),
        Command::Burn(b) => b.run(),
        Command::Provision(p) => p.run(),
        Command::Aws(a) => a.run(),
        Command::BenchApply { mode, mib, work } => bench::bench_apply_child(&mode, mib, &work),
    };
    if let Err(e) = result {
        if cli.verbose {
            eprintln!("error: {e:?}");
        } else {
            eprintln!("error: {}", one_line(&e));
        }
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once: library errors
/// often carry their cause's text already.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_said_are_not_repeated() {
        let inner = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(inner)
            .context("cannot read /x: disk on fire")
            .context("applying y");
        assert_eq!(
            super::one_line(&e),
            "applying y: cannot read /x: disk on fire"
        );
    }
}
