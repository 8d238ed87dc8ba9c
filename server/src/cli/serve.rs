//! `confidant serve`: the OpenAI-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use confidant_attest::attester::{self, Attester, Choice};
use confidant_client::{ModelInfo, ServedConfig};
use confidant_inference::engine::ProcessorFactory;
use confidant_inference::model::{BackendKind, LoadOptions};
use confidant_keys::kbs::client::{ClientConfig, fetch_data_key};
use confidant_keys::{DataKey, Decryptor, Header, HpkeKeyPair, KeyId};
use confidant_server::attestation::AttestationService;
use confidant_server::config::{AttesterKind, ServeConfig};
use confidant_server::locked::LockedBuffer;
use confidant_server::state::AppState;
use confidant_server::tls::{ConnLimits, TlsIdentity};
use sha2::{Digest, Sha256};

/// Flags and `CONFIDANT_*` variables; each overrides the config file.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONFIDANT_CONFIG")]
    config: Option<PathBuf>,
    /// GGUF model file.
    #[arg(long, env = "CONFIDANT_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CONFIDANT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Model id clients use.
    #[arg(long, env = "CONFIDANT_MODEL_ID")]
    model_id: Option<String>,
    /// Backend: auto, native or candle.
    #[arg(long, env = "CONFIDANT_BACKEND")]
    backend: Option<BackendKind>,
    /// Compute threads (0: one per core).
    #[arg(long, env = "CONFIDANT_THREADS")]
    threads: Option<usize>,
    /// Cap on the context length.
    #[arg(long, env = "CONFIDANT_MAX_CONTEXT")]
    max_context: Option<usize>,
    /// Sequences generating at once.
    #[arg(long, env = "CONFIDANT_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Requests allowed to wait; more get 503.
    #[arg(long, env = "CONFIDANT_MAX_QUEUE")]
    max_queue: Option<usize>,
    /// Directory for what the server generates itself (the enforced watermark key).
    #[arg(long, env = "CONFIDANT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Watermark every output with this key (`confidant watermark keygen`).
    #[arg(long, env = "CONFIDANT_WATERMARK_KEY")]
    watermark_key: Option<PathBuf>,
    /// Refuse to serve without a watermark (generates a key in the state directory if none is given).
    #[arg(long, env = "CONFIDANT_WATERMARK_ENFORCED")]
    watermark_enforced: bool,
    #[command(flatten)]
    watermark: super::watermark::ParamArgs,
    /// Key broker URL the model key is requested from.
    #[arg(long, env = "CONFIDANT_KBS_URL")]
    kbs_url: Option<String>,
    /// PEM CA certificate for the key broker's TLS certificate.
    #[arg(long, env = "CONFIDANT_KBS_CA")]
    kbs_ca: Option<PathBuf>,
    /// Attester: auto, tpm, configfs or insecure-dev.
    #[arg(long, env = "CONFIDANT_ATTESTER")]
    attester: Option<AttesterKind>,
    /// TPM TCTI (e.g. `swtpm:host=127.0.0.1,port=2321`).
    #[arg(long, env = "CONFIDANT_TPM_TCTI")]
    tpm_tcti: Option<String>,
    /// TPM: the enrolled AK's key blobs (`confidant attest enrol` → ak.keys).
    #[arg(long, env = "CONFIDANT_TPM_AK_KEYS")]
    tpm_ak_keys: Option<PathBuf>,
    /// INSECURE, development only: accept a plaintext GGUF model file.
    #[arg(long, env = "CONFIDANT_INSECURE_PLAINTEXT_MODEL")]
    insecure_plaintext_model: bool,
    /// INSECURE, development only: serve plain HTTP instead of attested TLS.
    #[arg(long, env = "CONFIDANT_INSECURE_PLAIN_HTTP")]
    insecure_plain_http: bool,
    /// Expected SHA-256 (hex) of the plaintext model.
    #[arg(long, env = "CONFIDANT_MODEL_SHA256")]
    model_sha256: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(p) => ServeConfig::from_file(p)?,
            None => ServeConfig::default(),
        };
        if let Some(v) = &self.model {
            c.model = Some(v.clone());
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.model_id {
            c.model_id = Some(v.clone());
        }
        if let Some(v) = self.backend {
            c.backend = v;
        }
        if let Some(v) = self.threads {
            c.threads = v;
        }
        if let Some(v) = self.max_context {
            c.max_context = Some(v);
        }
        if let Some(v) = self.max_batch {
            c.engine.max_batch = v;
        }
        if let Some(v) = self.max_queue {
            c.engine.max_queue = v;
        }
        if let Some(v) = &self.state_dir {
            c.state_dir = v.clone();
        }
        if let Some(v) = &self.kbs_url {
            c.kbs.url = Some(v.clone());
        }
        if let Some(v) = &self.kbs_ca {
            c.kbs.ca_cert = Some(v.clone());
        }
        if let Some(v) = self.attester {
            c.attester = v;
        }
        if let Some(v) = &self.tpm_tcti {
            c.tpm_tcti = Some(v.clone());
        }
        if let Some(v) = &self.tpm_ak_keys {
            c.tpm_ak_keys = Some(v.clone());
        }
        c.insecure_plaintext_model |= self.insecure_plaintext_model;
        c.insecure_plain_http |= self.insecure_plain_http;
        if let Some(v) = &self.model_sha256 {
            c.model_sha256 = Some(v.clone());
        }
        let w = &mut c.watermark;
        if let Some(v) = &self.watermark_key {
            w.key_file = Some(v.clone());
        }
        w.enforced |= self.watermark_enforced;
        let p = self.watermark.apply(w.params()?)?;
        (w.gamma, w.delta, w.context_width, w.scheme, w.min_entropy) = (
            p.gamma(),
            p.delta(),
            p.context_width(),
            p.scheme(),
            p.min_entropy(),
        );
        Ok(c)
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let model_path = config
        .model
        .clone()
        .context("no model: pass --model PATH, set CONFIDANT_MODEL or `model` in the config")?;
    tracing::info!("configuration:\n{}", config.printable());
    let model_id = config.model_id.clone();
    let watermark = config.watermark.open(&config.state_dir)?;
    match &watermark {
        Some(w) => tracing::info!(
            key_id = %w.key_id(),
            params = ?w.params(),
            enforced = config.watermark.enforced,
            "every output is watermarked"
        ),
        None => {
            tracing::warn!("outputs are NOT watermarked (no [watermark] key_file, not enforced)")
        }
    }
    if config.insecure_plain_http {
        tracing::warn!(
            "INSECURE: serving plain HTTP; clients cannot verify this server (attestation binds the TLS key)"
        );
    }

    // Keys made in memory, never written anywhere.
    let tls = Arc::new(TlsIdentity::generate().context("cannot create the TLS key")?);
    let hpke = Arc::new(HpkeKeyPair::generate());
    let attester = open_attester(&config)?;
    let served = ServedConfig {
        insecure_plaintext_model: config.insecure_plaintext_model,
        attester: attester
            .as_ref()
            .map_or_else(|| "none".to_owned(), |a| a.name()),
        watermark_enforced: config.watermark.enforced && watermark.is_some(),
        audit_includes_content: config.audit.enabled && config.audit.include_content,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let wm_public = watermark
        .as_ref()
        .and_then(|w| serde_json::to_value(w.public_params()).ok());
    let service = Arc::new(AttestationService::new(
        tls.clone(),
        hpke,
        attester,
        served,
        wm_public,
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = Arc::new(AppState::new(config.clone()));
        state.set_access(confidant_server::access::Access::from_config(&config)?);
        if let Some(w) = &watermark {
            state.set_watermark(w.clone());
        }
        state.set_attestation(service.clone());
        let factory = watermark.map(|w| Arc::new(w) as Arc<dyn ProcessorFactory>);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            tls_spki_sha256 = %hex::encode(tls.spki_sha256()),
            "listening (not ready until the model is loaded)"
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Load in the background: /healthz answers at once, /readyz when loaded.
        let st = state.clone();
        let stop_loader = stop.clone();
        tokio::task::spawn_blocking(move || {
            let r = obtain_and_load(
                &config,
                &model_path,
                model_id,
                factory,
                &service,
                &st,
                &stop_loader,
            );
            match r {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot load the model; not ready");
                    st.set_not_ready(format!("{e:#}"));
                }
            }
        });
        let app = confidant_server::api::router(state.clone());
        let shutdown = async move {
            shutdown().await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        if state.config.insecure_plain_http {
            confidant_server::tls::serve_plain(listener, app, shutdown).await?;
        } else {
            confidant_server::tls::serve(listener, &tls, app, ConnLimits::default(), shutdown)
                .await?;
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Model id: the file name up to its first dot
/// (`SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`).
fn derive_model_id(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

fn open_attester(config: &ServeConfig) -> anyhow::Result<Option<Box<dyn Attester>>> {
    let choice = match config.attester {
        AttesterKind::Auto => Choice::Auto,
        AttesterKind::Configfs => Choice::Configfs(attester::DEFAULT_CONFIGFS_TSM.into()),
        AttesterKind::Tpm => Choice::Tpm(
            config
                .tpm_tcti
                .clone()
                .or_else(attester::default_tcti)
                .unwrap_or_else(|| "device:/dev/tpmrm0".to_owned()),
        ),
        AttesterKind::InsecureDev => {
            tracing::warn!(
                "INSECURE dev attester: this server's evidence proves nothing; only a policy that explicitly allows the dev attester accepts it"
            );
            Choice::InsecureDev
        }
    };
    if let (Choice::Tpm(tcti), Some(keys)) = (&choice, &config.tpm_ak_keys) {
        let blob =
            std::fs::read(keys).with_context(|| format!("cannot read {}", keys.display()))?;
        let keys = attester::TpmKeys::from_bytes(&blob)
            .with_context(|| format!("{}: not an AK key file", keys.display()))?;
        let mut t = attester::TpmAttester::open(tcti)
            .with_context(|| format!("cannot open the TPM at {tcti}"))?;
        t.use_ak(keys);
        tracing::info!(%tcti, "TPM attester with the enrolled AK");
        return Ok(Some(Box::new(t)));
    }
    match attester::detect(&choice) {
        Ok(a) => {
            tracing::info!(attester = %a.name(), "attester ready");
            Ok(Some(a))
        }
        // A plaintext development server may run without any attester; an
        // encrypted model cannot be obtained without one.
        Err(e) if config.insecure_plaintext_model => {
            tracing::warn!(error = %e, "no attester: /v1/attestation will answer 503");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("no attester ({:?}): {e}", config.attester)),
    }
}

/// Obtains the plaintext model in locked memory (from the key broker and
/// the container, or from a plaintext file when the config allows it),
/// loads it, and makes the server ready.
fn obtain_and_load(
    config: &ServeConfig,
    path: &Path,
    model_id: Option<String>,
    factory: Option<Arc<dyn ProcessorFactory>>,
    service: &AttestationService,
    state: &AppState,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open model {}", path.display()))?;
    let mut magic = [0u8; 8];
    let n = std::io::Read::read(&mut file, &mut magic)?;
    let is_container = n == magic.len() && magic == confidant_keys::MAGIC;
    let (plain, sha256, key_id, model_id) = if is_container {
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        let header = Header::read_from(&mut file).map_err(|e| {
            state.metrics.startup_failure("container");
            anyhow::anyhow!("{}: {e}", path.display())
        })?;
        let key_id = header.key_id().clone();
        // Model id: configured, else the container's name metadata, else
        // the GGUF's own `general.name`.
        let model_id =
            model_id.or_else(|| Some(header.name().trim().to_owned()).filter(|n| !n.is_empty()));
        let key = fetch_key_with_retry(config, &key_id, service, state, stop)?;
        state.set_not_ready("decrypting the model");
        let dec = Decryptor::new(header, &key).inspect_err(|_| {
            state.metrics.startup_failure("decrypt");
        })?;
        let len = usize::try_from(dec.header().plaintext_len()).context("model too large")?;
        let mut buf = LockedBuffer::new(len)?;
        let t = std::time::Instant::now();
        let verified = dec
            .decrypt_into(&file, buf.as_mut_slice(), threads)
            .inspect_err(|_| state.metrics.startup_failure("decrypt"))
            .with_context(|| format!("cannot decrypt {}", path.display()))?;
        tracing::info!(
            bytes = len,
            ms = t.elapsed().as_millis() as u64,
            "model decrypted into locked memory"
        );
        (buf, *verified.sha256(), Some(key_id.to_string()), model_id)
    } else {
        if !config.insecure_plaintext_model {
            state.metrics.startup_failure("config");
            anyhow::bail!(
                "{} is not an encrypted model container; a plaintext model needs insecure_plaintext_model = true (development only)",
                path.display()
            );
        }
        tracing::warn!(
            "INSECURE: serving a PLAINTEXT model file (insecure_plaintext_model = true): no key broker, no attestation-gated key release"
        );
        let model_id = model_id.or_else(|| derive_model_id(path));
        let len = usize::try_from(file.metadata()?.len()).context("model too large")?;
        let mut buf = LockedBuffer::new(len)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
        std::io::Read::read_exact(&mut file, buf.as_mut_slice())
            .with_context(|| format!("cannot read model {}", path.display()))?;
        let sha: [u8; 32] = Sha256::digest(buf.as_ref()).into();
        (buf, sha, None, model_id)
    };
    if let Some(want) = &config.model_sha256
        && !want.eq_ignore_ascii_case(&hex::encode(sha256))
    {
        state.metrics.startup_failure("digest");
        anyhow::bail!(
            "model digest {} is not the configured model_sha256 {want}",
            hex::encode(sha256)
        );
    }
    state.set_not_ready("loading the model");
    let opts = LoadOptions {
        backend: config.backend,
        threads: config.threads,
        max_context: config.max_context,
    };
    let loaded = confidant_server::loader::load_engine(
        Bytes::from_owner(plain),
        &opts,
        config.engine.clone(),
        model_id,
        factory,
    )
    .inspect_err(|_| state.metrics.startup_failure("load"))?;
    service.set_model(ModelInfo {
        id: loaded.model_id.clone(),
        sha256: hex::encode(sha256),
        key_id,
    });
    tracing::info!(model = %loaded.model_id, sha256 = %hex::encode(sha256), "ready");
    state.set_ready(loaded.engine, loaded.model_id);
    Ok(())
}

/// Asks the key broker until it releases the key (backoff 1 s doubling up
/// to `kbs.retry_max_secs`), or the server stops.
fn fetch_key_with_retry(
    config: &ServeConfig,
    key_id: &KeyId,
    service: &AttestationService,
    state: &AppState,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<DataKey> {
    let url = config.kbs.url.clone().context(
        "the model is encrypted but no key broker is configured ([kbs] url or --kbs-url)",
    )?;
    let mut kcfg = ClientConfig::new(url.clone());
    kcfg.timeout = Duration::from_secs(config.kbs.timeout_secs.max(1));
    if let Some(ca) = &config.kbs.ca_cert {
        kcfg.ca_certs_pem =
            Some(std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?);
    }
    let spki = service.tls().spki_der().to_vec();
    let hpke = service.hpke().clone();
    let mut wait = Duration::from_secs(1);
    let max_wait = Duration::from_secs(config.kbs.retry_max_secs.max(1));
    loop {
        state.set_not_ready(format!("requesting the model key {key_id} from {url}"));
        let r = service
            .with_attester(|a| fetch_data_key(&kcfg, key_id, a, &spki, &hpke))
            .context("no attester")?;
        match r {
            Ok(k) => {
                tracing::info!(%key_id, kbs = %url, "model key released by the key broker");
                return Ok(k);
            }
            Err(e) => {
                state.metrics.startup_failure("key_broker");
                let reason = format!("key broker {url} did not release {key_id}: {e}");
                tracing::warn!(retry_in_s = wait.as_secs(), "{reason}");
                state.set_not_ready(reason);
            }
        }
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                anyhow::bail!("stopped while waiting for the key broker");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait = (wait * 2).min(max_wait);
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
