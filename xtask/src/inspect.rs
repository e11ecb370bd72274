//! `cargo xtask verify` and `cargo xtask inspect`: check a bundle's
//! signature and hashes, and show what a bundle or a card holds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct Verify {
    /// The bundle (update.fw) to check.
    pub file: PathBuf,
    /// Public key to check against [default: the development key's].
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
}

impl Verify {
    pub fn run(self) -> Result<()> {
        let keys = if self.pubkey.is_empty() {
            let s = crate::keys::signer(None)?;
            eprintln!(
                "keel: checking against the development key ({})",
                s.path.display()
            );
            vec![s.key.verifying_key()]
        } else {
            self.pubkey
                .iter()
                .map(|p| bundle::keys::load_verifying_key(p))
                .collect::<Result<_, _>>()?
        };
        let f = std::fs::File::open(&self.file)
            .with_context(|| format!("opening {}", self.file.display()))?;
        let bad = || format!("{} is not acceptable", self.file.display());
        let mut r =
            bundle::BundleReader::open(std::io::BufReader::new(f), &keys).with_context(bad)?;
        let mut buf = Vec::new();
        let mut chunks = 0;
        while let Some(mut p) = r.next_payload()? {
            while p.next_chunk(&mut buf).with_context(bad)?.is_some() {
                chunks += 1;
            }
        }
        let m = r.manifest().clone();
        r.finish().with_context(bad)?;
        println!(
            "{}: OK (version {} for {}, {chunks} chunks verified)",
            self.file.display(),
            m.version,
            m.board
        );
        Ok(())
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Inspect {
    /// An update bundle (update.fw) or a card image (sdcard.img).
    pub file: PathBuf,
    /// Public key a bundle's signature is checked against [default: the development key's, if there is one].
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
}

impl Inspect {
    pub fn run(self) -> Result<()> {
        let mut magic = [0u8; 8];
        let mut f = std::fs::File::open(&self.file)
            .with_context(|| format!("opening {}", self.file.display()))?;
        std::io::Read::read_exact(&mut f, &mut magic)
            .with_context(|| format!("{} is too short", self.file.display()))?;
        if &magic == bundle::MAGIC {
            let keys = if self.pubkey.is_empty() {
                image_build::keys::development_public(&crate::keys::dev_key_name())
                    .into_iter()
                    .collect()
            } else {
                self.pubkey
                    .iter()
                    .map(|p| bundle::keys::load_verifying_key(p))
                    .collect::<Result<Vec<_>, _>>()?
            };
            inspect_bundle(&self.file, &keys)
        } else {
            inspect_card(&self.file)
        }
    }
}

/// Prints the manifest and whether its signature verifies against `keys`
/// (the payloads are not read: `verify` checks every chunk). The manifest
/// is parsed whether or not it is signed, so its parser is the hardened one
/// the device uses, which refuses and never crashes.
fn inspect_bundle(path: &Path, keys: &[ed25519_dalek::VerifyingKey]) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let header = bundle::Header::read(&mut std::io::BufReader::new(f))
        .with_context(|| format!("reading {}", path.display()))?;
    let signature = match header.verify(keys) {
        Ok(k) => format!("verified (key {})", hex::encode(k.as_bytes())),
        Err(_) if keys.is_empty() => "NOT checked: no key given (--pubkey)".into(),
        Err(_) => "NOT verified by the given key: do not trust what follows".into(),
    };
    println!("signature   {signature}");
    let m = bundle::Manifest::parse(header.manifest_text()?)
        .with_context(|| format!("{} has an invalid manifest", path.display()))?;
    println!("bundle      {}", path.display());
    println!("format      {}", header.format);
    println!("board       {}", m.board);
    println!(
        "version     {} (replaces {} or newer)",
        m.version, m.min_version
    );
    println!("build id    {}", m.build_id);
    println!("chunk size  {} bytes", m.chunk_size);
    for p in &m.payloads {
        println!(
            "payload     {:<8} {:>10} bytes, {:>10} stored ({}), {} chunks",
            p.name,
            p.size,
            p.stored,
            p.compression.name(),
            p.chunks.len()
        );
    }
    println!("signatures  {}", header.signatures.len());
    for s in &header.signatures {
        println!("  key       {}", hex::encode(s.key));
    }
    Ok(())
}

fn inspect_card(path: &Path) -> Result<()> {
    let r = image_build::card::inspect(path)?;
    println!("card        {}", path.display());
    println!("disk id     {:08x}", r.disk_id);
    for p in &r.partitions {
        println!(
            "partition   {} start {:>8} size {:>8.1} MiB type {:#04x}{}",
            p.number,
            p.start_lba,
            (p.sectors * 512) as f64 / 1048576.0,
            p.kind,
            if p.bootable { " active" } else { "" }
        );
    }
    for (slot, release) in &r.slots {
        let Some(release) = release else {
            println!("slot {slot}      (empty)");
            continue;
        };
        let version = release.version().unwrap_or("(no version)");
        let kind = match release.conveniences() {
            Ok(c) if c.is_empty() => "release image".to_string(),
            Ok(c) => format!(
                "development image: {}",
                keel_contract::Convenience::list(&c)
            ),
            Err(e) => format!("unreadable conveniences: {e}"),
        };
        println!("slot {slot}      version {version}, {kind}");
    }
    match &r.boot {
        Ok((backend, s)) => {
            println!(
                "boot state  {backend}: active {} trial {} tries {}",
                s.active,
                s.trial.map_or("none", |t| t.as_str()),
                s.tries
            );
            for slot in keel_contract::Slot::ALL {
                let m = s.mark(slot);
                println!(
                    "  slot {slot}    {}{}",
                    if m.bootable {
                        "complete"
                    } else {
                        "not bootable"
                    },
                    m.image
                        .as_deref()
                        .map(|i| format!(" ({i})"))
                        .unwrap_or_default()
                );
            }
        }
        Err(e) => println!("boot state  unreadable: {e}"),
    }
    Ok(())
}
