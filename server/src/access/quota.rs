//! Quotas: per key (requests/min, tokens/min, requests in flight) and per
//! source address (for routes without a key and for failed authentication).
//!
//! Rates use GCRA (governor). A minute's quota may be spent at once (the
//! burst is the whole per-minute limit) and comes back continuously: a key
//! with `rpm = 60` regains one request a second.
//!
//! Tokens are reserved up front: the completion handler charges
//! `prompt tokens + max_tokens` (the effective `max_tokens`: the request's,
//! else what the context and `max_tokens_cap` leave) before the request
//! reaches the engine, as OpenAI counts `max_tokens` against TPM. Nothing is
//! refunded when the completion stops early (GCRA state only moves forward);
//! clients that send a tight `max_tokens` get more requests out of their
//! quota. A request whose reservation exceeds the whole per-minute quota can
//! never pass and is refused without `Retry-After`.
//!
//! Time is a parameter: every limiter takes a governor [`Clock`]; the server
//! uses the monotonic clock, tests a `FakeRelativeClock`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::keys::{KeyId, Limits};
use super::store::ActiveKey;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;
type Keyed<C> = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, StateInformationMiddleware>;

/// Address-table sweeps: every this many checks, entries whose quota has
/// fully come back are dropped, so the table holds only addresses seen in
/// the last refill period.
const SWEEP_EVERY: u64 = 1024;

/// One rate's state for response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// The quota (per minute).
    pub limit: u32,
    /// What can still be spent now.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset: Duration,
}

impl RateInfo {
    fn from_snapshot(limit: u32, s: &StateSnapshot) -> Self {
        let remaining = s.remaining_burst_capacity().min(limit);
        let per = s.quota().replenish_interval();
        Self {
            limit,
            remaining,
            reset: per.saturating_mul(limit - remaining),
        }
    }

    fn exhausted<P: Reference>(limit: u32, nu: &NotUntil<P>, now: P) -> (Self, Duration) {
        let wait = nu.wait_time_from(now);
        let per = nu.quota().replenish_interval();
        let info = Self {
            limit,
            remaining: 0,
            reset: per.saturating_mul(limit).max(wait),
        };
        (info, wait)
    }
}

/// Why a request was refused (429).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Requests per minute spent; retry after the duration.
    Requests(RateInfo, Duration),
    /// Tokens per minute spent; retry after the duration.
    Tokens(RateInfo, Duration),
    /// One request wants more tokens than the whole per-minute quota.
    TooLarge {
        /// Tokens per minute.
        limit: u32,
        /// Tokens the request reserves.
        requested: u64,
    },
    /// Too many requests of this key in flight.
    Concurrency(u32),
    /// The source address's quota (routes without a key, failed keys).
    Address(RateInfo, Duration),
}

impl Denied {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Requests(..) => "requests",
            Self::Tokens(..) => "tokens",
            Self::TooLarge { .. } => "tokens_request_too_large",
            Self::Concurrency(_) => "concurrency",
            Self::Address(..) => "address",
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The quotas of one key.
pub struct KeyQuota<C: Clock = DefaultClock> {
    limits: Limits,
    clock: C,
    requests: Direct<C>,
    tokens: Direct<C>,
    inflight: Arc<Semaphore>,
    /// Last known token state, to report `x-ratelimit-remaining-tokens` on
    /// responses that spend none (GCRA has no read-only peek).
    last_tokens: Mutex<Option<(u32, C::Instant)>>,
}

impl<C: Clock + Clone> KeyQuota<C> {
    /// Fresh quotas for `limits` (each at least 1), on `clock`.
    pub fn new(limits: Limits, clock: C) -> Self {
        let direct = |n: u32| {
            RateLimiter::direct_with_clock(Quota::per_minute(nz(n)), clock.clone())
                .with_middleware::<StateInformationMiddleware>()
        };
        Self {
            requests: direct(limits.rpm),
            tokens: direct(limits.tpm),
            inflight: Arc::new(Semaphore::new(limits.concurrency.max(1) as usize)),
            last_tokens: Mutex::new(None),
            limits,
            clock,
        }
    }

