//! `cargo xtask aws`: what AWS IoT Core needs to accept Keel devices:
//! the just-in-time provisioning template and the commands that register
//! the device CA with it, the fleet provisioning template for claim
//! certificates, and the CA's verification certificate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use factory::aws::{self, Names, Setup};
use factory::ca::DeviceCa;

#[derive(clap::Args, Clone, Debug)]
pub struct Aws {
    #[command(subcommand)]
    pub command: AwsCommand,
}

#[derive(clap::Args, Clone, Debug)]
pub struct NameArgs {
    /// The device policy attached to every thing.
    #[arg(long, default_value = "keel-device")]
    pub policy: String,
    /// The IAM role AWS IoT assumes to create things.
    #[arg(long, default_value = "keel-provisioning")]
    pub role: String,
    #[arg(long, default_value = "REGION")]
    pub region: String,
    #[arg(long, default_value = "ACCOUNT")]
    pub account: String,
    /// Write the JSON files into this directory (default: print them).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum AwsCommand {
    /// Print the just-in-time provisioning template and the AWS CLI
    /// commands that register the device CA for auto-registration.
    JitpTemplate {
        /// The device CA's directory.
        #[arg(long)]
        ca: PathBuf,
        #[command(flatten)]
        names: NameArgs,
    },
    /// Print the fleet provisioning template (provisioning by claim), the
    /// claim certificate's policy and the AWS CLI commands.
    FleetTemplate {
        #[arg(long, default_value = "keel-fleet")]
        template: String,
        #[command(flatten)]
        names: NameArgs,
    },
    /// The verification certificate `aws iot register-ca-certificate`
    /// wants: CN = the account's registration code, signed by the CA.
    VerificationCert {
        #[arg(long)]
        ca: PathBuf,
        /// `aws iot get-registration-code --query registrationCode --output text`
        #[arg(long)]
        code: String,
        /// Writes verification.pem and verification.key here.
        #[arg(long)]
        out: PathBuf,
    },
}

impl NameArgs {
    fn names(&self) -> Names {
        Names {
            policy: self.policy.clone(),
            role: self.role.clone(),
            region: self.region.clone(),
            account: self.account.clone(),
        }
    }

    fn emit(&self, setup: &Setup) -> Result<()> {
        match &self.out {
            Some(dir) => {
                durable::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for f in &setup.files {
                    let p = dir.join(f.name);
                    durable::replace(&p, f.text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", p.display()))?;
                    println!("# wrote {}", p.display());
                }
                println!("# run these from {}:\n", dir.display());
            }
            None => {
                for f in &setup.files {
                    println!("# ---- {} ----\n{}", f.name, f.text);
                }
            }
        }
        print!("{}", setup.commands);
        Ok(())
    }
}

impl Aws {
    pub fn run(self) -> Result<()> {
        match self.command {
            AwsCommand::JitpTemplate { ca, names } => {
                // The CA must exist: the commands point at its ca.pem.
                let opened = DeviceCa::open(&ca)?;
                names.emit(&aws::jitp(
                    &names.names(),
                    &opened.dir.display().to_string(),
                ))
            }
            AwsCommand::FleetTemplate { template, names } => {
                fleet::config::check_template_name(&template).map_err(anyhow::Error::msg)?;
                names.emit(&aws::fleet(&names.names(), &template))
            }
            AwsCommand::VerificationCert { ca, code, out } => {
                let ca = DeviceCa::open(&ca)?;
                let (cert, key) = ca.verification_certificate(code.trim())?;
                durable::create_dir_all(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let (c, k) = (out.join("verification.pem"), out.join("verification.key"));
                durable::replace(&c, cert.as_bytes(), 0o644)
                    .with_context(|| format!("writing {}", c.display()))?;
                durable::replace(&k, key.as_bytes(), 0o600)
                    .with_context(|| format!("writing {}", k.display()))?;
                println!(
                    "{}  (give it to register-ca-certificate --verification-cert)",
                    c.display()
                );
                Ok(())
            }
        }
    }
}
