//! Shared by the edge-agent tests: software TPMs (swtpm, each with its own
//! local EK CA), a key broker on a loopback port with a device policy, and
//! encrypted models. Mirrors keys/tests/common.

#![allow(dead_code)] // each test file uses a subset

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use confidant_attest::UnixTime;
use confidant_keys::kbs::{Kbs, KbsConfig, Store, SystemClock};
use confidant_keys::{
    DataKey, EncryptParams, FileKek, Kek, KeyId, ModelFormat, PlaintextInfo, WrappedKey, encrypt,
};
use sha2::{Digest, Sha256};

pub fn have_swtpm() -> bool {
    let ok = Command::new("swtpm").arg("--version").output().is_ok()
        && Command::new("swtpm_setup")
            .arg("--version")
            .output()
            .is_ok();
    if !ok {
        eprintln!(
            "\n!!!! SKIPPED: swtpm/swtpm_setup not installed; run scripts/deps/edge.sh !!!!\n"
        );
    }
    ok
}

/// A software TPM on a free port, its state and its own EK CA in a temp dir.
pub struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dd = d.display();
        std::fs::create_dir_all(d.join("localca")).unwrap();
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::write(
            d.join("swtpm-localca.conf"),
            format!(
                "statedir = {dd}/localca\nsigningkey = {dd}/localca/signkey.pem\n\
                 issuercert = {dd}/localca/issuercert.pem\ncertserial = {dd}/localca/certserial\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("swtpm-localca.options"),
            "--platform-manufacturer Confidant\n--platform-version 2.1\n--platform-model swtpm\n",
        )
        .unwrap();
        std::fs::write(
            d.join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\n\
                 create_certs_tool_config = {dd}/swtpm-localca.conf\n\
                 create_certs_tool_options = {dd}/swtpm-localca.options\n\
                 active_pcr_banks = sha256\n"
            ),
        )
        .unwrap();
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(d.join("state"))
            .arg("--config")
            .arg(d.join("swtpm_setup.conf"))
            .args([
                "--createek",
                "--create-ek-cert",
                "--create-platform-cert",
                "--pcr-banks",
                "sha256",
                "--overwrite",
            ])
            .output()
            .expect("swtpm_setup");
        assert!(
            out.status.success(),
            "swtpm_setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Swtpm { dir, port: 0 };
        for _ in 0..5 {
            s.port = free_port_pair();
            if s.launch() {
                return s;
            }
        }
        panic!("could not start swtpm");
    }

    fn launch(&self) -> bool {
        let dd = self.dir.path().display();
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={dd}/state"))
            .args(["--flags", "startup-clear", "--server"])
            .arg(format!("type=tcp,port={}", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={}", self.port + 1))
            .arg("--daemon")
            .arg("--pid")
            .arg(format!("file={dd}/swtpm.pid"))
            .status()
            .expect("swtpm")
            .success()
    }

    /// Stops only the swtpm this test started, by its pid file.
    fn stop(&self) {
        let pid_file = self.dir.path().join("swtpm.pid");
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let pid = pid.trim().to_owned();
        let _ = Command::new("kill").arg(&pid).status();
        for _ in 0..100 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(pid_file);
    }

    /// A power cycle: the TPM stops and starts again on the same state
    /// (persistent objects and seeds stay, PCRs are reset).
    pub fn power_cycle(&self) {
        self.stop();
        for _ in 0..50 {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart swtpm");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:port={}", self.port)
    }

    /// The PEM certificate of this TPM's EK CA.
    pub fn ek_ca_pem(&self) -> PathBuf {
        self.dir.path().join("localca/issuercert.pem")
    }
}

/// A broker served on 127.0.0.1 from its own thread; stopped on drop.
pub struct Broker {
    pub url: String,
    pub store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes a device policy trusting `ek_cas` (PEM files) and pinning
/// `pcrs` (index → hex), and loads it.
pub fn device_policy(
    dir: &Path,
    ek_cas: &[PathBuf],
    pcrs: &[(u8, String)],
) -> confidant_attest::Policy {
    let mut t = String::from("tees = [\"tpm\"]\n[tpm]\nek_ca_files = [");
    t.push_str(
        &ek_cas
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    t.push_str("]\n");
    for (i, v) in pcrs {
        t.push_str(&format!("measurements.pcr{i} = [\"{v}\"]\n"));
    }
    let p = dir.join(format!("device-policy-{}.toml", rand_suffix()));
    std::fs::write(&p, t).unwrap();
    confidant_attest::Policy::load(&p).expect("device policy")
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom(&mut b);
    hex::encode(b)
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(b)
        .unwrap();
}

/// A broker over the database `db` with the KEK at `kek` and `device_policy`.
pub fn start_broker(
    db: &Path,
    kek: &Path,
    device_policy: Option<confidant_attest::Policy>,
) -> Broker {
    let store = Arc::new(Store::open(db).unwrap());
    let kbs = Arc::new(Kbs::new(
        store.clone(),
        Box::new(FileKek::load(kek).unwrap()),
        KbsConfig {
            device_policy,
            ..KbsConfig::default()
        },
        Arc::new(SystemClock),
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            confidant_keys::kbs::server::serve(kbs, l, None, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    Broker {
        url: format!("http://127.0.0.1:{port}"),
        store,
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// A model encrypted to `dir/<key_id>.cmdl`, its wrapped key and digest.
pub struct Model {
    pub container: PathBuf,
    pub wrapped: WrappedKey,
    pub sha256: [u8; 32],
}

pub fn encrypt_model(dir: &Path, kek: &FileKek, key_id: &str, plain: &[u8]) -> Model {
    let key_id = KeyId::new(key_id).unwrap();
    let key = DataKey::generate().unwrap();
    let format = ModelFormat::sniff(plain).unwrap_or(ModelFormat::Gguf);
    let container = dir.join(format!("{key_id}.cmdl"));
    encrypt(
        &key,
        &EncryptParams::new(key_id.clone(), format),
        &PlaintextInfo::of(plain),
        plain,
        std::io::BufWriter::new(std::fs::File::create(&container).unwrap()),
    )
    .unwrap();
    Model {
        container,
        wrapped: kek.wrap(&key_id, &key).unwrap(),
        sha256: Sha256::digest(plain).into(),
    }
}

/// A small synthetic GGUF-looking model (for tests that never run it).
pub fn small_model() -> Vec<u8> {
    let mut b = b"GGUF\x03\0\0\0".to_vec();
    b.extend((0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    b
}

/// The default model (`$CONFIDANT_MODEL`, else the last line printed by
/// `scripts/fetch-model`).
pub fn default_model() -> Option<Vec<u8>> {
    let path = match std::env::var_os("CONFIDANT_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model");
            let out = Command::new(script).output().ok()?;
            if !out.status.success() {
                return None;
            }
            PathBuf::from(String::from_utf8(out.stdout).ok()?.lines().last()?)
        }
    };
    let mut v = Vec::new();
    std::fs::File::open(&path).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

pub fn now() -> UnixTime {
    UnixTime::now()
}
