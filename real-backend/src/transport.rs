//! Framed, checksummed migration stream over TCP, with a paced link on the sending side.
//!
//! ```text
//!  frame = magic u16 | kind u8 | 0 u8 | len u32 | crc32 u32 (over the first 8 header bytes and
//!          the payload) | payload[len]
//!  pages payload = repeated { word u64 = page index | ZERO flag | SYS flag ; 4096 bytes unless ZERO }
//! ```
//!
//! The pacer is a token bucket at the link's bandwidth; a one-way delay of RTT/2 is added by a
//! delay-line thread that writes each frame to the socket no earlier than `sent + RTT/2`.

use crate::guest::PAGE;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("link: {0}")]
    Io(#[from] io::Error),
    #[error("link: connection closed by the peer")]
    Closed,
    #[error("corrupt frame: bad magic {0:#x}")]
    BadMagic(u16),
    #[error("corrupt frame: kind {kind} of {len} bytes fails its checksum")]
    Checksum { kind: u8, len: u32 },
    #[error("frame of {0} bytes is too large")]
    TooLarge(u32),
    #[error("unexpected frame kind {0}")]
    Unexpected(u8),
    #[error("malformed {0} payload")]
    Malformed(&'static str),
}

pub const MAGIC: u16 = 0x4d47;
pub const HEADER_BYTES: usize = 12;
const MAX_FRAME: u32 = 64 << 20;

/// Frame kinds.
pub mod kind {
    /// src→dst: guest shape (RAM bytes, vCPUs, guest mode) — the destination builds its VM.
    pub const HELLO: u8 = 1;
    /// dst→src: VM built, ready for pages.
    pub const READY: u8 = 2;
    pub const PAGES: u8 = 3;
    /// src→dst: machine state and the source's memory digest; switch over.
    pub const STATE: u8 = 4;
    /// dst→src: resumed, with timestamps.
    pub const RESUMED: u8 = 5;
    /// dst→src: the guest kept running on the destination (progress, consistency check).
    pub const FINAL: u8 = 6;
    /// either way: a failure with a message.
    pub const ERROR: u8 = 7;
    /// src→dst: migration abandoned; exit.
    pub const ABORT: u8 = 8;
    /// src→dst: restore from a quick-migration file (payload: path, UTF-8).
    pub const RESTORE_FILE: u8 = 9;
    /// src→dst: digests of the source memory at pause (RAM chunks, then the system region).
    pub const DIGEST: u8 = 10;
    /// src→dst: answer with BARRIER_ACK once everything before it has been applied.
    pub const BARRIER: u8 = 11;
    pub const BARRIER_ACK: u8 = 12;
    /// src→dst: where the workload feeder stopped (guest time, pending pages), so the
    /// destination's feeder carries the same workload on after the switchover.
    pub const FEEDER: u8 = 13;
}

/// Page word flags.
pub const ZERO_FLAG: u64 = 1 << 63;
pub const SYS_FLAG: u64 = 1 << 62;
pub const INDEX_MASK: u64 = (1 << 62) - 1;

/// Encode a frame into `out` (appending). Returns its wire size.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> usize {
    let mut h = [0u8; HEADER_BYTES];
    h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    h[2] = kind;
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&h[0..8]);
    c.update(payload);
    h[8..12].copy_from_slice(&c.finalize().to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    HEADER_BYTES + payload.len()
}

/// Read one frame; verifies magic and checksum.
pub fn read_frame(r: &mut impl Read) -> Result<(u8, Vec<u8>), TransportError> {
    let mut h = [0u8; HEADER_BYTES];
    if let Err(e) = r.read_exact(&mut h) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            TransportError::Closed
        } else {
            e.into()
        });
    }
    let magic = u16::from_le_bytes([h[0], h[1]]);
    if magic != MAGIC {
        return Err(TransportError::BadMagic(magic));
    }
    let kind = h[2];
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_FRAME {
        return Err(TransportError::TooLarge(len));
    }
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = r.read_exact(&mut payload) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            TransportError::Closed
        } else {
            e.into()
        });
    }
    let mut c = crc32fast::Hasher::new();
    c.update(&h[0..8]);
    c.update(&payload);
    if c.finalize() != crc {
        return Err(TransportError::Checksum { kind, len });
    }
    Ok((kind, payload))
}

/// Write one frame directly (no pacing): for replies and control messages.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> Result<usize, TransportError> {
    let mut buf = Vec::with_capacity(HEADER_BYTES + payload.len());
    let n = encode_frame(&mut buf, kind, payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(n)
}

