//! Request ids: the client's `X-Request-Id` when it sent a usable one, else
//! `<node>-<boot>-<n>`: the node's name, a random 32-bit number drawn at start (so ids of
//! a restarted node do not repeat) and a counter.
//!
//! A random UUID per request cost a `getrandom` system call and a string allocation on
//! every request. Each thread takes counter values in blocks of [`BLOCK`] from one shared
//! atomic, so threads touch the shared cache line once per block, not once per request,
//! and ids stay unique across threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::HeaderValue;

/// Counter values a thread reserves at once.
const BLOCK: u64 = 1024;

/// Longest client-sent id we keep; longer or non-printable ones are replaced by ours.
pub const MAX_CLIENT_ID: usize = 200;

pub struct RequestIds {
    /// `<node>-<boot as 8 hex digits>-`.
    prefix: Vec<u8>,
    next_block: AtomicU64,
}

impl RequestIds {
    pub fn new(node: &str) -> Self {
        let boot: u32 = rand::random();
        Self {
            prefix: format!("{node}-{boot:08x}-").into_bytes(),
            next_block: AtomicU64::new(0),
        }
    }

    /// The id for a request that carried `client` (its `X-Request-Id`, if any).
    pub fn for_request(&self, client: Option<&HeaderValue>) -> HeaderValue {
        if let Some(id) = client
            && usable_client_id(id.as_bytes())
        {
            return id.clone();
        }
        self.generate()
    }

    /// A fresh id.
    pub fn generate(&self) -> HeaderValue {
        let n = self.next();
        let mut buf = [0u8; 20];
        let digits = hex(n, &mut buf);
        let mut id = Vec::with_capacity(self.prefix.len() + digits.len());
        id.extend_from_slice(&self.prefix);
        id.extend_from_slice(digits);
        // The node name is validated as a DNS-like label by the config; hex digits are ASCII.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-name"))
    }

    fn next(&self) -> u64 {
        thread_local! {
            /// (whose block, next value, end of this thread's block).
            static RANGE: Cell<(usize, u64, u64)> = const { Cell::new((0, 0, 0)) };
        }
        // Several edges in one process (unit tests) each have their own counter.
        let me = self as *const Self as usize;
        RANGE.with(|range| {
            let (owner, mut next, mut end) = range.get();
            if owner != me || next == end {
                next = self.next_block.fetch_add(BLOCK, Relaxed);
                end = next + BLOCK;
            }
            range.set((me, next + 1, end));
            next
        })
    }
}

/// Printable ASCII without spaces, 1..=200 bytes: safe to log and to forward.
fn usable_client_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// `n` in lower-case hex, at least 8 digits, written at the end of `buf`.
fn hex(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 && buf.len() - at >= 8 {
            break;
        }
    }
    &buf[at..]
}
