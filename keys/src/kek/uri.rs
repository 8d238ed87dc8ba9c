//! A subset of RFC 7512 PKCS#11 URIs that names one key object: a secret
//! key (a KEK, parsed with `str::parse`) or a key pair (a signing key,
//! parsed with [`Pkcs11Uri::parse_key_pair`]):
//!
//! ```text
//! pkcs11:token=LABEL;object=LABEL[;id=%01%02][;type=secret-key]
//!       ?module-path=/usr/lib/softhsm/libsofthsm2.so[&pin-value=1234]
//! pkcs11:token=LABEL;object=LABEL[;id=%01%02][;type=private|public]
//!       ?module-path=/usr/lib/softhsm/libsofthsm2.so[&pin-value=1234]
//! ```
//!
//! Values are percent-decoded (RFC 7512 §2.3). Attributes outside this
//! subset are refused rather than ignored, so a URI never silently matches
//! something other than what its author meant. Without `pin-value`, the PIN
//! is read from the environment variable [`PIN_ENV`] when the token is
//! opened. The PIN is never printed: `Display` and `Debug` redact it.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Environment variable holding the user PIN when the URI has no `pin-value`.
pub const PIN_ENV: &str = "CONFIDANT_PKCS11_PIN";
/// Longest URI accepted.
const MAX_URI_LEN: usize = 4096;

/// What kind of object a URI is parsed for: decides which `type=` values
/// are accepted. (Not kept in the URI: the object class searched for is the
/// user's, the KEK or the signing key, and a URI naming the wrong kind finds
/// no object of that class.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UriKind {
    /// A secret key (`type=secret-key`): a KEK.
    SecretKey,
    /// A key pair (`type=private` or `type=public`): a signing key.
    KeyPair,
}

/// A parsed `pkcs11:` URI naming a KEK object or a signing key pair.
#[derive(Clone)]
pub struct Pkcs11Uri {
    pub(crate) token: String,
    pub(crate) object: String,
    pub(crate) id: Option<Vec<u8>>,
    pub(crate) module_path: PathBuf,
    pub(crate) pin: Option<Zeroizing<String>>,
}

impl Pkcs11Uri {
    /// Token label (`token=`).
    pub fn token(&self) -> &str {
        &self.token
    }
    /// Object label (`object=`).
    pub fn object(&self) -> &str {
        &self.object
    }
    /// Object id (`id=`), if given.
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }
    /// PKCS#11 module to load (`module-path=`).
    pub fn module_path(&self) -> &std::path::Path {
        &self.module_path
    }
    /// True when the URI itself carries the PIN.
    pub fn has_pin_value(&self) -> bool {
        self.pin.is_some()
    }

    /// The user PIN: `pin-value`, else `$CONFIDANT_PKCS11_PIN`.
    pub(crate) fn resolve_pin(&self) -> Result<Zeroizing<String>> {
        if let Some(p) = &self.pin {
            return Ok(p.clone());
        }
        match std::env::var(PIN_ENV) {
            Ok(p) if !p.is_empty() => Ok(Zeroizing::new(p)),
            _ => Err(Error::invalid(
                "PKCS#11 URI",
                format!("no pin-value in the URI and {PIN_ENV} is not set"),
            )),
        }
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::invalid("PKCS#11 URI", reason)
}

fn pct_decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn pct_decode_str(s: &str, what: &str) -> Result<String> {
    String::from_utf8(pct_decode(s)?).map_err(|_| bad(format!("{what} is not UTF-8")))
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<()> {
    if slot.is_some() {
        return Err(bad(format!("attribute {name} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses a URI naming a secret key (a KEK).
impl std::str::FromStr for Pkcs11Uri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Pkcs11Uri::parse_as(s, UriKind::SecretKey)
    }
}

impl Pkcs11Uri {
    /// Parses a URI naming a signing key pair: the private key object and
    /// the public key object with the same label (and id, if given).
    /// `type=` may be absent, `private` or `public`.
    pub fn parse_key_pair(s: &str) -> Result<Self> {
        Pkcs11Uri::parse_as(s, UriKind::KeyPair)
    }

    fn parse_as(s: &str, kind: UriKind) -> Result<Self> {
        if s.len() > MAX_URI_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("must start with pkcs11:"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        let (mut token, mut object, mut id) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("path attribute {attr:?} has no '='")))?;
            match name {
                "token" => set_once(&mut token, pct_decode_str(value, "token")?, name)?,
                "object" => set_once(&mut object, pct_decode_str(value, "object")?, name)?,
                "id" => set_once(&mut id, pct_decode(value)?, name)?,
                "type" => match (kind, value) {
                    (UriKind::SecretKey, "secret-key")
                    | (UriKind::KeyPair, "private" | "public") => {}
                    (UriKind::SecretKey, _) => {
                        return Err(bad(format!("type={value}: a KEK is a secret-key")));
                    }
                    (UriKind::KeyPair, _) => {
                        return Err(bad(format!(
                            "type={value}: a signing key is a private/public key pair"
                        )));
                    }
                },
                other => return Err(bad(format!("unsupported path attribute {other:?}"))),
            }
        }
        let (mut module_path, mut pin) = (None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').ok_or_else(|| {
                bad(format!(
                    "query attribute {name:?} has no '='",
                    name = attr.split('=').next().unwrap_or("")
                ))
            })?;
            match name {
                "module-path" => set_once(
                    &mut module_path,
                    PathBuf::from(pct_decode_str(value, "module-path")?),
                    name,
                )?,
                "pin-value" => set_once(
                    &mut pin,
                    Zeroizing::new(pct_decode_str(value, "pin-value")?),
                    name,
                )?,
                other => return Err(bad(format!("unsupported query attribute {other:?}"))),
            }
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("token= is required"))?;
        let object = object
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("object= is required"))?;
        let module_path = module_path.ok_or_else(|| bad("module-path= is required"))?;
        if token.len() > 32 {
            return Err(bad("token label longer than 32 bytes"));
        }
        if object.len() > 256 {
            return Err(bad("object label longer than 256 bytes"));
        }
        Ok(Pkcs11Uri {
            token,
            object,
            id,
            module_path,
            pin,
        })
    }
}

