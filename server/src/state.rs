//! Shared server state: the engine once loaded, readiness and metrics.

use std::sync::{Arc, Mutex, OnceLock};

use confidant_inference::engine::Engine;
use confidant_inference::watermark::Watermark;

use crate::attestation::AttestationService;
use crate::config::ServeConfig;
use crate::metrics::Metrics;

/// State every handler sees.
pub struct AppState {
    /// Effective configuration.
    pub config: ServeConfig,
    /// The engine, set once the model is loaded (readiness).
    engine: OnceLock<Engine>,
    /// Model id served (set with the engine).
    model_id: OnceLock<String>,
    /// Why the server is not ready yet.
    not_ready: Mutex<String>,
    /// Metrics.
    pub metrics: Metrics,
    /// Unix time of start (OpenAI `created` of the model).
    pub started_unix: u64,
    /// The deployment's watermark, set before the engine starts.
    watermark: OnceLock<Watermark>,
    /// Evidence, keys and receipts (absent without an attester).
    attestation: OnceLock<Arc<AttestationService>>,
    /// API keys, quotas and the audit log; until set, routes that need a
    /// key answer 503.
    access: OnceLock<crate::access::Access>,
}

impl AppState {
    /// State before the model is loaded.
    pub fn new(config: ServeConfig) -> Self {
        Self {
            config,
            engine: OnceLock::new(),
            model_id: OnceLock::new(),
            not_ready: Mutex::new("loading the model".into()),
            metrics: Metrics::default(),
            started_unix: unix_now(),
            watermark: OnceLock::new(),
            attestation: OnceLock::new(),
            access: OnceLock::new(),
        }
    }

    /// Makes the server ready with this engine.
    pub fn set_ready(&self, engine: Engine, model_id: String) {
        let _ = self.model_id.set(model_id);
        let _ = self.engine.set(engine);
    }

    /// Records why the server is not ready.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = reason.into();
    }

    /// The engine, if ready.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.get()
    }

    /// The served model id, if ready.
    pub fn model_id(&self) -> Option<&str> {
        self.model_id.get().map(String::as_str)
    }

    /// Records the watermark every output carries (its public parameters
    /// go into the attestation document; detection uses it).
    pub fn set_watermark(&self, wm: Watermark) {
        let _ = self.watermark.set(wm);
    }

    /// The deployment's watermark, if it has one.
    pub fn watermark(&self) -> Option<&Watermark> {
        self.watermark.get()
    }

    /// Sets the attestation service (documents, receipts).
    pub fn set_attestation(&self, a: Arc<AttestationService>) {
        let _ = self.attestation.set(a);
    }

    /// The attestation service, if the server has an attester.
    pub fn attestation(&self) -> Option<&Arc<AttestationService>> {
        self.attestation.get()
    }

    /// Installs access control (`Access::from_config`), once.
    pub fn set_access(&self, access: crate::access::Access) {
        let _ = self.access.set(access);
    }

    /// Access control, once installed.
    pub fn access(&self) -> Option<&crate::access::Access> {
        self.access.get()
    }

    /// Why the server is not ready.
    pub fn not_ready_reason(&self) -> String {
        self.not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
