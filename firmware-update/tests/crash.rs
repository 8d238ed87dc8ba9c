//! Crash test: an update is applied by a separate process that is killed
//! with SIGKILL at each install point; afterwards `status` reports a good
//! slot and the previous version still runs, and a new apply succeeds.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Device, Fixture, NOW, script};

fn apply_and_kill_at(fx: &Fixture, dev: &Device, point: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confidant-update-crash-helper"))
        .args([
            "apply",
            &dev.root.display().to_string(),
            &fx.metadata_url(),
            &fx.targets_url(),
            "server/confidant",
        ])
        .env("CONFIDANT_UPDATE_CRASH_AT", point)
        .env("CONFIDANT_UPDATE_NOW", NOW.0.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("reached {point}"),
        "helper did not reach {point}"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn killed_at_any_install_point_the_previous_version_still_runs() {
    let fx = Fixture::new();
    let seed = Device::new(&fx, "seed");
    seed.install_good(&fx);
    fx.release("2.0.0", 2, &script("2.0.0"));

    for point in ["download", "staged", "trial-recorded", "switch"] {
        let dev = Device::new(&fx, point);
        dev.install_good_at_version(&fx, &seed);
        apply_and_kill_at(&fx, &dev, point);

        let st = dev.slots().status().unwrap();
        assert_eq!(
            st.good, st.current,
            "{point}: current must be the good slot"
        );
        assert!(
            st.trial.is_none(),
            "{point}: no trial for an unswitched slot"
        );
        assert_eq!(st.current_meta.unwrap().version, "1.0.0", "{point}");
        assert_eq!(dev.run_current(), "confidant 1.0.0", "{point}");

        // The next start is uneventful, and a new apply completes.
        let d = dev.slots().on_start(NOW).unwrap();
        assert_eq!(
            d,
            confidant_firmware_update::slots::StartDecision::Good,
            "{point}"
        );
        dev.apply(&fx)
            .unwrap()
            .expect("2.0.0 installs after the crash");
        assert_eq!(dev.run_current(), "confidant 2.0.0", "{point}");
    }
}

#[test]
fn killed_after_the_switch_the_unconfirmed_version_is_rolled_back() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    fx.release("2.0.0", 2, &script("2.0.0"));
    apply_and_kill_at(&fx, &dev, "switched");

    let st = dev.slots().status().unwrap();
    assert_eq!(st.current_meta.unwrap().version, "2.0.0");
    assert_eq!(
        st.good_meta.unwrap().version,
        "1.0.0",
        "the fallback is recorded"
    );
    for _ in 0..3 {
        dev.slots().on_start(NOW).unwrap();
    }
    assert!(matches!(
        dev.slots().on_start(NOW).unwrap(),
        confidant_firmware_update::slots::StartDecision::RolledBack { .. }
    ));
    assert_eq!(dev.run_current(), "confidant 1.0.0");
}
