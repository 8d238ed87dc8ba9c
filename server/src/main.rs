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
    /// Serve the OpenAI-compatible API.
    Serve(cli::serve::ServeArgs),
    /// Generate text once from the command line.
    Generate(cli::generate::GenerateArgs),
    /// Manage key-encryption keys
    Kek {
        #[command(subcommand)]
        cmd: cli::kek::KekCmd,
    },
    /// Encrypt, inspect and decrypt model containers
    Model {
        #[command(subcommand)]
        cmd: cli::model::ModelCmd,
    },
    /// Produce and verify attestation evidence
    Attest {
        #[command(subcommand)]
        cmd: cli::attest::AttestCmd,
    },
    /// Install signed updates and maintain update repositories.
    Update {
        #[command(subcommand)]
        cmd: cli::update::UpdateCmd,
    },
    /// Verify an attested server against a client policy and print the report.
    Verify(cli::verify::VerifyArgs),
    /// Local plain-HTTP endpoint that forwards to an attested server only
    /// over verified connections (for unmodified OpenAI SDKs).
    Proxy(cli::proxy::ProxyArgs),
    /// Check completion receipts.
    Receipt {
        #[command(subcommand)]
        cmd: cli::receipt::ReceiptCmd,
    },
    /// Run the key broker and manage its registry
    Kbs {
        #[command(subcommand)]
        cmd: cli::kbs::KbsCmd,
    },
    /// Generate watermark keys and detect watermarked text
    Watermark {
        #[command(subcommand)]
        cmd: cli::watermark::WatermarkCmd,
    },
    /// Create, list and revoke API keys
    Apikey {
        #[command(subcommand)]
        cmd: cli::apikey::ApikeyCmd,
    },
    /// Verify the audit log's hash chain
    Audit {
        #[command(subcommand)]
        cmd: cli::audit::AuditCmd,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Kek { cmd } => cli::kek::run(cmd),
        Command::Model { cmd } => cli::model::run(cmd),
        Command::Attest { cmd } => cli::attest::run(cmd),
        Command::Update { cmd } => cli::update::run(cmd),
        Command::Kbs { cmd } => cli::kbs::run(cmd),
        Command::Verify(a) => cli::verify::run(a),
        Command::Proxy(a) => cli::proxy::run(a),
        Command::Receipt { cmd } => cli::receipt::run(cmd),
        Command::Watermark { cmd } => cli::watermark::run(cmd),
        Command::Apikey { cmd } => cli::apikey::run(cmd),
        Command::Audit { cmd } => cli::audit::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
