//! Per-source token buckets for the broker's routes.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; each
//! request takes one. Sources are IP addresses, IPv6 ones grouped by /64
//! (one host usually owns a whole /64). Time comes from the broker's
//! [`super::Clock`], so tests drive refills by hand.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// A rate: bursts of `burst` requests, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Bucket size (requests allowed at once). At least 1.
    pub burst: u32,
    /// Tokens added per second (may be fractional; 0 = never refills).
    pub per_second: f64,
}

impl RateLimit {
    /// `burst` at once, then `per_second`.
    pub const fn new(burst: u32, per_second: f64) -> Self {
        RateLimit { burst, per_second }
    }
}

/// Most sources tracked at once; past it, full buckets are forgotten, and
/// if none is full new sources are refused until some refill.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// Token buckets keyed by source.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    pub(crate) fn new(rate: RateLimit) -> Self {
        Limiter {
            rate: RateLimit {
                burst: rate.burst.max(1),
                per_second: if rate.per_second.is_finite() {
                    rate.per_second.max(0.0)
                } else {
                    0.0
                },
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        b.last_ms = now_ms.max(b.last_ms);
    }

    /// Takes a token for `source`, or says how many seconds until one is
    /// available (`u64::MAX` when the bucket never refills).
    pub(crate) fn check(&self, source: IpAddr, now_ms: u64) -> Result<(), u64> {
        let key = source_key(source);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_SOURCES {
            let burst = f64::from(self.rate.burst);
            let rate = self.rate.per_second;
            map.retain(|_, b| {
                let elapsed = now_ms.saturating_sub(b.last_ms) as f64 / 1000.0;
                b.tokens + elapsed * rate < burst
            });
            if map.len() >= MAX_SOURCES {
                return Err(1);
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            last_ms: now_ms,
        });
        self.refill(b, now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.rate.per_second > 0.0 {
            Err(((1.0 - b.tokens) / self.rate.per_second).ceil().max(1.0) as u64)
        } else {
            Err(u64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_sources_are_separate() {
        let l = Limiter::new(RateLimit::new(2, 0.5));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check(a, 0).is_ok());
        assert!(l.check(a, 0).is_ok());
        assert_eq!(l.check(a, 0), Err(2));
        assert!(l.check(b, 0).is_ok(), "another source has its own bucket");
        assert!(l.check(a, 1_000).is_err(), "half a token after 1 s");
        assert!(l.check(a, 2_000).is_ok(), "one token after 2 s");
        assert!(l.check(a, 2_000).is_err());
    }

    #[test]
    fn ipv6_grouped_by_64_and_mapped_v4_is_v4() {
        let l = Limiter::new(RateLimit::new(1, 0.0));
        assert!(l.check("2001:db8::1".parse().unwrap(), 0).is_ok());
        assert_eq!(l.check("2001:db8::2".parse().unwrap(), 0), Err(u64::MAX));
        assert!(l.check("2001:db8:0:1::1".parse().unwrap(), 0).is_ok());
        assert!(l.check("192.0.2.9".parse().unwrap(), 0).is_ok());
        assert!(l.check("::ffff:192.0.2.9".parse().unwrap(), 0).is_err());
    }
}
