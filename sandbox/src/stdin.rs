//! Interactive stdin: a job's pipe that the events socket writes and the guest reads
//! after the submitted `stdin`, and the `fd_read` wrapper that records the line a
//! Python program is on when it reads stdin (the `input()` line it then waits on).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;
use wasmtime::{AsContextMut, Caller, Linker};

use crate::exec::JobCtx;

/// Why a write to a job's stdin was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    #[error("the job was not submitted with `interactive: true`")]
    NotInteractive,
    #[error("stdin was closed (stdin_eof)")]
    Closed,
    #[error("stdin would exceed {limit} bytes")]
    TooLarge { limit: u64 },
}

impl PipeError {
    pub fn code(self) -> &'static str {
        match self {
            PipeError::NotInteractive => "not_interactive",
            PipeError::Closed => "stdin_closed",
            PipeError::TooLarge { .. } => "stdin_too_large",
        }
    }
}

/// What the socket wrote and the guest has not read yet. A job that is not interactive
/// has a closed pipe from the start: its guest sees end of file after `stdin`.
#[derive(Default)]
pub struct Pipe {
    inner: Mutex<PipeInner>,
    /// Woken on every write and on close.
    readable: Notify,
}

#[derive(Default)]
struct PipeInner {
    interactive: bool,
    chunks: VecDeque<Bytes>,
    eof: bool,
    /// Stdin bytes the job has been given in all (the submitted ones included).
    total: u64,
}

impl Pipe {
    /// A pipe that stays open for writes until [`Pipe::close`]; `submitted` bytes of
    /// stdin came with the job and count against the limit.
    pub fn interactive(submitted: u64) -> Self {
        Self {
            inner: Mutex::new(PipeInner {
                interactive: true,
                total: submitted,
                ..PipeInner::default()
            }),
            readable: Notify::new(),
        }
    }

    /// Appends `data`, unless the pipe is closed or the job's stdin would pass `limit`.
    pub fn write(&self, data: Bytes, limit: u64) -> Result<(), PipeError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.interactive {
            return Err(PipeError::NotInteractive);
        }
        if inner.eof {
            return Err(PipeError::Closed);
        }
        let total = inner.total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(PipeError::TooLarge { limit });
        }
        inner.total = total;
        if !data.is_empty() {
            inner.chunks.push_back(data);
        }
        drop(inner);
        self.readable.notify_waiters();
        Ok(())
    }

    /// Ends the stream: the guest reads what is left, then end of file.
    pub fn close(&self) -> Result<(), PipeError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.interactive {
            return Err(PipeError::NotInteractive);
        }
        if inner.eof {
            return Err(PipeError::Closed);
        }
        inner.eof = true;
        drop(inner);
        self.readable.notify_waiters();
        Ok(())
    }

    /// Up to `size` bytes: `Some(empty)` when nothing is there yet, `None` at end of file.
    pub fn read(&self, size: usize) -> Option<Bytes> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let open = inner.interactive && !inner.eof;
        match inner.chunks.front_mut() {
            Some(chunk) if chunk.len() > size => Some(chunk.split_to(size)),
            Some(_) => inner.chunks.pop_front(),
            None if open => Some(Bytes::new()),
            None => None,
        }
    }

    /// Waits until a read would not come back empty.
    pub async fn ready(&self) {
        loop {
            // Registered before the check, so a write in between still wakes it.
            let written = self.readable.notified();
            {
                let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if !inner.chunks.is_empty() || inner.eof || !inner.interactive {
                    return;
                }
            }
            written.await;
        }
    }
}

const MODULE: &str = "wasi_snapshot_preview1";

/// Shadows `fd_read` with a wrapper that, on a read of fd 0 by a CPython guest, records
/// the submitted line executing: epoch ticks do not land while the guest is blocked
/// in the host waiting for input, so without this the line shown would be the last
/// one sampled before the `input()` call.
pub fn add_to_linker(linker: &mut Linker<JobCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        MODULE,
        "fd_read",
        |mut caller: Caller<'_, JobCtx>, (fd, iovs, iovs_len, nread): (i32, i32, i32, i32)| {
            Box::new(async move {
                let memory = crate::scratch::memory(&mut caller)?;
                if fd == 0 {
                    let (data, ctx) = memory.data_and_store_mut(&mut caller);
                    ctx.note_stdin_read(data);
                }
                crate::scratch::call_wasi!(caller, memory, fd_read(fd, iovs, iovs_len, nread))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_reads_writes_and_bounds() {
        let closed = Pipe::default();
        assert_eq!(closed.read(4), None);
        assert_eq!(
            closed.write(Bytes::from_static(b"x"), 10),
            Err(PipeError::NotInteractive)
        );

        let pipe = Pipe::interactive(4);
        assert_eq!(pipe.read(4), Some(Bytes::new()));
        pipe.write(Bytes::from_static(b"hello"), 10).unwrap();
        assert_eq!(
            pipe.write(Bytes::from_static(b"toolong"), 10),
            Err(PipeError::TooLarge { limit: 10 })
        );
        assert_eq!(pipe.read(3).as_deref(), Some(&b"hel"[..]));
        assert_eq!(pipe.read(8).as_deref(), Some(&b"lo"[..]));
        pipe.close().unwrap();
        assert_eq!(pipe.close(), Err(PipeError::Closed));
        assert_eq!(
            pipe.write(Bytes::from_static(b"x"), 10),
            Err(PipeError::Closed)
        );
        assert_eq!(pipe.read(8), None);
    }
}
