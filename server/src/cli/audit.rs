//! `confidant audit verify`: check an audit log's hash chain.

use std::path::PathBuf;
use std::process::ExitCode;

use confidant_server::audit::{Verdict, verify_file};

/// `confidant audit …`.
#[derive(clap::Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; exit 0 when intact, 1 at the first broken link, 2 when unreadable
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// Hash of the last line as recorded elsewhere earlier (a previous
        /// `verify`'s head, the server's "audit log closed" log line): fails
        /// if that line is no longer in the file, i.e. the file was cut.
        #[arg(long)]
        head: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `audit` subcommand.
pub fn run(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { file, head, json } => {
            let v = match verify_file(&file, head.as_deref()) {
                Ok(v) => v,
                Err(e) => {
                    // Not a verdict on the chain: exit 2, not 1.
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                match &v {
                    Verdict::Intact { lines, head } => println!(
                        "{}: intact, {lines} lines; head seq {} sha256 {}",
                        file.display(),
                        head.seq,
                        head.hash
                    ),
                    Verdict::Broken(b) => println!(
                        "{}: BROKEN at line {}: {}: {}",
                        file.display(),
                        b.line,
                        b.problem,
                        b.detail
                    ),
                }
            }
            Ok(match v {
                Verdict::Intact { .. } => ExitCode::SUCCESS,
                Verdict::Broken(_) => ExitCode::from(1),
            })
        }
    }
}
