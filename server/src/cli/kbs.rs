//! `confidant kbs`: run the key broker and manage its registry
//! (`keys/KBS.md`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use confidant_attest::UnixTime;
use confidant_attest::tpm::EnrolledAk;
use confidant_keys::kbs::{Event, Kbs, KbsConfig, Outcome, RateLimit, Store, SystemClock};
use confidant_keys::{KekRef, KeyId, WrappedKey};

/// Where the registry lives unless `--db` says otherwise.
const DB_ENV: &str = "CONFIDANT_KBS_DB";
const DEFAULT_DB: &str = "confidant-kbs.db";

/// Key broker commands.
#[derive(clap::Subcommand)]
pub enum KbsCmd {
    /// Serve the key broker: release model keys to attested servers.
    Serve {
        /// Address to listen on. Plain HTTP only on loopback; any other
        /// address needs --tls-cert and --tls-key. Port 0 picks a free port
        /// (the address is printed on stdout).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        /// Registry and release log (SQLite; created if missing).
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Key-encryption key the registered keys are wrapped with:
        /// `file:PATH` or a `pkcs11:` URI.
        #[arg(long, value_name = "file:PATH|pkcs11:URI")]
        kek: KekRef,
        /// TLS certificate chain (PEM).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// INSECURE, development only: accept evidence of the insecure dev
        /// attester for every model. Such evidence proves nothing.
        #[arg(long)]
        insecure_allow_dev_attester: bool,
        /// DCAP collateral (QuoteCollateralV3 JSON) for TDX quotes; without
        /// it TDX evidence is refused.
        #[arg(long, value_name = "FILE")]
        tdx_collateral: Option<PathBuf>,
        /// Session time to live, seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        session_ttl: u64,
        /// Challenge nonce time to live, seconds.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        nonce_ttl: u64,
        /// Attest requests allowed at once per source address.
        #[arg(long, value_name = "N", default_value_t = 10)]
        attest_burst: u32,
        /// Attest requests per second per source address, sustained.
        #[arg(long, value_name = "RATE", default_value_t = 1.0)]
        attest_rate: f64,
        /// Device policy (attest TOML): `[tpm] ek_ca_files` are the CAs
        /// device EK certificates must chain to, its PCR rules apply to
        /// every device's quote. Without it devices cannot enrol.
        #[arg(long, value_name = "FILE")]
        device_policy: Option<PathBuf>,
    },
    /// Manage the model registry.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Manage the TPM attestation keys (AKs) whose quotes are verified.
    #[command(subcommand)]
    Ak(AkCmd),
    /// Enrolled edge devices: list, revoke, log.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Show recent releases and refusals, newest first.
    Log {
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Rows to show.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Machine-readable output (a JSON array, with the internal detail).
        #[arg(long)]
        json: bool,
    },
}

/// Registry commands.
#[derive(clap::Subcommand)]
pub enum ModelCmd {
    /// Register a model's wrapped data key and its release policy.
    Add {
        /// Key id of the model (must match the wrapped key's).
        #[arg(long, value_name = "ID")]
        key_id: KeyId,
        /// Wrapped data key (`<model>.cmdl.key`, from `confidant model encrypt`).
        #[arg(long, value_name = "FILE")]
        wrapped: PathBuf,
        /// Policy (attest TOML format) evidence must satisfy. An empty file
        /// is the strict default policy.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Replace an existing entry for this key id.
        #[arg(long)]
        replace: bool,
    },
    /// List registered key ids.
    List {
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
    },
}

/// TPM AK commands.
#[derive(clap::Subcommand)]
pub enum AkCmd {
    /// Trust an AK enrolled by credential activation: the JSON record
    /// `EnrolledAk::to_record` writes (the same file `confidant attest
    /// verify --ak` reads). The record is trusted like a key: add only
    /// records from your own enrolment.
    Add {
        /// The enrolled AK record.
        #[arg(long, value_name = "FILE")]
        record: PathBuf,
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
    },
}

