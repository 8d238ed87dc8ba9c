//! `confidant-edge`: enrol the device, run the agent, apply signed updates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confidant_edge_agent::agent::Agent;
use confidant_edge_agent::config::{Config, default_tcti};
use confidant_edge_agent::state::StateDir;
use confidant_edge_agent::update::{self, Applied};
use confidant_firmware_update::install::Check;
use confidant_keys::kbs::client::ClientConfig;
use confidant_keys::kbs::device::DeviceId;

/// TPM-backed Confidant edge agent.
#[derive(Parser)]
#[command(name = "confidant-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrol this device's TPM with a key broker (EK certificate, AK proven
    /// by credential activation).
    Enrol {
        /// The key broker, `https://host:port` (`http://` on loopback only).
        #[arg(long, value_name = "URL")]
        kbs: String,
        /// PEM CA certificates for the broker's TLS certificate.
        #[arg(long, value_name = "PEM")]
        kbs_ca: Option<PathBuf>,
        /// Device id (default: `tpm-` + 16 hex digits of the EK certificate's SHA-256).
        #[arg(long, value_name = "ID")]
        device_id: Option<DeviceId>,
        /// Where the agent keeps its identity and sealed key.
        #[arg(
            long,
            value_name = "DIR",
            env = "CONFIDANT_EDGE_STATE",
            default_value = "/var/lib/confidant-edge"
        )]
        state_dir: PathBuf,
        /// TPM TCTI (`device:/dev/tpmrm0`, `swtpm:port=2321`); default
        /// `$TPM2TOOLS_TCTI`, `$TCTI`, else `device:/dev/tpmrm0`.
        #[arg(long, value_name = "TCTI")]
        tcti: Option<String>,
    },
    /// Run the agent: model key (unsealed, or from the broker), local
    /// inference on sensor readings, signed records and check-ins.
    Run {
        /// The agent's configuration (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One reading, one check-in, one record, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Signed updates of the agent and its models (`[update]` of the configuration).
    Update {
        /// The agent's configuration (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[command(subcommand)]
        action: UpdateAction,
    },
}

#[derive(Subcommand)]
enum UpdateAction {
    /// Say which targets have an installable release.
    Check,
    /// Install newer releases on trial (TPM anti-rollback counter checked).
    Apply,
    /// Confirm the versions on trial (advances the TPM counters).
    MarkGood,
    /// Count a start; roll back versions not confirmed in time.
    Boot,
    /// Slot state.
    Status,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONFIDANT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confidant-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Enrol {
            kbs,
            kbs_ca,
            device_id,
            state_dir,
            tcti,
        } => {
            let mut c = ClientConfig::new(kbs);
            if let Some(p) = kbs_ca {
                c.ca_certs_pem =
                    Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
            }
            let tcti = tcti.unwrap_or_else(default_tcti);
            let id = confidant_edge_agent::enrol::enrol(
                &StateDir::new(&state_dir),
                &tcti,
                &c,
                device_id,
            )?;
            println!(
                "enrolled as {} (AK {}), identity in {}",
                id.device_id,
                id.ak_name,
                state_dir.display()
            );
        }
        Cmd::Run { config, once } => {
            let cfg = Config::load(&config)?;
            if let Some(u) = &cfg.update {
                for (target, d) in update::on_start(u)? {
                    tracing::info!(%target, decision = ?d, "update slots at start");
                }
            }
            let mut agent = Agent::start(cfg)?;
            agent.run(once)?;
        }
        Cmd::Update { config, action } => {
            let cfg = Config::load(&config)?;
            let u = cfg
                .update
                .as_ref()
                .context("the configuration has no [update] section")?;
            match action {
                UpdateAction::Check => {
                    for (target, c) in update::check(u, &cfg.tcti)? {
                        match c {
                            Check::UpToDate(r) => println!("{target}: up to date ({})", r.version),
                            Check::Available { release, installed } => println!(
                                "{target}: {} available (security counter {}), installed {}",
                                release.version,
                                release.security_counter,
                                installed.map_or("nothing".into(), |m| m.version)
                            ),
                        }
                    }
                }
                UpdateAction::Apply => {
                    for a in update::apply(u, &cfg.tcti)? {
                        match a {
                            Applied::UpToDate(t) => println!("{t}: up to date"),
                            Applied::Installed(r) => println!(
                                "{}: installed {} on trial; `confidant-edge update mark-good` once healthy",
                                r.target, r.version
                            ),
                        }
                    }
                }
                UpdateAction::MarkGood => {
                    update::mark_good(u, &cfg.tcti)?;
                    println!("marked good");
                }
                UpdateAction::Boot => {
                    for (t, d) in update::on_start(u)? {
                        println!("{t}: {d:?}");
                    }
                }
                UpdateAction::Status => println!("{}", update::slot_state(u)?),
            }
        }
    }
    Ok(())
}
