//! `confidant verify https://HOST:PORT --policy FILE [--json]`: connects,
//! fetches evidence for its own nonce over that connection, verifies it and
//! its binding to the connection's TLS key, prints the report; exit 0 when
//! accepted, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use confidant_client::conn::{Target, open_verified};
use confidant_client::{ClientPolicy, Error};

/// Flags.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Server URL, `https://HOST:PORT`.
    url: String,
    /// Client policy (attest policy TOML plus an optional `[client]` table).
    #[arg(long)]
    policy: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the verified attestation document here (for `confidant
    /// receipt verify`). Written only when verification passed.
    #[arg(long)]
    save_document: Option<PathBuf>,
    /// Seconds allowed to connect and for the document.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs `confidant verify`.
pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = ClientPolicy::load(&a.policy)?;
    let target = Target::parse(&a.url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(open_verified(
        &target,
        &policy,
        Duration::from_secs(a.timeout),
    ));
    match r {
        Ok(conn) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&conn.report)?);
            } else {
                println!("server:       {}", a.url);
                print!("{}", conn.report);
            }
            if let Some(p) = &a.save_document {
                std::fs::write(p, serde_json::to_vec_pretty(&conn.document)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Refused { report }) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("server:       {}", a.url);
                print!("{report}");
            }
            eprintln!(
                "confidant verify: REFUSED: {}",
                report.failed_rules().join("; ")
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"verdict": "refused", "error": e.to_string()})
                );
            }
            eprintln!("confidant verify: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
