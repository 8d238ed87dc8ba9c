//! Shared by the key broker tests: a broker on a loopback port, models to
//! register, swtpm.

#![allow(dead_code)] // each test file uses a subset

pub mod swtpm;

use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use confidant_attest::UnixTime;
use confidant_keys::kbs::Kbs;
use confidant_keys::{
    DataKey, Decryptor, EncryptParams, FileKek, Header, Kek, KeyId, ModelFormat, PlaintextInfo,
    WrappedKey, encrypt,
};
use sha2::{Digest, Sha256};

/// A broker served on 127.0.0.1 from its own thread and runtime; stopped
/// on drop.
pub struct Running {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn start(kbs: Arc<Kbs>, tls: Option<Arc<rustls::ServerConfig>>) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            confidant_keys::kbs::server::serve(kbs, l, tls, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    Running {
        url: format!("{scheme}://127.0.0.1:{port}"),
        stop: Some(tx),
        thread: Some(thread),
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A model encrypted to a file, its wrapped key and the plaintext digest.
pub struct Model {
    pub container: PathBuf,
    pub wrapped: WrappedKey,
    pub sha256: [u8; 32],
}

/// Encrypts `plain` under a fresh data key wrapped by `kek`.
pub fn encrypt_model(dir: &Path, kek: &FileKek, key_id: &str, plain: &[u8]) -> Model {
    let key_id = KeyId::new(key_id).unwrap();
    let key = DataKey::generate().unwrap();
    let info = PlaintextInfo::of(plain);
    let format = ModelFormat::sniff(plain).unwrap_or(ModelFormat::Gguf);
    let container = dir.join(format!("{key_id}.cmdl"));
    encrypt(
        &key,
        &EncryptParams::new(key_id.clone(), format),
        &info,
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

/// Decrypts the container with `key`; returns the plaintext's SHA-256.
pub fn decrypt_sha256(container: &Path, key: &DataKey) -> [u8; 32] {
    let file = std::fs::File::open(container).unwrap();
    let header = Header::read_from(&mut &file).unwrap();
    let d = Decryptor::new(header, key).unwrap();
    let mut out = vec![0u8; d.header().plaintext_len() as usize];
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    d.decrypt_into(&file, &mut out, threads).unwrap();
    Sha256::digest(&out).into()
}

/// A small synthetic GGUF-looking model.
pub fn small_model() -> Vec<u8> {
    let mut b = b"GGUF\x03\0\0\0".to_vec();
    b.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    b
}

/// The default model (`$CONFIDANT_MODEL`, else the last line printed by
/// `scripts/fetch-model`), or `None` with a loud note.
pub fn default_model() -> Option<Vec<u8>> {
    let path = match std::env::var_os("CONFIDANT_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model");
            let out = std::process::Command::new(script).output().ok()?;
            if !out.status.success() {
                eprintln!(
                    "fetch-model failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            PathBuf::from(String::from_utf8(out.stdout).ok()?.lines().last()?)
        }
    };
    let mut v = Vec::new();
    std::fs::File::open(&path).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

/// The default model, or (loudly) a synthetic one when it cannot be had.
pub fn default_or_small_model(test: &str) -> Vec<u8> {
    default_model().unwrap_or_else(|| {
        eprintln!(
            "\n!!!! {test}: default model unavailable (set CONFIDANT_MODEL or run \
             scripts/fetch-model); using a synthetic model !!!!\n"
        );
        small_model()
    })
}

pub fn now() -> UnixTime {
    UnixTime::now()
}
