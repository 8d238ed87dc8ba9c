//! A SoftHSM2 token per test, initialised in a temp dir (NOTES-deps.md).
//!
//! SoftHSM2 reads its configuration from `$SOFTHSM2_CONF` when the module is
//! initialised. Changing the environment of a running multi-threaded test
//! process is unsound, so a test re-runs itself as a child process with the
//! variable set ([`run_as_child`], `CONFIDANT_SOFTHSM_CHILD=1`); the child
//! does the work. Included by path (`#[path]`), so the PKCS#11 tests do not
//! need the key broker's feature.
#![allow(dead_code)] // each test file uses a subset

use std::path::Path;
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// True in the child process, where the token is configured.
pub fn is_child() -> bool {
    std::env::var_os("CONFIDANT_SOFTHSM_CHILD").is_some()
}

/// Initialises token `label` with user PIN `pin` in a new temp dir and runs
/// the test `test` (this binary, `--exact`) as a child with `SOFTHSM2_CONF`
/// and `CONFIDANT_PKCS11_PIN` set; fails if the child fails or ran nothing.
/// Skips (returns) when SoftHSM2 is not installed.
pub fn run_as_child(test: &str, label: &str, pin: &str) {
    if !Path::new(MODULE).exists() {
        eprintln!(
            "SKIPPED {test}: {MODULE} is missing (apt-get install softhsm2; scripts/deps/keys.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nslots.removable = false\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", pin, "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(
        init.status.success(),
        "init-token: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env("CONFIDANT_SOFTHSM_CHILD", "1")
        .env("CONFIDANT_PKCS11_PIN", pin)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

/// Asserts that the token does not reveal the object's `CKA_VALUE` (a
/// sensitive value reads back as an empty list, not an error).
pub fn assert_value_unreadable(session: &Session, object: ObjectHandle, what: &str) {
    let value = session
        .get_attributes(object, &[AttributeType::Value])
        .unwrap();
    assert!(
        !value
            .iter()
            .any(|a| matches!(a, Attribute::Value(v) if !v.is_empty())),
        "{what} value readable"
    );
}

/// A read-write session on token `label`, logged in as user, opened with
/// cryptoki directly (independently of the code under test).
pub fn user_session(label: &str, pin: &str) -> Session {
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}
