//! `confidant apikey`: create, list and revoke API keys.
//!
//! The store is the file a server reads (`[auth] keys_file`, default
//! `api-keys.json` in the state directory); a running server picks up
//! changes within a second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use confidant_server::access::keys::{ApiKey, KeyFile, KeyName, KeyRecord, Limits, Permissions};
use confidant_server::config::ServeConfig;

/// Where the store is: `--store`, else what the server's configuration
/// names, else the default state directory's.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The key store file.
    #[arg(long, env = "CONFIDANT_KEYS_FILE")]
    store: Option<PathBuf>,
    /// The server's TOML configuration (for `[auth] keys_file` and `state_dir`).
    #[arg(long, env = "CONFIDANT_CONFIG")]
    config: Option<PathBuf>,
    /// The server's state directory.
    #[arg(long, env = "CONFIDANT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.store {
            return Ok(p.clone());
        }
        let mut c = match &self.config {
            Some(p) => ServeConfig::from_file(p)?,
            None => ServeConfig::default(),
        };
        if let Some(d) = &self.state_dir {
            c.state_dir = d.clone();
        }
        Ok(c.auth.keys_path_in(&c.state_dir))
    }
}

/// `confidant apikey …`.
#[derive(clap::Subcommand)]
pub enum ApikeyCmd {
    /// Create a key and print it once (it is stored only as a SHA-256)
    Create {
        /// A unique name for the key's holder.
        #[arg(long)]
        name: KeyName,
        /// Requests per minute.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
        rpm: u32,
        /// Prompt plus completion tokens per minute (`max_tokens` is reserved up front).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
        tpm: u32,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: u32,
        /// Comma-separated: chat, detect.
        #[arg(long, default_value = "chat")]
        permissions: Permissions,
        /// Print `{"id","name","key"}` as JSON instead of the bare key.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (never the keys themselves)
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by name or id; a running server refuses it within a second
    Revoke {
        /// The key's name or id (`key_…`).
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs one `apikey` subcommand.
pub fn run(cmd: ApikeyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApikeyCmd::Create {
            name,
            rpm,
            tpm,
            concurrency,
            permissions,
            json,
            store,
        } => {
            let path = store.path()?;
            let key = ApiKey::generate()?;
            let limits = Limits {
                rpm,
                tpm,
                concurrency,
            };
            let rec = KeyFile::modify(&path, |kf| {
                if kf
                    .keys
                    .iter()
                    .any(|k| k.revoked.is_none() && k.name == name)
                {
                    anyhow::bail!(
                        "a live key is already named {}; revoke it first or pick another name",
                        name.as_str()
                    );
                }
                let rec = KeyRecord::new(&key, name, permissions, limits, SystemTime::now())?;
                kf.keys.push(rec.clone());
                Ok(rec)
            })?;
            eprintln!(
                "created {} ({}): permissions {}, {} requests/min, {} tokens/min, {} in flight; store: {}",
                rec.id,
                rec.name.as_str(),
                rec.permissions,
                rec.rpm,
                rec.tpm,
                rec.concurrency,
                path.display()
            );
            eprintln!("the key is shown once, below; only its SHA-256 is kept");
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": rec.id, "name": rec.name, "key": key.expose()})
                );
            } else {
                println!("{}", key.expose());
            }
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCmd::List { json, store } => {
            let path = store.path()?;
            let kf = KeyFile::load(&path)?;
            if json {
                let v: Vec<_> = kf
                    .keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "name": k.name, "permissions": k.permissions,
                            "rpm": k.rpm, "tpm": k.tpm, "concurrency": k.concurrency,
                            "created": k.created, "revoked": k.revoked,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<20} {:<24} {:<12} {:>7} {:>9} {:>5}  {:<24} REVOKED",
                    "ID", "NAME", "PERMISSIONS", "RPM", "TPM", "CONC", "CREATED"
                );
                for k in &kf.keys {
                    println!(
                        "{:<20} {:<24} {:<12} {:>7} {:>9} {:>5}  {:<24} {}",
                        k.id.as_str(),
                        k.name.as_str(),
                        k.permissions.to_string(),
                        k.rpm,
                        k.tpm,
                        k.concurrency,
                        k.created,
                        k.revoked.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCmd::Revoke { key, store } => {
            let path = store.path()?;
            let id = KeyFile::modify(&path, |kf| {
                let k = kf
                    .keys
                    .iter_mut()
                    .find(|k| {
                        k.revoked.is_none() && (k.id.as_str() == key || k.name.as_str() == key)
                    })
                    .ok_or_else(|| anyhow::anyhow!("no live key named or with id {key:?}"))?;
                k.revoked = Some(confidant_server::audit::rfc3339(SystemTime::now()));
                Ok(k.id.clone())
            })?;
            eprintln!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
