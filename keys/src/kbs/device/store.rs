//! The device registry in the broker's database: one row per device
//! holding its EK certificate, the AK bound to it and the device id
//! together, plus revocation, the last check-in and the append-only log of
//! device requests.
//!
//! The binding columns cannot change once written (trigger), and every read
//! re-checks that the AK record names the EK certificate stored beside it:
//! there is no way to hold an AK without its EK.

use confidant_attest::UnixTime;
use confidant_attest::tpm::EnrolledAk;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::protocol::DeviceId;
use crate::error::{Error, Result};
use crate::kbs::Store;

/// Created with the rest of the schema (`Store::open`).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id      TEXT PRIMARY KEY NOT NULL,
    ek_cert        BLOB NOT NULL,
    ek_cert_sha256 BLOB NOT NULL UNIQUE,
    ak_name        BLOB NOT NULL UNIQUE,
    ak_record      BLOB NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    revoked_at     INTEGER,
    last_seq       INTEGER NOT NULL DEFAULT 0,
    checkin        TEXT,
    checkin_at     INTEGER
) STRICT;
CREATE TRIGGER IF NOT EXISTS devices_binding_fixed
    BEFORE UPDATE OF device_id, ek_cert, ek_cert_sha256, ak_name, ak_record ON devices
    BEGIN SELECT RAISE(ABORT, 'a device''s EK and AK binding cannot change'); END;
CREATE TABLE IF NOT EXISTS device_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    source    TEXT,
    route     TEXT NOT NULL,
    device_id TEXT,
    outcome   TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused')),
    reason    TEXT NOT NULL,
    detail    TEXT
) STRICT;
CREATE TRIGGER IF NOT EXISTS device_events_no_update BEFORE UPDATE ON device_events
    BEGIN SELECT RAISE(ABORT, 'the device log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS device_events_no_delete BEFORE DELETE ON device_events
    BEGIN SELECT RAISE(ABORT, 'the device log is append-only'); END;
";

/// An enrolled device.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// Its id.
    pub device_id: DeviceId,
    /// SHA-256 of its EK certificate (hex).
    pub ek_cert_sha256: String,
    /// TPM Name of its AK (hex).
    pub ak_name: String,
    /// The AK, bound to the EK above by credential activation.
    #[serde(skip)]
    pub ak: EnrolledAk,
    /// When it enrolled (Unix seconds).
    pub enrolled_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// Highest statement sequence number accepted.
    pub last_seq: u64,
    /// Its last check-in (the signed payload's JSON), if any.
    pub checkin: Option<serde_json::Value>,
    /// When the broker accepted that check-in (Unix seconds).
    pub checkin_at: Option<u64>,
}

/// One row of the device log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceEvent {
    /// Row id.
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Source address.
    pub source: Option<String>,
    /// Route.
    pub route: String,
    /// Device, when known.
    pub device_id: Option<String>,
    /// `accepted` or `refused`.
    pub outcome: String,
    /// What was done (`enrolled`, `checked_in`, `record_verified`,
    /// `revoked`) or the reason code sent.
    pub reason: String,
    /// What the device was not told.
    pub detail: Option<String>,
}

/// A device-log row to append.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewDeviceEvent {
    pub(crate) source: Option<String>,
    pub(crate) route: &'static str,
    pub(crate) device_id: Option<String>,
    pub(crate) accepted: bool,
    pub(crate) reason: String,
    pub(crate) detail: Option<String>,
}

type Row = (
    String,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    Option<i64>,
    i64,
    Option<String>,
    Option<i64>,
);

const COLUMNS: &str = "device_id, ek_cert, ek_cert_sha256, ak_name, ak_record, enrolled_at, \
                       revoked_at, last_seq, checkin, checkin_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

/// Checks a row's binding and builds the [`Device`].
fn device(r: Row) -> Result<Device> {
    let (id, ek_cert, ek_sha, ak_name, ak_record, enrolled, revoked, seq, checkin, checkin_at) = r;
    let bad = |why: &str| Error::malformed("device record", format!("{id}: {why}"));
    let ak = EnrolledAk::from_trusted_record(&ak_record)?;
    if ak.name() != ak_name.as_slice() {
        return Err(bad("AK name differs from its record"));
    }
    let computed = Sha256::digest(&ek_cert);
    if computed.as_slice() != ek_sha.as_slice() || ak.ek_cert_sha256() != ek_sha.as_slice() {
        return Err(bad(
            "the AK is not bound to the EK certificate stored with it",
        ));
    }
    Ok(Device {
        device_id: DeviceId::new(&id)?,
        ek_cert_sha256: hex::encode(&ek_sha),
        ak_name: hex::encode(&ak_name),
        ak,
        enrolled_at: enrolled.max(0) as u64,
        revoked_at: revoked.map(|t| t.max(0) as u64),
        last_seq: seq.max(0) as u64,
        checkin: checkin.and_then(|c| serde_json::from_str(&c).ok()),
        checkin_at: checkin_at.map(|t| t.max(0) as u64),
    })
}

/// Why a device could not be added.
#[derive(Debug)]
pub(crate) enum AddDevice {
    /// The id, the EK or the AK is enrolled already.
    Exists(String),
    /// Anything else.
    Failed(Error),
}

