//! The minimal verifier core builds with `#![no_std]` and no default
//! features, for the host and, when its standard library is installed
//! (`rustup target add thumbv7em-none-eabihf`), for Cortex-M4F sensors.

use std::process::Command;

fn cargo_build(extra: &[&str]) -> std::process::Output {
    // A separate target dir: the outer `cargo test` holds the build lock of its own.
    let target_dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/no-std-core");
    Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "confidant-update-core",
            "--no-default-features",
        ])
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs")
}

#[test]
fn verifier_core_builds_without_std() {
    let out = cargo_build(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verifier_core_builds_for_thumbv7em_when_the_target_is_installed() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("thumbv7em-none-eabihf"))
        .unwrap_or(false);
    if !installed {
        eprintln!("thumbv7em-none-eabihf not installed: only the host no_std build ran");
        return;
    }
    let out = cargo_build(&["--target", "thumbv7em-none-eabihf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
