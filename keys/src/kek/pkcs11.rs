//! PKCS#11 KEK: an AES-256 key generated inside a token as sensitive and
//! non-extractable; data keys are sealed and opened by the token itself
//! (`CKM_AES_GCM` through `C_Encrypt`/`C_Decrypt`, with the wrapped-key
//! header as GCM associated data, so the key id is bound as with the file
//! KEK). The KEK's value never enters this process.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::sealed::KekOps;
use super::uri::Pkcs11Uri;
use super::{Kek, KekKind, SEALED_LEN, WRAP_IV_LEN};
use crate::datakey::{DATA_KEY_LEN, fill_random};
use crate::error::{Error, Result};

/// Length of the `CKA_ID` given to KEKs this crate generates.
const GENERATED_ID_LEN: usize = 16;

/// One initialised context per module per process: PKCS#11 modules keep
/// global state, and `C_Initialize` may be called only once.
fn module(path: &PathBuf) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(ctx) = map.get(path) {
        return Ok(ctx.clone());
    }
    if !path.is_file() {
        return Err(Error::Pkcs11Object {
            reason: format!("module {} not found", path.display()),
        });
    }
    let ctx = Pkcs11::new(path).map_err(Error::pkcs11("loading the module"))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(Error::pkcs11("C_Initialize")(e)),
    }
    map.insert(path.clone(), ctx.clone());
    Ok(ctx)
}

/// Security-relevant attributes of a KEK object, as the token reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekAttributes {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
}

/// A KEK inside a PKCS#11 token.
pub struct Pkcs11Kek {
    session: Session,
    key: ObjectHandle,
    id: Vec<u8>,
    label: String,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("object", &self.label)
            .field("kek_id", &hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

pub(super) fn object_error(reason: impl Into<String>) -> Error {
    Error::Pkcs11Object {
        reason: reason.into(),
    }
}

/// Opens a session on the token named by the URI and logs in as user.
pub(super) fn login(uri: &Pkcs11Uri, read_write: bool) -> Result<Session> {
    let pin = uri.resolve_pin()?;
    let session = open_session(uri, read_write)?;
    let auth = AuthPin::from(pin.as_str());
    match session.login(UserType::User, Some(&auth)) {
        // Login state is per token and application: another session of this
        // process may have logged in already.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(object_error(format!(
            "incorrect user PIN for token {:?}",
            uri.token
        ))),
        Err(e) => Err(Error::pkcs11("C_Login")(e)),
    }
}

/// Opens a session on the token named by the URI, without logging in.
pub(super) fn open_session(uri: &Pkcs11Uri, read_write: bool) -> Result<Session> {
    let ctx = module(&uri.module_path)?;
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(Error::pkcs11("C_GetSlotList"))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(Error::pkcs11("C_GetTokenInfo"))?;
        if info.label().trim_end() == uri.token {
            found.push(slot);
        }
    }
    let slot = match found.as_slice() {
        [slot] => *slot,
        [] => {
            return Err(object_error(format!(
                "no initialised token labelled {:?}",
                uri.token
            )));
        }
        _ => {
            return Err(object_error(format!(
                "several tokens labelled {:?}",
                uri.token
            )));
        }
    };
    if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(Error::pkcs11("C_OpenSession"))
}

/// Refuses to create an object where one matching `template` exists.
pub(super) fn refuse_existing(
    session: &Session,
    template: &[Attribute],
    what: &str,
    uri: &Pkcs11Uri,
) -> Result<()> {
    let existing = session
        .find_objects(template)
        .map_err(Error::pkcs11("C_FindObjects"))?;
    if !existing.is_empty() {
        return Err(object_error(format!(
            "{what} labelled {:?} already exists on token {:?}",
            uri.object, uri.token
        )));
    }
    Ok(())
}

/// The `CKA_ID` of a new object: the URI's `id=`, else 16 random bytes.
pub(super) fn new_object_id(uri: &Pkcs11Uri) -> Result<Vec<u8>> {
    Ok(match &uri.id {
        Some(id) => id.clone(),
        None => {
            let mut id = vec![0u8; GENERATED_ID_LEN];
            fill_random(&mut id)?;
            id
        }
    })
}

fn key_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

fn read_attributes(session: &Session, key: ObjectHandle) -> Result<(KekAttributes, Vec<u8>, u64)> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Id,
                AttributeType::ValueLen,
            ],
        )
        .map_err(Error::pkcs11("C_GetAttributeValue"))?;
    let mut out = KekAttributes {
        sensitive: false,
        extractable: true,
        never_extractable: false,
        always_sensitive: false,
    };
    let mut id = Vec::new();
    let mut len = 0u64;
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => out.sensitive = v,
            Attribute::Extractable(v) => out.extractable = v,
            Attribute::NeverExtractable(v) => out.never_extractable = v,
            Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
            Attribute::Id(v) => id = v,
            Attribute::ValueLen(v) => len = u64::from(v),
            _ => {}
        }
    }
    Ok((out, id, len))
}

