//! `TieredStorage`: pingora-cache's `Storage` over L1 (memory) then L2 (disk).
//!
//! Lookups try L1, then L2 (an L2 hit small enough for L1 is promoted). A miss writes to both
//! tiers as the body streams in: L2 in checksummed chunks, L1 by buffering only while the object
//! still fits L1's per-object cap. Hit handlers say which tier answered ([`tier_of`]) and can
//! seek, so range requests are answered from a cached full object.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::{Error, ErrorType, Result};
use tracing::{debug, warn};

use super::disk::{self, Admission, ChunkedBody, DiskBody, DiskError, DiskTier, DiskWriter};
use super::index::tags_from_headers;
use super::memory::{MemEntry, MemoryTier};
use super::metrics::{CacheStats, add, bump};
use super::purges::FillEpoch;
use super::{CacheOptions, PurgeKind, PurgeRequest, Shared, Tier, key};

/// The edge's cache storage. Build one per process with [`TieredStorage::open`] and leak it
/// (pingora wants `&'static dyn Storage`).
pub struct TieredStorage {
    l1: MemoryTier,
    l2: Option<DiskTier>,
    shared: Arc<Shared>,
    /// What L1 was built with (a reload does not rebuild it), for `/stats`.
    l1_policy: edgebox_config::L1Policy,
}

impl TieredStorage {
    /// Build the tiers. A disk tier that cannot be opened (unwritable directory, ...) is logged
    /// once and left out: the edge keeps serving with memory caching only.
    pub fn open(options: &CacheOptions) -> Self {
        let shared = Arc::new(Shared::default());
        let l1 = MemoryTier::new(
            options.l1_capacity,
            options.l1_max_object,
            options.l1_policy,
            shared.clone(),
        );
        let l2 = match &options.l2_dir {
            Some(dir) if options.l2_capacity > 0 => {
                match DiskTier::open(
                    dir,
                    options.l2_capacity,
                    options.max_object_size,
                    shared.clone(),
                ) {
                    Ok((tier, rebuilt)) => {
                        for entry in rebuilt {
                            let tags = pingora::cache::CacheMeta::deserialize(
                                &entry.meta.0,
                                &entry.meta.1,
                            )
                            .map(|meta| tags_from_headers(meta.response_header()))
                            .unwrap_or_default();
                            shared.index.record(entry.key, &entry.url, &tags, Tier::L2);
                        }
                        Some(tier)
                    }
                    Err(error) => {
                        warn!(dir = %dir.display(), %error, "disk cache unavailable; caching in memory only");
                        None
                    }
                }
            }
            _ => None,
        };
        Self {
            l1,
            l2,
            shared,
            l1_policy: options.l1_policy,
        }
    }

