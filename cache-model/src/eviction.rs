//! Size-aware eviction policies for a cache tier, keyed by a 64-bit object id, each entry
//! carrying a 64-bit payload (the model keeps the entry's expiry there).
//!
//! Every policy admits an object only when it fits the capacity on its own, and evicts until
//! the new object fits. [`L1`] picks one by [`PolicyKind`] (an enum, not a trait object, so
//! the per-request call is a jump table the optimiser sees through).
//!
//! - **LRU**: evict the least recently used. The disk tier (L2) uses this one: the edge's
//!   disk index orders objects by a logical access clock and evicts the oldest first.
//! - **S3-FIFO** (Yang et al., SOSP'23): a small FIFO (10% of the bytes) takes new objects;
//!   one accessed while there moves to the main FIFO on eviction, others go to a ghost FIFO
//!   (keys only, 90% of the bytes); an object found in the ghost enters main directly. Main
//!   reinserts objects with a non-zero frequency (decremented, capped at 3).
//! - **SIEVE** (Zhang et al., NSDI'24): one FIFO with a visited bit and a hand that walks from
//!   the oldest entry to newer ones, clearing bits, and evicts the first unvisited entry.
//! - **TinyUFO**: pingora's `TinyUFO` crate (TinyLFU admission in front of S3-FIFO eviction),
//!   the closest well-kept crate to the edge's moka W-TinyLFU. Its sketch hashes with a random
//!   seed, so its hit ratio varies slightly from run to run; the other policies are exact.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{IdMap, id_map};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Lru,
    S3fifo,
    Sieve,
    Tinyufo,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [Self::Lru, Self::S3fifo, Self::Sieve, Self::Tinyufo];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::S3fifo => "s3fifo",
            Self::Sieve => "sieve",
            Self::Tinyufo => "tinyufo",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown eviction policy {0:?}; known: lru, s3fifo, sieve, tinyufo")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownPolicy(text.to_owned()))
    }
}

/// Counters every policy keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub evictions: u64,
}

/// One tier's eviction policy.
pub enum L1 {
    Lru(Lru),
    S3fifo(S3Fifo),
    Sieve(Sieve),
    Tinyufo(Box<Ufo>),
}

impl L1 {
    /// A tier of `capacity` bytes; `expected_objects` sizes the maps (a hint, not a bound).
    pub fn new(kind: PolicyKind, capacity: u64, expected_objects: usize) -> Self {
        match kind {
            PolicyKind::Lru => Self::Lru(Lru::new(capacity, expected_objects)),
            PolicyKind::S3fifo => Self::S3fifo(S3Fifo::new(capacity, expected_objects)),
            PolicyKind::Sieve => Self::Sieve(Sieve::new(capacity, expected_objects)),
            PolicyKind::Tinyufo => Self::Tinyufo(Box::new(Ufo::new(capacity, expected_objects))),
        }
    }

    /// The payload of `key` when held, counting the access.
    #[inline]
    pub fn get(&mut self, key: u64) -> Option<u64> {
        match self {
            Self::Lru(p) => p.get(key),
            Self::S3fifo(p) => p.get(key),
            Self::Sieve(p) => p.get(key),
            Self::Tinyufo(p) => p.get(key),
        }
    }

    /// Store (or replace) `key` weighing `size` bytes; false when it is not admitted.
    #[inline]
    pub fn insert(&mut self, key: u64, size: u64, payload: u64) -> bool {
        match self {
            Self::Lru(p) => p.insert(key, size, payload),
            Self::S3fifo(p) => p.insert(key, size, payload),
            Self::Sieve(p) => p.insert(key, size, payload),
            Self::Tinyufo(p) => p.insert(key, size, payload),
        }
    }

    /// Drop `key`; true when it was held.
    pub fn remove(&mut self, key: u64) -> bool {
        match self {
            Self::Lru(p) => p.remove(key),
            Self::S3fifo(p) => p.remove(key),
            Self::Sieve(p) => p.remove(key),
            Self::Tinyufo(p) => p.remove(key),
        }
    }

