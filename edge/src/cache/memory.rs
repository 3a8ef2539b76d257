//! L1: the memory tier, whole objects weighted by their bytes, evicted by the policy of
//! `[cache] l1_policy`.
//!
//! - `moka` (the default): moka's W-TinyLFU, TinyLFU admission (a one-hit wonder does
//!   not push out a popular object) and size-aware eviction, applied in batches.
//! - `lru`, `s3fifo`, `sieve`, `tinyufo`: the simulator's policies, the same code
//!   (`edgebox_cache_model::eviction::L1`), so that what model mode predicts for a policy
//!   is what an edge running it does. Those structures take `&mut self`, so they sit
//!   behind one lock with the map from key to object; a hit holds it for a map lookup and
//!   the policy's access bookkeeping (a few pointer moves), and evictions are applied at
//!   once, under the same lock (the purge index forgets each evicted key before the lock
//!   is released, so a purge never misses an object L1 holds).
//!
//! Objects larger than the per-object cap never enter L1: they would evict many small
//! popular objects for one large one, and they stream from L2 instead.

use std::sync::Arc;

use bytes::Bytes;
use edgebox_cache_model::eviction::{L1, PolicyKind};
use edgebox_config::L1Policy;
use moka::notification::RemovalCause;
use parking_lot::Mutex;
use pingora::cache::key::HashBinary;
use std::collections::HashMap;

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
    store: Store,
    capacity: u64,
    max_object: u64,
}

// One per process: the size difference costs nothing, a box would cost an indirection
// per hit.
#[allow(clippy::large_enum_variant)]
enum Store {
    Moka(moka::sync::Cache<HashBinary, Arc<MemEntry>>),
    Model(Mutex<Model>, Arc<Shared>),
}

/// A cache-model policy and the objects it holds. The policy knows 64-bit ids (the first
/// half of the 128-bit key, also stored as the entry's payload so that evictions name
/// it); the map keeps the whole key, so two keys sharing an id never answer for each
/// other: the later one replaces the earlier.
struct Model {
    policy: L1,
    objects: HashMap<u64, (HashBinary, Arc<MemEntry>)>,
    evicted: Vec<u64>,
}

fn id_of(key: &HashBinary) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[..8]);
    u64::from_le_bytes(id)
}

impl MemoryTier {
    /// A tier of `capacity` bytes admitting objects of at most `max_object` bytes (meta +
    /// body), evicting by `policy`.
    pub(crate) fn new(
        capacity: u64,
        max_object: u64,
        policy: L1Policy,
        shared: Arc<Shared>,
    ) -> Self {
        let kind = match policy {
            L1Policy::Moka => return Self::moka(capacity, max_object, shared),
            L1Policy::Lru => PolicyKind::Lru,
            L1Policy::S3fifo => PolicyKind::S3fifo,
            L1Policy::Sieve => PolicyKind::Sieve,
            L1Policy::Tinyufo => PolicyKind::Tinyufo,
        };
        // A sizing hint only: 16 KiB per object, capped so a huge tier starts small.
        let expected = (capacity / (16 * 1024)).min(1 << 16) as usize;
        let mut policy = L1::new(kind, capacity, expected);
        policy.log_evictions();
        Self {
            store: Store::Model(
                Mutex::new(Model {
                    policy,
                    objects: HashMap::with_capacity(expected),
                    evicted: Vec::new(),
                }),
                shared,
            ),
            capacity,
            max_object: max_object.min(u32::MAX as u64 / 2),
        }
    }

    fn moka(capacity: u64, max_object: u64, shared: Arc<Shared>) -> Self {
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
            store: Store::Moka(cache),
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
        match &self.store {
            Store::Moka(cache) => cache.get(key),
            Store::Model(model, _) => {
                let mut model = model.lock();
                let id = id_of(key);
                let (held, entry) = model.objects.get(&id)?;
                if held != key {
                    return None;
                }
                let entry = entry.clone();
                // The access, for the policy's recency or frequency bookkeeping.
                model.policy.get(id);
                Some(entry)
            }
        }
    }

    /// Offer `entry` to L1; false when it is too large, or (W-TinyLFU, TinyUFO) when the
    /// admission filter turns it away (moka may also decline it later, in its batch).
    pub fn insert(&self, key: HashBinary, entry: Arc<MemEntry>) -> bool {
        if !self.fits(entry.size()) {
            return false;
        }
        match &self.store {
            Store::Moka(cache) => {
                cache.insert(key, entry);
                true
            }
            Store::Model(model, shared) => {
                let mut guard = model.lock();
                let model = &mut *guard;
                let id = id_of(&key);
                let admitted = model.policy.insert(id, entry.weight(), id);
                if admitted {
                    if let Some((held, _)) = model.objects.insert(id, (key, entry))
                        && held != key
                    {
                        shared.index.forget(&held, Tier::L1);
                    }
                } else if let Some((held, _)) = model.objects.remove(&id) {
                    shared.index.forget(&held, Tier::L1);
                }
                model.policy.drain_evicted(&mut model.evicted);
                for id in model.evicted.drain(..) {
                    if let Some((held, _)) = model.objects.remove(&id) {
                        bump(&shared.metrics.l1_evictions);
                        shared.index.forget(&held, Tier::L1);
                    }
                }
                admitted
            }
        }
    }

    /// Remove `key`; true when L1 held it.
    pub fn remove(&self, key: &HashBinary) -> bool {
        match &self.store {
            Store::Moka(cache) => cache.remove(key).is_some(),
            Store::Model(model, shared) => {
                let mut model = model.lock();
                let id = id_of(key);
                if model.objects.get(&id).is_none_or(|(held, _)| held != key) {
                    return false;
                }
                model.objects.remove(&id);
                model.policy.remove(id);
                shared.index.forget(key, Tier::L1);
                true
            }
        }
    }

    /// Drop everything.
    pub fn clear(&self) {
        match &self.store {
            Store::Moka(cache) => {
                cache.invalidate_all();
                cache.run_pending_tasks();
            }
            Store::Model(model, shared) => {
                let mut model = model.lock();
                let ids: Vec<u64> = model.objects.keys().copied().collect();
                for id in ids {
                    model.policy.remove(id);
                    if let Some((held, _)) = model.objects.remove(&id) {
                        shared.index.forget(&held, Tier::L1);
                    }
                }
            }
        }
    }

    /// (objects, bytes, capacity), after applying pending admissions and evictions.
    pub fn usage(&self) -> (u64, u64, u64) {
        match &self.store {
            Store::Moka(cache) => {
                cache.run_pending_tasks();
                (cache.entry_count(), cache.weighted_size(), self.capacity)
            }
            Store::Model(model, _) => {
                let usage = model.lock().policy.usage();
                (usage.objects, usage.bytes, self.capacity)
            }
        }
    }

    /// Apply pending admissions and evictions now (moka does them in batches; the other
    /// policies apply them at once).
    pub fn sync(&self) {
        if let Store::Moka(cache) = &self.store {
            cache.run_pending_tasks();
        }
    }
}