    /// [`Self::open`] and leak the result, for pingora's `&'static` storage.
    pub fn open_static(options: &CacheOptions) -> &'static Self {
        Box::leak(Box::new(Self::open(options)))
    }

    /// Counters and occupancy for `/stats` and `/metrics`.
    pub fn snapshot(&self) -> CacheStats {
        let l2 = self.l2.as_ref().map_or((0, 0, 0), DiskTier::usage);
        let mut stats = self
            .shared
            .metrics
            .snapshot(self.l1.usage(), l2, self.l2.is_some());
        stats.l1_policy = Some(self.l1_policy.as_str().to_owned());
        stats
    }

    /// Count a request that waited on the cache lock (the proxy calls this when
    /// `session.cache.lock_duration()` is `Some` for the request).
    pub fn note_lock_wait(&self) {
        bump(&self.shared.metrics.lock_waits);
    }

    /// Whether the disk tier is in use.
    pub fn has_l2(&self) -> bool {
        self.l2.is_some()
    }

    /// Apply L1's pending admissions and evictions now (moka batches them); for tests and stats.
    pub fn sync(&self) {
        self.l1.sync();
    }

    /// Whether `tier` holds `key` right now (tests and diagnostics).
    pub fn holds(&self, key: &CacheKey, tier: Tier) -> bool {
        let hash = key.combined_bin();
        match tier {
            Tier::L1 => self.l1.get(&hash).is_some(),
            Tier::L2 => self.l2.as_ref().is_some_and(|d| d.contains(&hash)),
        }
    }

    /// Remove one object from every tier; true when some tier held it.
    async fn remove(&'static self, hash: &HashBinary) -> bool {
        let in_l1 = self.l1.remove(hash);
        let in_l2 = match &self.l2 {
            Some(disk) => disk.remove(hash).await,
            None => false,
        };
        self.shared.index.remove(hash);
        in_l1 || in_l2
    }

    /// Purge objects selected by URL (all variants), path prefix, surrogate tag or everything:
    /// remove them, or mark them stale ([`PurgeKind`]). Returns how many stored objects
    /// (variants count separately) were removed or marked.
    ///
    /// The purge is recorded in the purge log and its objects selected under the log's lock,
    /// so a fill that started before it is either refused or selected here.
    pub async fn purge_by(&'static self, request: &PurgeRequest, kind: PurgeKind) -> usize {
        let keys = {
            let mut log = self.shared.purges.lock();
            log.record(request);
            let index = &self.shared.index;
            match request {
                PurgeRequest::Url(url) => index.by_url(&key::purge_url(url)),
                PurgeRequest::Prefix(prefix) => index.by_prefix(&key::purge_url(prefix)),
                PurgeRequest::Tag(tag) => index.by_tag(tag),
                PurgeRequest::All => index.all(),
            }
        };
        let mut done = 0;
        match kind {
            PurgeKind::Remove => {
                for hash in &keys {
                    if self.remove(hash).await {
                        done += 1;
                    }
                }
                if matches!(request, PurgeRequest::All) {
                    // Belt and braces: anything L1 holds that the index lost track of goes too.
                    self.l1.clear();
                }
                add(&self.shared.metrics.purged, done as u64);
            }
            PurgeKind::MarkStale => {
                // A second back, so that the stored (whole-second) freshness reads as stale
                // at once; the serve-stale windows are measured from here.
                let at = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
                for hash in &keys {
                    if self.mark_stale(hash, at).await {
                        done += 1;
                    }
                }
                add(&self.shared.metrics.marked_stale, done as u64);
            }
        }
        debug!(?request, ?kind, done, "cache purge");
        done
    }

    /// Whether a purge after `epoch` selects an object at `url` with `tags`.
    pub fn purged_since(&self, epoch: u64, url: &str, tags: &[String]) -> bool {
        self.shared.purges.purged_since(epoch, url, tags)
    }

    /// The purge epoch now: a request notes it before its lookup (see [`FillEpoch`]).
    pub fn purge_epoch(&self) -> u64 {
        self.shared.purges.epoch()
    }

    /// Mark one object stale as of `at` in every tier that holds it, keeping its body; true
    /// when some tier held it. The fast path reads freshness from the rewritten L1 entry.
    async fn mark_stale(&'static self, hash: &HashBinary, at: std::time::SystemTime) -> bool {
        let expire = |mut meta: CacheMeta| {
            meta.expire_at(at);
            meta.serialize().ok()
        };
        let mut marked = false;
        let mut from_l1 = None;
        if let Some(entry) = self.l1.get(hash)
            && let Some(serialized) = entry.meta().ok().and_then(expire)
        {
            match MemEntry::from_serialized(serialized.clone(), entry.body.clone()).map(Arc::new) {
                Some(stale) if self.l1.insert(*hash, stale.clone()) => marked = true,
                // Never leave the fresh copy behind.
                _ => {
                    self.l1.remove(hash);
                }
            }
            from_l1 = Some(serialized);
        }
        if let Some(disk) = &self.l2 {
            let serialized = match from_l1 {
                Some(serialized) => Some(serialized),
                None => disk
                    .meta(*hash)
                    .await
                    .and_then(|stored| CacheMeta::deserialize(&stored.0, &stored.1).ok())
                    .and_then(expire),
            };
            if let Some(serialized) = serialized
                && disk.update_meta(*hash, serialized).await
            {
                marked = true;
            }
        }
        marked
    }

    /// The L1 entry for `key` when the fast path may answer it: held in memory, prepared
    /// (no `Vary`) and fresh at `now`. Counts nothing: the caller counts the hit it serves
    /// with [`Self::note_fast_hit`], and a `None` goes on to the full path, which counts.
    pub fn fresh_l1(&self, key: &CacheKey, now: std::time::SystemTime) -> Option<Arc<MemEntry>> {
        let entry = self.l1.get(&key.combined_bin())?;
        (entry.is_hot() && entry.fresh_until >= now).then_some(entry)
    }

    /// Count a hit the fast path answered with `bytes` of body.
    pub fn note_fast_hit(&self, bytes: usize) {
        let metrics = &self.shared.metrics;
        bump(&metrics.l1_hits);
        bump(&metrics.fast_hits);
        add(&metrics.l1_bytes_served, bytes as u64);
    }

    fn hit(&'static self, tier: Tier, body: HitBody) -> HitHandler {
        Box::new(TieredHit {
            tier,
            body,
            storage: self,
        })
    }
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let metrics = &self.shared.metrics;
        let epoch = fill_epoch(key, &self.shared);
        if let Some(entry) = self.l1.get(&hash) {
            let meta = entry.meta()?;
            bump(&metrics.l1_hits);
            return Ok(Some((
                meta,
                self.hit(Tier::L1, HitBody::memory(entry.body.clone())),
            )));
        }
        bump(&metrics.l1_misses);
        let Some(disk) = &self.l2 else {
            bump(&metrics.misses);
            return Ok(None);
        };
        let Some(object) = disk.lookup(hash).await else {
            bump(&metrics.l2_misses);
            bump(&metrics.misses);
            return Ok(None);
        };
        let meta = match CacheMeta::deserialize(&object.meta.0, &object.meta.1) {
            Ok(meta) => meta,
            Err(_) => {
                // Checksums passed but pingora cannot read the meta (e.g. written by another
                // pingora version): unusable, so it goes like a damaged entry.
                disk.discard_corrupt(&hash, &DiskError::Corrupt("unreadable cache meta"))
                    .await;
                bump(&metrics.l2_misses);
                bump(&metrics.misses);
                return Ok(None);
            }
        };
        bump(&metrics.l2_hits);
        let body = match object.body {
            DiskBody::Whole(body) => {
                let size = (object.meta.0.len() + object.meta.1.len() + body.len()) as u64;
                if self.l1.fits(size)
                    && let Ok(entry) = MemEntry::new(&meta, object.meta.0, body.clone())
                {
                    let tags = tags_from_headers(meta.response_header());
                    let entry = Arc::new(entry);
                    // Admitted like a fill (`cache::purges`): a purge that ran while the
                    // disk copy was read has removed or marked that copy, and must not
                    // find its old version back in L1.
                    let purges = self.shared.purges.lock();
                    if !purges.purged_since(epoch, &object.url, &tags)
                        && self.l1.insert(hash, entry)
                    {
                        self.shared.index.record(hash, &object.url, &tags, Tier::L1);
                        bump(&metrics.promotions);
                    }
                }
                HitBody::memory(body)
            }
            DiskBody::Chunked(body) => HitBody::Disk {
                end: body.body_len,
                body,
                pos: 0,
            },
        };
        Ok(Some((meta, self.hit(Tier::L2, body))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key.combined_bin();
        let url = key::url_of_primary(key.primary_key());
        let tags = tags_from_headers(meta.response_header());
        let epoch = fill_epoch(key, &self.shared);
        let serialized = meta.serialize()?;
        let meta_len = (serialized.0.len() + serialized.1.len()) as u64;
        let l1_body = self.l1.fits(meta_len).then(BytesMut::new);
        let disk = match &self.l2 {
            Some(disk) => disk.writer(hash, url.clone(), serialized.clone()).await,
            None => None,
        };
        Ok(Box::new(TieredMiss {
            storage: self,
            hash,
            epoch,
            url,
            tags,
            meta: serialized,
            meta_len,
            l1_body,
            disk,
            size: 0,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        // We assign no entry IDs, so an identified target cannot be one of ours.
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined_bin();
        Ok(if self.remove(&hash).await {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let serialized = meta.serialize()?;
        let tags = tags_from_headers(meta.response_header());
        let url = key::url_of_primary(key.primary_key());
        // A revalidation that was in flight during a purge of this object must not make
        // it fresh again.
        if let Some(FillEpoch(epoch)) = key.extensions.get::<FillEpoch>()
            && self.shared.purges.purged_since(*epoch, &url, &tags)
        {
            return Ok(false);
        }
        let mut updated = false;
        if let Some(old) = self.l1.get(&hash) {
            match MemEntry::from_serialized(serialized.clone(), old.body.clone()).map(Arc::new) {
                Some(entry) if self.l1.insert(hash, entry.clone()) => {
                    self.shared.index.record(hash, &url, &tags, Tier::L1);
                    updated = true;
                }
                _ => {
                    self.l1.remove(&hash);
                }
            }
        }
        if let Some(disk) = &self.l2
            && disk.update_meta(hash, serialized).await
        {
            self.shared.index.record(hash, &url, &tags, Tier::L2);
            updated = true;
        }
        Ok(updated)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// The purge epoch the request for `key` started at; without the proxy's (in-process
/// use), now.
fn fill_epoch(key: &CacheKey, shared: &Shared) -> u64 {
    key.extensions
        .get::<FillEpoch>()
        .map_or_else(|| shared.purges.epoch(), |e| e.0)
}

/// `body` frozen, copied first when growing it in chunks left much spare capacity: L1
/// holds it for the object's life, and the spare bytes would count nowhere.
fn exact(body: BytesMut) -> Bytes {
    if body.capacity() - body.len() > body.len() / 16 {
        Bytes::copy_from_slice(&body)
    } else {
        body.freeze()
    }
}

/// Which tier answered a hit, if `hit` came from a [`TieredStorage`]. Call it from
/// `cache_hit_filter` to set `X-Cache-Tier`.
pub fn tier_of(hit: &HitHandler) -> Option<Tier> {
    hit.as_any().downcast_ref::<TieredHit>().map(|h| h.tier)
}

pub struct TieredHit {
    tier: Tier,
    body: HitBody,
    storage: &'static TieredStorage,
}

enum HitBody {
    /// The whole body in memory (an L1 hit, or a small verified L2 hit); `start..end` is what
    /// is left to send.
    Memory {
        body: Bytes,
        start: usize,
        end: usize,
        done: bool,
    },
    /// A large L2 body read chunk by chunk; `pos..end` is what is left to send.
    Disk {
        body: ChunkedBody,
        pos: u64,
        end: u64,
    },
}

impl HitBody {
    fn memory(body: Bytes) -> Self {
        let end = body.len();
        HitBody::Memory {
            body,
            start: 0,
            end,
            done: false,
        }
    }
}

impl TieredHit {
    pub fn tier(&self) -> Tier {
        self.tier
    }

    fn served(&self, n: usize) {
        let metrics = &self.storage.shared.metrics;
        let counter = match self.tier {
            Tier::L1 => &metrics.l1_bytes_served,
            Tier::L2 => &metrics.l2_bytes_served,
        };
        add(counter, n as u64);
    }
}

#[async_trait]
impl HandleHit for TieredHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let chunk = match &mut self.body {
            HitBody::Memory {
                body,
                start,
                end,
                done,
            } => {
                if *done || *start >= *end {
                    *done = true;
                    return Ok(None);
                }
                *done = true;
                body.slice(*start..*end)
            }
            HitBody::Disk { body, pos, end } => {
                if *pos >= *end {
                    return Ok(None);
                }
                let index = *pos / body.chunk_size();
                let chunk = match disk::read_chunk(body, index).await {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        // Nothing of this chunk was sent. Failing the read makes the proxy abort
                        // the response (its length no longer adds up for the client) rather than
                        // send bytes we cannot vouch for; the entry is deleted so the next
                        // request refetches.
                        if let (DiskError::Corrupt(_), Some(disk)) = (&error, &self.storage.l2) {
                            disk.discard_corrupt(body.key(), &error).await;
                        }
                        return Error::e_explain(
                            ErrorType::InternalError,
                            format!("disk cache read: {error}"),
                        );
                    }
                };
                let offset = (*pos - index * body.chunk_size()) as usize;
                let take = (chunk.len() - offset).min((*end - *pos) as usize);
                *pos += take as u64;
                chunk.slice(offset..offset + take)
            }
        };
        self.served(chunk.len());
        Ok(Some(chunk))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    /// `end` is exclusive, as pingora's range filter passes it.
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = match &self.body {
            HitBody::Memory { body, .. } => body.len(),
            HitBody::Disk { body, .. } => body.body_len as usize,
        };
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {len}"),
            );
        }
        let end = end.map_or(len, |end| end.min(len));
        match &mut self.body {
            HitBody::Memory {
                start: s,
                end: e,
                done,
                ..
            } => {
                (*s, *e, *done) = (start, end, false);
            }
            HitBody::Disk { pos, end: e, .. } => {
                (*pos, *e) = (start as u64, end as u64);
            }
        }
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        match &self.body {
            HitBody::Memory { body, .. } => body.len(),
            HitBody::Disk { body, .. } => body.body_len as usize,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

pub struct TieredMiss {
    storage: &'static TieredStorage,
    hash: HashBinary,
    /// The purge epoch the request started at: a purge since then that selects this object
    /// keeps the fill from being stored.
    epoch: u64,
    url: String,
    tags: Vec<String>,
    meta: (Vec<u8>, Vec<u8>),
    meta_len: u64,
    /// The body so far, while it still fits L1; dropped (and never resumed) once it does not,
    /// so a large object is never held whole in memory.
    l1_body: Option<BytesMut>,
    disk: Option<DiskWriter>,
    size: usize,
}

#[async_trait]
impl HandleMiss for TieredMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.size += data.len();
        if let Some(buffer) = &mut self.l1_body {
            if self
                .storage
                .l1
                .fits(self.meta_len + (buffer.len() + data.len()) as u64)
            {
                buffer.extend_from_slice(&data);
            } else {
                self.l1_body = None;
            }
        }
        if let Some(writer) = &mut self.disk
            && let Err(error) = writer.write(data).await
        {
            if error.kind() != std::io::ErrorKind::FileTooLarge
                && let Some(disk) = &self.storage.l2
            {
                disk.write_failed(&error);
            }
            // Dropping the writer deletes its temp file.
            self.disk = None;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let storage = self.storage;
        let shared = &storage.shared;
        let mut kept = false;
        if shared
            .purges
            .purged_since(self.epoch, &self.url, &self.tags)
        {
            // Purged while in flight: the body predates the purge. Dropping the writer
            // deletes its temp file; whatever the tiers hold stays as the purge left it.
            self.disk = None;
            debug!(url = %self.url, "fill not stored: purged while in flight");
            return Ok(MissFinishType::Created(self.size));
        }
        let admission = Admission {
            epoch: self.epoch,
            url: self.url.clone(),
            tags: self.tags.clone(),
        };
        match (self.disk.take(), &storage.l2) {
            (Some(writer), Some(disk)) => match writer.commit(admission).await {
                Ok(Some(_)) => kept = true,
                Ok(None) => {
                    debug!(url = %self.url, "fill not stored: purged while in flight");
                    return Ok(MissFinishType::Created(self.size));
                }
                Err(error) => {
                    disk.write_failed(&error);
                    // An older copy must not outlive the response that replaced it.
                    disk.remove(&self.hash).await;
                }
            },
            (None, Some(disk)) => {
                disk.remove(&self.hash).await;
            }
            _ => {}
        }
        // Decoded from the stored bytes, as a later full-path hit from L2 reads it back, so
        // that every path starts from the same header.
        let entry = self.l1_body.take().and_then(|body| {
            MemEntry::from_serialized(std::mem::take(&mut self.meta), exact(body))
        });
        let in_l1 = match entry {
            Some(entry) => {
                let entry = Arc::new(entry);
                // Admitted under the purge log's lock, like the disk entry (`cache::purges`).
                let purges = shared.purges.lock();
                if purges.purged_since(self.epoch, &self.url, &self.tags) {
                    // What the purge left (a stale copy after a soft purge) stays.
                    return Ok(MissFinishType::Created(self.size));
                } else if storage.l1.insert(self.hash, entry) {
                    shared
                        .index
                        .record(self.hash, &self.url, &self.tags, Tier::L1);
                    true
                } else {
                    false
                }
            }
            None => false,
        };
        if in_l1 {
            kept = true;
        } else {
            // Same reason: an older, smaller version in L1 would shadow the new one.
            storage.l1.remove(&self.hash);
        }
        if kept {
            bump(&shared.metrics.stored);
        }
        Ok(MissFinishType::Created(self.size))
    }
}