/// Edge device commands.
#[derive(clap::Subcommand)]
pub enum DeviceCmd {
    /// List enrolled devices with their last check-in.
    List {
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Machine-readable output (a JSON array).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: its key requests, check-ins and records are refused
    /// from now on, and its TPM cannot enrol again.
    Revoke {
        /// The device id.
        #[arg(long, value_name = "ID")]
        device_id: confidant_keys::kbs::device::DeviceId,
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
    },
    /// Show recent device requests (enrolments, check-ins, records), newest first.
    Log {
        /// Registry and release log.
        #[arg(long, value_name = "FILE", env = DB_ENV, default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Rows to show.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
}

/// Runs a `kbs` subcommand.
pub fn run(cmd: KbsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KbsCmd::Serve {
            listen,
            db,
            kek,
            tls_cert,
            tls_key,
            insecure_allow_dev_attester,
            tdx_collateral,
            session_ttl,
            nonce_ttl,
            attest_burst,
            attest_rate,
            device_policy,
        } => {
            let config = KbsConfig {
                session_ttl: Duration::from_secs(session_ttl),
                nonce_ttl: Duration::from_secs(nonce_ttl),
                attest_rate: RateLimit::new(attest_burst, attest_rate),
                insecure_allow_dev_attester,
                tdx_collateral: tdx_collateral
                    .map(|p| read_bounded(&p, 4 << 20))
                    .transpose()?,
                device_policy: device_policy
                    .map(|p| {
                        confidant_attest::Policy::load(&p)
                            .with_context(|| format!("loading the device policy {}", p.display()))
                    })
                    .transpose()?,
                ..KbsConfig::default()
            };
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some(confidant_keys::kbs::server::load_tls_config(&c, &k)?),
                _ => None,
            };
            return serve(listen, &db, &kek, tls, config);
        }
        KbsCmd::Model(ModelCmd::Add {
            key_id,
            wrapped,
            policy,
            db,
            replace,
        }) => {
            let w = WrappedKey::read_file(&wrapped)
                .with_context(|| format!("reading {}", wrapped.display()))?;
            if w.key_id() != &key_id {
                bail!(
                    "{} is the wrapped key of {:?}, not {:?}",
                    wrapped.display(),
                    w.key_id().as_str(),
                    key_id.as_str()
                );
            }
            let text = String::from_utf8(read_bounded(&policy, 256 * 1024)?)
                .with_context(|| format!("{} is not UTF-8", policy.display()))?;
            let store = open(&db)?;
            store
                .add_model(&w, &text, replace, UnixTime::now())
                .with_context(|| {
                    format!(
                        "registering {key_id} with policy {} (policies for the key broker \
                         cannot name ek_ca_files or enable insecure-dev)",
                        policy.display()
                    )
                })?;
            println!(
                "registered {key_id} in {} ({} KEK {}, policy {})",
                db.display(),
                w.kind().as_str(),
                hex::encode(w.kek_id()),
                policy.display()
            );
        }
        KbsCmd::Model(ModelCmd::List { db }) => {
            for id in open(&db)?.model_ids()? {
                println!("{id}");
            }
        }
        KbsCmd::Ak(AkCmd::Add { record, db }) => {
            let ak = EnrolledAk::from_trusted_record(&read_bounded(&record, 16 * 1024)?)
                .with_context(|| format!("reading {}", record.display()))?;
            open(&db)?.add_tpm_ak(&ak, UnixTime::now())?;
            println!("trusting TPM AK {}", hex::encode(ak.name()));
        }
        KbsCmd::Device(cmd) => device(cmd)?,
        KbsCmd::Log { db, limit, json } => {
            let events = open(&db)?.recent_events(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in &events {
                    println!("{}", log_line(e));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn device(cmd: DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::List { db, json } => {
            let devices = open(&db)?.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
                return Ok(());
            }
            println!(
                "{:<20}  {:<8}  {:<16}  {:<20}  {:<10}  {:<12}  {:<16}  health",
                "device", "status", "ak", "last check-in", "agent", "model", "slot"
            );
            for d in &devices {
                let c = d.checkin.as_ref();
                let field = |k: &str| {
                    c.and_then(|c| c.get(k))
                        .and_then(|v| v.as_str())
                        .unwrap_or("-")
                        .to_owned()
                };
                let model = field("model_digest");
                println!(
                    "{:<20}  {:<8}  {:<16}  {:<20}  {:<10}  {:<12}  {:<16}  {}",
                    d.device_id.as_str(),
                    if d.revoked_at.is_some() {
                        "REVOKED"
                    } else {
                        "active"
                    },
                    &d.ak_name[..d.ak_name.len().min(16)],
                    d.checkin_at
                        .map(|t| UnixTime::from_secs(t).to_string())
                        .unwrap_or_else(|| "never".into()),
                    field("agent_version"),
                    &model[..model.len().min(12)],
                    field("slot_state"),
                    field("health"),
                );
            }
        }
        DeviceCmd::Revoke { device_id, db } => {
            if !open(&db)?.revoke_device(&device_id, UnixTime::now())? {
                bail!("no device {device_id} in {}", db.display());
            }
            println!("revoked device {device_id}");
        }
        DeviceCmd::Log { db, limit } => {
            for e in open(&db)?.recent_device_events(limit)? {
                println!(
                    "{}  {:<8}  {:<18}  {:<20}  {:<24}  {:<15}  {}",
                    UnixTime::from_secs(e.at),
                    e.outcome,
                    e.reason,
                    e.device_id.as_deref().unwrap_or("-"),
                    e.route,
                    e.source.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or(""),
                );
            }
        }
    }
    Ok(())
}

fn open(db: &Path) -> anyhow::Result<Store> {
    Store::open(db).with_context(|| format!("opening {}", db.display()))
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(buf)
}

/// `time outcome reason key_id tee source measurement` for a terminal.
fn log_line(e: &Event) -> String {
    let outcome = match e.outcome {
        Outcome::Release => "RELEASE",
        Outcome::Refusal => "refusal",
    };
    let measurement = e
        .measurement
        .as_deref()
        .and_then(|m| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok())
        .map(|m| {
            let shown: Vec<String> = m
                .iter()
                .take(2)
                .map(|(k, v)| {
                    let h = v.as_str().unwrap_or("");
                    format!("{k}={}", &h[..h.len().min(16)])
                })
                .collect();
            let more = m.len().saturating_sub(2);
            if more > 0 {
                format!("{} (+{more})", shown.join(" "))
            } else {
                shown.join(" ")
            }
        })
        .unwrap_or_default();
    format!(
        "{}  {outcome:<7}  {:<23}  {:<20}  {:<12}  {:<15}  {measurement}",
        UnixTime::from_secs(e.at),
        e.reason,
        e.key_id.as_deref().unwrap_or("-"),
        e.tee.as_deref().unwrap_or("-"),
        e.source.as_deref().unwrap_or("-"),
    )
}

fn serve(
    listen: SocketAddr,
    db: &Path,
    kek: &KekRef,
    tls: Option<Arc<confidant_keys::kbs::server::ServerConfig>>,
    config: KbsConfig,
) -> anyhow::Result<ExitCode> {
    if tls.is_none() && !listen.ip().is_loopback() {
        bail!("{listen}: plain HTTP is served on loopback only; give --tls-cert and --tls-key");
    }
    let store = Arc::new(open(db)?);
    let kek = kek
        .open()
        .with_context(|| format!("opening the KEK {kek}"))?;
    // Say at start which registered keys this KEK can release.
    let ids = store.model_ids()?;
    for id in &ids {
        let entry = KeyId::new(id)
            .map_err(anyhow::Error::from)
            .and_then(|k| Ok(store.model(&k)?));
        match entry {
            Ok(Some(m)) => match kek.unwrap(&m.wrapped) {
                Ok(_) => tracing::info!(key_id = %id, "registered; the KEK opens its key"),
                Err(e) => {
                    tracing::warn!(key_id = %id, "registered, but the KEK cannot open its key: {e}")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(key_id = %id, "unreadable registry entry: {e:#}"),
        }
    }
    if ids.is_empty() {
        tracing::warn!("the registry is empty: add models with `confidant kbs model add`");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let kbs = Arc::new(Kbs::new(store, kek, config, Arc::new(SystemClock)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        println!("confidant kbs listening on {scheme}://{addr}");
        std::io::stdout().flush()?;
        confidant_keys::kbs::server::serve(kbs, listener, tls, shutdown_signal()).await?;
        tracing::info!("key broker stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