impl Pkcs11Kek {
    /// Logs in to the token and finds the KEK object. Refuses a key that is
    /// not AES-256, or that is extractable or not sensitive: a KEK must
    /// never be able to leave its token.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self> {
        let session = login(uri, false)?;
        let found = session
            .find_objects(&key_template(uri))
            .map_err(Error::pkcs11("C_FindObjects"))?;
        let key = match found.as_slice() {
            [k] => *k,
            [] => {
                return Err(object_error(format!(
                    "no AES key labelled {:?} on token {:?}",
                    uri.object, uri.token
                )));
            }
            _ => {
                return Err(object_error(format!(
                    "several AES keys labelled {:?} on token {:?}; add id= to the URI",
                    uri.object, uri.token
                )));
            }
        };
        let (attrs, id, len) = read_attributes(&session, key)?;
        if len != DATA_KEY_LEN as u64 {
            return Err(object_error(format!(
                "KEK {:?} is AES-{}; AES-256 required",
                uri.object,
                len * 8
            )));
        }
        if attrs.extractable || !attrs.sensitive {
            return Err(object_error(format!(
                "KEK {:?} is extractable or not sensitive; refusing to use it",
                uri.object
            )));
        }
        Ok(Pkcs11Kek {
            session,
            key,
            id,
            label: uri.object.clone(),
        })
    }

    /// Generates a new AES-256 KEK in the token: token object, private,
    /// sensitive, non-extractable, usable only to encrypt/decrypt, with a
    /// random 16-byte `CKA_ID`. Refuses if an AES key with that label exists.
    pub fn generate(uri: &Pkcs11Uri) -> Result<Self> {
        let session = login(uri, true)?;
        refuse_existing(&session, &key_template(uri), "an AES key", uri)?;
        let id = new_object_id(uri)?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((DATA_KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(uri.object.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(Error::pkcs11("C_GenerateKey"))?;
        Ok(Pkcs11Kek {
            session,
            key,
            id,
            label: uri.object.clone(),
        })
    }

    /// The KEK object's security attributes, read from the token.
    pub fn attributes(&self) -> Result<KekAttributes> {
        Ok(read_attributes(&self.session, self.key)?.0)
    }
}

impl KekOps for Pkcs11Kek {
    fn seal_raw(
        &self,
        iv: &[u8; WRAP_IV_LEN],
        aad: &[u8],
        key: &[u8; DATA_KEY_LEN],
    ) -> Result<[u8; SEALED_LEN]> {
        let mut iv = *iv;
        let params =
            GcmParams::new(&mut iv, aad, 128.into()).map_err(Error::pkcs11("GCM parameters"))?;
        let out = self
            .session
            .encrypt(&Mechanism::AesGcm(params), self.key, key)
            .map_err(Error::pkcs11("C_Encrypt"))?;
        out.as_slice().try_into().map_err(|_| {
            object_error(format!(
                "token returned {} bytes for AES-GCM, expected {SEALED_LEN}",
                out.len()
            ))
        })
    }

    fn open_raw(
        &self,
        iv: &[u8; WRAP_IV_LEN],
        aad: &[u8],
        sealed: &[u8; SEALED_LEN],
    ) -> Result<Option<Zeroizing<[u8; DATA_KEY_LEN]>>> {
        let mut iv = *iv;
        let params =
            GcmParams::new(&mut iv, aad, 128.into()).map_err(Error::pkcs11("GCM parameters"))?;
        match self
            .session
            .decrypt(&Mechanism::AesGcm(params), self.key, sealed)
        {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
                if plain.len() != DATA_KEY_LEN {
                    return Err(object_error(format!(
                        "token returned {} bytes for a data key",
                        plain.len()
                    )));
                }
                key.copy_from_slice(&plain);
                Ok(Some(key))
            }
            // Authentication failure. PKCS#11 3.0 §2.12.1 names
            // CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 answers a GCM tag
            // mismatch with CKR_GENERAL_ERROR from C_Decrypt itself (after
            // C_DecryptInit accepted key and parameters), so that counts too.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid,
                _,
            ))
            | Err(CkError::Pkcs11(RvError::GeneralError, Function::Decrypt)) => Ok(None),
            Err(e) => Err(Error::pkcs11("C_Decrypt")(e)),
        }
    }
}

impl Kek for Pkcs11Kek {
    fn kind(&self) -> KekKind {
        KekKind::Pkcs11
    }
    fn kek_id(&self) -> &[u8] {
        &self.id
    }
}
