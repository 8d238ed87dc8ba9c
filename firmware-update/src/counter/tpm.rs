//! Security counters in TPM 2.0 NV counter indices (tss-esapi; swtpm in
//! tests).
//!
//! A `TPM_NT_COUNTER` index can only be incremented, and a counter that is
//! deleted and re-created starts at or above the highest value any counter
//! on the TPM ever had (TPM 2.0 Part 1, "NV Counters"), so neither a file
//! edit nor re-defining the index lowers it. Because a new counter does not
//! start at 0, the value it has after its first increment is kept as the
//! kind's *origin* in a companion ordinary index written once at creation;
//! the security counter is `value - origin`.
//!
//! Both indices are owner-authorised: whoever holds the owner authorisation
//! can delete the origin index and re-create it with a larger origin, which
//! would lower the counter. Devices must set an owner authorisation at
//! provisioning; this backend uses the owner hierarchy's authorisation as
//! configured (empty on swtpm).
//!
//! Index layout: counter of kind *k* at `base + 2k`, origin at `base + 2k + 1`.

use tss_esapi::Context;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::nv_index_type::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, MaxNvBuffer, NvPublicBuilder};
use tss_esapi::tcti_ldr::TctiNameConf;

use super::{ArtifactKind, CounterStore};
use crate::error::{Error, Result};

/// Default first NV index (owner range, as tpm2-tools examples use).
pub const DEFAULT_BASE_INDEX: u32 = 0x0150_C0F0;

/// Counters in a TPM.
pub struct TpmCounters {
    ctx: Context,
    base: u32,
    /// ESYS handles already opened in this context: ESYS keeps one
    /// resource per NV index, so each is looked up once.
    handles: std::collections::BTreeMap<u32, NvIndexHandle>,
}

impl std::fmt::Debug for TpmCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmCounters")
            .field("base", &format_args!("{:#010x}", self.base))
            .finish()
    }
}

fn tpm(what: &str) -> impl FnOnce(tss_esapi::Error) -> Error + '_ {
    move |e| Error::Tpm(format!("{what}: {e} ({e:?})"))
}

fn kind_index(kind: ArtifactKind) -> u32 {
    match kind {
        ArtifactKind::Server => 0,
        ArtifactKind::EdgeAgent => 1,
        ArtifactKind::Model => 2,
    }
}

impl TpmCounters {
    /// Connects through a TCTI such as `swtpm:port=2321` or
    /// `device:/dev/tpmrm0`.
    pub fn connect(tcti: &str, base: u32) -> Result<Self> {
        let conf: TctiNameConf = tcti.parse().map_err(tpm("TCTI"))?;
        let ctx = Context::new(conf).map_err(tpm("opening TPM"))?;
        Ok(Self {
            ctx,
            base,
            handles: Default::default(),
        })
    }

