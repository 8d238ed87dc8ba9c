//! Helpers of the attested-flow tests: the built binary, children killed on
//! drop, waiting for a verified server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_confidant");

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CONFIDANT_KBS_DB")
        .output()
        .expect("confidant runs")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a command that must have failed.
pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `args` and returns it with the first stdout line that starts with `prefix`.
pub fn spawn_reading(args: &[&str], prefix: &str, log: &Path) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let p = Proc(child);
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(prefix) => {
                std::thread::spawn(move || for _ in lines {});
                return (p, l[prefix.len()..].trim().to_owned());
            }
            Some(Ok(_)) => continue,
            _ => panic!(
                "{args:?} ended before printing {prefix:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

/// Waits until `confidant verify` accepts the server.
pub fn wait_verified(url: &str, policy: &Path, log: &Path, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if run(&["verify", url, "--policy", policy.to_str().unwrap()])
            .status
            .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "server not verified in {limit:?}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
