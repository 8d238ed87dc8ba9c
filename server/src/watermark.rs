//! The deployment's watermark: the `[watermark]` configuration section and
//! how the server obtains its key.
//!
//! The watermark lives in the engine's [`ProcessorFactory`], never in a
//! request's parameters, so no request can turn it off (the API also
//! refuses unknown request fields). `enforced = true` makes it impossible
//! to start without one: with no `key_file`, a key is generated at first
//! start in the state directory, then reused. The key is never logged and
//! never returned by the API; only its id is.
//!
//! [`ProcessorFactory`]: confidant_inference::engine::ProcessorFactory

use std::path::{Path, PathBuf};

use anyhow::Context;
use confidant_inference::watermark::{
    DEFAULT_CONTEXT_WIDTH, DEFAULT_DELTA, DEFAULT_GAMMA, DEFAULT_MIN_ENTROPY, SeedingScheme,
    Watermark, WatermarkKey, WatermarkKind, WatermarkParams,
};
use serde::{Deserialize, Serialize};

/// File name of the generated key inside the state directory.
pub const GENERATED_KEY_FILE: &str = "watermark.key";

/// `[watermark]`: holds a key file's path, never a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Key file (`confidant watermark keygen`). Must exist when set.
    pub key_file: Option<PathBuf>,
    /// Every output must be watermarked: without `key_file`, a key is
    /// generated in the state directory at first start.
    pub enforced: bool,
    /// `green-list` (Kirchenbauer et al., the default) or `gumbel-max`
    /// (exponential-minimum sampling: no quality cost in expectation, but
    /// the same prompt gives the same text whatever the seed).
    pub kind: WatermarkKind,
    /// Green fraction γ.
    pub gamma: f64,
    /// Logit bias δ.
    pub delta: f32,
    /// Context width h.
    pub context_width: usize,
    /// Seeding scheme.
    pub scheme: SeedingScheme,
    /// Entropy gate in nats: no bias at steps with less entropy (0: none).
    pub min_entropy: f32,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            enforced: false,
            kind: WatermarkKind::GreenList,
            gamma: DEFAULT_GAMMA,
            delta: DEFAULT_DELTA,
            context_width: DEFAULT_CONTEXT_WIDTH,
            scheme: SeedingScheme::LeftHash,
            min_entropy: DEFAULT_MIN_ENTROPY,
        }
    }
}

impl WatermarkConfig {
    /// The checked parameters.
    pub fn params(&self) -> anyhow::Result<WatermarkParams> {
        Ok(
            WatermarkParams::new(self.gamma, self.delta, self.context_width, self.scheme)?
                .with_min_entropy(self.min_entropy)?
                .with_kind(self.kind),
        )
    }

    /// The deployment's watermark, or `None` when it has none (no key file
    /// and not enforced).
    pub fn open(&self, state_dir: &Path) -> anyhow::Result<Option<Watermark>> {
        let params = self.params()?;
        let key = match (&self.key_file, self.enforced) {
            (Some(p), _) => WatermarkKey::load(p)?,
            (None, false) => return Ok(None),
            (None, true) => load_or_generate(&state_dir.join(GENERATED_KEY_FILE))?,
        };
        Ok(Some(Watermark::new(key, params)))
    }
}

/// Loads the key at `path`, or creates it (and its directory, mode 0700).
fn load_or_generate(path: &Path) -> anyhow::Result<WatermarkKey> {
    if path.exists() {
        return Ok(WatermarkKey::load(path)?);
    }
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    let key = WatermarkKey::generate()?;
    key.write_new(path)?;
    tracing::info!(key_id = %key.id(), path = %path.display(), "generated a new watermark key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforced_without_a_key_file_generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let c = WatermarkConfig {
            enforced: true,
            ..Default::default()
        };
        let a = c.open(&state).unwrap().expect("a watermark");
        let b = c.open(&state).unwrap().expect("a watermark");
        assert_eq!(a.key_id(), b.key_id());
        assert!(state.join(GENERATED_KEY_FILE).exists());
    }

    #[test]
    fn no_key_file_and_not_enforced_means_no_watermark() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            WatermarkConfig::default()
                .open(dir.path())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_configured_key_file_must_exist_and_params_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = WatermarkConfig {
            key_file: Some(dir.path().join("missing.key")),
            ..Default::default()
        };
        assert!(c.open(dir.path()).is_err());
        assert!(!dir.path().join(GENERATED_KEY_FILE).exists());
        let c = WatermarkConfig {
            enforced: true,
            gamma: 1.5,
            ..Default::default()
        };
        assert!(c.open(dir.path()).is_err());
    }

    #[test]
    fn the_section_parses_from_toml() {
        let c: WatermarkConfig = toml::from_str(
            "key_file = \"/k\"\nenforced = true\ngamma = 0.5\nscheme = \"hmac-sha256-minhash\"\ncontext_width = 3\n",
        )
        .unwrap();
        assert_eq!(c.key_file.as_deref(), Some(Path::new("/k")));
        assert!(c.enforced);
        assert_eq!(c.params().unwrap().scheme(), SeedingScheme::MinHash);
        assert!(toml::from_str::<WatermarkConfig>("key = \"00\"").is_err());
    }
}