    pub fn usage(&self) -> Usage {
        match self {
            Self::Lru(p) => p.usage,
            Self::S3fifo(p) => p.usage,
            Self::Sieve(p) => p.usage,
            Self::Tinyufo(p) => p.usage,
        }
    }

    /// From now on, remember the payload of every entry evicted to make room (not of
    /// removed or replaced ones, nor of a newcomer TinyLFU turns away: `insert` says that),
    /// for [`L1::drain_evicted`]. A cache that keeps the objects elsewhere (the edge's L1
    /// keeps each object's key as its payload) learns this way which ones to drop. Off
    /// unless asked for, so the model pays nothing.
    pub fn log_evictions(&mut self) {
        let log = match self {
            Self::Lru(p) => &mut p.log,
            Self::S3fifo(p) => &mut p.log,
            Self::Sieve(p) => &mut p.log,
            Self::Tinyufo(p) => &mut p.log,
        };
        log.0.get_or_insert_with(Vec::new);
    }

    /// Moves the payloads evicted since the last call into `out`.
    pub fn drain_evicted(&mut self, out: &mut Vec<u64>) {
        let log = match self {
            Self::Lru(p) => &mut p.log,
            Self::S3fifo(p) => &mut p.log,
            Self::Sieve(p) => &mut p.log,
            Self::Tinyufo(p) => &mut p.log,
        };
        if let Some(evicted) = &mut log.0 {
            out.append(evicted);
        }
    }
}

/// Payloads of evicted entries, when [`L1::log_evictions`] asked for them.
#[derive(Default)]
struct EvictionLog(Option<Vec<u64>>);

impl EvictionLog {
    #[inline]
    fn note(&mut self, payload: u64) {
        if let Some(evicted) = &mut self.0 {
            evicted.push(payload);
        }
    }
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    key: u64,
    size: u64,
    payload: u64,
    /// Toward the head (newer).
    prev: u32,
    /// Toward the tail (older).
    next: u32,
    visited: bool,
}

