//! `confidant kek`: create key-encryption keys.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use confidant_keys::{FileKek, Kek, Pkcs11Kek, Pkcs11Uri};

/// Key-encryption key commands.
#[derive(clap::Subcommand)]
pub enum KekCmd {
    /// Create a new KEK: a key file (development) or a non-extractable key
    /// inside a PKCS#11 token.
    Generate {
        /// Write a file KEK here (32 random bytes, mode 0600). Refuses to
        /// overwrite an existing file.
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "pkcs11",
            conflicts_with = "pkcs11"
        )]
        out: Option<PathBuf>,
        /// Generate the KEK inside the token named by this `pkcs11:` URI
        /// (`pkcs11:token=T;object=O?module-path=/path/to/module.so`; PIN in
        /// `pin-value=` or $CONFIDANT_PKCS11_PIN).
        #[arg(long, value_name = "URI")]
        pkcs11: Option<String>,
    },
}

/// Runs a `kek` subcommand.
pub fn run(cmd: KekCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KekCmd::Generate {
            out: Some(path), ..
        } => {
            let kek = FileKek::generate(&path)
                .with_context(|| format!("generating {}", path.display()))?;
            println!(
                "wrote file KEK {} (mode 0600, kek id {})",
                path.display(),
                hex::encode(kek.kek_id())
            );
        }
        KekCmd::Generate {
            pkcs11: Some(uri), ..
        } => {
            let uri: Pkcs11Uri = uri.parse()?;
            let kek = Pkcs11Kek::generate(&uri)?;
            let a = kek.attributes()?;
            println!(
                "generated AES-256 KEK {:?} on token {:?} (kek id {}; sensitive={}, extractable={})",
                uri.object(),
                uri.token(),
                hex::encode(kek.kek_id()),
                a.sensitive,
                a.extractable
            );
        }
        KekCmd::Generate { .. } => anyhow::bail!("give --out PATH or --pkcs11 URI"),
    }
    Ok(ExitCode::SUCCESS)
}