    /// The limits these quotas enforce.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Spends one request.
    pub fn check_request(&self) -> Result<RateInfo, Denied> {
        match self.requests.check() {
            Ok(s) => Ok(RateInfo::from_snapshot(self.limits.rpm, &s)),
            Err(nu) => {
                let (info, wait) = RateInfo::exhausted(self.limits.rpm, &nu, self.clock.now());
                Err(Denied::Requests(info, wait))
            }
        }
    }

    /// Reserves `n` tokens.
    pub fn charge_tokens(&self, n: u64) -> Result<RateInfo, Denied> {
        let limit = self.limits.tpm;
        let too_large = Denied::TooLarge {
            limit,
            requested: n,
        };
        let Some(n32) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 {
                Ok(self.tokens_info())
            } else {
                Err(too_large)
            };
        };
        let now = self.clock.now();
        match self.tokens.check_n(n32) {
            Err(_) => Err(too_large),
            Ok(Ok(s)) => {
                let info = RateInfo::from_snapshot(limit, &s);
                *self.last_tokens.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((info.remaining, now));
                Ok(info)
            }
            Ok(Err(nu)) => {
                let (info, wait) = RateInfo::exhausted(limit, &nu, now);
                Err(Denied::Tokens(info, wait))
            }
        }
    }

    /// Token state without spending: the last reservation's remainder plus
    /// what has come back since.
    pub fn tokens_info(&self) -> RateInfo {
        let limit = self.limits.tpm;
        let per = Duration::from_secs(60) / limit.max(1);
        let last = *self.last_tokens.lock().unwrap_or_else(|p| p.into_inner());
        let remaining = match last {
            None => limit,
            Some((r, at)) => {
                let back: Duration = self.clock.now().duration_since(at).into();
                let back = (back.as_nanos() / per.as_nanos().max(1)).min(u128::from(limit)) as u32;
                r.saturating_add(back).min(limit)
            }
        };
        RateInfo {
            limit,
            remaining,
            reset: per.saturating_mul(limit - remaining),
        }
    }

    /// Takes one of the key's in-flight slots, held until the response has
    /// been sent.
    pub fn acquire(&self) -> Result<OwnedSemaphorePermit, Denied> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Denied::Concurrency(self.limits.concurrency))
    }
}

/// The quotas of every key seen, by id; rebuilt when a key's limits change.
#[derive(Default)]
pub struct KeyQuotas {
    map: Mutex<HashMap<KeyId, Arc<KeyQuota>>>,
}

impl KeyQuotas {
    /// The quotas of `key`.
    pub fn get(&self, key: &ActiveKey) -> Arc<KeyQuota> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&key.id) {
            Some(q) if q.limits() == key.limits => q.clone(),
            _ => {
                let q = Arc::new(KeyQuota::new(key.limits, DefaultClock::default()));
                m.insert(key.id.clone(), q.clone());
                q
            }
        }
    }
}

/// Requests per minute per source address. IPv6 addresses count by /64
/// (one host usually owns a whole /64); IPv4-mapped IPv6 as IPv4.
pub struct AddressLimiter<C: Clock = DefaultClock> {
    limit: u32,
    lim: Keyed<C>,
    checks: AtomicU64,
}

