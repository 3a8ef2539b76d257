//! Counters that every worker thread bumps on every request, without the threads sharing a
//! cache line: each thread adds to its own shard (a cache-line-aligned copy of the counter
//! set) and readers sum the shards.
//!
//! A single `AtomicU64` bumped by all workers bounces its cache line between cores on every
//! request; at tens of thousands of requests per second per core that costs more than the
//! rest of a cache hit's bookkeeping. A thread's shard is chosen once per thread (round
//! robin), so with no more threads than [`SHARDS`] no two threads share one; more threads
//! only share shards, which stays correct (the adds are atomic).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Shards per counter set: more than the worker threads an edge runs on a typical machine.
pub const SHARDS: usize = 32;

/// One cache line (two on CPUs that prefetch pairs) per shard.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// `SHARDS` copies of `T`, one per thread; `T` holds atomics that its thread bumps.
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded(T::default())).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    #[inline]
    pub fn local(&self) -> &T {
        &self.shards[shard_index()].0
    }

    /// Every shard, for summing.
    pub fn shards(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }

    /// The sum over shards of what `field` reads.
    pub fn sum(&self, field: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.shards()
            .map(|s| field(s).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[inline]
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}