    fn handle(&mut self, index: u32) -> Result<Option<NvIndexHandle>> {
        if let Some(h) = self.handles.get(&index) {
            return Ok(Some(*h));
        }
        let tpm_handle = NvIndexTpmHandle::new(index).map_err(tpm("NV index"))?;
        // Ask for the handle list starting at this index rather than probe
        // it (ESYS logs errors for missing handles) or list all NV indices
        // (abstraction::nv::list closes the ESYS handles it visits, which
        // are shared with ours).
        let (data, _) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, index, 1))
            .map_err(tpm("listing NV indices"))?;
        let defined = match data {
            CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == index),
            _ => false,
        };
        if !defined {
            return Ok(None);
        }
        // Session-less: ESYS crashes when TR_FromTPMPublic gets a password
        // session.
        let obj = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)))
            .map_err(tpm("NV handle"))?;
        let h: NvIndexHandle = obj.into();
        self.handles.insert(index, h);
        Ok(Some(h))
    }

    fn define(&mut self, index: u32, ty: NvIndexType) -> Result<NvIndexHandle> {
        let attrs = NvIndexAttributesBuilder::new()
            .with_nv_index_type(ty)
            .with_owner_write(true)
            .with_owner_read(true)
            .build()
            .map_err(tpm("NV attributes"))?;
        let public = NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(index).map_err(tpm("NV index"))?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(8)
            .build()
            .map_err(tpm("NV public"))?;
        let h = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_define_space(Provision::Owner, None, public)
            })
            .map_err(tpm("defining NV index"))?;
        self.handles.insert(index, h);
        Ok(h)
    }

    fn increment(&mut self, h: NvIndexHandle) -> Result<()> {
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_increment(NvAuth::Owner, h)
            })
            .map_err(tpm("incrementing NV counter"))
    }

    fn read_u64(&mut self, h: NvIndexHandle) -> Result<u64> {
        let buf = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_read(NvAuth::Owner, h, 8, 0)
            })
            .map_err(tpm("reading NV"))?;
        let b: [u8; 8] = buf
            .value()
            .try_into()
            .map_err(|_| Error::Tpm("NV counter is not 8 bytes".into()))?;
        Ok(u64::from_be_bytes(b))
    }

    /// (counter handle, origin) of a kind, creating both on first use.
    fn counter(
        &mut self,
        kind: ArtifactKind,
        create: bool,
    ) -> Result<Option<(NvIndexHandle, u64)>> {
        let ci = self.base + 2 * kind_index(kind);
        let oi = ci + 1;
        let counter = self.handle(ci)?;
        let origin = self.handle(oi)?;
        match (counter, origin) {
            (Some(c), Some(o)) => {
                let (public, _) = self
                    .ctx
                    .execute_without_session(|c| c.nv_read_public(o))
                    .map_err(tpm("NV public"))?;
                if !public.attributes().written() {
                    // Killed between defining and writing the origin: the
                    // counter was only incremented for the origin itself.
                    let origin = self.read_u64(c)?;
                    let data = MaxNvBuffer::try_from(origin.to_be_bytes().to_vec())
                        .map_err(tpm("NV buffer"))?;
                    self.ctx
                        .execute_with_session(Some(AuthSession::Password), |c| {
                            c.nv_write(NvAuth::Owner, o, data, 0)
                        })
                        .map_err(tpm("writing NV origin"))?;
                }
                let origin = self.read_u64(o)?;
                Ok(Some((c, origin)))
            }
            (None, None) if !create => Ok(None),
            (None, None) | (Some(_), None) => {
                // Created (or interrupted before the origin was written):
                // increment once and take that value as the origin. An
                // interrupted creation only makes the origin larger than
                // the counter's first value, never lowers a stored counter,
                // because nothing was stored before the origin existed.
                let c = match counter {
                    Some(c) => c,
                    None => self.define(ci, NvIndexType::Counter)?,
                };
                self.increment(c)?;
                let origin = self.read_u64(c)?;
                let o = self.define(oi, NvIndexType::Ordinary)?;
                let data = MaxNvBuffer::try_from(origin.to_be_bytes().to_vec())
                    .map_err(tpm("NV buffer"))?;
                self.ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.nv_write(NvAuth::Owner, o, data, 0)
                    })
                    .map_err(tpm("writing NV origin"))?;
                Ok(Some((c, origin)))
            }
            (None, Some(_)) => Err(Error::Tpm(format!(
                "origin index {oi:#010x} exists without counter {ci:#010x}: refusing to guess"
            ))),
        }
    }
}

impl CounterStore for TpmCounters {
    fn read(&mut self, kind: ArtifactKind) -> Result<u64> {
        match self.counter(kind, false)? {
            None => Ok(0),
            Some((c, origin)) => {
                let v = self.read_u64(c)?;
                v.checked_sub(origin).ok_or_else(|| {
                    Error::Tpm(format!("{kind} counter {v} below its origin {origin}"))
                })
            }
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
        if value == stored {
            return Ok(());
        }
        // Counters move by one per increment; security counters are bumped
        // rarely, so this loop is short. Bounded anyway.
        if value - stored > 1 << 16 {
            return Err(Error::Tpm(format!(
                "refusing to advance the {kind} counter by {}",
                value - stored
            )));
        }
        let (c, _) = self
            .counter(kind, true)?
            .ok_or_else(|| Error::Tpm("counter vanished".into()))?;
        for _ in stored..value {
            self.increment(c)?;
        }
        Ok(())
    }
}
