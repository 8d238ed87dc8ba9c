//! The per-model data-encryption key.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A model's data-encryption key: 32 random bytes, one per model.
///
/// It has no `Debug`, no `Clone` and no accessor outside this crate; it is
/// wiped when dropped. It leaves the crate only wrapped by a KEK
/// ([`crate::Kek::wrap`]), sealed to an HPKE public key
/// ([`crate::seal_to_hpke`]), or handed to a hardware sealing operation
/// ([`DataKey::seal_with`], the edge agent's TPM PCR-policy seal).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    /// Draws a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut k = DataKey([0; DATA_KEY_LEN]);
        fill_random(&mut k.0)?;
        Ok(k)
    }

    /// Takes ownership of raw key bytes (e.g. a test vector, or bytes just
    /// unwrapped). The caller's copy should itself be `Zeroizing`.
    pub fn from_bytes(bytes: &[u8; DATA_KEY_LEN]) -> Self {
        DataKey(*bytes)
    }

    /// Builds a key from a byte slice of exactly [`DATA_KEY_LEN`] bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: &[u8; DATA_KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey(*arr))
    }

    /// Lends the key bytes to `seal`, which must put them only into
    /// hardware that keeps them (a TPM sealed object under a PCR policy)
    /// and keep no copy. The only way out of this crate besides a KEK and
    /// HPKE.
    pub fn seal_with<R>(&self, seal: impl FnOnce(&[u8; DATA_KEY_LEN]) -> R) -> R {
        seal(&self.0)
    }

    pub(crate) fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Rng(e.to_string()))
}

/// A fresh random secret of `N` bytes, wiped on drop.
pub(crate) fn random_secret<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut s = Zeroizing::new([0u8; N]);
    fill_random(&mut s[..])?;
    Ok(s)
}
