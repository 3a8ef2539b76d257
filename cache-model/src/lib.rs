//! The edge's cache policy as plain data structures, shared by the edge and the simulator's
//! model mode (`edgebox simulate`, `mode = "model"`): one change to a policy lands in both.
//!
//! Nothing here reads a clock, spawns a task or opens a socket. Time is a number the caller
//! passes in (milliseconds of a virtual clock in the simulator, of the wall clock in the
//! edge), so a day of traffic replays in seconds and the same input gives the same output.
//!
//! - [`eviction`]: the memory tier's (L1) size-aware eviction policies — LRU, S3-FIFO, SIEVE
//!   and TinyUFO (pingora's TinyLFU admission + S3-FIFO eviction) — behind one [`eviction::L1`];
//!   the disk tier's (L2) LRU by logical access clock is [`eviction::Lru`] too.
//! - [`freshness`]: how long a response may be served from cache, and whether it still may.
//! - [`admission`]: which objects a tier takes at all (per-object caps).
//! - [`lb`]: which origin of a group a miss goes to.
//! - [`latency`]: the simulated network's delay for one exchange over a link.

pub mod admission;
pub mod eviction;
pub mod freshness;
pub mod hash;
pub mod latency;
pub mod lb;
