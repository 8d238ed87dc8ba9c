//! Shared helpers for the integration tests: locating the default model and
//! the reference files (read from `../shared/`, never copied).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/reference/<name>` parsed as JSON.
pub fn reference(name: &str) -> serde_json::Value {
    let p = workspace().join("../shared/reference").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("reference file is JSON")
}

/// Path of the default model: `CONFIDANT_MODEL`, else what `scripts/fetch-model` prints last.
pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("CONFIDANT_MODEL") {
            return PathBuf::from(p);
        }
        let out = Command::new(workspace().join("scripts/fetch-model"))
            .output()
            .expect("run scripts/fetch-model");
        assert!(
            out.status.success(),
            "scripts/fetch-model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("fetch-model prints the path")
                .trim(),
        )
    })
    .clone()
}

/// The default model's bytes (read once per test binary).
pub fn model_bytes() -> bytes::Bytes {
    static BYTES: OnceLock<bytes::Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| bytes::Bytes::from(std::fs::read(model_path()).expect("read model")))
        .clone()
}
