//! The purge index: which stored objects belong to a URL, a path prefix or a surrogate tag.
//!
//! Objects are identified by their combined cache hash (primary key plus Vary variance), so
//! every variant of a URL is its own record and purging the URL selects all of them. A record
//! lives while at least one tier holds the object; tiers report when they drop it. The index
//! only ever selects candidates: what a purge counts is what the tiers actually removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pingora::cache::key::HashBinary;

use super::Tier;

/// Tags kept per object and the longest tag kept; a response cannot grow the index unboundedly.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 256;

/// The surrogate tags named by a response's `Surrogate-Key` headers (space or comma separated),
/// bounded by [`MAX_TAGS`] and [`MAX_TAG_BYTES`].
pub fn tags_from_headers(headers: &pingora::http::ResponseHeader) -> Vec<String> {
    let mut tags = Vec::new();
    for value in headers.headers.get_all("surrogate-key") {
        let Ok(text) = value.to_str() else { continue };
        for tag in text
            .split([' ', ','])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if tags.len() == MAX_TAGS {
                return tags;
            }
            if tag.len() <= MAX_TAG_BYTES && !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
    }
    tags
}

#[derive(Default)]
pub struct PurgeIndex {
    inner: Mutex<Inner>,
}

/// One record per stored object; its URL is shared with the `by_url` key (most URLs have
/// one object, so the set of an URL holds one key inline: see [`Keys`]). Per object that is
/// a map slot, the URL once and a B-tree slot, about 200 bytes for a short URL
/// (`benches/l1_memory.rs` measures it).
#[derive(Default)]
struct Inner {
    records: HashMap<HashBinary, Record>,
    by_url: BTreeMap<Arc<str>, Keys>,
    by_tag: HashMap<String, HashSet<HashBinary>>,
}

struct Record {
    url: Arc<str>,
    tags: Box<[String]>,
    in_l1: bool,
    in_l2: bool,
}

/// The objects of one URL: one (the usual case: no `Vary`) without a set of its own.
enum Keys {
    One(HashBinary),
    Many(HashSet<HashBinary>),
}

impl Keys {
    fn insert(&mut self, key: HashBinary) {
        match self {
            Keys::One(one) if *one == key => {}
            Keys::One(one) => *self = Keys::Many(HashSet::from([*one, key])),
            Keys::Many(set) => {
                set.insert(key);
            }
        }
    }

    /// Remove `key`; true when none is left.
    fn remove(&mut self, key: &HashBinary) -> bool {
        match self {
            Keys::One(one) => one == key,
            Keys::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = HashBinary> + '_ {
        let (one, many) = match self {
            Keys::One(one) => (Some(*one), None),
            Keys::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl PurgeIndex {
    /// Note that `tier` now holds `key` for `url` with `tags` (replacing the tags it had).
    pub fn record(&self, key: HashBinary, url: &str, tags: &[String], tier: Tier) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        let record = match inner.records.get_mut(&key) {
            Some(record) if &*record.url == url => record,
            held => {
                if let Some(record) = held {
                    let old = record.url.clone();
                    unlink_url(&mut inner.by_url, &old, &key);
                }
                // The URL's text is kept once: the record shares the `by_url` key.
                let shared = match inner.by_url.get_key_value(url) {
                    Some((shared, _)) => shared.clone(),
                    None => Arc::from(url),
                };
                match inner.by_url.get_mut(url) {
                    Some(keys) => keys.insert(key),
                    None => {
                        inner.by_url.insert(shared.clone(), Keys::One(key));
                    }
                }
                let record = inner.records.entry(key).or_insert_with(|| Record {
                    url: shared.clone(),
                    tags: Box::default(),
                    in_l1: false,
                    in_l2: false,
                });
                record.url = shared;
                record
            }
        };
        match tier {
            Tier::L1 => record.in_l1 = true,
            Tier::L2 => record.in_l2 = true,
        }
        for old in &record.tags {
            unlink(&mut inner.by_tag, old, &key);
        }
        record.tags = tags.into();
        for tag in &record.tags {
            inner.by_tag.entry(tag.clone()).or_default().insert(key);
        }
    }

    /// Note that `tier` no longer holds `key`; the record goes when no tier does.
    pub fn forget(&self, key: &HashBinary, tier: Tier) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = inner.records.get_mut(key) else {
            return;
        };
        match tier {
            Tier::L1 => record.in_l1 = false,
            Tier::L2 => record.in_l2 = false,
        }
        if !record.in_l1 && !record.in_l2 {
            remove_record(&mut inner, key);
        }
    }

    /// Drop the record for `key` whatever holds it (after a purge removed it everywhere).
    pub fn remove(&self, key: &HashBinary) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        remove_record(&mut inner, key);
    }

    /// The objects whose URL is exactly `url` (all their variants).
    pub fn by_url(&self, url: &str) -> Vec<HashBinary> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_url
            .get(url)
            .map(|keys| keys.iter().collect())
            .unwrap_or_default()
    }

    /// The objects whose URL starts with `prefix`.
    pub fn by_prefix(&self, prefix: &str) -> Vec<HashBinary> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // URLs sharing a prefix are contiguous in the ordered map, from the prefix itself on.
        inner
            .by_url
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(url, _)| url.starts_with(prefix))
            .flat_map(|(_, keys)| keys.iter())
            .collect()
    }

    /// The objects tagged `tag`.
    pub fn by_tag(&self, tag: &str) -> Vec<HashBinary> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .by_tag
            .get(tag)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every indexed object.
    pub fn all(&self) -> Vec<HashBinary> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .keys()
            .copied()
            .collect()
    }

    /// How many objects are indexed (for tests and stats).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove_record(inner: &mut Inner, key: &HashBinary) {
    if let Some(record) = inner.records.remove(key) {
        unlink_url(&mut inner.by_url, &record.url, key);
        for tag in &record.tags {
            unlink(&mut inner.by_tag, tag, key);
        }
    }
}

fn unlink_url(map: &mut BTreeMap<Arc<str>, Keys>, url: &str, key: &HashBinary) {
    if let Some(keys) = map.get_mut(url)
        && keys.remove(key)
    {
        map.remove(url);
    }
}

fn unlink(map: &mut HashMap<String, HashSet<HashBinary>>, name: &str, key: &HashBinary) {
    if let Some(set) = map.get_mut(name) {
        set.remove(key);
        if set.is_empty() {
            map.remove(name);
        }
    }
}
