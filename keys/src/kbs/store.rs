//! The broker's embedded database (SQLite): the model registry (key id →
//! wrapped data key, policy), the enrolled TPM AKs, and the append-only log
//! of every release and refusal.
//!
//! One file, opened by `confidant kbs serve` and by the registry commands
//! (`kbs model add`, `kbs log`) at the same time: WAL journal, a busy
//! timeout, and short transactions. The `events` table refuses UPDATE and
//! DELETE (triggers), so the log is append-only through SQL.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use confidant_attest::UnixTime;
use confidant_attest::tpm::EnrolledAk;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::header::KeyId;
use crate::kek::WrappedKey;

/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    key_id   TEXT PRIMARY KEY NOT NULL,
    wrapped  BLOB NOT NULL,
    policy   TEXT NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tpm_aks (
    ak_name  BLOB PRIMARY KEY NOT NULL,
    record   BLOB NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    source      TEXT,
    route       TEXT NOT NULL,
    key_id      TEXT,
    tee         TEXT,
    measurement TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('release', 'refusal')),
    reason      TEXT NOT NULL,
    detail      TEXT
) STRICT;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the release log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the release log is append-only'); END;
";

/// A registered model: its wrapped data key and the policy (TOML text)
/// that evidence must satisfy before the key is released.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Key id.
    pub key_id: KeyId,
    /// The data key, wrapped by the broker's KEK.
    pub wrapped: WrappedKey,
    /// Policy, in the attest crate's TOML format.
    pub policy_toml: String,
    /// When it was added.
    pub added_at: UnixTime,
}

/// Whether a logged request released a key or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A data key was released.
    Release,
    /// The request was refused.
    Refusal,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Release => "release",
            Outcome::Refusal => "refusal",
        }
    }
}

/// One row of the release log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Row id (increasing).
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Source IP address of the request.
    pub source: Option<String>,
    /// Route (`/kbs/v1/attest`, ...).
    pub route: String,
    /// Key id the request was about, when known.
    pub key_id: Option<String>,
    /// TEE kind, declared or from the evidence.
    pub tee: Option<String>,
    /// Measurements from the evidence (JSON object name → hex), when the
    /// evidence was authentic.
    pub measurement: Option<String>,
    /// Release or refusal.
    pub outcome: Outcome,
    /// `released`, or the reason code sent to the requester.
    pub reason: String,
    /// What the broker learned (policy rules that failed, ...). Never sent
    /// to the requester; never holds key material.
    pub detail: Option<String>,
}

/// A log row to append (the id and time are assigned by [`Store::record`]).
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Source IP address.
    pub source: Option<String>,
    /// Route.
    pub route: &'static str,
    /// Key id.
    pub key_id: Option<String>,
    /// TEE kind.
    pub tee: Option<String>,
    /// Measurements (JSON).
    pub measurement: Option<String>,
    /// Reason code, or `released`.
    pub reason: String,
    /// Internal detail.
    pub detail: Option<String>,
}

