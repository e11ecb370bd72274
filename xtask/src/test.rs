//! `cargo xtask test`: the whole suite, as CI runs it; `--fast`: every unit
//! and host-level test, without building images or booting QEMU.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Test {
    /// Only the fast tier: unit tests and host-level tests (real processes,
    /// real servers on loopback, cross-checks against reference tools), no
    /// image builds and no QEMU. A few minutes; use it while iterating.
    #[arg(long)]
    pub fast: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

impl Test {
    pub fn run(self) -> Result<()> {
        host::ensure_tools(host::BUILD_TOOLS)?;
        host::ensure_tools(host::CHECK_TOOLS)?;
        let mut args = vec!["test", "--workspace", "--no-fail-fast"];
        if self.fast {
            // The integration crate builds every board and boots QEMU.
            args.extend(["--exclude", "keel-tests"]);
        } else {
            host::ensure_tools(host::ARMV7_TOOLS)?;
            host::ensure_tools(host::AARCH64_TOOLS)?;
            host::ensure_tools(host::QEMU_TOOLS)?;
            for target in [
                "aarch64-unknown-linux-musl",
                "armv7-unknown-linux-gnueabihf",
            ] {
                host::ensure_rust_target(target)?;
            }
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(host::workspace_root())
            .args(&args)
            .args(&self.cargo_args)
            .status()
            .context("running cargo test")?;
        if !status.success() {
            bail!("tests failed");
        }
        Ok(())
    }
}