fn pct_encode(out: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            write!(out, "{}", b as char)?;
        } else {
            write!(out, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// Prints the URI with the PIN replaced by `REDACTED`.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkcs11:token=")?;
        pct_encode(f, self.token.as_bytes())?;
        f.write_str(";object=")?;
        pct_encode(f, self.object.as_bytes())?;
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
        }
        f.write_str("?module-path=")?;
        for (i, part) in self.module_path.to_string_lossy().split('/').enumerate() {
            // Keep '/' readable.
            if i > 0 {
                f.write_str("/")?;
            }
            pct_encode(f, part.as_bytes())?;
        }
        if self.pin.is_some() {
            f.write_str("&pin-value=REDACTED")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn parses_the_documented_form() {
        let u: Pkcs11Uri =
            format!("pkcs11:token=My%20Token;object=kek?module-path={SOFTHSM}&pin-value=1234")
                .parse()
                .unwrap();
        assert_eq!(u.token(), "My Token");
        assert_eq!(u.object(), "kek");
        assert_eq!(u.module_path(), std::path::Path::new(SOFTHSM));
        assert_eq!(u.resolve_pin().unwrap().as_str(), "1234");
        assert_eq!(u.id(), None);
    }

    #[test]
    fn id_is_bytes() {
        let u: Pkcs11Uri =
            format!("pkcs11:token=t;object=o;id=%01%ff;type=secret-key?module-path={SOFTHSM}")
                .parse()
                .unwrap();
        assert_eq!(u.id(), Some(&[1u8, 0xff][..]));
        assert!(!u.has_pin_value());
    }

    #[test]
    fn pin_never_printed() {
        let u: Pkcs11Uri =
            format!("pkcs11:token=t;object=o?module-path={SOFTHSM}&pin-value=s3cret")
                .parse()
                .unwrap();
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn key_pair_uris_are_their_own_kind() {
        for ok in ["", ";type=private", ";type=public"] {
            let u = Pkcs11Uri::parse_key_pair(&format!(
                "pkcs11:token=t;object=root-1{ok}?module-path={SOFTHSM}"
            ))
            .unwrap();
            assert_eq!(u.object(), "root-1");
        }
        for bad in [
            "pkcs11:token=t;object=o;type=secret-key?module-path=/x",
            "pkcs11:token=t;object=o;type=cert?module-path=/x",
            "pkcs11:token=t;object=o?module-path=/x&pin-source=file:/p",
            "pkcs11:token=t?module-path=/x",
        ] {
            assert!(Pkcs11Uri::parse_key_pair(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "token=t;object=o?module-path=/x",
            "pkcs11:object=o?module-path=/x",
            "pkcs11:token=t?module-path=/x",
            "pkcs11:token=t;object=o",
            "pkcs11:token=t;token=u;object=o?module-path=/x",
            "pkcs11:token=t;object=o;serial=1?module-path=/x",
            "pkcs11:token=t;object=o;type=private?module-path=/x",
            "pkcs11:token=t;object=o?module-path=/x&pin-source=file:/p",
            "pkcs11:token=t%zz;object=o?module-path=/x",
            "pkcs11:token=t;object=o?module-path",
        ] {
            assert!(bad.parse::<Pkcs11Uri>().is_err(), "accepted {bad}");
        }
    }
}
