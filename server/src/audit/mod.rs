//! The audit log: append-only, hash-chained JSON lines, one per request.
//!
//! Each line is a JSON object with `seq` (1 for the first line of a file,
//! then +1 per line) and `prev`, the hex SHA-256 of the previous line's
//! exact bytes without its newline (for the first line: 64 zeros). Editing
//! a line breaks the `prev` of the next one; removing a line breaks `seq`
//! and `prev`; cutting the file inside a line leaves a last line without a
//! newline. Cutting it at a line boundary (or rewriting every line after
//! some point) leaves a valid shorter chain: only a copy of the head kept
//! elsewhere (`confidant audit verify --head`) shows that.
//!
//! Request lines hold the time of arrival (RFC 3339, UTC), the key id (never
//! the key), method, route template, status, prompt and completion token
//! counts, latency, whether the response was sent completely, the client
//! address and, for refusals, the reason. Prompt and completion text only
//! with `include_content = true`.
//!
//! One thread writes: entries come through a bounded channel, are written
//! in order with one `write` per batch to a file opened `O_APPEND` and
//! locked against a second writer, then `fdatasync`ed (group commit:
//! `fsync = true`, the default) before the next batch. A failed write cuts
//! the file back to its last good length and drops that batch (counted),
//! so the chain on disk stays whole. On start the tail of an existing file
//! (up to its last 16 MiB) is verified and the chain continued; a broken
//! file is never appended to: it is renamed `<path>.broken-<unix time>`, a
//! new file is started whose first line says so, and the server logs an
//! error.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::SystemTime;

use anyhow::{Context, bail};

mod chain;
pub use chain::{Broken, GENESIS, Head, Verdict, verify_file, verify_reader};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How much of an existing file is verified when the server opens it.
const TAIL_CHECK: u64 = 16 << 20;
/// Entries waiting for the writer; past this, request tasks wait.
const QUEUE: usize = 4096;

/// `[audit]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Write the audit log.
    pub enabled: bool,
    /// The log file (default: `audit.jsonl` in the state directory).
    pub path: Option<PathBuf>,
    /// Also log prompt and completion text.
    pub include_content: bool,
    /// `fdatasync` after each batch of lines.
    pub fsync: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            include_content: false,
            fsync: true,
        }
    }
}

impl AuditConfig {
    /// The log file for a server whose state directory is `state_dir`.
    pub fn path_in(&self, state_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| state_dir.join("audit.jsonl"))
    }
}

/// One request as the log records it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// Arrival time, RFC 3339 UTC.
    pub time: String,
    /// The API key's id, if one was presented and valid.
    pub key_id: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Route template (`/v1/models/{id}`), or `unmatched`.
    pub route: String,
    /// Response status.
    pub status: u16,
    /// Why access was refused (401/403/429), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Prompt tokens, for completions.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, for completions.
    pub completion_tokens: Option<u64>,
    /// Milliseconds from arrival to the end of the response.
    pub latency_ms: u64,
    /// Whether the whole response was sent (false: the client left early).
    pub complete: bool,
    /// Client address.
    pub client: Option<String>,
    /// Prompt text (`include_content` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Completion text (`include_content` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
}

