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
//! - Writes go to a `.tmp` file in the same directory, which is fsync'd and then renamed over
//!   the final name (then the directory is fsync'd): a reader sees the old entry or the
//!   complete new one, and a crash leaves at worst a `.tmp` file, deleted at the next start.
//! - A lookup checks the header, the header checksum and that the file has exactly the length
//!   the header promises (so truncation is caught before any byte is served).
//! - Bodies up to [`VERIFY_WHOLE_MAX`] are read and verified whole before the hit is returned.
//!   Larger bodies are streamed: each chunk is verified before it is handed out, and a bad
//!   chunk fails the read with an error (the proxy aborts the response, never sending the bad
//!   bytes) and deletes the entry. Either way the damage is counted and the next request misses.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use pingora::cache::key::HashBinary;
use tracing::{debug, info, warn};

use super::metrics::{add, bump};
use super::{Shared, Tier};

const MAGIC: &[u8; 8] = b"EBXCACHE";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 56;
/// Body bytes per checksummed chunk; also the unit of streamed reads.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Bodies up to this size are verified whole at lookup; larger ones chunk by chunk.
pub const VERIFY_WHOLE_MAX: u64 = 1024 * 1024;
/// Sanity bounds on header fields, so a damaged header cannot make us allocate wildly.
const MAX_META_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cache entry is damaged: {0}")]
    Corrupt(&'static str),
    #[error("cache file I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// The parsed fixed header of an entry file.
#[derive(Debug, Clone, Copy)]
struct Header {
    chunk_size: u32,
    key: HashBinary,
    url_len: u32,
    meta_internal_len: u32,
    meta_header_len: u32,
    body_len: u64,
    crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.chunk_size.to_le_bytes());
        out[16..32].copy_from_slice(&self.key);
        out[32..36].copy_from_slice(&self.url_len.to_le_bytes());
        out[36..40].copy_from_slice(&self.meta_internal_len.to_le_bytes());
        out[40..44].copy_from_slice(&self.meta_header_len.to_le_bytes());
        out[44..52].copy_from_slice(&self.body_len.to_le_bytes());
        out[52..56].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    fn decode(raw: &[u8; HEADER_LEN]) -> Result<Self, DiskError> {
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap());
        if &raw[0..8] != MAGIC {
            return Err(DiskError::Corrupt("bad magic"));
        }
        if u32_at(8) != VERSION {
            return Err(DiskError::Corrupt("unknown format version"));
        }
        let header = Header {
            chunk_size: u32_at(12),
            key: raw[16..32].try_into().unwrap(),
            url_len: u32_at(32),
            meta_internal_len: u32_at(36),
            meta_header_len: u32_at(40),
            body_len: u64::from_le_bytes(raw[44..52].try_into().unwrap()),
            crc: u32_at(52),
        };
        if header.chunk_size == 0 || header.chunk_size > 64 * 1024 * 1024 {
            return Err(DiskError::Corrupt("bad chunk size"));
        }
        if header.url_len as usize > super::key::MAX_URL_BYTES
            || header.meta_internal_len as usize > MAX_META_BYTES
            || header.meta_header_len as usize > MAX_META_BYTES
        {
            return Err(DiskError::Corrupt("implausible lengths"));
        }
        Ok(header)
    }

    fn chunks(&self) -> u64 {
        self.body_len.div_ceil(self.chunk_size as u64)
    }

    fn prefix_len(&self) -> u64 {
        (self.url_len + self.meta_internal_len + self.meta_header_len) as u64
    }

    fn body_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.prefix_len()
    }

    fn total_len(&self) -> u64 {
        self.body_offset() + self.body_len + self.chunks() * 4
    }
}

fn header_crc(fixed: &[u8; HEADER_LEN], prefix: &[u8], table: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fixed[..52]);
    hasher.update(prefix);
    hasher.update(table);
    hasher.finalize()
}

/// What a lookup found on disk.
pub struct DiskObject {
    pub url: String,
    pub meta: (Vec<u8>, Vec<u8>),
    pub body: DiskBody,
}

pub enum DiskBody {
    /// Small body, already read and verified.
    Whole(Bytes),
    /// Large body, to be read chunk by chunk, each verified before use.
    Chunked(ChunkedBody),
}

/// An open large entry. Reads use positional I/O on a shared handle, so a purge or rewrite of
/// the file meanwhile (unlink/rename) does not disturb a reader: it keeps the inode it opened.
#[derive(Clone)]
pub struct ChunkedBody {
    file: Arc<File>,
    key: HashBinary,
    body_offset: u64,
    pub body_len: u64,
    chunk_size: u64,
    crcs: Arc<[u32]>,
}

