//! Anti-rollback security counters: one monotonic counter per artifact
//! kind, separate from the version string. An update whose counter is below
//! the stored one is refused even when it is correctly signed; the stored
//! counter advances when an update is marked good.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

#[cfg(feature = "tpm")]
pub mod tpm;

/// What an artifact is; derived from its TUF target path prefix and used as
/// the counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArtifactKind {
    /// `server/*`: the `confidant` binary.
    Server,
    /// `edge-agent/*`: the `confidant-edge` binary.
    EdgeAgent,
    /// `models/*`: an encrypted model container.
    Model,
}

impl ArtifactKind {
    /// All kinds, in counter-index order.
    pub const ALL: [Self; 3] = [Self::Server, Self::EdgeAgent, Self::Model];

    /// Name used in target paths, counters and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::EdgeAgent => "edge-agent",
            Self::Model => "models",
        }
    }

    /// The kind a target path belongs to (`server/…`, `edge-agent/…`,
    /// `models/…`), the same prefixes the delegations use.
    pub fn from_target(path: &str) -> Option<Self> {
        let prefix = path.split('/').next()?;
        Self::ALL.into_iter().find(|k| k.as_str() == prefix)
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where counters are kept.
pub trait CounterStore {
    /// The stored counter (0 if never set).
    fn read(&mut self, kind: ArtifactKind) -> Result<u64>;
    /// Raises the counter to `value`; a lower value is refused, an equal one
    /// is a no-op. Durable when it returns.
    fn advance(&mut self, kind: ArtifactKind, value: u64) -> Result<()>;
}

/// Refuses `offered` if it is below the stored counter (the same rule the
/// `no_std` core applies on sensors).
pub fn check(store: &mut dyn CounterStore, kind: ArtifactKind, offered: u64) -> Result<()> {
    let stored = store.read(kind)?;
    confidant_update_core::check_counter(stored, offered).map_err(|_| Error::SecurityCounter {
        kind: kind.to_string(),
        stored,
        offered,
    })
}

/// Counters in files (`<dir>/<kind>.counter`, decimal), each replaced
/// atomically with fsync. For hosts without a TPM; whoever can write the
/// directory can reset it, so keep it on a path only the updater owns.
#[derive(Debug, Clone)]
pub struct FileCounters {
    dir: PathBuf,
}

impl FileCounters {
    /// Counters under `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        crate::fsutil::create_dir_durable(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, kind: ArtifactKind) -> PathBuf {
        self.dir.join(format!("{kind}.counter"))
    }
}

impl CounterStore for FileCounters {
    fn read(&mut self, kind: ArtifactKind) -> Result<u64> {
        let p = self.path(kind);
        match std::fs::read_to_string(&p) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| Error::malformed(p.display().to_string(), "counter is not a number")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("reading", &p)(e)),
        }
    }

    fn advance(&mut self, kind: ArtifactKind, value: u64) -> Result<()> {
        let stored = self.read(kind)?;
        if value < stored {
            return Err(Error::SecurityCounter {
                kind: kind.to_string(),
                stored,
                offered: value,
            });
        }
        if value > stored {
            write_atomic(&self.path(kind), format!("{value}\n").as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_counter_is_monotonic_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = FileCounters::new(dir.path()).unwrap();
        assert_eq!(c.read(ArtifactKind::Server).unwrap(), 0);
        c.advance(ArtifactKind::Server, 3).unwrap();
        c.advance(ArtifactKind::Server, 3).unwrap();
        assert!(matches!(
            c.advance(ArtifactKind::Server, 2),
            Err(Error::SecurityCounter {
                stored: 3,
                offered: 2,
                ..
            })
        ));
        let mut again = FileCounters::new(dir.path()).unwrap();
        assert_eq!(again.read(ArtifactKind::Server).unwrap(), 3);
        assert_eq!(again.read(ArtifactKind::Model).unwrap(), 0);
        assert!(check(&mut again, ArtifactKind::Server, 2).is_err());
        assert!(check(&mut again, ArtifactKind::Server, 3).is_ok());
    }

    #[test]
    fn kinds_come_from_target_paths() {
        assert_eq!(
            ArtifactKind::from_target("server/confidant"),
            Some(ArtifactKind::Server)
        );
        assert_eq!(
            ArtifactKind::from_target("edge-agent/x"),
            Some(ArtifactKind::EdgeAgent)
        );
        assert_eq!(
            ArtifactKind::from_target("models/m.cmdl"),
            Some(ArtifactKind::Model)
        );
        assert_eq!(ArtifactKind::from_target("other/x"), None);
    }
}