/// CLOCK_MONOTONIC in nanoseconds: shared by every process on the host, so timestamps taken
/// by the source and the destination compare directly.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until monotonic time `t` (sleeping coarsely, then spinning the last stretch).
pub fn sleep_until(t: u64) {
    loop {
        let now = mono_ns();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > 80_000 {
            std::thread::sleep(Duration::from_nanos(left - 60_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Depth of the link pacer's token bucket: after standing idle the link sends this much at once.
pub const PACER_BURST_BYTES: u64 = 256 << 10;

/// A token bucket in bytes.
#[derive(Debug)]
pub struct TokenBucket {
    rate_bps: Option<f64>,
    burst_bytes: f64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    pub fn new(rate_bps: Option<f64>, burst_bytes: u64) -> Self {
        TokenBucket {
            rate_bps,
            burst_bytes: burst_bytes as f64,
            tokens: burst_bytes as f64,
            last_ns: mono_ns(),
        }
    }
    pub fn set_rate(&mut self, rate_bps: Option<f64>) {
        self.refill();
        self.rate_bps = rate_bps;
    }
    fn refill(&mut self) {
        let now = mono_ns();
        if let Some(r) = self.rate_bps {
            let add = (now - self.last_ns) as f64 * r / 8e9;
            self.tokens = (self.tokens + add).min(self.burst_bytes);
        }
        self.last_ns = now;
    }
    /// Take `bytes` tokens, waiting until the bucket allows it. Returns the time waited.
    pub fn take(&mut self, bytes: u64) -> u64 {
        let Some(r) = self.rate_bps else {
            return 0;
        };
        self.refill();
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            let wait = (-self.tokens * 8e9 / r).ceil() as u64;
            let until = self.last_ns + wait;
            sleep_until(until);
            wait
        } else {
            0
        }
    }
}

enum Out {
    Direct(TcpStream),
    Delayed {
        tx: Option<mpsc::Sender<(u64, Vec<u8>)>>,
        err: Arc<Mutex<Option<io::Error>>>,
        thread: Option<JoinHandle<()>>,
    },
}

/// Fault injection on the sending side (tests and demonstrations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendFaults {
    /// Flip one payload byte of the frame sent after this many bytes (checksum then fails).
    pub corrupt_after_bytes: Option<u64>,
    /// Shut the connection down once this many bytes went out.
    pub cut_after_bytes: Option<u64>,
}

/// The source's end of the paced link.
pub struct PacedSender {
    out: Out,
    sock: TcpStream,
    pub bucket: TokenBucket,
    one_way_ns: u64,
    /// Wire bytes handed to the link so far.
    pub bytes: u64,
    faults: SendFaults,
    buf: Vec<u8>,
}

impl PacedSender {
    pub fn new(
        sock: TcpStream,
        rate_bps: Option<f64>,
        one_way_ns: u64,
        faults: SendFaults,
    ) -> io::Result<Self> {
        sock.set_nodelay(true)?;
        let out = if one_way_ns == 0 {
            Out::Direct(sock.try_clone()?)
        } else {
            let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
            let err = Arc::new(Mutex::new(None));
            let err2 = err.clone();
            let mut w = sock.try_clone()?;
            let thread = std::thread::Builder::new()
                .name("link-delay".into())
                .spawn(move || {
                    for (due, buf) in rx {
                        sleep_until(due);
                        if let Err(e) = w.write_all(&buf) {
                            if let Ok(mut g) = err2.lock() {
                                *g = Some(e);
                            }
                            return;
                        }
                    }
                })?;
            Out::Delayed {
                tx: Some(tx),
                err,
                thread: Some(thread),
            }
        };
        Ok(PacedSender {
            out,
            sock,
            bucket: TokenBucket::new(rate_bps, PACER_BURST_BYTES),
            one_way_ns,
            bytes: 0,
            faults,
            buf: Vec::new(),
        })
    }

    /// Pace and send one frame. Returns its wire size.
    pub fn send(&mut self, kind: u8, payload: &[u8]) -> Result<usize, TransportError> {
        self.buf.clear();
        let n = encode_frame(&mut self.buf, kind, payload);
        if let Some(at) = self.faults.corrupt_after_bytes {
            if self.bytes >= at && !payload.is_empty() {
                self.buf[HEADER_BYTES] ^= 0x5a;
                self.faults.corrupt_after_bytes = None;
            }
        }
        if let Some(at) = self.faults.cut_after_bytes {
            if self.bytes >= at {
                let _ = self.sock.shutdown(std::net::Shutdown::Both);
                self.faults.cut_after_bytes = None;
            }
        }
        self.bucket.take(n as u64);
        match &mut self.out {
            Out::Direct(s) => s.write_all(&self.buf)?,
            Out::Delayed { tx, err, .. } => {
                if let Some(e) = err.lock().ok().and_then(|mut g| g.take()) {
                    return Err(e.into());
                }
                let due = mono_ns() + self.one_way_ns;
                let sent = tx
                    .as_ref()
                    .map(|t| t.send((due, std::mem::take(&mut self.buf))).is_ok())
                    .unwrap_or(false);
                if !sent {
                    return Err(TransportError::Closed);
                }
            }
        }
        self.bytes += n as u64;
        Ok(n)
    }

    /// Wait until every queued frame is on the socket.
    pub fn drain(&mut self) -> Result<(), TransportError> {
        if let Out::Delayed { tx, err, thread } = &mut self.out {
            tx.take();
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
            if let Some(e) = err.lock().ok().and_then(|mut g| g.take()) {
                return Err(e.into());
            }
            self.out = Out::Direct(self.sock.try_clone()?);
        }
        Ok(())
    }

    pub fn one_way_ns(&self) -> u64 {
        self.one_way_ns
    }

    /// The delay-line thread, if any (to give it the same priority as the sender).
    pub fn delay_thread(&self) -> Option<libc::pthread_t> {
        use std::os::unix::thread::JoinHandleExt;
        match &self.out {
            Out::Delayed {
                thread: Some(t), ..
            } => Some(t.as_pthread_t()),
            _ => None,
        }
    }
}

/// Encode a list of u64 (little endian).
pub fn put_u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decode a list of u64; trailing bytes (a message) are returned apart.
pub fn get_u64s(b: &[u8], n: usize) -> Result<(Vec<u64>, &[u8]), TransportError> {
    if b.len() < n * 8 {
        return Err(TransportError::Malformed("u64 list"));
    }
    let v = b[..n * 8]
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    Ok((v, &b[n * 8..]))
}

/// Builds a pages payload.
#[derive(Default)]
pub struct PageBatch {
    pub buf: Vec<u8>,
    pub pages: u64,
    pub zero: u64,
}

impl PageBatch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pages = 0;
        self.zero = 0;
    }
    /// Append page `word` (index | flags) with `data`, or a zero marker when it is all zero.
    pub fn push(&mut self, word: u64, data: &[u8]) {
        self.pages += 1;
        if crate::vstate::memory::is_zero(data) {
            self.zero += 1;
            self.buf
                .extend_from_slice(&(word | ZERO_FLAG).to_le_bytes());
        } else {
            self.buf.extend_from_slice(&word.to_le_bytes());
            self.buf.extend_from_slice(data);
        }
    }
}

/// Iterate over a pages payload: (word without ZERO flag, Some(data) or None for zero).
pub fn for_each_page(
    payload: &[u8],
    mut f: impl FnMut(u64, Option<&[u8]>),
) -> Result<u64, TransportError> {
    let mut i = 0;
    let mut n = 0;
    while i < payload.len() {
        if i + 8 > payload.len() {
            return Err(TransportError::Malformed("pages"));
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&payload[i..i + 8]);
        let word = u64::from_le_bytes(w);
        i += 8;
        if word & ZERO_FLAG != 0 {
            f(word & !ZERO_FLAG, None);
        } else {
            let end = i + PAGE as usize;
            if end > payload.len() {
                return Err(TransportError::Malformed("pages"));
            }
            f(word, Some(&payload[i..end]));
            i = end;
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_corruption() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, kind::PAGES, b"hello pages");
        let (k, p) = read_frame(&mut &buf[..]).unwrap();
        assert_eq!((k, &p[..]), (kind::PAGES, &b"hello pages"[..]));
        let mut bad = buf.clone();
        bad[HEADER_BYTES + 3] ^= 1;
        assert!(matches!(
            read_frame(&mut &bad[..]),
            Err(TransportError::Checksum { .. })
        ));
        assert!(matches!(
            read_frame(&mut &buf[..5]),
            Err(TransportError::Closed)
        ));
    }

    #[test]
    fn page_batch_round_trip() {
        let mut b = PageBatch::default();
        let page = vec![7u8; PAGE as usize];
        b.push(3, &page);
        b.push(4 | SYS_FLAG, &vec![0u8; PAGE as usize]);
        assert_eq!(b.zero, 1);
        let mut seen = Vec::new();
        for_each_page(&b.buf, |w, d| seen.push((w, d.map(|d| d[0])))).unwrap();
        assert_eq!(seen, vec![(3, Some(7)), (4 | SYS_FLAG, None)]);
    }

    #[test]
    fn token_bucket_enforces_rate() {
        // 80 Mbit/s = 10 MB/s: 2 MB beyond the burst takes about 0.2 s.
        let mut tb = TokenBucket::new(Some(80e6), 64 << 10);
        let t0 = mono_ns();
        for _ in 0..32 {
            tb.take(64 << 10);
        }
        let dt = (mono_ns() - t0) as f64 / 1e9;
        // The pacer must never go faster than the rate; on a loaded host it may be slower.
        assert!((0.18..5.0).contains(&dt), "took {dt} s");
    }
}
