//! configfs-tsm attester against a directory laid out as the kernel lays it
//! out (Documentation/ABI/testing/configfs-tsm-report). No SEV-SNP or TDX
//! hardware is present here: a thread plays the kernel's part, filling each
//! new report entry with `provider`, `generation` and a canned `outblob`
//! (a real SNP report from ../shared/vectors) and `auxblob`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use confidant_attest::EvidenceBundle;
use confidant_attest::attester::{Attester, BoundData, ConfigfsTsm};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

/// Little-endian GUID bytes of the VCEK entry of an SNP certificate table.
const VCEK_GUID: [u8; 16] = [
    0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

fn cert_table(vcek: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    let data_off = 24 * 2;
    t.extend_from_slice(&VCEK_GUID);
    t.extend_from_slice(&(data_off as u32).to_le_bytes());
    t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0u8; 24]);
    t.extend_from_slice(vcek);
    t
}

struct FakeKernel {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake_kernel(
    root: &Path,
    provider: &'static str,
    outblob: Vec<u8>,
    auxblob: Vec<u8>,
) -> FakeKernel {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let report: PathBuf = root.join("report");
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Ok(rd) = std::fs::read_dir(&report) {
                for e in rd.flatten() {
                    let d = e.path();
                    if d.join("provider").exists() {
                        continue;
                    }
                    let _ = std::fs::write(d.join("outblob"), &outblob);
                    let _ = std::fs::write(d.join("auxblob"), &auxblob);
                    let _ = std::fs::write(d.join("generation"), "1\n");
                    let _ = std::fs::write(d.join("privlevel_floor"), "0\n");
                    let _ = std::fs::write(d.join("provider"), format!("{provider}\n"));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    FakeKernel {
        stop,
        thread: Some(thread),
    }
}

#[test]
fn configfs_tsm_fixture_no_hardware_snp_report_and_cert_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("report")).unwrap();
    let report = std::fs::read(format!("{VECTORS}/snp/milan-virtee/report.bin")).unwrap();
    let vcek = std::fs::read(format!("{VECTORS}/snp/milan-virtee/vcek.der")).unwrap();
    let _k = fake_kernel(dir.path(), "sev_guest", report.clone(), cert_table(&vcek));
    let mut a = ConfigfsTsm::new(dir.path().to_path_buf()).unwrap();
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&report[0x50..0x90]);
    let bundle = a
        .evidence(&BoundData {
            report_data: rd,
            tpm_extra_data: vec![],
        })
        .expect("evidence from the fixture");
    match bundle {
        EvidenceBundle::Snp { report: r, vek, .. } => {
            assert_eq!(r.as_bytes(), &report[..]);
            assert_eq!(vek.unwrap().as_bytes(), &vcek[..]);
        }
        other => panic!("{other:?}"),
    }
    // The entry was removed after use.
    assert_eq!(
        std::fs::read_dir(dir.path().join("report"))
            .unwrap()
            .count(),
        0
    );
    // A report not carrying the requested REPORT_DATA is refused.
    let e = a
        .evidence(&BoundData {
            report_data: [9; 64],
            tpm_extra_data: vec![],
        })
        .expect_err("REPORT_DATA mismatch");
    assert!(e.to_string().contains("REPORT_DATA"), "{e}");
}

#[test]
fn configfs_tsm_fixture_no_hardware_tdx_quote() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("report")).unwrap();
    let quote = std::fs::read(format!("{VECTORS}/tdx/dcap-sample-v4/quote.bin")).unwrap();
    let _k = fake_kernel(dir.path(), "tdx_guest", quote.clone(), Vec::new());
    let mut a = ConfigfsTsm::new(dir.path().to_path_buf()).unwrap();
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&quote[48 + 520..48 + 584]);
    let bundle = a
        .evidence(&BoundData {
            report_data: rd,
            tpm_extra_data: vec![],
        })
        .unwrap();
    assert_eq!(
        bundle,
        EvidenceBundle::Tdx {
            quote: confidant_attest::Hex(quote)
        }
    );
}

#[test]
fn configfs_tsm_fixture_no_hardware_unknown_provider_and_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        ConfigfsTsm::new(dir.path().to_path_buf()).is_err(),
        "no report/ directory"
    );
    std::fs::create_dir(dir.path().join("report")).unwrap();
    let _k = fake_kernel(dir.path(), "arm_cca_guest", vec![0; 1184], Vec::new());
    let mut a = ConfigfsTsm::new(dir.path().to_path_buf()).unwrap();
    let e = a
        .evidence(&BoundData {
            report_data: [0; 64],
            tpm_extra_data: vec![],
        })
        .unwrap_err();
    assert!(e.to_string().contains("unknown provider"), "{e}");
}
