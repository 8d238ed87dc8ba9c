//! TPM NV counter backend against swtpm (a real TPM 2.0 simulator): the
//! counter is monotonic, survives reconnects and TPM restarts, starts each
//! kind at 0 although the TPM's counters do not, and gates installs.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Device, Fixture, NOW, script};
use confidant_firmware_update::Error;
use confidant_firmware_update::FixedClock;
use confidant_firmware_update::counter::tpm::{DEFAULT_BASE_INDEX, TpmCounters};
use confidant_firmware_update::counter::{ArtifactKind, CounterStore};
use confidant_firmware_update::install::{self, TrialPolicy};
use confidant_firmware_update::slots::DefaultHealthCheck;
use confidant_firmware_update::transport::FileTransport;
use confidant_firmware_update::updater::{Config, Updater};

struct Swtpm {
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn swtpm(state: &Path) -> Swtpm {
    std::fs::create_dir_all(state).unwrap();
    let port = free_port_pair();
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .args([
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        ])
        .args([
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("swtpm runs (apt: swtpm)");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "swtpm did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Swtpm { child, port }
}

fn connect(t: &Swtpm) -> TpmCounters {
    // SAFETY-free: tss-esapi logs missing-index warnings through TSS2_LOG.
    TpmCounters::connect(&format!("swtpm:port={}", t.port), DEFAULT_BASE_INDEX).unwrap()
}

#[test]
fn swtpm_nv_counters_are_monotonic_and_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm");
    {
        let t = swtpm(&state);
        let mut c = connect(&t);
        assert_eq!(c.read(ArtifactKind::Server).unwrap(), 0);
        c.advance(ArtifactKind::Server, 3).unwrap();
        assert_eq!(c.read(ArtifactKind::Server).unwrap(), 3);
        // A second kind starts at 0 even though the TPM starts new counters
        // at the highest value any counter had.
        assert_eq!(c.read(ArtifactKind::Model).unwrap(), 0);
        c.advance(ArtifactKind::Model, 1).unwrap();
        assert_eq!(c.read(ArtifactKind::Model).unwrap(), 1);
        let refused = c.advance(ArtifactKind::Server, 2);
        assert!(
            matches!(
                refused,
                Err(Error::SecurityCounter {
                    stored: 3,
                    offered: 2,
                    ..
                })
            ),
            "{refused:?}"
        );
        c.advance(ArtifactKind::Server, 3).unwrap();
        drop(c);
        assert_eq!(connect(&t).read(ArtifactKind::Server).unwrap(), 3);
    }
    // A TPM restart keeps NV.
    let t = swtpm(&state);
    let mut c = connect(&t);
    assert_eq!(c.read(ArtifactKind::Server).unwrap(), 3);
    assert_eq!(c.read(ArtifactKind::Model).unwrap(), 1);
    assert_eq!(c.read(ArtifactKind::EdgeAgent).unwrap(), 0);
}

#[test]
fn swtpm_counter_gates_installs() {
    let dir = tempfile::tempdir().unwrap();
    let t = swtpm(&dir.path().join("tpm"));
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    let transport = FileTransport;
    let clock = FixedClock(NOW);
    let apply = |counters: &mut TpmCounters| {
        let mut u = Updater::new(
            dev.root.join("tuf"),
            &fx.metadata_url(),
            &transport,
            &clock,
            Config::default(),
        )?;
        install::apply(
            &mut u,
            &fx.targets_url(),
            &dev.slots(),
            counters,
            &DefaultHealthCheck::default(),
            &clock,
            TrialPolicy::default(),
            "server/confidant",
            &mut |_| {},
        )
    };
    let mut c = connect(&t);
    fx.release("1.1.0", 4, &script("1.1.0"));
    apply(&mut c).unwrap().unwrap();
    assert_eq!(
        c.read(ArtifactKind::Server).unwrap(),
        0,
        "advanced only by mark-good"
    );
    dev.slots().mark_good(&mut c).unwrap();
    assert_eq!(c.read(ArtifactKind::Server).unwrap(), 4);

    fx.release("1.2.0", 3, &script("1.2.0"));
    let err = apply(&mut c).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SecurityCounter {
                stored: 4,
                offered: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(dev.run_current(), "confidant 1.1.0");
}
