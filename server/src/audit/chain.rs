//! The chain: what makes a line follow another, and `verify`.
//!
//! Line n (1-based) must have `seq` = n and `prev` = hex SHA-256 of line
//! n-1's bytes without its newline ([`GENESIS`] for line 1). A line whose
//! `seq` jumps ahead means lines were removed before it; a `prev` that does
//! not match while `seq` runs on means the line before was changed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of a file's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line `verify` accepts (a line holds at most a request body and a
/// completion when content is logged).
const MAX_LINE: usize = 64 << 20;

/// The last line of a chain: its `seq` and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    /// `seq` of the last line (0: empty).
    pub seq: u64,
    /// Hex SHA-256 of the last line (the genesis value when empty).
    pub hash: String,
}

impl Head {
    pub(super) fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Every link holds.
    Intact {
        /// Lines checked.
        lines: u64,
        /// The last line.
        head: Head,
    },
    /// The first broken link.
    Broken(Broken),
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// 1-based line number of the line that cannot be trusted.
    pub line: u64,
    /// What kind of problem: `altered`, `missing`, `malformed`, `truncated`,
    /// `head_not_found`.
    pub problem: &'static str,
    /// Human explanation.
    pub detail: String,
}

#[derive(Deserialize)]
struct Links {
    seq: u64,
    prev: String,
}

/// Verifies a whole log from its first line. With `head` (the hash of the
/// last line an outside copy saw), also checks that this line is still in
/// the file: if it is gone, the file was cut or rewritten.
pub fn verify_file(path: &Path, head: Option<&str>) -> anyhow::Result<Verdict> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (v, head_seen) = walk(BufReader::new(f), false, head)?;
    Ok(match (head, v) {
        (Some(h), Verdict::Intact { lines, .. }) if !head_seen => Verdict::Broken(Broken {
            line: lines + 1,
            problem: "head_not_found",
            detail: format!(
                "no line hashes to {h}: the log was cut (or rewritten) after line {lines}"
            ),
        }),
        (_, v) => v,
    })
}

/// Verifies the lines `r` yields; `mid_file`: `r` starts at a line boundary
/// inside a log, so its first line's predecessor is unknown.
pub fn verify_reader(r: impl BufRead, mid_file: bool) -> std::io::Result<Verdict> {
    Ok(walk(r, mid_file, None)?.0)
}

/// The chain walk; also says whether a line hashed to `head`.
fn walk(
    mut r: impl BufRead,
    mid_file: bool,
    head: Option<&str>,
) -> std::io::Result<(Verdict, bool)> {
    let mut line_no = 0u64;
    let mut prev: Option<(u64, String)> = (!mid_file).then(|| (0, GENESIS.to_owned()));
    let mut buf = Vec::new();
    let mut head_seen = false;
    let broken = |line, problem, detail: String| {
        Ok((
            Verdict::Broken(Broken {
                line,
                problem,
                detail,
            }),
            false,
        ))
    };
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_LINE {
                return broken(
                    line_no,
                    "malformed",
                    format!("longer than {MAX_LINE} bytes"),
                );
            }
            return broken(
                line_no,
                "truncated",
                "the last line has no newline: the file was cut inside a line".into(),
            );
        }
        buf.pop();
        let links: Links = match serde_json::from_slice(&buf) {
            Ok(l) => l,
            Err(e) => return broken(line_no, "malformed", format!("not an audit line: {e}")),
        };
        if let Some((pseq, phash)) = &prev {
            let want = pseq + 1;
            if links.seq > want {
                return broken(
                    line_no,
                    "missing",
                    format!(
                        "seq is {} where {want} was due: {} line(s) removed before this one",
                        links.seq,
                        links.seq - want
                    ),
                );
            }
            if links.seq < want {
                return broken(
                    line_no,
                    "altered",
                    format!(
                        "seq is {} where {want} was due (repeated or reordered)",
                        links.seq
                    ),
                );
            }
            if links.prev != *phash {
                if line_no == 1 {
                    return broken(
                        1,
                        "altered",
                        "the first line's prev is not the genesis value".into(),
                    );
                }
                // seq runs on, so nothing is missing: the line before no
                // longer hashes to what this one recorded.
                return broken(
                    line_no - 1,
                    "altered",
                    format!(
                        "line {} does not hash to the prev recorded by line {line_no}: it was changed (or line {line_no}'s prev was)",
                        line_no - 1
                    ),
                );
            }
        }
        let hash = hex::encode(Sha256::digest(&buf));
        head_seen |= head == Some(hash.as_str());
        prev = Some((links.seq, hash));
    }
    let (seq, hash) = prev.unwrap_or((0, GENESIS.into()));
    Ok((
        Verdict::Intact {
            lines: line_no,
            head: Head { seq, hash },
        },
        head_seen,
    ))
}
