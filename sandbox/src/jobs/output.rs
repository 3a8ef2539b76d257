//! A job's captured output: each stream in fixed-size chunks, so that a reader takes a
//! snapshot by reference (no copy of what is complete), and a decoder that turns chunks
//! back into text exactly as `String::from_utf8_lossy` would turn the whole.

use bytes::Bytes;

/// Bytes per chunk. Every chunk but the last of a stream is exactly this long, so an
/// offset finds its chunk by division.
pub const CHUNK: usize = edgebox_wire::sandbox::MAX_OUTPUT_CHUNK;

/// One stream's output: complete chunks, shared by reference, and the tail being filled.
#[derive(Debug, Default)]
pub struct OutputBuf {
    chunks: Vec<Bytes>,
    tail: Vec<u8>,
    len: usize,
}

impl OutputBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held, for the retention budget.
    pub fn held(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>()
            + self.tail.capacity()
            + self.chunks.capacity() * std::mem::size_of::<Bytes>()
    }

    /// Appends `data`. Not after [`OutputBuf::freeze`].
    pub fn push(&mut self, mut data: &[u8]) {
        self.len += data.len();
        while !data.is_empty() {
            let room = CHUNK - self.tail.len();
            let (now, rest) = data.split_at(data.len().min(room));
            if self.tail.capacity() - self.tail.len() < now.len() {
                // Grow by doubling but never past one chunk, so a full tail becomes a
                // chunk without a copy and without slack.
                let want = (self.tail.len() + now.len())
                    .max(self.tail.capacity() * 2)
                    .min(CHUNK);
                self.tail.reserve_exact(want - self.tail.len());
            }
            self.tail.extend_from_slice(now);
            if self.tail.len() == CHUNK {
                self.chunks
                    .push(Bytes::from(std::mem::take(&mut self.tail)));
            }
            data = rest;
        }
    }

    /// Makes the output immutable and exact-sized: the partial tail becomes the last
    /// chunk, with no spare capacity.
    pub fn freeze(&mut self) {
        if !self.tail.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            self.chunks.push(Bytes::copy_from_slice(&tail));
        }
        self.tail = Vec::new();
        self.chunks.shrink_to_fit();
    }

    /// The bytes `start..end`, as pieces of at most one chunk each: complete chunks by
    /// reference, the tail copied (at most one chunk).
    pub fn slice(&self, start: usize, end: usize) -> Vec<Bytes> {
        let end = end.min(self.len());
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let index = at / CHUNK;
            let offset = at % CHUNK;
            let piece = match self.chunks.get(index) {
                Some(chunk) => chunk.slice(offset..chunk.len().min(offset + (end - at))),
                None => Bytes::copy_from_slice(&self.tail[offset..offset + (end - at)]),
            };
            at += piece.len();
            if piece.is_empty() {
                break;
            }
            pieces.push(piece);
        }
        pieces
    }

    /// Everything, as [`OutputBuf::slice`] gives it.
    pub fn all(&self) -> Vec<Bytes> {
        self.slice(0, self.len())
    }

    /// A copy of everything (for the calibration program's few bytes).
    pub fn to_vec(&self) -> Vec<u8> {
        self.all().concat()
    }
}

/// Decodes bytes that arrive in pieces into text, replacing invalid UTF-8 exactly as
/// `String::from_utf8_lossy` does on the whole: a character split between two pieces is
/// kept until its end arrives.
#[derive(Debug, Default)]
pub struct LossyUtf8 {
    pending: Vec<u8>,
}

impl LossyUtf8 {
    /// Appends the text of `input` that is complete to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut String) {
        let joined;
        let mut data = if self.pending.is_empty() {
            input
        } else {
            self.pending.extend_from_slice(input);
            joined = std::mem::take(&mut self.pending);
            &joined[..]
        };
        loop {
            match std::str::from_utf8(data) {
                Ok(text) => {
                    out.push_str(text);
                    return;
                }
                Err(error) => {
                    let (valid, rest) = data.split_at(error.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            data = &rest[bad..];
                        }
                        None => {
                            // An incomplete character at the end: wait for the rest.
                            self.pending = rest.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The input ended: an incomplete character left over is one replacement.
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> String {
        let mut decoder = LossyUtf8::default();
        let mut out = String::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, bytes.len());
            decoder.push(&bytes[at..cut], &mut out);
            at = cut;
        }
        decoder.push(&bytes[at..], &mut out);
        decoder.finish(&mut out);
        out
    }

    proptest! {
        /// Any bytes, cut anywhere: the same text as decoding the whole at once.
        #[test]
        fn pieces_decode_like_the_whole(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0xe2u8), Just(0x82u8), Just(0xacu8), Just(0xf0u8), Just(0x9fu8)],
                0..200),
            mut cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            cuts.sort_unstable();
            prop_assert_eq!(decode_in_pieces(&bytes, &cuts), String::from_utf8_lossy(&bytes));
        }

        /// Pushes of any sizes: the buffer holds exactly what was pushed, and any slice
        /// reads back the same bytes.
        #[test]
        fn buffer_round_trips(writes in proptest::collection::vec(0usize..(3 * CHUNK / 2), 0..6),
                              start in 0usize..(4 * CHUNK), len in 0usize..(4 * CHUNK),
                              frozen in any::<bool>()) {
            let mut buf = OutputBuf::default();
            let mut model = Vec::new();
            for (i, size) in writes.iter().enumerate() {
                let data: Vec<u8> = (0..*size).map(|b| (b + i) as u8).collect();
                buf.push(&data);
                model.extend_from_slice(&data);
            }
            if frozen {
                buf.freeze();
            }
            prop_assert_eq!(buf.len(), model.len());
            prop_assert_eq!(buf.to_vec(), model.clone());
            let start = start.min(model.len());
            let end = (start + len).min(model.len());
            let pieces = buf.slice(start, end);
            prop_assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= CHUNK));
            prop_assert_eq!(pieces.concat(), model[start..end].to_vec());
            if frozen {
                // No slack: what is held is the output plus the chunk list.
                prop_assert!(buf.held() <= model.len() + buf.chunks.len() * std::mem::size_of::<Bytes>());
            }
        }
    }
}
