//! L2: the disk tier, one checksummed file per object under `<node data dir>/cache/`, a byte
//! budget with least-recently-used eviction, and an index rebuilt from the files at start.
//!
//! # Entry file
//! `cache/<first key byte, hex>/<combined key hash, hex>.ent`, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `EBXCACHE` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | body chunk size |
//! | 16 | 16 | combined key hash (must match the file name's key) |
//! | 32 | 4 | URL length |
//! | 36 | 4 | meta (internal) length |
//! | 40 | 4 | meta (header) length |
//! | 44 | 8 | body length |
//! | 52 | 4 | CRC-32 of bytes 0..52, URL, meta and the chunk table |
//! | 56 | … | URL, meta internal, meta header, body, chunk table (one CRC-32 per body chunk) |
//!
//! The checksum is CRC-32 (`crc32fast`): it guards against accidental damage (torn writes,
//! truncation, bit rot, an operator's stray edit), not against an attacker who can write our
//! data directory, so a cryptographic hash would only cost speed; crc32fast is the
//! SIMD-accelerated implementation that flate2 and zip use, well maintained and already in
//! our dependency tree, running at several GB/s.
//!
//! # Why a corrupt object is never served
//! - Writes go to a `.tmp` file in the same directory, which is renamed over the final name
//!   once complete: a reader sees the old entry or the complete new one, and a crash of the
//!   process leaves at worst a `.tmp` file, deleted at the next start.
//! - After a power loss, a renamed entry whose data had not reached the disk can be short
//!   or hold zeros: the length and checksum checks below catch it like any other damage.
//! - A lookup checks the header, the header checksum and that the file has exactly the length
//!   the header promises (so truncation is caught before any byte is served).
//! - Bodies up to [`VERIFY_WHOLE_MAX`] are read and verified whole before the hit is returned.
//!   Larger bodies are streamed: each chunk is verified before it is handed out, and a bad
//!   chunk fails the read with an error (the proxy aborts the response, never sending the bad
//!   bytes) and deletes the entry. Either way the damage is counted and the next request misses.
//!
//! # Why entries are not fsynced
//! A cache entry is a copy that the origin can give again; what must never happen is serving
//! a damaged one, which the checksums prevent whether or not the bytes were flushed. An fsync
//! per entry (and one of its directory) cost ~7.6 ms each on this project's build machine and
//! the filesystem journal serialises them: with four edges filling 500 objects at once, the
//! fills — and every request waiting on their cache locks — queued behind the disk for
//! seconds (benches/results/simulate.md, "Live replay: what stalled"). nginx's and Varnish's
//! caches do not fsync objects either. The kernel writes the pages back in the background.

mod entry;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use pingora::cache::key::HashBinary;
use tracing::{debug, info, warn};

use super::metrics::{add, bump};
use super::{Shared, Tier};
pub use entry::{CHUNK_SIZE, ChunkedBody, DiskBody, DiskError, DiskObject, VERIFY_WHOLE_MAX};
pub(crate) use entry::{hex, read_chunk};
use entry::{open_entry, read_prefix, rewrite_meta};
pub use writer::{Admission, DiskWriter};

/// In-memory index of what the disk holds, with LRU order by a logical access clock.
#[derive(Default)]
struct State {
    entries: HashMap<HashBinary, Slot>,
    lru: BTreeMap<u64, HashBinary>,
    bytes: u64,
    clock: u64,
}

struct Slot {
    size: u64,
    tick: u64,
}

impl State {
    fn touch(&mut self, key: &HashBinary) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(slot) = self.entries.get_mut(key) {
            self.lru.remove(&slot.tick);
            slot.tick = clock;
            self.lru.insert(clock, *key);
        }
    }

    fn insert(&mut self, key: HashBinary, size: u64) {
        self.remove(&key);
        self.clock += 1;
        self.entries.insert(
            key,
            Slot {
                size,
                tick: self.clock,
            },
        );
        self.lru.insert(self.clock, key);
        self.bytes += size;
    }

    fn remove(&mut self, key: &HashBinary) -> bool {
        match self.entries.remove(key) {
            Some(slot) => {
                self.lru.remove(&slot.tick);
                self.bytes -= slot.size;
                true
            }
            None => false,
        }
    }

    /// Drop least recently used entries until `bytes <= budget`; returns the victims.
    fn evict_to(&mut self, budget: u64) -> Vec<HashBinary> {
        let mut victims = Vec::new();
        while self.bytes > budget {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(slot) = self.entries.remove(&key) {
                self.bytes -= slot.size;
            }
            victims.push(key);
        }
        victims
    }
}

