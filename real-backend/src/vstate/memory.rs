//! Guest memory: anonymous, lazily-backed host mappings that KVM memory slots point at.
//!
//! The guest writes this memory concurrently with the VMM, so the VMM never forms Rust
//! references to it while a vCPU may run: it copies pages in and out through raw pointers.

use crate::guest::PAGE;
use std::ptr::NonNull;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {bytes} bytes of guest memory: {source}")]
    Mmap { bytes: u64, source: std::io::Error },
}

/// One contiguous guest-physical region backed by an anonymous private mapping.
#[derive(Debug)]
pub struct GuestRegion {
    gpa: u64,
    host: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value; concurrent access from the guest and
// from VMM threads is mediated by raw-pointer copies (no references are held across threads).
unsafe impl Send for GuestRegion {}
// SAFETY: see `Send`; every method takes `&self` and only does raw copies or volatile accesses.
unsafe impl Sync for GuestRegion {}

impl GuestRegion {
    /// `populate` faults every page in now (MAP_POPULATE) instead of on first touch.
    pub fn new(gpa: u64, len: u64, populate: bool) -> Result<GuestRegion, MemoryError> {
        let extra = if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous mapping with no address hint has no preconditions; the result is
        // checked against MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemoryError::Mmap {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(GuestRegion {
            gpa,
            // mmap never returns null on success (MAP_FIXED is not used).
            host: NonNull::new(p as *mut u8).ok_or(MemoryError::Mmap {
                bytes: len,
                source: std::io::Error::other("mmap returned null"),
            })?,
            len: len as usize,
        })
    }

    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    pub fn len(&self) -> u64 {
        self.len as u64
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn pages(&self) -> u64 {
        self.len as u64 / PAGE
    }
    pub fn host_addr(&self) -> u64 {
        self.host.as_ptr() as u64
    }

    fn check(&self, off: u64, n: usize) {
        assert!(
            off as usize + n <= self.len,
            "guest memory access out of range"
        );
    }

    /// Copy `out.len()` bytes starting at region offset `off` into `out`.
    pub fn read(&self, off: u64, out: &mut [u8]) {
        self.check(off, out.len());
        // SAFETY: the range was bounds-checked against the mapping, `out` is a distinct Rust
        // buffer, and the mapping stays valid for `self`'s lifetime.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.host.as_ptr().add(off as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Copy `data` into the region at offset `off`.
    pub fn write(&self, off: u64, data: &[u8]) {
        self.check(off, data.len());
        // SAFETY: bounds-checked as in `read`; `data` cannot alias the mapping because no
        // references into it are ever handed out.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.host.as_ptr().add(off as usize),
                data.len(),
            )
        }
    }

    /// Zero `len` bytes at `off`.
    pub fn zero(&self, off: u64, len: u64) {
        self.check(off, len as usize);
        // SAFETY: bounds-checked; plain byte writes into our own mapping.
        unsafe { std::ptr::write_bytes(self.host.as_ptr().add(off as usize), 0, len as usize) }
    }

    pub fn read_u64(&self, off: u64) -> u64 {
        self.check(off, 8);
        assert!(off.is_multiple_of(8), "unaligned u64 access");
        // SAFETY: in range and 8-byte aligned (the mapping is page-aligned); volatile because
        // the guest may write the word concurrently.
        unsafe { std::ptr::read_volatile(self.host.as_ptr().add(off as usize) as *const u64) }
    }

    pub fn write_u64(&self, off: u64, v: u64) {
        self.check(off, 8);
        assert!(off.is_multiple_of(8), "unaligned u64 access");
        // SAFETY: as in `read_u64`.
        unsafe { std::ptr::write_volatile(self.host.as_ptr().add(off as usize) as *mut u64, v) }
    }

    pub fn read_u8(&self, off: u64) -> u8 {
        self.check(off, 1);
        // SAFETY: in range; volatile for the same reason as `read_u64`.
        unsafe { std::ptr::read_volatile(self.host.as_ptr().add(off as usize)) }
    }

    /// A view of the whole region.
    ///
    /// # Safety
    /// No vCPU may write this memory while the slice is alive (pause the vCPUs first), and the
    /// caller must not write the region through other methods meanwhile.
    pub unsafe fn as_slice_paused(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` bytes; the caller guarantees no writes happen
        // while the slice lives.
        unsafe { std::slice::from_raw_parts(self.host.as_ptr(), self.len) }
    }

    /// A mutable view, for building initial contents before any vCPU exists.
    ///
    /// # Safety
    /// No vCPU may run and no other view of the region may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice_unshared(&self) -> &mut [u8] {
        // SAFETY: the mapping is valid for `len` bytes; the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.host.as_ptr(), self.len) }
    }

    /// Digest of every `DIGEST_CHUNK` bytes of the region (xxh3-64), in order.
    ///
    /// # Safety
    /// As [`GuestRegion::as_slice_paused`]: the vCPUs must be paused.
    pub unsafe fn digest_paused(&self) -> Vec<u64> {
        // SAFETY: forwarded from the caller.
        let s = unsafe { self.as_slice_paused() };
        s.chunks(DIGEST_CHUNK)
            .map(xxhash_rust::xxh3::xxh3_64)
            .collect()
    }
}

/// Granularity of memory digests (so a mismatch can be located).
pub const DIGEST_CHUNK: usize = 2 << 20;

impl Drop for GuestRegion {
    fn drop(&mut self) {
        // SAFETY: `host`/`len` describe a mapping this value created and still owns; KVM slots
        // that point at it belong to a VM that is dropped before (or with) the region.
        unsafe {
            libc::munmap(self.host.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

/// True when every byte of `page` is zero.
pub fn is_zero(page: &[u8]) -> bool {
    let (pre, words, post) =
        // SAFETY: reinterpreting initialized bytes as u64 is valid for any bit pattern;
        // `align_to` handles alignment.
        unsafe { page.align_to::<u64>() };
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_and_digest() {
        let r = GuestRegion::new(0, 4 << 20, false).unwrap();
        assert_eq!(r.pages(), 1024);
        r.write_u64(4096, 0xdead_beef);
        assert_eq!(r.read_u64(4096), 0xdead_beef);
        let mut buf = vec![0u8; 4096];
        r.read(4096, &mut buf);
        assert!(!is_zero(&buf));
        r.read(8192, &mut buf);
        assert!(is_zero(&buf));
        // SAFETY: no vCPU exists in this test.
        let d1 = unsafe { r.digest_paused() };
        r.write(8192, &[1]);
        // SAFETY: as above.
        let d2 = unsafe { r.digest_paused() };
        assert_eq!(d1.len(), 2);
        assert_ne!(d1[0], d2[0]);
        assert_eq!(d1[1], d2[1]);
    }
}
