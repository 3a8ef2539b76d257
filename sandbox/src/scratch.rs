//! The scratch quota, enforced at each write and create: a job's `/scratch` may hold at
//! most `scratch_size` bytes on disk and `scratch_files` files and directories.
//!
//! wasmtime-wasi 48 has no pluggable filesystem for preview 1, so the quota wraps the
//! preview-1 functions that can grow a directory (`fd_write`, `fd_pwrite`,
//! `fd_filestat_set_size`, `path_open` with `O_CREAT`, `path_create_directory`,
//! `path_symlink`, `path_link`): the linker's definitions are shadowed by ones that
//! check the quota, then call wasmtime-wasi's own implementation (the functions its
//! `wiggle` bindings generate) exactly as its linker entries do.
//!
//! Accounting is conservative and cheap: every write is charged its full length plus a
//! block allowance (a write into a hole can allocate a block more than its length), on
//! whatever descriptor it goes to — stdout included, since descriptors can be renumbered.
//! Only when the charges would pass the quota is the directory measured (blocks really
//! allocated, entries really there), which corrects overwrites and deletions; if the
//! operation still does not fit it is refused with `EDQUOT`, every later growing
//! operation is refused without measuring again, and the job ends `scratch_exceeded`.
//! The guest is not interrupted: like a full disk, it sees the error and may go on.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::types::Errno;
pub(crate) use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
pub(crate) use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use crate::exec::{JobCtx, Slot};
use crate::jobs::StopReason;

/// Slack charged per write: the blocks a write can allocate beyond its length.
const WRITE_SLACK: u64 = 8192;
/// Charged per created file or directory: its inode and directory entry.
const CREATE_BYTES: u64 = 4096;
/// `oflags` bit of `path_open` that creates the file.
const O_CREAT: i32 = 1;
const MODULE: &str = "wasi_snapshot_preview1";

/// One job's scratch directory and what has been charged to it.
pub struct Quota {
    root: PathBuf,
    max_bytes: u64,
    max_files: u64,
    bytes: u64,
    files: u64,
    exceeded: bool,
    slot: Arc<Slot>,
}

impl Quota {
    pub fn new(root: PathBuf, max_bytes: u64, max_files: u64, slot: Arc<Slot>) -> Self {
        Self {
            root,
            max_bytes,
            max_files,
            bytes: 0,
            files: 0,
            exceeded: false,
            slot,
        }
    }

    /// Charges an operation that may add `bytes` and `files`; `false` refuses it.
    fn allow(&mut self, bytes: u64, files: u64) -> bool {
        if self.exceeded {
            return false;
        }
        let fits = |quota: &Self| {
            quota.bytes.saturating_add(bytes) <= quota.max_bytes
                && quota.files.saturating_add(files) <= quota.max_files
        };
        if !fits(self) {
            // The charges overcount (overwrites, deletions, stdout): look at the disk.
            (self.bytes, self.files) = usage(&self.root);
        }
        if fits(self) {
            self.bytes += bytes;
            self.files += files;
            return true;
        }
        self.exceeded = true;
        if let Some((job, _)) = self.slot.job() {
            job.note_stop(StopReason::Scratch);
        }
        tracing::info!(
            bytes = self.bytes,
            files = self.files,
            "scratch quota reached; refusing growth"
        );
        false
    }
}

/// Blocks allocated under `root` (in bytes) and the entries there, not following
/// symlinks. Entries that vanish while walking are skipped.
pub fn usage(root: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            files += 1;
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, files)
}

/// Total length of the `count` iovecs at `ptr` (8 bytes each: buffer, length), as far
/// as they are in memory; the real call reports bad pointers itself.
fn iovecs_len(memory: &[u8], ptr: i32, count: i32) -> u64 {
    let read = |at: usize| -> Option<u32> {
        let bytes = memory.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let (ptr, count) = (ptr as u32 as usize, count as u32 as usize);
    let mut total = 0u64;
    for i in 0..count.min(memory.len() / 8) {
        let Some(len) = i
            .checked_mul(8)
            .and_then(|offset| ptr.checked_add(offset + 4))
            .and_then(read)
        else {
            break;
        };
        total = total.saturating_add(u64::from(len));
    }
    total
}

/// The guest's exported memory, or the trap the generated bindings give without one.
pub(crate) fn memory(caller: &mut Caller<'_, JobCtx>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => wasmtime::bail!("missing required memory export"),
    }
}

/// Checks the quota for an operation that adds `bytes(memory)` and `files`: `Some(errno)`
/// refuses it; jobs without a scratch directory are never charged.
fn check(
    caller: &mut Caller<'_, JobCtx>,
    memory: wasmtime::Memory,
    bytes: impl FnOnce(&[u8]) -> u64,
    files: u64,
) -> Option<i32> {
    let (data, ctx) = memory.data_and_store_mut(caller);
    let quota = ctx.scratch.as_mut()?;
    let bytes = bytes(data);
    (!quota.allow(bytes, files)).then_some(Errno::Dquot as i32)
}