impl ChunkedBody {
    /// Read and verify chunk `index`.
    fn read_chunk(&self, index: u64) -> Result<Bytes, DiskError> {
        let start = index * self.chunk_size;
        let len = self.chunk_size.min(self.body_len - start) as usize;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, self.body_offset + start)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    DiskError::Corrupt("truncated body")
                } else {
                    DiskError::Io(e)
                }
            })?;
        if crc32fast::hash(&buf) != self.crcs[index as usize] {
            return Err(DiskError::Corrupt("body chunk checksum mismatch"));
        }
        Ok(Bytes::from(buf))
    }
}

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
        let mut state = self.state.lock().unwrap();
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
        let state = self.state.lock().unwrap();
        (state.entries.len() as u64, state.bytes, self.budget)
    }

    pub fn contains(&self, key: &HashBinary) -> bool {
        self.state.lock().unwrap().entries.contains_key(key)
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
                self.state.lock().unwrap().touch(&key);
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
        let removed = self.state.lock().unwrap().remove(key);
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
                let mut state = self.state.lock().unwrap();
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

    /// Start writing `key`. Nothing is visible to readers until [`DiskWriter::commit`].
    pub async fn writer(
        &'static self,
        key: HashBinary,
        url: String,
        meta: (Vec<u8>, Vec<u8>),
    ) -> Option<DiskWriter> {
        if meta.0.len() > MAX_META_BYTES || meta.1.len() > MAX_META_BYTES {
            return None;
        }
        let temp = self.temp_path(&key);
        let mut prefix = Vec::with_capacity(url.len() + meta.0.len() + meta.1.len());
        prefix.extend_from_slice(url.as_bytes());
        prefix.extend_from_slice(&meta.0);
        prefix.extend_from_slice(&meta.1);
        let header = Header {
            chunk_size: CHUNK_SIZE as u32,
            key,
            url_len: url.len() as u32,
            meta_internal_len: meta.0.len() as u32,
            meta_header_len: meta.1.len() as u32,
            body_len: 0,
            crc: 0,
        };
        let opened = {
            let temp = temp.clone();
            let prefix_ = prefix.clone();
            tokio::task::spawn_blocking(move || -> io::Result<File> {
                if let Some(dir) = temp.parent() {
                    fs::create_dir_all(dir)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temp)?;
                // Placeholder header (zero checksum, never valid): rewritten at commit.
                file.write_all(&header.encode())?;
                file.write_all(&prefix_)?;
                Ok(file)
            })
            .await
        };
        match opened {
            Ok(Ok(file)) => Some(DiskWriter {
                tier: self,
                header,
                prefix,
                temp,
                file: Some(file),
                pending: BytesMut::with_capacity(CHUNK_SIZE),
                crcs: Vec::new(),
                written: 0,
            }),
            Ok(Err(e)) => {
                self.write_failed(&e);
                let _ = fs::remove_file(&temp);
                None
            }
            Err(_) => None,
        }
    }
}

/// An entry being written: body chunks go to the temp file as they fill, each checksummed.
pub struct DiskWriter {
    tier: &'static DiskTier,
    header: Header,
    prefix: Vec<u8>,
    temp: PathBuf,
    file: Option<File>,
    pending: BytesMut,
    crcs: Vec<u32>,
    written: u64,
}

impl DiskWriter {
    /// Body bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append body bytes. Errors (full disk...) are returned; the caller then drops the writer,
    /// which deletes the temp file.
    pub async fn write(&mut self, mut data: Bytes) -> io::Result<()> {
        if self.len() + data.len() as u64 > self.tier.max_object {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "object exceeds the disk cache's per-object limit",
            ));
        }
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
            if self.pending.len() == CHUNK_SIZE {
                self.flush_chunk().await?;
            }
        }
        Ok(())
    }

    async fn flush_chunk(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.crcs.push(crc32fast::hash(&chunk));
        let offset = HEADER_LEN as u64 + self.prefix.len() as u64 + self.written;
        self.written += chunk.len() as u64;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("writer already failed"))?;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all_at(&chunk, offset);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }

    /// Finish the entry: write the chunk table and the real header, fsync, rename into place,
    /// index it and evict least recently used entries beyond the budget.
    pub async fn commit(mut self) -> io::Result<u64> {
        self.flush_chunk().await?;
        let mut header = self.header;
        header.body_len = self.written;
        let table: Vec<u8> = self.crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
        header.crc = header_crc(&header.encode(), &self.prefix, &table);
        let size = header.total_len();
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("writer already failed"))?;
        let temp = self.temp.clone();
        let tier = self.tier;
        let key = header.key;
        let path = tier.path_of(&key);
        let table_at = header.body_offset() + header.body_len;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.write_all_at(&table, table_at)?;
            file.write_all_at(&header.encode(), 0)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            // Make the rename itself durable.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        let victims = {
            let mut state = tier.state.lock().unwrap();
            state.insert(key, size);
            state.evict_to(tier.budget)
        };
        for victim in victims {
            bump(&tier.shared.metrics.l2_evictions);
            tier.shared.index.forget(&victim, Tier::L2);
            let path = tier.path_of(&victim);
            let _ = tokio::task::spawn_blocking(move || fs::remove_file(path)).await;
        }
        Ok(size)
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        // Abandoned (error, cancelled response) before commit: the temp file goes, never served.
        // After a commit the temp path no longer exists and this is a no-op.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Read and check an entry's header, URL, meta and chunk table (not the body).
