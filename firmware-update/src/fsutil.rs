//! Crash-safe file writes: write a temporary file in the same directory,
//! fsync it, rename it over the target, fsync the directory.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Replaces `path` with `data` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two threads writing the same file never
    // share a temporary.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(Error::io("creating", &tmp))?;
    f.write_all(data).map_err(Error::io("writing", &tmp))?;
    f.sync_all().map_err(Error::io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(Error::io("renaming into", path))?;
    fsync_dir(dir)
}

/// Makes a directory's entries (renames, creations) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Removes `dir` and everything in it; a missing `dir` is fine.
pub fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("clearing", dir)(e)),
        _ => Ok(()),
    }
}

/// Creates `dir` and any missing parents durably: each new directory's
/// entry is fsync'd in its parent, so a power loss cannot take back a
/// directory that later writes were made durable in.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    for d in missing {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_dirs_and_concurrent_atomic_writes() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        create_dir_durable(&d).unwrap();
        create_dir_durable(&d).unwrap();
        assert!(d.is_dir());
        let f = d.join("x.json");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let f = &f;
                s.spawn(move || write_atomic(f, &[i; 64]).unwrap());
            }
        });
        let got = std::fs::read(&f).unwrap();
        assert!(got.len() == 64 && got.iter().all(|&b| b == got[0]));
        let leftovers = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
    }
}