pub struct DiskTier {
    root: PathBuf,
    budget: u64,
    max_object: u64,
    state: Mutex<State>,
    shared: Arc<Shared>,
    temp_counter: AtomicU64,
    /// Whether a write failure has been logged at warn level already ("log the reason once").
    write_error_logged: AtomicBool,
}

/// One entry found while scanning the directory at start.
pub struct Rebuilt {
    pub key: HashBinary,
    pub url: String,
    pub meta: (Vec<u8>, Vec<u8>),
}

impl DiskTier {
    /// Open (creating) the tier under `root` with a `budget` in bytes, rebuilding its index from
    /// the files there. Returns the entries found so the caller can index them for purge.
    /// Fails when the directory cannot be created or read; the caller then runs without L2.
    pub(crate) fn open(
        root: &Path,
        budget: u64,
        max_object: u64,
        shared: Arc<Shared>,
    ) -> io::Result<(Self, Vec<Rebuilt>)> {
        fs::create_dir_all(root)?;
        // Probe writability now, so an unwritable directory is reported at start, once.
        let probe = root.join(".probe.tmp");
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        let tier = DiskTier {
            root: root.to_owned(),
            budget,
            max_object: max_object.min(budget),
            state: Mutex::new(State::default()),
            shared,
            temp_counter: AtomicU64::new(0),
            write_error_logged: AtomicBool::new(false),
        };
        let rebuilt = tier.rebuild()?;
        Ok((tier, rebuilt))
    }