impl Store {
    /// Adds a device: its id, its EK certificate (DER) and the AK that
    /// credential activation bound to that EK, in one row. Refused when
    /// the AK record does not name this EK certificate, and when the id,
    /// the EK or the AK is enrolled already (revoked devices included).
    pub(crate) fn add_device(
        &self,
        id: &DeviceId,
        ek_cert_der: &[u8],
        ak: &EnrolledAk,
        at: UnixTime,
    ) -> std::result::Result<(), AddDevice> {
        let ek_sha = Sha256::digest(ek_cert_der);
        if ak.ek_cert_sha256() != ek_sha.as_slice() {
            return Err(AddDevice::Failed(Error::invalid(
                "device",
                "the AK was not enrolled against this EK certificate",
            )));
        }
        let conn = self.conn();
        let taken: Option<String> = conn
            .query_row(
                "SELECT device_id FROM devices WHERE device_id = ?1 OR ek_cert_sha256 = ?2 OR ak_name = ?3",
                params![id.as_str(), ek_sha.as_slice(), ak.name()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| AddDevice::Failed(Error::store("looking the device up")(e)))?;
        if let Some(other) = taken {
            return Err(AddDevice::Exists(if other == id.as_str() {
                format!("device id {id} is enrolled already")
            } else {
                format!("this TPM (EK or AK) is enrolled already as device {other}")
            }));
        }
        conn.execute(
            "INSERT INTO devices (device_id, ek_cert, ek_cert_sha256, ak_name, ak_record, enrolled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id.as_str(),
                ek_cert_der,
                ek_sha.as_slice(),
                ak.name(),
                ak.to_record(),
                at.as_secs() as i64
            ],
        )
        .map_err(|e| AddDevice::Failed(Error::store("adding the device")(e)))?;
        Ok(())
    }

    /// The device `id`, if enrolled.
    pub fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let r = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE device_id = ?1"),
                params![id.as_str()],
                row,
            )
            .optional()
            .map_err(Error::store("reading the device"))?;
        r.map(device).transpose()
    }

    /// The device whose AK has TPM Name `ak_name`, if any.
    pub fn device_by_ak(&self, ak_name: &[u8]) -> Result<Option<Device>> {
        let r = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM devices WHERE ak_name = ?1"),
                params![ak_name],
                row,
            )
            .optional()
            .map_err(Error::store("reading the device"))?;
        r.map(device).transpose()
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<Device>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!("SELECT {COLUMNS} FROM devices ORDER BY device_id"))
            .map_err(Error::store("listing devices"))?;
        let rows = st
            .query_map([], row)
            .map_err(Error::store("listing devices"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::store("listing devices"))?;
        rows.into_iter().map(device).collect()
    }

    /// Revokes `id` at `at`: its key requests, check-ins and records are
    /// refused from then on, and it cannot enrol again. `Ok(false)` if no
    /// such device; revoking twice keeps the first time.
    pub fn revoke_device(&self, id: &DeviceId, at: UnixTime) -> Result<bool> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE device_id = ?1",
                params![id.as_str(), at.as_secs() as i64],
            )
            .map_err(Error::store("revoking the device"))?;
        drop(conn);
        if n > 0 {
            self.record_device_event(
                &NewDeviceEvent {
                    route: "cli",
                    device_id: Some(id.to_string()),
                    accepted: true,
                    reason: "revoked".into(),
                    ..Default::default()
                },
                at,
            )?;
        }
        Ok(n > 0)
    }

    /// Accepts statement `seq` of `id` if it is above the last one; with a
    /// check-in, stores it as the device's last. `Ok(false)`: a replay.
    pub(crate) fn accept_statement(
        &self,
        id: &DeviceId,
        seq: u64,
        checkin: Option<&str>,
        at: UnixTime,
    ) -> Result<bool> {
        let seq = i64::try_from(seq).map_err(|_| Error::invalid("sequence number", "over 2^63"))?;
        let n = match checkin {
            Some(c) => self.conn().execute(
                "UPDATE devices SET last_seq = ?2, checkin = ?3, checkin_at = ?4
                 WHERE device_id = ?1 AND last_seq < ?2 AND revoked_at IS NULL",
                params![id.as_str(), seq, c, at.as_secs() as i64],
            ),
            None => self.conn().execute(
                "UPDATE devices SET last_seq = ?2
                 WHERE device_id = ?1 AND last_seq < ?2 AND revoked_at IS NULL",
                params![id.as_str(), seq],
            ),
        }
        .map_err(Error::store("accepting the statement"))?;
        Ok(n == 1)
    }

    /// Appends to the device log.
    pub(crate) fn record_device_event(&self, e: &NewDeviceEvent, at: UnixTime) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO device_events (at, source, route, device_id, outcome, reason, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    at.as_secs() as i64,
                    e.source,
                    e.route,
                    e.device_id,
                    if e.accepted { "accepted" } else { "refused" },
                    e.reason,
                    e.detail
                ],
            )
            .map_err(Error::store("appending to the device log"))?;
        Ok(())
    }

    /// The `limit` most recent device-log rows, newest first.
    pub fn recent_device_events(&self, limit: usize) -> Result<Vec<DeviceEvent>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT id, at, source, route, device_id, outcome, reason, detail
                 FROM device_events ORDER BY id DESC LIMIT ?1",
            )
            .map_err(Error::store("reading the device log"))?;
        let rows = st
            .query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
                Ok(DeviceEvent {
                    id: r.get(0)?,
                    at: r.get::<_, i64>(1)?.max(0) as u64,
                    source: r.get(2)?,
                    route: r.get(3)?,
                    device_id: r.get(4)?,
                    outcome: r.get(5)?,
                    reason: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .map_err(Error::store("reading the device log"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::store("reading the device log"))?;
        Ok(rows)
    }
}
