//! Verification time: a parameter of every check, never read deep inside.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in whole seconds since the Unix epoch (UTC).
///
/// Every verification function takes one; production passes
/// [`UnixTime::now`], tests pin it to the date a vector was valid at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// `secs` seconds after 1970-01-01T00:00:00Z.
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(secs)
    }

    /// The system clock. Only binaries call this; library code takes a `UnixTime`.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        UnixTime(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    pub(crate) fn from_der_time(t: &x509_cert::time::Time) -> Self {
        UnixTime(t.to_unix_duration().as_secs())
    }
}

impl fmt::Display for UnixTime {
    /// RFC 3339, e.g. `2026-11-23T00:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match der::DateTime::from_unix_duration(Duration::from_secs(self.0)) {
            Ok(dt) => write!(f, "{dt}"),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

/// Check `not_before <= at <= not_after` for `what`.
pub(crate) fn check_window(
    what: &str,
    not_before: UnixTime,
    not_after: UnixTime,
    at: UnixTime,
) -> crate::Result<()> {
    if at < not_before {
        return Err(crate::Error::NotYetValid {
            what: what.to_string(),
            not_before: not_before.to_string(),
            at: at.to_string(),
        });
    }
    if at > not_after {
        return Err(crate::Error::Expired {
            what: what.to_string(),
            not_after: not_after.to_string(),
            at: at.to_string(),
        });
    }
    Ok(())
}