    fn rebuild(&self) -> io::Result<Vec<Rebuilt>> {
        let mut found = Vec::new();
        let (mut stale_temps, mut damaged) = (0u64, 0u64);
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(dir.path())? {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(".tmp") {
                    // A write that never completed (crash): never served, cleaned now.
                    let _ = fs::remove_file(&path);
                    stale_temps += 1;
                    continue;
                }
                let Some(key) = name
                    .strip_suffix(".ent")
                    .and_then(pingora::cache::key::str2hex)
                else {
                    continue;
                };
                match read_prefix(&path, &key) {
                    Ok((header, url, meta, _file)) => {
                        let used = fs::metadata(&path)
                            .and_then(|m| m.modified())
                            .unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((used, header.total_len(), Rebuilt { key, url, meta }));
                    }
                    Err(e) => {
                        debug!(path = %path.display(), error = %e, "deleting damaged cache entry found at start");
                        let _ = fs::remove_file(&path);
                        damaged += 1;
                    }
                }
            }
        }
        add(&self.shared.metrics.corrupt_entries, damaged);
        // Older files first, so the LRU order approximates the last use before the restart
        // (a hit does not rewrite the file; the modification time is when it was stored).
        found.sort_by_key(|(used, _, _)| *used);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (_, size, entry) in &found {
            state.insert(entry.key, *size);
        }
        let victims = state.evict_to(self.budget);
        let (objects, bytes) = (state.entries.len(), state.bytes);
        drop(state);
        for key in &victims {
            let _ = fs::remove_file(self.path_of(key));
        }
        let victims: std::collections::HashSet<_> = victims.into_iter().collect();
        info!(dir = %self.root.display(), objects, bytes, stale_temps, damaged, evicted = victims.len(), "disk cache index rebuilt");
        Ok(found
            .into_iter()
            .map(|(_, _, e)| e)
            .filter(|e| !victims.contains(&e.key))
            .collect())
    }

    fn path_of(&self, key: &HashBinary) -> PathBuf {
        let hex = hex(key);
        self.root.join(&hex[..2]).join(format!("{hex}.ent"))
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// (objects, bytes, budget)
    pub fn usage(&self) -> (u64, u64, u64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.entries.len() as u64, state.bytes, self.budget)
    }

    pub fn contains(&self, key: &HashBinary) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .contains_key(key)
    }

    /// Find `key` on disk. Damage is detected, counted, the entry deleted, and reported as a miss.
    pub async fn lookup(&'static self, key: HashBinary) -> Option<DiskObject> {
        if !self.contains(&key) {
            return None;
        }
        let path = self.path_of(&key);
        let result = tokio::task::spawn_blocking(move || open_entry(&path, &key)).await;
        match result {
            Ok(Ok(object)) => {
                self.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .touch(&key);
                Some(object)
            }
            Ok(Err(DiskError::Io(e))) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted behind our back (purge race or an operator): forget it.
                self.forget(&key);
                None
            }
            Ok(Err(e)) => {
                self.discard_corrupt(&key, &e).await;
                None
            }
            Err(join) => {
                warn!(error = %join, "disk cache read task failed");
                None
            }
        }
    }

    /// Count, log and delete a damaged entry.
    pub async fn discard_corrupt(&'static self, key: &HashBinary, error: &DiskError) {
        bump(&self.shared.metrics.corrupt_entries);
        warn!(key = %hex(key), %error, "corrupt disk cache entry deleted; treating as a miss");
        self.remove(key).await;
    }

    fn forget(&self, key: &HashBinary) -> bool {
        let removed = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if removed {
            self.shared.index.forget(key, Tier::L2);
        }
        removed
    }

    /// Delete `key`; true when the disk held it.
    pub async fn remove(&'static self, key: &HashBinary) -> bool {
        let removed = self.forget(key);
        let path = self.path_of(key);
        let _ = tokio::task::spawn_blocking(move || fs::remove_file(path)).await;
        removed
    }

    /// The stored meta of `key` (its header checked, the body not read), or `None` when it
    /// is not stored or unreadable (a later lookup deals with damage).
    pub async fn meta(&'static self, key: HashBinary) -> Option<(Vec<u8>, Vec<u8>)> {
        if !self.contains(&key) {
            return None;
        }
        let path = self.path_of(&key);
        tokio::task::spawn_blocking(move || {
            read_prefix(&path, &key).ok().map(|(_, _, meta, _)| meta)
        })
        .await
        .ok()
        .flatten()
    }

    /// Replace the stored meta of `key`, keeping its body: the entry is copied into a new
    /// temp file with the new meta and renamed over the old one. False when not stored.
    pub async fn update_meta(&'static self, key: HashBinary, meta: (Vec<u8>, Vec<u8>)) -> bool {
        if !self.contains(&key) {
            return false;
        }
        let temp = self.temp_path(&key);
        let path = self.path_of(&key);
        let result =
            tokio::task::spawn_blocking(move || rewrite_meta(&path, &temp, &key, &meta)).await;
        match result {
            Ok(Ok(size)) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.entries.contains_key(&key) {
                    state.insert(key, size);
                }
                true
            }
            Ok(Err(DiskError::Corrupt(why))) => {
                self.discard_corrupt(&key, &DiskError::Corrupt(why)).await;
                false
            }
            Ok(Err(DiskError::Io(e))) => {
                self.write_failed(&e);
                false
            }
            Err(_) => false,
        }
    }

    fn temp_path(&self, key: &HashBinary) -> PathBuf {
        let hex = hex(key);
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(&hex[..2])
            .join(format!("{hex}.{}.{n}.tmp", std::process::id()))
    }

    /// Log a failed write: at warn level the first time, then at debug; always counted.
    pub(crate) fn write_failed(&self, error: &io::Error) {
        bump(&self.shared.metrics.l2_write_errors);
        if !self.write_error_logged.swap(true, Ordering::Relaxed) {
            warn!(dir = %self.root.display(), %error, "disk cache write failed; affected objects are served but not kept on disk (logged once)");
        } else {
            debug!(dir = %self.root.display(), %error, "disk cache write failed");
        }
    }
}

#[cfg(test)]
mod tests;