#[allow(clippy::type_complexity)]
fn read_prefix(
    path: &Path,
    key: &HashBinary,
) -> Result<(Header, String, (Vec<u8>, Vec<u8>), (File, Vec<u32>)), DiskError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut raw = [0u8; HEADER_LEN];
    file.read_exact_at(&mut raw, 0)
        .map_err(|_| DiskError::Corrupt("truncated header"))?;
    let header = Header::decode(&raw)?;
    if &header.key != key {
        return Err(DiskError::Corrupt("key mismatch"));
    }
    if file_len != header.total_len() {
        return Err(DiskError::Corrupt(
            "file length does not match its header (truncated?)",
        ));
    }
    let mut prefix = vec![0u8; header.prefix_len() as usize];
    file.read_exact_at(&mut prefix, HEADER_LEN as u64)?;
    let mut table = vec![0u8; header.chunks() as usize * 4];
    file.read_exact_at(&mut table, header.body_offset() + header.body_len)?;
    if header_crc(&raw, &prefix, &table) != header.crc {
        return Err(DiskError::Corrupt("header checksum mismatch"));
    }
    let crcs = table
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let meta_header = prefix.split_off((header.url_len + header.meta_internal_len) as usize);
    let meta_internal = prefix.split_off(header.url_len as usize);
    let url = String::from_utf8_lossy(&prefix).into_owned();
    Ok((header, url, (meta_internal, meta_header), (file, crcs)))
}

/// Open an entry for a hit, verifying it as described in the module docs.
fn open_entry(path: &Path, key: &HashBinary) -> Result<DiskObject, DiskError> {
    let (header, url, meta, (file, crcs)) = read_prefix(path, key)?;
    let chunked = ChunkedBody {
        file: Arc::new(file),
        key: *key,
        body_offset: header.body_offset(),
        body_len: header.body_len,
        chunk_size: header.chunk_size as u64,
        crcs: crcs.into(),
    };
    let body = if header.body_len <= VERIFY_WHOLE_MAX {
        let mut whole = BytesMut::with_capacity(header.body_len as usize);
        for index in 0..header.chunks() {
            whole.extend_from_slice(&chunked.read_chunk(index)?);
        }
        DiskBody::Whole(whole.freeze())
    } else {
        DiskBody::Chunked(chunked)
    };
    Ok(DiskObject { url, meta, body })
}

/// Copy entry `path` into `temp` with a new meta, verifying the body while copying, then
/// rename it over `path`. Returns the new file size.
fn rewrite_meta(
    path: &Path,
    temp: &Path,
    key: &HashBinary,
    meta: &(Vec<u8>, Vec<u8>),
) -> Result<u64, DiskError> {
    let (old, url, _, (file, crcs)) = read_prefix(path, key)?;
    let body = ChunkedBody {
        file: Arc::new(file),
        key: *key,
        body_offset: old.body_offset(),
        body_len: old.body_len,
        chunk_size: old.chunk_size as u64,
        crcs: crcs.clone().into(),
    };
    let mut prefix = Vec::with_capacity(url.len() + meta.0.len() + meta.1.len());
    prefix.extend_from_slice(url.as_bytes());
    prefix.extend_from_slice(&meta.0);
    prefix.extend_from_slice(&meta.1);
    let table: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    let mut header = Header {
        meta_internal_len: meta.0.len() as u32,
        meta_header_len: meta.1.len() as u32,
        crc: 0,
        ..old
    };
    header.crc = header_crc(&header.encode(), &prefix, &table);
    let result = (|| -> Result<(), DiskError> {
        let mut out =
            io::BufWriter::new(OpenOptions::new().write(true).create_new(true).open(temp)?);
        out.write_all(&header.encode())?;
        out.write_all(&prefix)?;
        for index in 0..old.chunks() {
            // Verified on the way through: a damaged body is not laundered into a fresh checksum.
            out.write_all(&body.read_chunk(index)?)?;
        }
        out.write_all(&table)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result.map(|()| header.total_len())
}

pub(crate) fn hex(key: &HashBinary) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read chunk-wise from a large entry; used by the tiered hit handler.
pub(crate) async fn read_chunk(body: &ChunkedBody, index: u64) -> Result<Bytes, DiskError> {
    let body = body.clone();
    tokio::task::spawn_blocking(move || body.read_chunk(index))
        .await
        .map_err(|e| DiskError::Io(io::Error::other(e)))?
}

impl ChunkedBody {
    pub fn key(&self) -> &HashBinary {
        &self.key
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }
}