impl<C: Clock> AddressLimiter<C> {
    /// `rpm` per address with bursts of up to `burst`.
    pub fn new(rpm: u32, burst: u32, clock: C) -> Self {
        let quota = Quota::per_minute(nz(rpm)).allow_burst(nz(burst.min(rpm.max(1))));
        let lim: Keyed<C> = RateLimiter::new(quota, HashMapStateStore::default(), clock);
        Self {
            limit: rpm,
            lim,
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one request of `addr` (`None`: the listener did not say; all
    /// such requests share one bucket).
    pub fn check(&self, addr: Option<IpAddr>) -> Result<RateInfo, Denied> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.lim.retain_recent();
            self.lim.shrink_to_fit();
        }
        let key = addr.map_or(IpAddr::from([0u8; 16]), group);
        match self.lim.check_key(&key) {
            Ok(s) => Ok(RateInfo::from_snapshot(self.limit, &s)),
            Err(nu) => {
                let (info, wait) = RateInfo::exhausted(self.limit, &nu, self.lim.clock().now());
                Err(Denied::Address(info, wait))
            }
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.lim.len()
    }
}

fn group(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => a,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// `Retry-After` seconds: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    s.max(1)
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1.5s`, `6m0s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = |ms: u128| {
        let (s, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            format!("{s}s")
        } else {
            format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
        }
    };
    if ms < 60_000 {
        secs(ms)
    } else {
        format!("{}m{}", ms / 60_000, secs(ms % 60_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn quota(rpm: u32, tpm: u32, c: u32, clock: &FakeRelativeClock) -> KeyQuota<FakeRelativeClock> {
        KeyQuota::new(
            Limits {
                rpm,
                tpm,
                concurrency: c,
            },
            clock.clone(),
        )
    }

    #[test]
    fn requests_refill_one_per_interval() {
        let clock = FakeRelativeClock::default();
        let q = quota(3, 100, 1, &clock);
        assert_eq!(q.check_request().unwrap().remaining, 2);
        assert_eq!(q.check_request().unwrap().remaining, 1);
        let last = q.check_request().unwrap();
        assert_eq!(last.remaining, 0);
        assert_eq!(last.reset, Duration::from_secs(60));
        let Err(Denied::Requests(info, wait)) = q.check_request() else {
            panic!("fourth request passed")
        };
        assert_eq!((info.remaining, wait), (0, Duration::from_secs(20)));
        clock.advance(Duration::from_secs(20));
        assert!(q.check_request().is_ok());
        assert!(q.check_request().is_err());
    }

    #[test]
    fn tokens_are_reserved_and_too_large_never_passes() {
        let clock = FakeRelativeClock::default();
        let q = quota(100, 60, 1, &clock);
        assert_eq!(q.tokens_info().remaining, 60);
        assert_eq!(q.charge_tokens(50).unwrap().remaining, 10);
        assert_eq!(q.tokens_info().remaining, 10);
        let Err(Denied::Tokens(_, wait)) = q.charge_tokens(20) else {
            panic!("over the quota")
        };
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(
            q.charge_tokens(61),
            Err(Denied::TooLarge {
                limit: 60,
                requested: 61
            })
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(q.tokens_info().remaining, 20);
        assert!(q.charge_tokens(20).is_ok());
    }

    #[test]
    fn concurrency_slots_come_back_when_dropped() {
        let clock = FakeRelativeClock::default();
        let q = quota(100, 100, 2, &clock);
        let a = q.acquire().unwrap();
        let _b = q.acquire().unwrap();
        assert_eq!(q.acquire().unwrap_err(), Denied::Concurrency(2));
        drop(a);
        assert!(q.acquire().is_ok());
    }

    #[test]
    fn addresses_are_limited_separately_and_v6_by_prefix() {
        let clock = FakeRelativeClock::default();
        let l = AddressLimiter::new(60, 2, clock.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(l.check(Some(a)).is_ok());
        assert!(l.check(Some(a)).is_ok());
        assert!(matches!(l.check(Some(a)), Err(Denied::Address(..))));
        assert!(l.check(Some(b)).is_ok());
        assert!(l.check(Some(b2)).is_ok());
        assert!(l.check(Some(b)).is_err(), "same /64");
        clock.advance(Duration::from_secs(1));
        assert!(l.check(Some(a)).is_ok());
    }

    #[test]
    fn header_texts() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_millis(61_250)), "1m1.25s");
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(20_001)), 21);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
