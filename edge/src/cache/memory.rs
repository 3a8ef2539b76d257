//! L1: the memory tier, a moka cache of whole objects weighted by their bytes.
//!
//! moka gives TinyLFU admission (a one-hit wonder does not push out a popular object) and
//! size-aware eviction. Objects larger than the per-object cap never enter L1: they would
//! evict many small popular objects for one large one, and they stream from L2 instead.

use std::sync::Arc;

use bytes::Bytes;
use moka::notification::RemovalCause;
use pingora::cache::key::HashBinary;

use super::hot::HotHeader;
use super::metrics::bump;
use super::{Shared, Tier};

/// Bookkeeping bytes charged per entry on top of meta and body, so that many tiny objects
/// cannot exceed the capacity in real memory (the shared rule the simulator's model uses).
const ENTRY_OVERHEAD: u64 = edgebox_cache_model::admission::L1_ENTRY_OVERHEAD;

/// One object held in memory: pingora's serialised meta (internal, header) for the full
/// hit path, the header prepared for the fast path (when the object does not vary), and the
/// body.
pub struct MemEntry {
    pub meta: (Vec<u8>, Vec<u8>),
    pub hot: Option<HotHeader>,
    pub body: Bytes,
}

impl MemEntry {
    pub fn weight(&self) -> u64 {
        (self.meta.0.len() + self.meta.1.len() + self.body.len()) as u64
            + self.hot.as_ref().map_or(0, HotHeader::weight)
            + ENTRY_OVERHEAD
    }

    /// Bytes counted against L1's per-object cap: meta and body (not the prepared header,
    /// which is bookkeeping like [`ENTRY_OVERHEAD`]).
    fn size(&self) -> u64 {
        (self.meta.0.len() + self.meta.1.len() + self.body.len()) as u64
    }
}

pub struct MemoryTier {
    cache: moka::sync::Cache<HashBinary, Arc<MemEntry>>,
    capacity: u64,
    max_object: u64,
}

impl MemoryTier {
    /// A tier of `capacity` bytes admitting objects of at most `max_object` bytes (meta + body).
    pub(crate) fn new(capacity: u64, max_object: u64, shared: Arc<Shared>) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            // Entries are capped at `max_object` (< 4 GiB), so the weight fits in u32.
            .weigher(|_key, entry: &Arc<MemEntry>| {
                u32::try_from(entry.weight()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |key: Arc<HashBinary>, _entry, cause| match cause {
                // A replacement keeps the key in L1; anything else means L1 no longer has it.
                RemovalCause::Replaced => {}
                RemovalCause::Size | RemovalCause::Expired => {
                    bump(&shared.metrics.l1_evictions);
                    shared.index.forget(&key, Tier::L1);
                }
                RemovalCause::Explicit => shared.index.forget(&key, Tier::L1),
            })
            .build();
        Self {
            cache,
            capacity,
            max_object: max_object.min(u32::MAX as u64 / 2),
        }
    }

    /// Whether an object of `size` bytes (meta + body) may enter L1 at all.
    pub fn fits(&self, size: u64) -> bool {
        edgebox_cache_model::admission::l1_fits(self.capacity, self.max_object, size)
    }

    pub fn max_object(&self) -> u64 {
        self.max_object.min(self.capacity)
    }

    pub fn get(&self, key: &HashBinary) -> Option<Arc<MemEntry>> {
        self.cache.get(key)
    }

    /// Offer `entry` to L1; false when it is too large (TinyLFU may still decline it later).
    pub fn insert(&self, key: HashBinary, entry: Arc<MemEntry>) -> bool {
        if !self.fits(entry.size()) {
            return false;
        }
        self.cache.insert(key, entry);
        true
    }

    /// Remove `key`; true when L1 held it.
    pub fn remove(&self, key: &HashBinary) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Drop everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    /// (objects, bytes, capacity), after applying pending admissions and evictions.
    pub fn usage(&self) -> (u64, u64, u64) {
        self.cache.run_pending_tasks();
        (
            self.cache.entry_count(),
            self.cache.weighted_size(),
            self.capacity,
        )
    }

    /// Apply pending admissions and evictions now (moka does them in batches).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}
