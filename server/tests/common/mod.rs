//! Shared by the server's integration tests: the default model's path and a
//! `confidant serve` child process on a free loopback port.
#![allow(dead_code)]

pub mod flow;
pub mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of the default model: `CONFIDANT_MODEL`, else what `scripts/fetch-model` prints last.
pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("CONFIDANT_MODEL") {
            return PathBuf::from(p);
        }
        let out = Command::new(workspace().join("scripts/fetch-model"))
            .output()
            .expect("run scripts/fetch-model");
        assert!(out.status.success(), "scripts/fetch-model failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(stdout.lines().last().expect("a path").trim())
    })
    .clone()
}

/// A free loopback port (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A running `confidant serve`, killed on drop. Its log goes to a file.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// State directory of a server started without `--config`.
    pub dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the server with extra flags and waits until `/readyz` is 200.
    /// Without `--config` among them, it gets a development configuration:
    /// a state directory of its own (key store, audit log) and no API keys
    /// required.
    pub fn start(extra: &[&str]) -> Server {
        let mut dev = Vec::new();
        let dir = (!extra.contains(&"--config")).then(|| {
            let dir = tempfile::tempdir().expect("state dir");
            let cfg = dir.path().join("serve.toml");
            std::fs::write(
                &cfg,
                format!(
                    "state_dir = {:?}\n[auth]\nrequired = false\nper_address_rpm = 1000000\nper_address_burst = 100000\n",
                    dir.path().display().to_string()
                ),
            )
            .expect("write config");
            dev = vec!["--config".to_owned(), cfg.display().to_string()];
            dir
        });
        let addr = free_addr();
        let log = std::env::temp_dir().join(format!("confidant-serve-{}.log", addr.port()));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_confidant"))
            .arg("serve")
            .arg("--model")
            .arg(model_path())
            .arg("--listen")
            .arg(addr.to_string())
            // The OpenAI API tests use the plaintext model over plain HTTP;
            // the attested flow has its own tests (attested.rs).
            .args(["--insecure-plaintext-model", "--insecure-plain-http"])
            .args(&dev)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start confidant serve");
        let s = Server {
            child,
            addr,
            log,
            dir,
        };
        s.wait_ready(Duration::from_secs(120));
        s
    }

    fn wait_ready(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok((200, _)) = self.get("/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "server not ready in {limit:?}; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Minimal HTTP/1.1 GET returning (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut rest = String::new();
        r.read_to_string(&mut rest)?;
        let body = rest
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Stops the server with SIGTERM (graceful: the audit log is flushed and
    /// closed) and waits up to 20 s for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not stop on SIGTERM");
    }

    /// `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `python3 server/tests/<script> <args>` with env, asserting success;
/// returns its standard output.
pub fn python(script: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let out = Command::new("python3")
        .arg(workspace().join("server/tests").join(script))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}