/// A doubly linked list in a slab: head is the newest entry, tail the oldest.
struct List {
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl List {
    fn new(capacity: usize) -> Self {
        Self {
            nodes: Vec::with_capacity(capacity),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn push_front(&mut self, key: u64, size: u64, payload: u64) -> u32 {
        let node = Node {
            key,
            size,
            payload,
            prev: NIL,
            next: self.head,
            visited: false,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.nodes[index as usize] = node;
                index
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if self.head != NIL {
            self.nodes[self.head as usize].prev = index;
        }
        self.head = index;
        if self.tail == NIL {
            self.tail = index;
        }
        index
    }

    fn unlink(&mut self, index: u32) {
        let Node { prev, next, .. } = self.nodes[index as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
    }

    fn release(&mut self, index: u32) -> Node {
        self.unlink(index);
        self.free.push(index);
        self.nodes[index as usize]
    }
}

/// Least recently used, size-aware, with lazy promotion: a hit does not move a list node
/// (which touches the node, both neighbours and the head: four cache misses on a large
/// tier) but bumps the entry's generation and appends `(slot, generation)` to the access
/// queue. The queue is in access order, and an entry's live record is its latest, so
/// evicting the first live record from the front is exactly LRU. Stale records are dropped
/// when they reach the front, and the queue is compacted when it holds more than twice the
/// live entries, so its memory stays proportional to the tier's objects.
pub struct Lru {
    /// Key to `(slot, payload)`: a hit reads the payload from the bucket it found, not
    /// from the slot (one cache miss less).
    map: IdMap<(u32, u64)>,
    slots: Vec<LruSlot>,
    /// Per slot, bumped on every access and on release, so that older queue records of
    /// the slot (or of its previous occupant) no longer match. Apart from the slots so
    /// that the liveness checks of eviction and compaction touch a dense array.
    generations: Vec<u32>,
    free: Vec<u32>,
    /// `(slot, generation)` per access, oldest first.
    order: VecDeque<(u32, u32)>,
    usage: Usage,
    log: EvictionLog,
}

#[derive(Clone, Copy)]
struct LruSlot {
    key: u64,
    size: u64,
}

/// Stale records the access queue may hold beyond twice the live entries.
const LRU_QUEUE_SLACK: usize = 1024;

impl Lru {
    pub fn new(capacity: u64, expected_objects: usize) -> Self {
        Self {
            map: id_map(expected_objects),
            slots: Vec::with_capacity(expected_objects),
            generations: Vec::with_capacity(expected_objects),
            free: Vec::new(),
            order: VecDeque::with_capacity(expected_objects * 2),
            usage: Usage {
                capacity,
                ..Usage::default()
            },
            log: EvictionLog::default(),
        }
    }

    #[inline]
    pub fn get(&mut self, key: u64) -> Option<u64> {
        let (slot, payload) = *self.map.get(&key)?;
        self.touch(slot);
        Some(payload)
    }

    #[inline]
    fn touch(&mut self, slot: u32) {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        self.order.push_back((slot, *generation));
        if self.order.len() > 2 * self.usage.objects as usize + LRU_QUEUE_SLACK {
            let generations = &self.generations;
            self.order
                .retain(|&(slot, generation)| generations[slot as usize] == generation);
        }
    }

    /// Whether `key` is held, without counting an access.
    pub fn contains(&self, key: u64) -> bool {
        self.map.contains_key(&key)
    }

    pub fn insert(&mut self, key: u64, size: u64, payload: u64) -> bool {
        if size > self.usage.capacity {
            self.remove(key);
            return false;
        }
        if let Some(held) = self.map.get_mut(&key) {
            held.1 = payload;
            let slot = held.0;
            let entry = &mut self.slots[slot as usize];
            self.usage.bytes = self.usage.bytes - entry.size + size;
            entry.size = size;
            self.touch(slot);
            // The replaced entry may have grown: evict others (never itself, it is newest).
            while self.usage.bytes > self.usage.capacity && self.usage.objects > 1 {
                self.evict_one();
            }
            return true;
        }
        while self.usage.bytes + size > self.usage.capacity {
            self.evict_one();
        }
        let entry = LruSlot { key, size };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key, (slot, payload));
        self.usage.bytes += size;
        self.usage.objects += 1;
        self.touch(slot);
        true
    }

    fn evict_one(&mut self) {
        let slot = loop {
            let (slot, generation) = self
                .order
                .pop_front()
                .expect("a live record to evict while over capacity");
            if self.generations[slot as usize] == generation {
                break slot;
            }
        };
        let key = self.slots[slot as usize].key;
        let evicted = self.map.remove(&key);
        self.release(slot);
        self.usage.evictions += 1;
        if let Some((_, payload)) = evicted {
            self.log.note(payload);
        }
    }

    fn release(&mut self, slot: u32) {
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        self.free.push(slot);
        self.usage.bytes -= self.slots[slot as usize].size;
        self.usage.objects -= 1;
    }

    pub fn remove(&mut self, key: u64) -> bool {
        let Some((slot, _)) = self.map.remove(&key) else {
            return false;
        };
        self.release(slot);
        true
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }
}

/// SIEVE, size-aware.
pub struct Sieve {
    list: List,
    map: IdMap<u32>,
    hand: u32,
    usage: Usage,
    log: EvictionLog,
}

impl Sieve {
    pub fn new(capacity: u64, expected_objects: usize) -> Self {
        Self {
            list: List::new(expected_objects),
            map: id_map(expected_objects),
            hand: NIL,
            usage: Usage {
                capacity,
                ..Usage::default()
            },
            log: EvictionLog::default(),
        }
    }

    #[inline]
    pub fn get(&mut self, key: u64) -> Option<u64> {
        let index = *self.map.get(&key)?;
        let node = &mut self.list.nodes[index as usize];
        node.visited = true;
        Some(node.payload)
    }

    pub fn insert(&mut self, key: u64, size: u64, payload: u64) -> bool {
        if size > self.usage.capacity {
            self.remove(key);
            return false;
        }
        if let Some(&index) = self.map.get(&key) {
            let node = &mut self.list.nodes[index as usize];
            self.usage.bytes = self.usage.bytes - node.size + size;
            node.size = size;
            node.payload = payload;
            node.visited = true;
            while self.usage.bytes > self.usage.capacity && self.usage.objects > 1 {
                self.evict_one(Some(index));
            }
            return true;
        }
        while self.usage.bytes + size > self.usage.capacity {
            self.evict_one(None);
        }
        let index = self.list.push_front(key, size, payload);
        self.map.insert(key, index);
        self.usage.bytes += size;
        self.usage.objects += 1;
        true
    }

    /// Evicts the first unvisited entry from the hand toward newer ones (wrapping to the
    /// oldest), clearing visited bits on the way. `keep` is never chosen.
    fn evict_one(&mut self, keep: Option<u32>) {
        let mut index = if self.hand == NIL {
            self.list.tail
        } else {
            self.hand
        };
        loop {
            let node = &mut self.list.nodes[index as usize];
            if node.visited || Some(index) == keep {
                node.visited = false;
                index = if node.prev == NIL {
                    self.list.tail
                } else {
                    node.prev
                };
            } else {
                break;
            }
        }
        self.hand = self.list.nodes[index as usize].prev;
        let node = self.list.release(index);
        self.map.remove(&node.key);
        self.usage.bytes -= node.size;
        self.usage.objects -= 1;
        self.usage.evictions += 1;
        self.log.note(node.payload);
    }

    /// Whether `key` is held, without counting an access.
    pub fn contains(&self, key: u64) -> bool {
        self.map.contains_key(&key)
    }

    pub fn remove(&mut self, key: u64) -> bool {
        let Some(index) = self.map.remove(&key) else {
            return false;
        };
        if self.hand == index {
            self.hand = self.list.nodes[index as usize].prev;
        }
        let node = self.list.release(index);
        self.usage.bytes -= node.size;
        self.usage.objects -= 1;
        true
    }
}

#[derive(Clone, Copy)]
struct S3Entry {
    size: u64,
    payload: u64,
    freq: u8,
    main: bool,
    /// Matches the queue slot that owns this entry; stale slots (of removed entries) are
    /// skipped when they reach the front.
    generation: u32,
}

/// S3-FIFO, size-aware (queues sized in bytes).
pub struct S3Fifo {
    map: IdMap<S3Entry>,
    small: VecDeque<(u64, u32)>,
    main: VecDeque<(u64, u32)>,
    ghost: VecDeque<(u64, u32)>,
    /// Ghost keys: (generation, size).
    ghost_map: IdMap<(u32, u64)>,
    small_bytes: u64,
    main_bytes: u64,
    ghost_bytes: u64,
    small_target: u64,
    ghost_target: u64,
    generation: u32,
    usage: Usage,
    log: EvictionLog,
}

/// Small FIFO share of the capacity and ghost FIFO size, as in the paper and libCacheSim.
const S3_SMALL_RATIO: f64 = 0.10;
const S3_GHOST_RATIO: f64 = 0.90;
const S3_MAX_FREQ: u8 = 3;

impl S3Fifo {
    pub fn new(capacity: u64, expected_objects: usize) -> Self {
        Self {
            map: id_map(expected_objects),
            small: VecDeque::new(),
            main: VecDeque::with_capacity(expected_objects),
            ghost: VecDeque::new(),
            ghost_map: id_map(expected_objects),
            small_bytes: 0,
            main_bytes: 0,
            ghost_bytes: 0,
            small_target: (capacity as f64 * S3_SMALL_RATIO) as u64,
            ghost_target: (capacity as f64 * S3_GHOST_RATIO) as u64,
            generation: 0,
            usage: Usage {
                capacity,
                ..Usage::default()
            },
            log: EvictionLog::default(),
        }
    }

    #[inline]
    pub fn get(&mut self, key: u64) -> Option<u64> {
        let entry = self.map.get_mut(&key)?;
        entry.freq = (entry.freq + 1).min(S3_MAX_FREQ);
        Some(entry.payload)
    }

    pub fn insert(&mut self, key: u64, size: u64, payload: u64) -> bool {
        if size > self.usage.capacity {
            self.remove(key);
            return false;
        }
        if let Some(entry) = self.map.get(&key).copied() {
            // Replaced in place (a refreshed object): same queue, counted as an access.
            self.remove(key);
            self.make_room(size);
            self.place(key, size, payload, entry.main, entry.freq.saturating_add(1));
            return true;
        }
        self.make_room(size);
        let from_ghost = match self.ghost_map.remove(&key) {
            Some((_, ghost_size)) => {
                self.ghost_bytes -= ghost_size;
                true
            }
            None => false,
        };
        self.place(key, size, payload, from_ghost, 0);
        true
    }

    fn make_room(&mut self, size: u64) {
        while self.small_bytes + self.main_bytes + size > self.usage.capacity {
            if (self.small_bytes >= self.small_target && !self.small.is_empty())
                || self.main_bytes == 0
            {
                self.evict_small();
            } else {
                self.evict_main();
            }
        }
    }

    fn place(&mut self, key: u64, size: u64, payload: u64, main: bool, freq: u8) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        self.map.insert(
            key,
            S3Entry {
                size,
                payload,
                freq: freq.min(S3_MAX_FREQ),
                main,
                generation,
            },
        );
        if main {
            self.main.push_back((key, generation));
            self.main_bytes += size;
        } else {
            self.small.push_back((key, generation));
            self.small_bytes += size;
        }
        self.usage.objects += 1;
        self.usage.bytes += size;
    }

    /// Moves accessed objects from the small FIFO to main until one unaccessed object is
    /// evicted (to the ghost), or the small FIFO is empty. One map lookup per queue slot:
    /// a slot whose generation or queue no longer matches its entry is stale (the entry
    /// was removed or replaced) and skipped.
    fn evict_small(&mut self) {
        while let Some((key, generation)) = self.small.pop_front() {
            let Entry::Occupied(mut slot) = self.map.entry(key) else {
                continue;
            };
            let entry = slot.get_mut();
            if entry.generation != generation || entry.main {
                continue;
            }
            let size = entry.size;
            if entry.freq >= 1 {
                entry.main = true;
                entry.freq = 0;
                self.small_bytes -= size;
                self.main_bytes += size;
                self.main.push_back((key, generation));
                continue;
            }
            let payload = entry.payload;
            slot.remove();
            self.log.note(payload);
            self.small_bytes -= size;
            self.usage.objects -= 1;
            self.usage.bytes -= size;
            self.usage.evictions += 1;
            self.remember(key, size);
            return;
        }
    }

    fn evict_main(&mut self) {
        while let Some((key, generation)) = self.main.pop_front() {
            let Entry::Occupied(mut slot) = self.map.entry(key) else {
                continue;
            };
            let entry = slot.get_mut();
            if entry.generation != generation || !entry.main {
                continue;
            }
            if entry.freq > 0 {
                entry.freq -= 1;
                self.main.push_back((key, generation));
                continue;
            }
            let (size, payload) = (entry.size, entry.payload);
            slot.remove();
            self.log.note(payload);
            self.main_bytes -= size;
            self.usage.objects -= 1;
            self.usage.bytes -= size;
            self.usage.evictions += 1;
            return;
        }
    }

    fn remember(&mut self, key: u64, size: u64) {
        self.generation = self.generation.wrapping_add(1);
        if let Some((_, old)) = self.ghost_map.insert(key, (self.generation, size)) {
            self.ghost_bytes -= old;
        }
        self.ghost.push_back((key, self.generation));
        self.ghost_bytes += size;
        while self.ghost_bytes > self.ghost_target {
            let Some((key, generation)) = self.ghost.pop_front() else {
                break;
            };
            if let Some(&(current, size)) = self.ghost_map.get(&key)
                && current == generation
            {
                self.ghost_map.remove(&key);
                self.ghost_bytes -= size;
            }
        }
    }

    pub fn remove(&mut self, key: u64) -> bool {
        let Some(entry) = self.map.remove(&key) else {
            return false;
        };
        if entry.main {
            self.main_bytes -= entry.size;
        } else {
            self.small_bytes -= entry.size;
        }
        self.usage.objects -= 1;
        self.usage.bytes -= entry.size;
        true
    }

    /// Evicts one object as if room were needed (tests).
    #[cfg(test)]
    fn main_bytes_then_evict(&mut self) {
        self.evict_main();
    }

    /// Whether `key` sits in the main FIFO (tests).
    pub fn in_main(&self, key: u64) -> Option<bool> {
        self.map.get(&key).map(|entry| entry.main)
    }
}

/// pingora's TinyUFO behind the same interface. Its weights are `u16`, so sizes are
/// counted in units of `unit` bytes: the smallest power of two that lets an object of
/// [`UFO_LARGEST_SHARE`] of the capacity weigh at most `u16::MAX` units (8 KiB for a
/// 16 GiB tier, 64 B for 256 MiB), so that a typical object weighs several units. A size
/// is rounded up or down by a hash of its key in proportion to the remainder, so weights
/// add up to the bytes on average (always rounding up made a 16 GiB tier of 16 KiB objects
/// behave like half its size). Objects too heavy for a `u16` weight are not admitted.
/// Bytes held are counted exactly here; TinyUFO's own limit sees the weights.
pub struct Ufo {
    cache: tinyufo::TinyUfo<u64, (u64, u64)>,
    unit: u64,
    usage: Usage,
    /// The key the last `get` missed, while nothing else has been stored or removed since:
    /// the insert that follows a miss then skips removing a key it knows is absent (each
    /// lookup in TinyUFO's concurrent map costs an epoch pin).
    missed: Option<u64>,
    log: EvictionLog,
}

/// The largest object TinyUFO's `u16` weights represent, as a share of the capacity.
pub const UFO_LARGEST_SHARE: u64 = 64;

impl Ufo {
    pub fn new(capacity: u64, expected_objects: usize) -> Self {
        let mut unit = 1u64;
        while (capacity / UFO_LARGEST_SHARE).div_ceil(unit) > u64::from(u16::MAX) {
            unit *= 2;
        }
        // TinyLFU's sketch must be sized for the objects the tier can hold, or its counters
        // saturate and admission turns into noise: estimate at 16 KiB per object (a
        // typical CDN median) unless the caller expects more.
        let estimated = (capacity / (16 * 1024)).clamp(1024, 1 << 24) as usize;
        Self {
            cache: tinyufo::TinyUfo::new(
                capacity.div_ceil(unit) as usize,
                estimated.max(expected_objects),
            ),
            unit,
            usage: Usage {
                capacity,
                ..Usage::default()
            },
            missed: None,
            log: EvictionLog::default(),
        }
    }

    #[inline]
    pub fn get(&mut self, key: u64) -> Option<u64> {
        let found = self.cache.get(&key).map(|(payload, _)| payload);
        self.missed = found.is_none().then_some(key);
        found
    }

    pub fn insert(&mut self, key: u64, size: u64, payload: u64) -> bool {
        if size > self.usage.capacity {
            self.remove(key);
            return false;
        }
        if self.missed.take() != Some(key) {
            self.remove(key);
        }
        let remainder = size & (self.unit - 1);
        let round_up = remainder > 0 && crate::hash::mix64(key) & (self.unit - 1) < remainder;
        let weight = (size / self.unit + u64::from(round_up)).max(1);
        let Ok(weight) = u16::try_from(weight) else {
            return false;
        };
        let evicted = self.cache.put(key, (payload, size), weight);
        self.usage.objects += 1;
        self.usage.bytes += size;
        let mut admitted = true;
        for kv in evicted {
            let (_, evicted_size) = kv.data;
            self.usage.objects -= 1;
            self.usage.bytes -= evicted_size;
            // TinyLFU may turn the newcomer away: it comes back in the evicted list.
            if kv.data == (payload, size) && self.cache.get(&key).is_none() {
                admitted = false;
            } else {
                self.usage.evictions += 1;
                self.log.note(kv.data.0);
            }
        }
        admitted
    }

    pub fn remove(&mut self, key: u64) -> bool {
        self.missed = None;
        match self.cache.remove(&key) {
            Some((_, size)) => {
                self.usage.objects -= 1;
                self.usage.bytes -= size;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
