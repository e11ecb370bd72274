//! `cargo xtask test`: the whole suite, as CI runs it. Installs what the
//! suite needs, then runs every crate's tests; the integration tests build
//! every board and boot the QEMU boards.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Test {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

impl Test {
    pub fn run(self) -> Result<()> {
        host::ensure_tools(host::BUILD_TOOLS)?;
        host::ensure_tools(host::ARMV7_TOOLS)?;
        host::ensure_tools(host::AARCH64_TOOLS)?;
        host::ensure_tools(host::TEST_TOOLS)?;
        for target in [
            "aarch64-unknown-linux-musl",
            "armv7-unknown-linux-gnueabihf",
        ] {
            host::ensure_rust_target(target)?;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(host::workspace_root())
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(&self.cargo_args)
            .status()
            .context("running cargo test")?;
        if !status.success() {
            bail!("tests failed");
        }
        Ok(())
    }
}
