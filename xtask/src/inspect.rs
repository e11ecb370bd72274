//! `cargo xtask verify` and `cargo xtask inspect`: check a bundle's
//! signature and hashes, and show what a bundle or a card holds.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

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
            let (k, path, _) = crate::keys::signing_key(None)?;
            eprintln!(
                "keel: checking against the development key ({})",
                path.display()
            );
            vec![k.verifying_key()]
        } else {
            self.pubkey
                .iter()
                .map(|p| bundle::keys::load_verifying_key(p))
                .collect::<Result<_, _>>()?
        };
        let f = std::fs::File::open(&self.file)
            .with_context(|| format!("opening {}", self.file.display()))?;
        let mut r = bundle::BundleReader::open(std::io::BufReader::new(f), &keys)
            .with_context(|| format!("{} is not acceptable", self.file.display()))?;
        let mut buf = Vec::new();
        let mut chunks = 0;
        while let Some(mut p) = r.next_payload()? {
            while p
                .next_chunk(&mut buf)
                .with_context(|| format!("{} is not acceptable", self.file.display()))?
                .is_some()
            {
                chunks += 1;
            }
        }
        let m = r.manifest().clone();
        r.finish()
            .with_context(|| format!("{} is not acceptable", self.file.display()))?;
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
}

impl Inspect {
    pub fn run(self) -> Result<()> {
        let mut magic = [0u8; 8];
        let mut f = std::fs::File::open(&self.file)
            .with_context(|| format!("opening {}", self.file.display()))?;
        std::io::Read::read_exact(&mut f, &mut magic)
            .with_context(|| format!("{} is too short", self.file.display()))?;
        if &magic == bundle::MAGIC {
            inspect_bundle(&self.file)
        } else {
            inspect_card(&self.file)
        }
    }
}

/// Prints the manifest (signature not checked: use `verify` for that).
fn inspect_bundle(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 16 {
        bail!("{} is truncated", path.display());
    }
    let len = u32::from_le_bytes(bytes[12..16].try_into()?) as usize;
    let text = bytes.get(16..16 + len).context("manifest is truncated")?;
    let m = bundle::Manifest::parse(std::str::from_utf8(text)?)?;
    println!("bundle      {}", path.display());
    println!(
        "format      {}",
        u32::from_le_bytes(bytes[8..12].try_into()?)
    );
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
    let sigs = bytes.get(16 + len).copied().unwrap_or(0);
    println!("signatures  {sigs}");
    for i in 0..sigs as usize {
        let at = 16 + len + 1 + i * 96;
        if let Some(k) = bytes.get(at..at + 32) {
            println!("  key       {}", hex::encode(k));
        }
    }
    Ok(())
}

fn inspect_card(path: &Path) -> Result<()> {
    let mut card = update::Card::open(path)?;
    println!("card        {}", path.display());
    println!("disk id     {:08x}", card.table().disk_id);
    for p in card.table().partitions.clone() {
        println!(
            "partition   {} start {:>8} size {:>8.1} MiB type {:#04x}{}",
            p.number,
            p.start_lba,
            (p.sectors * 512) as f64 / 1048576.0,
            p.kind,
            if p.bootable { " active" } else { "" }
        );
    }
    for slot in [update::Slot::A, update::Slot::B] {
        let release = crate::apply::slot_release(&mut card, slot);
        let version = release
            .as_deref()
            .and_then(|r| field(r, "version"))
            .unwrap_or("(empty)");
        println!("slot {}      version {version}", slot.letter());
    }
    match crate::apply::boot_flow(&mut card) {
        Ok((flow, name)) => {
            let s = flow.read(&mut card)?;
            let trial = s
                .trial
                .map(|t| t.letter().to_string())
                .unwrap_or_else(|| "none".into());
            println!(
                "boot state  {name}: active {} trial {trial} tries {}",
                s.active.letter(),
                s.tries
            );
        }
        Err(e) => println!("boot state  unreadable: {e:#}"),
    }
    Ok(())
}

pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}
