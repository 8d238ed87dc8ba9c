//! Test helper for the crash test: `apply ROOT METADATA_URL TARGETS_URL
//! TARGET` runs the real install pipeline; when it reaches the install point
//! named by `CONFIDANT_UPDATE_CRASH_AT` it prints `reached <point>` and
//! waits to be killed (the test sends SIGKILL). Not installed anywhere.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use confidant_firmware_update::counter::FileCounters;
use confidant_firmware_update::install::{self, TrialPolicy};
use confidant_firmware_update::slots::{DefaultHealthCheck, Slots};
use confidant_firmware_update::transport::FileTransport;
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{SystemClock, UnixTime};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, root, metadata_url, targets_url, target] = args.as_slice() else {
        eprintln!("usage: apply ROOT METADATA_URL TARGETS_URL TARGET");
        return ExitCode::from(2);
    };
    if cmd != "apply" {
        return ExitCode::from(2);
    }
    let crash_at = std::env::var("CONFIDANT_UPDATE_CRASH_AT").unwrap_or_default();
    // The repository fixtures are dated 2030-01-01; pin the clock there.
    let clock = std::env::var("CONFIDANT_UPDATE_NOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|t| confidant_firmware_update::FixedClock(UnixTime(t)));
    let run = || -> Result<(), confidant_firmware_update::Error> {
        let transport = FileTransport;
        let clock: &dyn confidant_firmware_update::Clock = match &clock {
            Some(c) => c,
            None => &SystemClock,
        };
        let mut u = Updater::new(
            format!("{root}/tuf"),
            metadata_url,
            &transport,
            clock,
            Config::default(),
        )?;
        let slots = Slots::open(root)?;
        let mut counters = FileCounters::new(format!("{root}/counters"))?;
        install::apply(
            &mut u,
            targets_url,
            &slots,
            &mut counters,
            &DefaultHealthCheck::default(),
            clock,
            TrialPolicy::default(),
            target,
            &mut |point| {
                if point.as_str() == crash_at {
                    println!("reached {crash_at}");
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(std::time::Duration::from_secs(120));
                }
            },
        )?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
