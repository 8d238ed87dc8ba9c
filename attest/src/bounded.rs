//! Bounded reads of files.

use std::path::Path;

use crate::{Error, Result};

pub(crate) fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() > max {
        return Err(Error::TooLarge {
            what: "file",
            len: buf.len(),
            max,
        });
    }
    Ok(buf)
}
