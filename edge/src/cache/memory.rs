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

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use edgebox_cache_model::eviction::{L1, PolicyKind};
use edgebox_config::L1Policy;
use moka::notification::RemovalCause;
use parking_lot::Mutex;
use pingora::cache::CacheMeta;
use pingora::cache::key::HashBinary;
use pingora::http::ResponseHeader;

use super::hot::{self, CompactHeader, PerRequest, TooLarge};
use super::metrics::bump;
use super::{Shared, Tier};

/// Bookkeeping bytes charged per entry on top of meta and body, so that many tiny objects
/// cannot exceed the capacity in real memory (the shared rule the simulator's model uses).
const ENTRY_OVERHEAD: u64 = edgebox_cache_model::admission::L1_ENTRY_OVERHEAD;

/// One object held in memory: pingora's internal meta (freshness, times, variance) as it
/// serialises it, the response header in compact form (`cache::hot`: the full hit path's
/// `CacheMeta` and the fast path's header are both rebuilt from it, so it is kept once),
/// and the body.
pub struct MemEntry {
    internal: Box<[u8]>,
    pub header: CompactHeader,
    /// Fresh while `now <= fresh_until` (pingora's `is_fresh`), read by the fast path.
    pub fresh_until: SystemTime,
    /// What `Age` counts from (pingora's `epoch`: the last revalidation, or an override).
    pub epoch: SystemTime,
    pub body: Bytes,
}

impl MemEntry {
    /// The entry for an object with `meta` (as read back from its serialised form, so that
    /// both hit paths start from what L2 would give) and `body`.
    pub fn new(meta: &CacheMeta, internal: Vec<u8>, body: Bytes) -> Result<Self, TooLarge> {
        Ok(Self {
            internal: internal.into_boxed_slice(),
            header: CompactHeader::new(meta)?,
            fresh_until: meta.fresh_until(),
            epoch: meta.epoch(),
            body,
        })
    }

    /// The entry for an object stored as `serialized` (pingora's internal meta and header),
    /// or `None` when that does not decode or has no compact form.
    pub fn from_serialized(serialized: (Vec<u8>, Vec<u8>), body: Bytes) -> Option<Self> {
        let meta = CacheMeta::deserialize(&serialized.0, &serialized.1).ok()?;
        Self::new(&meta, serialized.0, body).ok()
    }

    /// The object's `CacheMeta`, for pingora-cache's full hit path.
    pub fn meta(&self) -> pingora::Result<CacheMeta> {
        super::hot::meta_of(&self.internal, &self.header)
    }

    /// Whether a fresh hit may take the fast path (see `cache::hot`).
    pub fn is_hot(&self) -> bool {
        self.header.is_hot()
    }

    pub fn weight(&self) -> u64 {
        self.size() + ENTRY_OVERHEAD
    }

    /// The response header of a fast hit of this entry at `now` (`None` when it has no
    /// fast-path layout): this request's values in the header the layout describes.
    ///
    /// Building that header field by field (`CompactHeader::response`) costs more than
    /// copying a built one (a name parse and two map inserts per field against a copy of
    /// two maps), so each worker thread keeps the built headers of the entries it hit last
    /// in a small direct-mapped table ([`MEMO_SLOTS`] per thread, about 6 KB each: a fixed
    /// cost, not a per-object one). An entry is recognised by its address, held through a
    /// `Weak` so that the address cannot be reused while the slot names it; a replaced entry
    /// (revalidated, soft-purged) is a new allocation and misses.
    pub fn fast_header(
        self: &Arc<Self>,
        now: SystemTime,
        per_request: PerRequest,
    ) -> Option<pingora::Result<Box<ResponseHeader>>> {
        if !self.header.is_hot() {
            return None;
        }
        let age = hot::age(now, self.epoch);
        let address = Arc::as_ptr(self);
        // Fibonacci hashing of the address: allocations are aligned, the low bits say
        // little.
        let slot = ((address as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
            % MEMO_SLOTS;
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            let cell = &mut memo[slot];
            if let Some((held, template)) = cell.as_ref()
                && std::ptr::eq(held.as_ptr(), address)
            {
                return Some(hot::fill(template, age, per_request));
            }
            let template = match self.header.template()? {
                Ok(template) => template,
                Err(error) => return Some(Err(error)),
            };
            let header = hot::fill(&template, age, per_request);
            *cell = Some((Arc::downgrade(self), template));
            Some(header)
        })
    }

    /// Bytes counted against L1's per-object cap: meta (internal and header) and body.
    fn size(&self) -> u64 {
        self.internal.len() as u64 + self.header.heap_bytes() + self.body.len() as u64
    }
}

/// Built fast-hit headers kept per worker thread (see [`MemEntry::fast_header`]).
pub const MEMO_SLOTS: usize = 128;

type MemoSlot = Option<(Weak<MemEntry>, ResponseHeader)>;

thread_local! {
    static MEMO: RefCell<Box<[MemoSlot]>> =
        RefCell::new((0..MEMO_SLOTS).map(|_| None).collect());
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
