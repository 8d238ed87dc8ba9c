//! Memory for plaintext model weights: anonymous, locked (`mlock`, never
//! swapped to disk), excluded from core dumps (`MADV_DONTDUMP`) and wiped
//! before it is returned to the system.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, ProtFlags};

/// Why locked memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockedError {
    /// `mmap` failed.
    #[error("cannot map {len} bytes: {source}")]
    Map { len: usize, source: std::io::Error },
    /// `mlock` failed (usually `ulimit -l` without CAP_IPC_LOCK).
    #[error(
        "cannot lock {len} bytes in memory ({source}); raise `ulimit -l` or grant CAP_IPC_LOCK"
    )]
    Lock { len: usize, source: std::io::Error },
    /// `madvise(MADV_DONTDUMP)` failed.
    #[error("cannot exclude {len} bytes from core dumps: {source}")]
    DontDump { len: usize, source: std::io::Error },
}

/// A fixed-size, page-aligned buffer that is locked in RAM, excluded from
/// core dumps, and zeroed then unmapped on drop.
pub struct LockedBuffer {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
}

// SAFETY: the buffer is exclusively owned memory with no interior
// references; moving or sharing it across threads is like a Vec<u8>.
unsafe impl Send for LockedBuffer {}
// SAFETY: shared access only reads through `&self`.
unsafe impl Sync for LockedBuffer {}

impl LockedBuffer {
    /// Maps `len` zeroed bytes, locks them and marks them non-dumpable.
    pub fn new(len: usize) -> Result<Self, LockedError> {
        let map_len = len.max(1);
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choice aliases nothing; the result is checked before use.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|e| LockedError::Map {
            len,
            source: e.into(),
        })?;
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            return Err(LockedError::Map {
                len,
                source: std::io::Error::other("null mapping"),
            });
        };
        let buf = Self { ptr, len, map_len };
        // SAFETY: [p, p + map_len) is the mapping just created.
        unsafe { rustix::mm::mlock(p, map_len) }.map_err(|e| LockedError::Lock {
            len,
            source: e.into(),
        })?;
        // SAFETY: as above; DONTDUMP only changes core-dump behaviour.
        unsafe { rustix::mm::madvise(p, map_len, Advice::LinuxDontDump) }.map_err(|e| {
            LockedError::DontDump {
                len,
                source: e.into(),
            }
        })?;
        Ok(buf)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, writable (to decrypt into).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes for as long as self lives, and
        // &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for LockedBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for as long as self lives; no
        // &mut exists while &self is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LockedBuffer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.as_mut_slice());
        let p = self.ptr.as_ptr().cast::<c_void>();
        // SAFETY: the mapping is ours and no slice of it outlives self.
        unsafe {
            let _ = rustix::mm::munlock(p, self.map_len);
            let _ = rustix::mm::munmap(p, self.map_len);
        }
    }
}

impl std::fmt::Debug for LockedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockedBuffer({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_locked_zeroed_and_writable() {
        let mut b =
            LockedBuffer::new(3 << 20).expect("locked memory (needs CAP_IPC_LOCK or ulimit -l)");
        assert!(b.as_ref().iter().all(|&x| x == 0));
        b.as_mut_slice()[12345] = 7;
        assert_eq!(b.as_ref()[12345], 7);
        // The kernel reports the pages as locked for this process.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let locked_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmLck");
        assert!(locked_kb >= 3 * 1024, "VmLck {locked_kb} kB");
        let bytes = bytes::Bytes::from_owner(b);
        assert_eq!(bytes.len(), 3 << 20);
    }
}
