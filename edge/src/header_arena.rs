//! Header values made per request (request ids, `Server-Timing`) without an allocation
//! each: the bytes are copied into a per-thread block and each value shares that block.
//!
//! A value made with `HeaderValue::from_bytes` costs one allocation, and one more the first
//! time it is cloned (a request id is cloned into the upstream request and the response).
//! Here a thread fills a [`BLOCK`]-byte buffer value after value and starts a new one when
//! the rest does not fit: about one allocation per `BLOCK / value length` values. A block is
//! freed when the last value in it is dropped, so what a thread can keep alive is one block
//! per value still held (values live as long as their request, or its access-log line).

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

/// Bytes per block: a few dozen request ids or `Server-Timing` values.
const BLOCK: usize = 2048;

/// Longer values are copied on their own (never seen for the values made here).
const MAX_SHARED: usize = BLOCK / 8;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes` as shared bytes in this thread's current block.
pub fn copy(bytes: &[u8]) -> Bytes {
    if bytes.len() > MAX_SHARED {
        return Bytes::copy_from_slice(bytes);
    }
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        // After a split the buffer holds only the unused rest of its block: start a new
        // block when that is too short, so a write never reallocates a shared block.
        if arena.capacity() - arena.len() < bytes.len() {
            *arena = BytesMut::with_capacity(BLOCK);
        }
        arena.extend_from_slice(bytes);
        arena.split().freeze()
    })
}

/// `bytes` as a header value in this thread's current block, or `None` when they are not a
/// valid header value.
pub fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(copy(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_bytes_across_blocks() {
        let values: Vec<(String, HeaderValue)> = (0..1000)
            .map(|i| {
                let text = format!("edge-a-0123abcd-{i:016x}");
                let value = value(text.as_bytes()).unwrap();
                (text, value)
            })
            .collect();
        for (text, value) in &values {
            assert_eq!(value.as_bytes(), text.as_bytes());
        }
        let long = "x".repeat(MAX_SHARED + 1);
        assert_eq!(value(long.as_bytes()).unwrap().as_bytes(), long.as_bytes());
        assert!(value(b"bad\nvalue").is_none());
    }
}
