//! Client-under-test for the TUF conformance suite (tuf-conformance,
//! CLIENT-CLI.md): `init`, `refresh`, `download`; exit 0 on success, 1 on
//! any failure. Uses exactly the client the `confidant update` commands use.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use confidant_firmware_update::metadata::check_length_and_hashes;
use confidant_firmware_update::transport::DefaultTransport;
use confidant_firmware_update::updater::{Config, Updater, quote};
use confidant_firmware_update::{Error, SystemClock};

#[derive(Default)]
struct Args {
    metadata_dir: Option<PathBuf>,
    metadata_url: Option<String>,
    target_name: Option<String>,
    target_base_url: Option<String>,
    target_dir: Option<PathBuf>,
    command: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--metadata-dir" => a.metadata_dir = Some(value(&arg)?.into()),
            "--metadata-url" => a.metadata_url = Some(value(&arg)?),
            "--target-name" => a.target_name = Some(value(&arg)?),
            "--target-base-url" => a.target_base_url = Some(value(&arg)?),
            "--target-dir" => a.target_dir = Some(value(&arg)?.into()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => a.command.push(arg),
        }
    }
    Ok(a)
}

fn run(a: Args) -> Result<(), String> {
    let need = |o: Option<String>, n: &str| o.ok_or_else(|| format!("{n} is required"));
    let metadata_dir = a.metadata_dir.ok_or("--metadata-dir is required")?;
    let cmd: Vec<&str> = a.command.iter().map(String::as_str).collect();
    let transport = DefaultTransport;
    let e = |e: Error| e.to_string();
    match cmd.as_slice() {
        ["init", root] => {
            let bytes = std::fs::read(root).map_err(|e| format!("{root}: {e}"))?;
            Updater::init(&metadata_dir, &bytes).map_err(e)
        }
        ["refresh"] => {
            let url = need(a.metadata_url, "--metadata-url")?;
            let mut u = Updater::new(
                &metadata_dir,
                &url,
                &transport,
                &SystemClock,
                Config::default(),
            )
            .map_err(e)?;
            u.refresh().map_err(e)
        }
        ["download"] => {
            let url = need(a.metadata_url, "--metadata-url")?;
            let name = need(a.target_name, "--target-name")?;
            let base = need(a.target_base_url, "--target-base-url")?;
            let dir = a.target_dir.ok_or("--target-dir is required")?;
            let mut u = Updater::new(
                &metadata_dir,
                &url,
                &transport,
                &SystemClock,
                Config::default(),
            )
            .map_err(e)?;
            let info = u.target_info(&name).map_err(e)?;
            let path = dir.join(quote(&name));
            if let Ok(cached) = std::fs::read(&path)
                && check_length_and_hashes(&cached, Some(info.length), Some(&info.hashes), &name)
                    .is_ok()
            {
                return Ok(());
            }
            let data = u.fetch_target(&base, &name, &info).map_err(e)?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            confidant_firmware_update::fsutil::write_atomic(&path, &data).map_err(e)
        }
        _ => Err(
            "usage: --metadata-dir DIR [--metadata-url URL] (init ROOT | refresh | download)"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("confidant-tuf-conformance-client: {msg}");
            ExitCode::from(1)
        }
    }
}