enum Entry {
    Request(Record),
    Restarted {
        broken_file: String,
        problem: String,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    event: &'static str,
    #[serde(flatten)]
    body: LineBody<'a>,
    prev: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum LineBody<'a> {
    Request(&'a Record),
    Restarted {
        time: String,
        broken_file: &'a str,
        problem: &'a str,
    },
}

/// Counters the metrics endpoint shows.
#[derive(Default, Debug)]
pub struct AuditStats {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines lost to write errors.
    pub dropped: AtomicU64,
    /// `seq` of the last line written.
    pub seq: AtomicU64,
}

/// The running audit log. Dropping it writes what is queued and stops the
/// writer.
pub struct AuditLog {
    tx: Option<SyncSender<Entry>>,
    writer: Option<std::thread::JoinHandle<()>>,
    include_content: bool,
    /// Counters.
    pub stats: Arc<AuditStats>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, verifies its tail and
    /// starts the writer.
    pub fn open(path: &Path, cfg: &AuditConfig) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = open_locked(path)?;
        let len = file.metadata()?.len();
        let (file, head, restarted) = match check_tail(&mut file, len) {
            Ok(h) => (file, h, None),
            Err(problem) => {
                let aside = PathBuf::from(format!(
                    "{}.broken-{}",
                    path.display(),
                    crate::state::unix_now()
                ));
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    %problem,
                    "AUDIT LOG CHAIN IS BROKEN: not appending to it; starting a new log"
                );
                std::fs::rename(path, &aside).with_context(|| {
                    format!("cannot move the broken audit log {}", path.display())
                })?;
                drop(file);
                let restarted = Entry::Restarted {
                    broken_file: aside.display().to_string(),
                    problem,
                };
                (open_locked(path)?, Head::genesis(), Some(restarted))
            }
        };
        tracing::info!(path = %path.display(), seq = head.seq, head = %head.hash, "audit log open");
        let stats = Arc::new(AuditStats::default());
        stats.seq.store(head.seq, Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        if let Some(r) = restarted {
            // Cannot fail: the receiver is alive and the queue empty.
            let _ = tx.send(r);
        }
        let w = Writer {
            file,
            head,
            good_len: 0,
            fsync: cfg.fsync,
            stats: stats.clone(),
            path: path.to_owned(),
        };
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .context("cannot start the audit writer")?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            include_content: cfg.include_content,
            stats,
            path: path.to_owned(),
        })
    }

    /// Whether prompt and completion text are logged.
    pub fn include_content(&self) -> bool {
        self.include_content
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record; waits if the writer is [`QUEUE`] entries behind.
    pub fn record(&self, r: Record) {
        if let Some(tx) = &self.tx
            && tx.send(Entry::Request(r)).is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn open_locked(path: &Path) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the audit log {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the audit log {} is in use by another process",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    Ok(file)
}

/// Verifies the last [`TAIL_CHECK`] bytes of an open log (all of it when
/// smaller) and returns its head.
fn check_tail(file: &mut File, len: u64) -> Result<Head, String> {
    let start = len.saturating_sub(TAIL_CHECK);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&mut *file);
    if start > 0 {
        // Drop the partial line the window starts in.
        let mut junk = Vec::new();
        r.read_until(b'\n', &mut junk).map_err(|e| e.to_string())?;
    }
    match verify_reader(r, start > 0).map_err(|e| e.to_string())? {
        Verdict::Intact { head, .. } => Ok(head),
        Verdict::Broken(b) => Err(format!("line {} of the checked tail: {}", b.line, b.detail)),
    }
}

struct Writer {
    file: File,
    head: Head,
    good_len: u64,
    fsync: bool,
    stats: Arc<AuditStats>,
    path: PathBuf,
}

impl Writer {
    fn run(mut self, rx: Receiver<Entry>) {
        self.good_len = self.file.metadata().map_or(0, |m| m.len());
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.write_batch(&mut batch);
        }
        tracing::info!(
            path = %self.path.display(),
            seq = self.head.seq,
            head = %self.head.hash,
            "audit log closed"
        );
    }

    fn write_batch(&mut self, batch: &mut Vec<Entry>) {
        let before = self.head.clone();
        let mut buf = Vec::new();
        let n = batch.len() as u64;
        for e in batch.drain(..) {
            let seq = self.head.seq + 1;
            let body = match &e {
                Entry::Request(r) => LineBody::Request(r),
                Entry::Restarted {
                    broken_file,
                    problem,
                } => LineBody::Restarted {
                    time: rfc3339(SystemTime::now()),
                    broken_file,
                    problem,
                },
            };
            let event = match &e {
                Entry::Request(_) => "request",
                Entry::Restarted { .. } => "log_restarted",
            };
            let line = Line {
                seq,
                event,
                body,
                prev: &self.head.hash,
            };
            let Ok(text) = serde_json::to_vec(&line) else {
                // Serialising plain strings and numbers does not fail.
                continue;
            };
            self.head = Head {
                seq,
                hash: hex::encode(Sha256::digest(&text)),
            };
            buf.extend_from_slice(&text);
            buf.push(b'\n');
        }
        let res = self.file.write_all(&buf).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                self.good_len += buf.len() as u64;
                self.stats.written.fetch_add(n, Ordering::Relaxed);
                self.stats.seq.store(self.head.seq, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep the chain on disk whole: cut back what was partly
                // written and continue from the last good line.
                let _ = self.file.set_len(self.good_len);
                self.head = before;
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(path = %self.path.display(), error = %e, lost = n, "cannot write the audit log");
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds: `2026-03-01T12:34:56.789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @951782400` = 2000-02-29 00:00:00 (leap day).
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        // `date -u -d @1767225599` = 2025-12-31 23:59:59.
        assert_eq!(at(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
    }

    fn write_log(path: &Path, n: usize) {
        let cfg = AuditConfig::default();
        let log = AuditLog::open(path, &cfg).unwrap();
        for i in 0..n {
            log.record(Record {
                time: rfc3339(SystemTime::now()),
                route: "/v1/models".into(),
                status: 200,
                latency_ms: i as u64,
                complete: true,
                ..Default::default()
            });
        }
    }

    fn verdict(path: &Path) -> Verdict {
        verify_file(path, None).unwrap()
    }

    #[test]
    fn chain_continues_across_reopen_and_mutations_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        write_log(&p, 3);
        write_log(&p, 3);
        let Verdict::Intact { lines, head } = verdict(&p) else {
            panic!("{:?}", verdict(&p))
        };
        assert_eq!((lines, head.seq), (6, 6));
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        // Edit line 3.
        let mut edited = lines.clone();
        let l3 = edited[2].replace("\"status\":200", "\"status\":201");
        edited[2] = &l3;
        std::fs::write(&p, edited.join("\n") + "\n").unwrap();
        let Verdict::Broken(b) = verdict(&p) else {
            panic!("edit not found")
        };
        assert_eq!((b.line, b.problem), (3, "altered"));

        // Delete line 4.
        let mut cut = lines.clone();
        cut.remove(3);
        std::fs::write(&p, cut.join("\n") + "\n").unwrap();
        let Verdict::Broken(b) = verdict(&p) else {
            panic!("deletion not found")
        };
        assert_eq!((b.line, b.problem), (4, "missing"));

        // Cut inside the last line.
        std::fs::write(&p, &text[..text.len() - 10]).unwrap();
        let Verdict::Broken(b) = verdict(&p) else {
            panic!("truncation not found")
        };
        assert_eq!((b.line, b.problem), (6, "truncated"));

        // Cut at a line boundary: only the head shows it.
        std::fs::write(&p, lines[..4].join("\n") + "\n").unwrap();
        assert!(matches!(verdict(&p), Verdict::Intact { lines: 4, .. }));
        let Verdict::Broken(b) = verify_file(&p, Some(&head.hash)).unwrap() else {
            panic!("cut at a boundary not found with the head")
        };
        assert_eq!(b.problem, "head_not_found");
        std::fs::write(&p, &text).unwrap();
        assert!(matches!(
            verify_file(&p, Some(&head.hash)).unwrap(),
            Verdict::Intact { .. }
        ));
    }

    #[test]
    fn broken_log_is_set_aside_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        write_log(&p, 2);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"status\":200", "\"status\":500")).unwrap();
        write_log(&p, 1);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".broken-"))
            .collect();
        assert_eq!(aside.len(), 1);
        let fresh = std::fs::read_to_string(&p).unwrap();
        assert!(fresh.lines().next().unwrap().contains("log_restarted"));
        assert!(matches!(verdict(&p), Verdict::Intact { lines: 2, .. }));
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let _a = AuditLog::open(&p, &AuditConfig::default()).unwrap();
        let b = AuditLog::open(&p, &AuditConfig::default());
        assert!(b.is_err());
    }
}
