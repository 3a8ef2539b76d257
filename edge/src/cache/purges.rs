//! Purge epochs: what keeps a fill that was in flight when a purge ran from storing the
//! body it fetched before the purge.
//!
//! Every purge (hard or soft) takes the next epoch and is remembered with its selector
//! (bounded: the last [`KEPT`]). A request notes the epoch when it starts
//! ([`PurgeLog::epoch`], one atomic load); its fill is admitted into a tier only if no purge
//! since then selects the object ([`PurgeLog::admit`]). Admission and a purge's selection of
//! stored objects run under one lock, so either the purge comes first and the fill is
//! refused, or the fill is stored first and the purge's selection finds it; there is no
//! order in which an old body outlives a purge that was answered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::PurgeRequest;
use super::key;

/// Purges remembered; a fill older than all of them is refused (it is older than some
/// purge we no longer know the selector of).
pub const KEPT: usize = 1024;

/// The epoch a request started at, carried to the storage in the cache key's extensions
/// (`CacheKey::extensions`, which pingora hands to `get_miss_handler` and `update_meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillEpoch(pub u64);

#[derive(Default)]
pub struct PurgeLog {
    /// The last purge's epoch (0: none yet); read without the lock on every request.
    epoch: AtomicU64,
    recent: Mutex<VecDeque<(u64, PurgeRequest)>>,
}

/// The log held locked: admissions and purge selections happen while it is.
pub struct Locked<'a> {
    log: &'a PurgeLog,
    recent: MutexGuard<'a, VecDeque<(u64, PurgeRequest)>>,
}

impl PurgeLog {
    /// The current epoch, for a request about to start.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> Locked<'_> {
        Locked {
            log: self,
            recent: self.recent.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Whether a purge after `start` selects an object at `url` with `tags` (without
    /// holding the lock: a hint for refusing early; [`Locked::purged_since`] decides).
    pub fn purged_since(&self, start: u64, url: &str, tags: &[String]) -> bool {
        self.epoch() != start && self.lock().purged_since(start, url, tags)
    }
}

impl Locked<'_> {
    /// Records `request` as the newest purge; its selection of stored objects must be made
    /// while this is still held.
    pub fn record(&mut self, request: &PurgeRequest) -> u64 {
        let epoch = self.log.epoch.load(Ordering::Acquire) + 1;
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((epoch, request.clone()));
        self.log.epoch.store(epoch, Ordering::Release);
        epoch
    }

    /// Whether a purge after epoch `start` selects an object at `url` with `tags`.
    pub fn purged_since(&self, start: u64, url: &str, tags: &[String]) -> bool {
        if self.log.epoch.load(Ordering::Acquire) <= start {
            return false;
        }
        match self.recent.front() {
            // Forgotten purges happened after `start`: assume one selected it.
            Some((oldest, _)) if *oldest > start + 1 => return true,
            None => return true,
            _ => {}
        }
        self.recent
            .iter()
            .rev()
            .take_while(|(epoch, _)| *epoch > start)
            .any(|(_, request)| selects(request, url, tags))
    }
}

/// Whether `request` selects an object stored for `url` (as the purge index keeps it) with
/// `tags`, exactly as the index's selection would.
fn selects(request: &PurgeRequest, url: &str, tags: &[String]) -> bool {
    match request {
        PurgeRequest::Url(wanted) => key::purge_url(wanted) == url,
        PurgeRequest::Prefix(prefix) => url.starts_with(&key::purge_url(prefix)),
        PurgeRequest::Tag(tag) => tags.iter().any(|t| t == tag),
        PurgeRequest::All => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_is_refused_only_by_purges_after_it_started_that_select_it() {
        let log = PurgeLog::default();
        let start = log.epoch();
        assert!(!log.purged_since(start, "/a", &[]));
        log.lock().record(&PurgeRequest::Url("/b".into()));
        assert!(!log.purged_since(start, "/a", &[]), "another URL");
        log.lock().record(&PurgeRequest::Tag("t".into()));
        assert!(log.purged_since(start, "/x", &["t".into()]), "its tag");
        log.lock().record(&PurgeRequest::Prefix("/a".into()));
        assert!(log.purged_since(start, "/a/b", &[]));
        let later = log.epoch();
        assert!(
            !log.purged_since(later, "/a/b", &[]),
            "started after the purges"
        );
        log.lock().record(&PurgeRequest::All);
        assert!(log.purged_since(later, "/anything", &[]));
    }

    #[test]
    fn a_fill_older_than_every_remembered_purge_is_refused() {
        let log = PurgeLog::default();
        let start = log.epoch();
        for i in 0..=KEPT {
            log.lock().record(&PurgeRequest::Url(format!("/other/{i}")));
        }
        assert!(log.purged_since(start, "/a", &[]));
        let recent = log.epoch() - 5;
        assert!(!log.purged_since(recent, "/a", &[]));
    }
}
