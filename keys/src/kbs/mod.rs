//! The key broker service (KBS): releases a model's data key to a server
//! whose attestation evidence satisfies the model's policy (DESIGN.md,
//! trust flow step 3). Routes, bodies and reason codes: `keys/KBS.md`.
//!
//! * [`Kbs`] decides: sessions and single-use, expiring challenges;
//!   evidence appraised by `confidant_attest` against the model's policy;
//!   the data key unwrapped with the owner's KEK and sealed with HPKE to the
//!   key bound in the evidence; every release and refusal in the [`Store`].
//! * [`server::serve`] puts it on HTTP(S) (axum; TLS with rustls and the
//!   ring provider).
//! * [`client::fetch_data_key`] is what `confidant serve` calls at start-up.
//! * [`device`]: edge devices enrol (EK certificate, credential
//!   activation), get keys through the same exchange under the device
//!   policy, and send signed check-ins and inference records.
//!
//! Every time the broker reads comes from a [`Clock`], so tests pin and
//! advance it ([`ManualClock`]).

mod appraise;
mod broker;
pub mod client;
pub mod device;
mod limit;
pub mod protocol;
pub mod server;
mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use broker::{Kbs, KbsConfig, Route};
pub use limit::RateLimit;
pub use protocol::{ReasonCode, Tee};
pub use store::{Event, ModelEntry, NewEvent, Outcome, Store};

/// Where the broker gets the time: milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Duration) -> Self {
        ManualClock(AtomicU64::new(start.as_millis() as u64))
    }
    /// A clock reading the system time now (then frozen).
    pub fn starting_now() -> Self {
        ManualClock(AtomicU64::new(SystemClock.now_ms()))
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
