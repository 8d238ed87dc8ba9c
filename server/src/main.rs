//! `confidant`: the Confidant command line (server, key broker, client tools).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Confidential inference server.
#[derive(Parser)]
#[command(name = "confidant", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Each subcommand lives in its own module under `cli/`; a module exposes
    // `Args`/`Cmd` (clap) and `run(..) -> anyhow::Result<ExitCode>`.
    /// Produce and verify attestation evidence
    Attest {
        #[command(subcommand)]
        cmd: cli::attest::AttestCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Attest { cmd } => cli::attest::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