/// Runs wasmtime-wasi's own implementation of one preview-1 function, with the memory
/// and hostcall fuel set up as its generated linker entry does.
macro_rules! call_wasi {
    ($caller:ident, $memory:ident, $func:ident($($arg:expr),*)) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let (data, ctx) = $memory.data_and_store_mut(&mut $caller);
        let wasi = &mut ctx.wasi;
        $crate::scratch::WasiSnapshotPreview1::set_hostcall_fuel(wasi, fuel);
        let mut guest = wiggle::GuestMemory::Unshared(data);
        $crate::scratch::p1::$func(wasi, &mut guest, $($arg),*).await
    }};
}
pub(crate) use call_wasi;

/// Shadows the growing preview-1 functions in `linker` (which already has the
/// wasmtime-wasi ones) with quota-checking wrappers.
pub fn add_to_linker(linker: &mut Linker<JobCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        MODULE,
        "fd_write",
        |mut caller: Caller<'_, JobCtx>, (fd, iovs, iovs_len, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                let cost =
                    |data: &[u8]| iovecs_len(data, iovs, iovs_len).saturating_add(WRITE_SLACK);
                if let Some(errno) = check(&mut caller, memory, cost, 0) {
                    return Ok(errno);
                }
                call_wasi!(caller, memory, fd_write(fd, iovs, iovs_len, nwritten))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "fd_pwrite",
        |mut caller: Caller<'_, JobCtx>,
         (fd, iovs, iovs_len, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                let cost =
                    |data: &[u8]| iovecs_len(data, iovs, iovs_len).saturating_add(WRITE_SLACK);
                if let Some(errno) = check(&mut caller, memory, cost, 0) {
                    return Ok(errno);
                }
                call_wasi!(
                    caller,
                    memory,
                    fd_pwrite(fd, iovs, iovs_len, offset, nwritten)
                )
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "fd_filestat_set_size",
        |mut caller: Caller<'_, JobCtx>, (fd, size): (i32, i64)| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                // Growing a file leaves a hole (no blocks), but never past the quota.
                let too_big = caller
                    .data()
                    .scratch
                    .as_ref()
                    .is_some_and(|quota| size as u64 > quota.max_bytes);
                if too_big {
                    return Ok(Errno::Dquot as i32);
                }
                call_wasi!(caller, memory, fd_filestat_set_size(fd, size))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_open",
        |mut caller: Caller<'_, JobCtx>,
         (fd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                if oflags & O_CREAT != 0
                    && let Some(errno) = check(&mut caller, memory, |_| CREATE_BYTES, 1)
                {
                    return Ok(errno);
                }
                call_wasi!(
                    caller,
                    memory,
                    path_open(
                        fd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened
                    )
                )
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_create_directory",
        |mut caller: Caller<'_, JobCtx>, (fd, path, path_len): (i32, i32, i32)| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                if let Some(errno) = check(&mut caller, memory, |_| CREATE_BYTES, 1) {
                    return Ok(errno);
                }
                call_wasi!(caller, memory, path_create_directory(fd, path, path_len))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_symlink",
        |mut caller: Caller<'_, JobCtx>,
         (old, old_len, fd, new, new_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                if let Some(errno) = check(&mut caller, memory, |_| CREATE_BYTES, 1) {
                    return Ok(errno);
                }
                call_wasi!(caller, memory, path_symlink(old, old_len, fd, new, new_len))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_link",
        |mut caller: Caller<'_, JobCtx>,
         (old_fd, flags, old, old_len, new_fd, new, new_len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let memory = memory(&mut caller)?;
                if let Some(errno) = check(&mut caller, memory, |_| CREATE_BYTES, 1) {
                    return Ok(errno);
                }
                call_wasi!(
                    caller,
                    memory,
                    path_link(old_fd, flags, old, old_len, new_fd, new, new_len)
                )
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
    fn iovecs_are_summed_within_memory_only() {
        let mut memory = vec![0u8; 64];
        for (i, (buf, len)) in [(32u32, 5u32), (40, 7)].into_iter().enumerate() {
            memory[i * 8..i * 8 + 4].copy_from_slice(&buf.to_le_bytes());
            memory[i * 8 + 4..i * 8 + 8].copy_from_slice(&len.to_le_bytes());
        }
        assert_eq!(iovecs_len(&memory, 0, 2), 12);
        // A count or pointer past memory stops at its end instead of reading beyond.
        assert_eq!(iovecs_len(&memory, 0, i32::MAX), 12);
        assert_eq!(iovecs_len(&memory, 60, 1), 0);
        assert_eq!(iovecs_len(&memory, -4, 3), 0);
    }

    #[test]
    fn usage_counts_blocks_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), b"").unwrap();
        let (bytes, files) = usage(dir.path());
        assert_eq!(files, 3);
        assert!(bytes >= 100_000, "{bytes}");
    }
}