/// The broker's database. Cheap to share behind an `Arc`; calls are short
/// and serialised on one connection.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(Error::store("opening the database"))?;
        Self::init(conn, true)
    }

    /// A private in-memory database (tests, one-off tools).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(Error::store("opening the database"))?;
        Self::init(conn, false)
    }

    fn init(conn: Connection, file: bool) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(Error::store("setting the busy timeout"))?;
        if file {
            // WAL lets `kbs model add` and `kbs log` run beside `kbs serve`.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(Error::store("enabling WAL"))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(Error::store("setting synchronous"))?;
        }
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(Error::store("reading the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(Error::invalid(
                "key broker database",
                format!("schema version {version} is newer than this build's {SCHEMA_VERSION}"),
            ));
        }
        conn.execute_batch(SCHEMA)
            .map_err(Error::store("creating the schema"))?;
        conn.execute_batch(super::device::SCHEMA)
            .map_err(Error::store("creating the device schema"))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(Error::store("writing the schema version"))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // statement is atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a model. The policy must parse ([`confidant_attest::Policy::from_toml`];
    /// policies naming `ek_ca_files` are refused: EK CAs belong to TPM
    /// enrolment, not to key release). With `replace`, an existing entry
    /// for the key id is overwritten; without, it is an error.
    pub fn add_model(
        &self,
        wrapped: &WrappedKey,
        policy_toml: &str,
        replace: bool,
        at: UnixTime,
    ) -> Result<()> {
        confidant_attest::Policy::from_toml(policy_toml)?;
        let key_id = wrapped.key_id().as_str();
        let sql = if replace {
            "INSERT OR REPLACE INTO models (key_id, wrapped, policy, added_at) VALUES (?1, ?2, ?3, ?4)"
        } else {
            "INSERT INTO models (key_id, wrapped, policy, added_at) VALUES (?1, ?2, ?3, ?4)"
        };
        let r = self.conn().execute(
            sql,
            params![key_id, wrapped.to_bytes(), policy_toml, at.as_secs() as i64],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::ModelExists {
                    key_id: key_id.to_owned(),
                })
            }
            Err(e) => Err(Error::store("adding the model")(e)),
        }
    }

    /// The registered model `key_id`, if any.
    pub fn model(&self, key_id: &KeyId) -> Result<Option<ModelEntry>> {
        let row = self
            .conn()
            .query_row(
                "SELECT wrapped, policy, added_at FROM models WHERE key_id = ?1",
                params![key_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(Error::store("reading the model"))?;
        let Some((wrapped, policy_toml, added_at)) = row else {
            return Ok(None);
        };
        let wrapped = WrappedKey::parse(&wrapped)?;
        if wrapped.key_id() != key_id {
            return Err(Error::KeyIdMismatch {
                container: key_id.to_string(),
                wrapped: wrapped.key_id().to_string(),
            });
        }
        Ok(Some(ModelEntry {
            key_id: key_id.clone(),
            wrapped,
            policy_toml,
            added_at: UnixTime::from_secs(added_at.max(0) as u64),
        }))
    }

    /// Key ids of every registered model, sorted.
    pub fn model_ids(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT key_id FROM models ORDER BY key_id")
            .map_err(Error::store("listing models"))?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(Error::store("listing models"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::store("listing models"))?;
        Ok(ids)
    }

    /// Records an AK enrolled by credential activation
    /// ([`confidant_attest::tpm::Enrolment::finish`]); quotes signed by it
    /// are then verified. Re-adding the same AK replaces its record.
    pub fn add_tpm_ak(&self, ak: &EnrolledAk, at: UnixTime) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO tpm_aks (ak_name, record, added_at) VALUES (?1, ?2, ?3)",
                params![ak.name(), ak.to_record(), at.as_secs() as i64],
            )
            .map_err(Error::store("adding the TPM AK"))?;
        Ok(())
    }

    /// The enrolled AK whose TPM Name is `ak_name`, if any.
    pub fn tpm_ak(&self, ak_name: &[u8]) -> Result<Option<EnrolledAk>> {
        let rec = self
            .conn()
            .query_row(
                "SELECT record FROM tpm_aks WHERE ak_name = ?1",
                params![ak_name],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(Error::store("reading the TPM AK"))?;
        match rec {
            None => Ok(None),
            Some(r) => {
                let ak = EnrolledAk::from_trusted_record(&r)?;
                // The row key and the record must agree, or the row was edited.
                if ak.name() != ak_name {
                    return Err(Error::malformed(
                        "TPM AK record",
                        "name differs from its key",
                    ));
                }
                Ok(Some(ak))
            }
        }
    }

    /// Appends a row to the release log at time `at`.
    pub fn record(&self, outcome: Outcome, e: &NewEvent, at: UnixTime) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO events (at, source, route, key_id, tee, measurement, outcome, reason, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    at.as_secs() as i64,
                    e.source,
                    e.route,
                    e.key_id,
                    e.tee,
                    e.measurement,
                    outcome.as_str(),
                    e.reason,
                    e.detail
                ],
            )
            .map_err(Error::store("appending to the release log"))?;
        Ok(())
    }

    /// The `limit` most recent log rows, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT id, at, source, route, key_id, tee, measurement, outcome, reason, detail
                 FROM events ORDER BY id DESC LIMIT ?1",
            )
            .map_err(Error::store("reading the release log"))?;
        let rows = st
            .query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
                let outcome: String = r.get(7)?;
                Ok(Event {
                    id: r.get(0)?,
                    at: r.get::<_, i64>(1)?.max(0) as u64,
                    source: r.get(2)?,
                    route: r.get(3)?,
                    key_id: r.get(4)?,
                    tee: r.get(5)?,
                    measurement: r.get(6)?,
                    outcome: if outcome == "release" {
                        Outcome::Release
                    } else {
                        Outcome::Refusal
                    },
                    reason: r.get(8)?,
                    detail: r.get(9)?,
                })
            })
            .map_err(Error::store("reading the release log"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::store("reading the release log"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataKey, FileKek, Kek};

    fn wrapped(id: &str) -> WrappedKey {
        let dir = tempfile::tempdir().unwrap();
        let kek = FileKek::generate(&dir.path().join("k")).unwrap();
        kek.wrap(&KeyId::new(id).unwrap(), &DataKey::generate().unwrap())
            .unwrap()
    }

    #[test]
    fn registry_and_log() {
        let s = Store::open_in_memory().unwrap();
        let w = wrapped("m1");
        let t = UnixTime::from_secs(1_700_000_000);
        s.add_model(&w, "", false, t).unwrap();
        assert!(matches!(
            s.add_model(&w, "", false, t),
            Err(Error::ModelExists { .. })
        ));
        s.add_model(&w, "tees = [\"tpm\"]", true, t).unwrap();
        let m = s.model(&KeyId::new("m1").unwrap()).unwrap().unwrap();
        assert_eq!(m.wrapped, w);
        assert_eq!(m.policy_toml, "tees = [\"tpm\"]");
        assert!(s.model(&KeyId::new("m2").unwrap()).unwrap().is_none());
        // Policies are checked at registration.
        assert!(
            s.add_model(&wrapped("m3"), "tees = [\"insecure-dev\"]", false, t)
                .is_err()
        );
        assert!(s.add_model(&wrapped("m3"), "bogus = 1", false, t).is_err());
        assert_eq!(s.model_ids().unwrap(), vec!["m1".to_string()]);

        for reason in ["a", "b", "released"] {
            let outcome = if reason == "released" {
                Outcome::Release
            } else {
                Outcome::Refusal
            };
            s.record(
                outcome,
                &NewEvent {
                    route: "/kbs/v1/attest",
                    reason: reason.into(),
                    ..Default::default()
                },
                t,
            )
            .unwrap();
        }
        let ev = s.recent_events(2).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].reason, "released");
        assert_eq!(ev[0].outcome, Outcome::Release);
        assert_eq!(ev[1].reason, "b");
        // Append-only.
        let c = s.conn();
        assert!(c.execute("DELETE FROM events", []).is_err());
        assert!(c.execute("UPDATE events SET reason = 'x'", []).is_err());
    }
}
