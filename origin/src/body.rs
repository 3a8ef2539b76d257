//! Response bodies: small in-memory buffers, or pieces of a file read in chunks as the
//! client consumes them, so a large file never sits in memory whole.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

/// The body type of every response.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Size of each read from a file. Big enough to keep syscalls and task hops rare, small
/// enough that a slow client holds little memory (hyper only asks for the next chunk
/// once its write buffer has room).
pub const CHUNK: usize = 128 * 1024;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A piece of a file body.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Literal bytes, e.g. a multipart boundary and part headers.
    Bytes(Bytes),
    /// `len` bytes of the file starting at `offset`.
    File { offset: u64, len: u64 },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(bytes) => bytes.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// Streams `pieces` in order, reading file pieces with positional reads on the blocking
/// pool. If the file shrinks underneath, the read fails and hyper aborts the response
/// rather than sending fewer bytes than the `Content-Length` it announced.
pub fn file(file: Arc<std::fs::File>, pieces: Vec<Piece>) -> Body {
    let state = (file, VecDeque::from(pieces));
    let stream = futures_util::stream::unfold(state, |(file, mut pieces)| async move {
        loop {
            match pieces.pop_front()? {
                Piece::Bytes(bytes) if bytes.is_empty() => continue,
                Piece::Bytes(bytes) => return Some((Ok(Frame::data(bytes)), (file, pieces))),
                Piece::File { len: 0, .. } => continue,
                Piece::File { offset, len } => {
                    let take = len.min(CHUNK as u64) as usize;
                    match read_at(file.clone(), offset, take).await {
                        Ok(bytes) => {
                            if len > take as u64 {
                                pieces.push_front(Piece::File {
                                    offset: offset + take as u64,
                                    len: len - take as u64,
                                });
                            }
                            return Some((Ok(Frame::data(bytes)), (file, pieces)));
                        }
                        Err(err) => {
                            pieces.clear();
                            return Some((Err(err), (file, pieces)));
                        }
                    }
                }
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

async fn read_at(file: Arc<std::fs::File>, offset: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0; len];
        file.read_exact_at(&mut buffer, offset)?;
        Ok(Bytes::from(buffer))
    })
    .await
    .map_err(io::Error::other)?
}
