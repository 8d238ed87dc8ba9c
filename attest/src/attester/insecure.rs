//! The insecure development attester: no hardware, proves nothing.

use crate::claims::{Claims, Detail, Hex, TeeKind};
use crate::{EvidenceBundle, Result};

const WARNING: &str = "INSECURE dev attester: this evidence proves nothing";

/// Produces evidence that every default policy refuses. Logs a warning at each use.
#[derive(Debug, Default)]
pub struct InsecureDev(());

impl InsecureDev {
    /// A new insecure attester (logged).
    pub fn new() -> Self {
        tracing::warn!("{WARNING}");
        InsecureDev(())
    }
}

impl super::Attester for InsecureDev {
    fn name(&self) -> String {
        "insecure-dev".into()
    }
    fn evidence(&mut self, data: &super::BoundData) -> Result<EvidenceBundle> {
        tracing::warn!("{WARNING}");
        Ok(EvidenceBundle::InsecureDev {
            report_data: Hex(data.report_data.to_vec()),
        })
    }
}

pub(crate) fn insecure_claims(report_data: &[u8]) -> Claims {
    let mut c = Claims::new(
        TeeKind::InsecureDev,
        report_data,
        Detail::InsecureDev { warning: WARNING },
    );
    c.debug = true;
    c
}
