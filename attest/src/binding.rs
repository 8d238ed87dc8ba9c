//! The REPORT_DATA binding of DESIGN.md ("Trust flow", step 2).
//!
//! ```text
//! REPORT_DATA = SHA-512("confidant/v1" || nonce || SHA-256(TLS SPKI) || SHA-256(HPKE pk))
//! TPM extraData = SHA-256(same input)
//! ```
//! The key broker, the server and the client all compute it with these
//! functions, so the three can never disagree on the encoding.

use sha2::{Digest, Sha256, Sha512};

/// Domain separation prefix of the binding.
pub const BINDING_DOMAIN: &[u8] = b"confidant/v1";

/// Largest nonce accepted by the binding (a challenge is 32 bytes; 64 leaves room).
pub const MAX_NONCE_LEN: usize = 64;

/// What a piece of evidence is bound to: the verifier's challenge and the
/// two public keys of the attested server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Challenge nonce from the verifier (key broker or client).
    pub nonce: &'a [u8],
    /// DER `SubjectPublicKeyInfo` of the server's TLS key.
    pub tls_spki_der: &'a [u8],
    /// Encoded HPKE public key of the server (X25519: 32 bytes).
    pub hpke_public_key: &'a [u8],
}

impl Binding<'_> {
    fn input(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BINDING_DOMAIN.len() + self.nonce.len() + 64);
        v.extend_from_slice(BINDING_DOMAIN);
        v.extend_from_slice(self.nonce);
        v.extend_from_slice(&Sha256::digest(self.tls_spki_der));
        v.extend_from_slice(&Sha256::digest(self.hpke_public_key));
        v
    }

    /// The 64-byte REPORT_DATA for SEV-SNP and TDX evidence.
    ///
    /// ```
    /// use confidant_attest::Binding;
    /// let rd = Binding { nonce: &[7; 32], tls_spki_der: b"spki", hpke_public_key: &[1; 32] }
    ///     .report_data();
    /// assert_eq!(rd.len(), 64);
    /// ```
    pub fn report_data(&self) -> [u8; 64] {
        Sha512::digest(self.input()).into()
    }

    /// The 32-byte TPM `extraData` (qualifying data) for a TPM quote.
    pub fn tpm_extra_data(&self) -> [u8; 32] {
        Sha256::digest(self.input()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_binding() {
        let base = Binding {
            nonce: &[1; 32],
            tls_spki_der: b"tls",
            hpke_public_key: b"hpke",
        };
        let others = [
            Binding {
                nonce: &[2; 32],
                ..base.clone()
            },
            Binding {
                tls_spki_der: b"tls2",
                ..base.clone()
            },
            Binding {
                hpke_public_key: b"hpke2",
                ..base.clone()
            },
        ];
        for o in &others {
            assert_ne!(o.report_data(), base.report_data());
            assert_ne!(o.tpm_extra_data(), base.tpm_extra_data());
        }
        // Same input, same output; TPM value is SHA-256 of the same input.
        assert_eq!(base.report_data(), base.clone().report_data());
        let mut input = b"confidant/v1".to_vec();
        input.extend_from_slice(&[1; 32]);
        input.extend_from_slice(&Sha256::digest(b"tls"));
        input.extend_from_slice(&Sha256::digest(b"hpke"));
        assert_eq!(
            base.tpm_extra_data(),
            <[u8; 32]>::from(Sha256::digest(&input))
        );
        assert_eq!(base.report_data(), <[u8; 64]>::from(Sha512::digest(&input)));
    }
}
