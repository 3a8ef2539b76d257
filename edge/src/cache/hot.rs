//! An L1 object's response header kept compact: the status and one buffer of the stored
//! names and values, plus the layout of the header a fresh hit sends (the fast path),
//! worked out once, when the object enters L1.
//!
//! pingora's `ResponseHeader` is two `http::HeaderMap`s (values, and names with their case),
//! about 5.7 KB for a typical origin header; kept per object it was most of L1's overhead
//! (issue 12, `benches/l1_memory.rs`). [`CompactHeader`] is the same header in a few hundred
//! bytes: one `Bytes` holding every name (case preserved) and value back to back, their
//! offsets, and for the fast path a list of small operations. Both headers are rebuilt from
//! it on demand:
//!
//! - [`CompactHeader::stored`]: the stored header, as pingora-cache's full hit path reads it
//!   (the entry's `CacheMeta` is this plus the serialised internal meta, so the header is
//!   not kept twice);
//! - [`CompactHeader::response`]: the header of a fast hit. Its layout comes from running
//!   what the full hit path does to the stored header, once, at admission, in the same
//!   order, so that a fast hit sends header for header what the full path sends (the
//!   proxy's tests compare the two on the wire):
//!
//!   1. pingora's `cache_hit_header`: the stored header, `Age`, HTTP/1.1,
//!      `Transfer-Encoding: chunked` when there is no `Content-Length`;
//!   2. its range filter with no `Range` asked: `Accept-Ranges: bytes` on a 200 with a
//!      length;
//!   3. the edge's `response_filter`: `X-Cache: HIT`, `X-Cache-Tier: l1`, `Cache-Status`,
//!      `Via` with this edge appended, `X-Request-Id`, `Server-Timing`;
//!   4. pingora's writer: `Date` and `Connection`.
//!
//!   Each field of the result is then recorded as one of: a stored field (by index), a
//!   constant the edits added (`X-Cache: HIT`, ...), or a value that differs per request
//!   (`Age`, `Cache-Status`, `Via`, `X-Request-Id`, `Server-Timing`). A fast hit appends
//!   the fields in that order to a fresh header: no map is cloned and no field is edited
//!   after the fact. Values are shared slices of the entry's buffer (no copy).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgebox_wire::edge::{CacheStatus, Tier as ServedTier};
use http::header::{
    ACCEPT_RANGES, AGE, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING, VARY, VIA,
};
use http::{HeaderName, HeaderValue, Version};
use pingora::cache::CacheMeta;
use pingora::http::{IntoCaseHeaderName, ResponseHeader};

/// The values of a fast hit's header that differ per request (`Age` is computed from the
/// entry).
pub struct PerRequest {
    pub cache_status: HeaderValue,
    pub via: HeaderValue,
    pub request_id: HeaderValue,
    pub server_timing: HeaderValue,
}

/// Names the edge's `response_filter` sets on every response.
pub const X_CACHE: &str = "x-cache";
pub const X_CACHE_TIER: &str = "x-cache-tier";
pub const CACHE_STATUS: &str = "cache-status";
pub const X_REQUEST_ID: &str = "x-request-id";
pub const SERVER_TIMING: &str = "server-timing";

/// A field of a fast hit's header that is not a stored one: what the full path's edits add.
/// `value: None` is a per-request value (slot `slot`).
struct Added {
    name: &'static str,
    value: &'static str,
    slot: Option<Slot>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Age,
    CacheStatus,
    Via,
    RequestId,
    ServerTiming,
}

/// The per-request values are placeholders while the layout is worked out; they are told
/// apart from stored values by name and content (a stored field kept as is is matched first,
/// by identity).
const AGE_PLACEHOLDER: &str = "<age>";
const CACHE_STATUS_PLACEHOLDER: &str = "<cache-status>";
const VIA_PLACEHOLDER: &str = "<via>";
const REQUEST_ID_PLACEHOLDER: &str = "<request-id>";
const SERVER_TIMING_PLACEHOLDER: &str = "<server-timing>";
/// pingora's writer replaces `Date` and `Connection` on every response; a value is needed
/// only so that they keep their place.
const DATE_PLACEHOLDER: &str = "0";

/// Every field the edits of the module doc can add, with the name's case as the full path's
/// header ends up with it (pingora titles a few well-known names it is given as
/// `HeaderName`s, see [`case_of`]).
static ADDED: LazyLock<Vec<Added>> = LazyLock::new(|| {
    let added = |name: &HeaderName, value: &'static str, slot| Added {
        name: case_of(name),
        value,
        slot,
    };
    let own = |name: &'static str, value: &'static str, slot| Added { name, value, slot };
    vec![
        added(&AGE, AGE_PLACEHOLDER, Some(Slot::Age)),
        added(&TRANSFER_ENCODING, "chunked", None),
        added(&ACCEPT_RANGES, "bytes", None),
        own(X_CACHE, CacheStatus::Hit.as_str(), None),
        own(X_CACHE_TIER, ServedTier::L1.as_str(), None),
        own(
            CACHE_STATUS,
            CACHE_STATUS_PLACEHOLDER,
            Some(Slot::CacheStatus),
        ),
        added(&VIA, VIA_PLACEHOLDER, Some(Slot::Via)),
        own(X_REQUEST_ID, REQUEST_ID_PLACEHOLDER, Some(Slot::RequestId)),
        own(
            SERVER_TIMING,
            SERVER_TIMING_PLACEHOLDER,
            Some(Slot::ServerTiming),
        ),
        added(&DATE, DATE_PLACEHOLDER, None),
        added(&CONNECTION, "keep-alive", None),
    ]
});

/// The case pingora gives `name` when it is inserted as a `HeaderName` (a few well-known
/// names titled, the rest as `http` spells them), leaked once per name of [`ADDED`].
fn case_of(name: &HeaderName) -> &'static str {
    let case = name.into_case_header_name();
    let text = std::str::from_utf8(case.as_slice()).unwrap_or(name.as_str());
    Box::leak(text.to_owned().into_boxed_str())
}

/// An operation of a fast hit's layout: below [`ADDED_BIT`] a stored field's index, else
/// `ADDED_BIT | i` for `ADDED[i]`.
const ADDED_BIT: u16 = 0x8000;

/// Why an object's header has no compact form: its names and values take more than 64 KiB
/// (offsets are 16-bit: 32 bytes less per object of L1 for a header far beyond what
/// origins send). The object then stays out of L1; the disk tier still keeps it.
#[derive(Debug)]
pub struct TooLarge;

/// A response header in compact form (see the module doc).
pub struct CompactHeader {
    status: u16,
    /// The stored header's version (a fast hit always answers HTTP/1.1).
    version: Version,
    /// The length of a reason phrase other than the status's canonical one, kept at the
    /// end of `bytes` (0: the canonical one). In the buffer rather than a field of its own:
    /// a second pointer would cost every object 16 bytes for what almost none has.
    reason_len: u16,
    /// Names and values back to back: name 0, value 0, name 1, ..., then the reason.
    bytes: Bytes,
    /// How many stored fields there are.
    fields: u16,
    /// Per stored field, where its name ends and where its value ends in `bytes` (each
    /// starts where the previous one ended): `2 * fields` entries. Then, when `hot`, the
    /// fast hit's layout. One allocation for both: every object has them.
    table: Box<[u16]>,
    /// Whether `table` holds the fast hit's layout: not when hits must take the full path
    /// whatever the request (the object varies: `Vary`, or a secondary variant), or the
    /// layout came out with a field the edits are not known to add.
    hot: bool,
    /// The stored `Via` (a parent's; the first one) when it reads as text: this edge
    /// appends itself to it, as the full path does.
    stored_via: Option<u16>,
}

impl CompactHeader {
    /// The compact form of `meta`'s header, with the fast hit's layout when its hits may
    /// take the fast path.
    pub fn new(meta: &CacheMeta) -> Result<Self, TooLarge> {
        let header = meta.response_header();
        // The stored fields in the map's order (values grouped under their name's first
        // place), names with their case; appended in this order they rebuild the same map.
        // Without a case map, names are written as pingora's writer writes them then.
        let uncased: Vec<Bytes> = if header.has_case() {
            Vec::new()
        } else {
            header
                .headers
                .iter()
                .map(|(name, _)| Bytes::copy_from_slice(name.into_case_header_name().as_slice()))
                .collect()
        };
        let fields: Vec<(&[u8], &HeaderValue)> = if header.has_case() {
            header
                .case_header_iter()
                .map(|(name, value)| (name.as_slice(), value))
                .collect()
        } else {
            uncased
                .iter()
                .map(|name| &name[..])
                .zip(header.headers.values())
                .collect()
        };
        if fields.len() >= usize::from(ADDED_BIT) {
            return Err(TooLarge);
        }
        let total: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        if total > usize::from(u16::MAX) {
            return Err(TooLarge);
        }
        let reason = header
            .get_reason_phrase()
            .filter(|reason| Some(*reason) != header.status.canonical_reason())
            .unwrap_or("");
        let reason_len = u16::try_from(reason.len()).map_err(|_| TooLarge)?;
        let mut bytes = Vec::with_capacity(total + reason.len());
        let layout = hot_layout(meta, &fields);
        let mut table =
            Vec::with_capacity(2 * fields.len() + layout.as_ref().map_or(0, |l| l.len()));
        for (name, value) in &fields {
            bytes.extend_from_slice(name);
            // At most `total`, checked above.
            table.push(bytes.len() as u16);
            bytes.extend_from_slice(value.as_bytes());
            table.push(bytes.len() as u16);
        }
        bytes.extend_from_slice(reason.as_bytes());
        let stored_via = fields
            .iter()
            .position(|(name, value)| name.eq_ignore_ascii_case(b"via") && value.to_str().is_ok())
            .map(|i| i as u16);
        let hot = layout.is_some();
        table.extend(layout.into_iter().flatten());
        Ok(Self {
            status: header.status.as_u16(),
            version: header.version,
            reason_len,
            bytes: Bytes::from(bytes),
            // Fewer than `ADDED_BIT`, checked above.
            fields: fields.len() as u16,
            table: table.into_boxed_slice(),
            hot,
            stored_via,
        })
    }

    /// A reason phrase other than the status's canonical one.
    fn reason(&self) -> Option<&str> {
        let start = self.bytes.len() - usize::from(self.reason_len);
        // It was a `&str` when stored.
        (self.reason_len > 0).then(|| std::str::from_utf8(&self.bytes[start..]).unwrap_or(""))
    }

    /// Whether a fresh hit of this object may take the fast path.
    pub fn is_hot(&self) -> bool {
        self.hot
    }

    fn field_count(&self) -> usize {
        usize::from(self.fields)
    }

    /// Where field `i`'s name starts, where it ends and where its value ends.
    fn bounds(&self, i: usize) -> [usize; 3] {
        let start = if i == 0 { 0 } else { self.table[2 * i - 1] };
        [start, self.table[2 * i], self.table[2 * i + 1]].map(usize::from)
    }

    fn layout(&self) -> Option<&[u16]> {
        self.hot.then(|| &self.table[2 * self.field_count()..])
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    fn name(&self, i: usize) -> Bytes {
        let [start, name_end, _] = self.bounds(i);
        self.bytes.slice(start..name_end)
    }

    fn value(&self, i: usize) -> HeaderValue {
        let [_, name_end, value_end] = self.bounds(i);
        // The bytes were a header value already; rebuilt as pingora's parser builds one.
        pingora::http::header_value_from_raw(self.bytes.slice(name_end..value_end))
    }

    fn value_bytes(&self, i: usize) -> &[u8] {
        let [_, name_end, value_end] = self.bounds(i);
        &self.bytes[name_end..value_end]
    }

    /// The first stored value of `name` (compared without case).
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let wanted = name.as_str().as_bytes();
        (0..self.field_count())
            .find(|&i| {
                let [start, name_end, _] = self.bounds(i);
                self.bytes[start..name_end].eq_ignore_ascii_case(wanted)
            })
            .map(|i| self.value_bytes(i))
    }

    /// The stored `Via` this edge appends itself to on a hit (see the field).
    pub fn stored_via(&self) -> Option<HeaderValue> {
        self.stored_via.map(|i| self.value(usize::from(i)))
    }

    /// The stored header, as pingora-cache's full hit path reads it.
    pub fn stored(&self) -> pingora::Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status, Some(self.field_count()))?;
        header.set_version(self.version);
        if let Some(reason) = self.reason() {
            header.set_reason_phrase(Some(reason))?;
        }
        for i in 0..self.field_count() {
            header.append_header(self.name(i), self.value(i))?;
        }
        Ok(header)
    }

    /// The response header of one fast hit: the layout worked out at admission with this
    /// request's `Age` (whole seconds since `epoch`) and the values the caller computed for
    /// it. `None` when the object has no fast-path layout ([`Self::is_hot`]). This and
    /// [`TieredStorage::fresh_l1`](super::TieredStorage::fresh_l1) are all a fast hit costs
    /// the edge before pingora writes it (`benches/cache_storage.rs` times the two).
    pub fn response(
        &self,
        now: SystemTime,
        epoch: SystemTime,
        per_request: PerRequest,
    ) -> Option<pingora::Result<Box<ResponseHeader>>> {
        let layout = self.layout()?;
        Some(self.build(layout, age(now, epoch), per_request))
    }

    /// The fast hit's header with placeholders for the per-request values, for
    /// [`fill`] (`None` without a fast-path layout).
    pub fn template(&self) -> Option<pingora::Result<ResponseHeader>> {
        let layout = self.layout()?;
        let placeholders = PerRequest {
            cache_status: HeaderValue::from_static(CACHE_STATUS_PLACEHOLDER),
            via: HeaderValue::from_static(VIA_PLACEHOLDER),
            request_id: HeaderValue::from_static(REQUEST_ID_PLACEHOLDER),
            server_timing: HeaderValue::from_static(SERVER_TIMING_PLACEHOLDER),
        };
        Some(
            self.build(layout, Duration::ZERO, placeholders)
                .map(|header| *header),
        )
    }

    fn build(
        &self,
        layout: &[u16],
        age: Duration,
        per_request: PerRequest,
    ) -> pingora::Result<Box<ResponseHeader>> {
        let mut header = Box::new(ResponseHeader::build(self.status, Some(layout.len()))?);
        if let Some(reason) = self.reason() {
            header.set_reason_phrase(Some(reason))?;
        }
        let PerRequest {
            cache_status,
            via,
            request_id,
            server_timing,
        } = per_request;
        let (mut cache_status, mut via, mut request_id, mut server_timing) = (
            Some(cache_status),
            Some(via),
            Some(request_id),
            Some(server_timing),
        );
        let added = &*ADDED;
        for &op in layout {
            if op & ADDED_BIT == 0 {
                let i = usize::from(op);
                header.append_header(self.name(i), self.value(i))?;
                continue;
            }
            let field = &added[usize::from(op & !ADDED_BIT)];
            let value = match field.slot {
                None => Some(HeaderValue::from_static(field.value)),
                Some(Slot::Age) => Some(HeaderValue::from(age.as_secs())),
                Some(Slot::CacheStatus) => cache_status.take(),
                Some(Slot::Via) => via.take(),
                Some(Slot::RequestId) => request_id.take(),
                Some(Slot::ServerTiming) => server_timing.take(),
            };
            // Each slot appears once in a layout (`hot_layout` checks).
            if let Some(value) = value {
                header.append_header(field.name, value)?;
            }
        }
        Ok(header)
    }

    /// Heap bytes this header holds (for L1's weigher).
    pub fn heap_bytes(&self) -> u64 {
        (self.bytes.len() + self.table.len() * size_of::<u16>()) as u64
    }
}

/// One fast hit's header from a [`CompactHeader::template`]: a copy with this request's
/// `Age` and values, each replacing its placeholder in place (the same fields, in the same
/// order, as [`CompactHeader::response`] builds).
pub fn fill(
    template: &ResponseHeader,
    age: Duration,
    per_request: PerRequest,
) -> pingora::Result<Box<ResponseHeader>> {
    let mut header = Box::new(template.clone());
    header.insert_header(AGE, age_value(age.as_secs()))?;
    header.insert_header(CACHE_STATUS, per_request.cache_status)?;
    // `"via"`, not `VIA`: pingora copies a `HeaderName` outside its short list of titled
    // names into a new allocation for the case map; the bytes written are `via` either way.
    header.insert_header("via", per_request.via)?;
    header.insert_header(X_REQUEST_ID, per_request.request_id)?;
    header.insert_header(SERVER_TIMING, per_request.server_timing)?;
    Ok(header)
}

/// `Age: secs`, without an allocation for the ages a hot object mostly has: the values for
/// 0..[`AGE_VALUES`] seconds are made once per process (static bytes, so clones touch no
/// shared count), larger ones are formatted.
fn age_value(secs: u64) -> HeaderValue {
    static VALUES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
        (0..AGE_VALUES)
            .map(|n| {
                crate::header_text::static_value(n.to_string().into_bytes())
                    .expect("digits are a valid value")
            })
            .collect()
    });
    match usize::try_from(secs).ok().and_then(|i| VALUES.get(i)) {
        Some(value) => value.clone(),
        None => HeaderValue::from(secs),
    }
}

/// Ages with a prepared `Age` value (an hour).
const AGE_VALUES: u64 = 3600;

/// Whole seconds since the object was stored or last revalidated, as pingora's `age()`.
pub fn age(now: SystemTime, epoch: SystemTime) -> Duration {
    now.duration_since(epoch).unwrap_or_default()
}

/// The fast hit's layout for `meta` whose stored fields are `fields` (see the module doc),
/// or `None` when its hits must take the full path.
fn hot_layout(meta: &CacheMeta, fields: &[(&[u8], &HeaderValue)]) -> Option<Box<[u16]>> {
    // (A header without case is not what pingora-cache reads back from storage; its
    // layout would have to be worked out from the value map alone. Not worth it.)
    if meta.variance().is_some()
        || meta.headers().contains_key(VARY)
        || !meta.response_header().has_case()
    {
        return None;
    }
    let mut header = meta.response_header_copy();
    let placeholder = |value: &'static str| HeaderValue::from_static(value);
    // 1. cache_hit_header
    header
        .insert_header(AGE, placeholder(AGE_PLACEHOLDER))
        .ok()?;
    header.set_version(Version::HTTP_11);
    let status = header.status.as_u16();
    let no_body = matches!(status, 204 | 304);
    if !no_body && !header.status.is_informational() && !header.headers.contains_key(CONTENT_LENGTH)
    {
        header.insert_header(TRANSFER_ENCODING, "chunked").ok()?;
    }
    // 2. range filter, no Range asked: a 200 with a readable length accepts ranges.
    let length_ok = header
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .is_some_and(|v| v.parse::<usize>().is_ok());
    if status == 200 && length_ok {
        header.insert_header(ACCEPT_RANGES, "bytes").ok()?;
    }
    // 3. response_filter
    header
        .insert_header(X_CACHE, CacheStatus::Hit.as_str())
        .ok()?;
    header
        .insert_header(X_CACHE_TIER, ServedTier::L1.as_str())
        .ok()?;
    header
        .insert_header(CACHE_STATUS, placeholder(CACHE_STATUS_PLACEHOLDER))
        .ok()?;
    header
        .insert_header(AGE, placeholder(AGE_PLACEHOLDER))
        .ok()?;
    header
        .insert_header(VIA, placeholder(VIA_PLACEHOLDER))
        .ok()?;
    header
        .insert_header(X_REQUEST_ID, placeholder(REQUEST_ID_PLACEHOLDER))
        .ok()?;
    header
        .insert_header(SERVER_TIMING, placeholder(SERVER_TIMING_PLACEHOLDER))
        .ok()?;
    // 4. pingora's writer replaces these.
    header
        .insert_header(DATE, placeholder(DATE_PLACEHOLDER))
        .ok()?;
    header
        .insert_header(CONNECTION, HeaderValue::from_static("keep-alive"))
        .ok()?;
    // Each field of the result: a stored one kept as is (same name, the very same value
    // bytes), or one the edits added.
    let added = &*ADDED;
    let mut layout = Vec::with_capacity(header.headers.len());
    let mut slots_seen = Vec::with_capacity(5);
    for (name, value) in header.case_header_iter() {
        let name = name.as_slice();
        let stored = fields.iter().position(|(n, v)| {
            *n == name
                && v.as_bytes().as_ptr() == value.as_bytes().as_ptr()
                && v.len() == value.len()
        });
        if let Some(i) = stored {
            layout.push(i as u16);
            continue;
        }
        let i = added
            .iter()
            .position(|a| a.name.as_bytes() == name && a.value.as_bytes() == value.as_bytes())?;
        if let Some(slot) = added[i].slot {
            if slots_seen.contains(&slot) {
                return None;
            }
            slots_seen.push(slot);
        }
        layout.push(ADDED_BIT | i as u16);
    }
    Some(layout.into_boxed_slice())
}

/// A serialised header to deserialise a `CacheMeta` around: the entry's own header replaces
/// it (pingora offers no other way to rebuild a meta from its serialised internal part).
static STUB_HEADER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let header = ResponseHeader::build(200, Some(0)).expect("a valid status");
    let now = SystemTime::now();
    CacheMeta::new(now, now, 0, 0, header)
        .serialize()
        .expect("an empty header serialises")
        .1
});

/// The `CacheMeta` of a stored object from its serialised internal meta and its header.
pub fn meta_of(internal: &[u8], header: &CompactHeader) -> pingora::Result<CacheMeta> {
    let mut meta = CacheMeta::deserialize(internal, &STUB_HEADER)?;
    *meta.response_header_mut() = header.stored()?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(header: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        header.header_to_h1_wire(&mut buf);
        format!(
            "{:?} {} {:?}\r\n{}",
            header.version,
            header.status,
            header.get_reason_phrase(),
            String::from_utf8(buf).unwrap()
        )
    }

    /// A meta as pingora-cache stores and reads it back (serialised and decoded).
    fn stored(fields: &[(&str, &str)], status: u16) -> CacheMeta {
        let mut header = ResponseHeader::build(status, None).unwrap();
        for (name, value) in fields {
            header.append_header(name.to_string(), *value).unwrap();
        }
        let now = SystemTime::now();
        let (internal, header) = CacheMeta::new(now, now, 0, 0, header).serialize().unwrap();
        CacheMeta::deserialize(&internal, &header).unwrap()
    }

    /// The fast hit's header made the direct way: the edits of the module doc applied to the
    /// stored header with this request's values.
    fn edited(meta: &CacheMeta, age: u64, per_request: &PerRequest) -> ResponseHeader {
        let mut header = meta.response_header_copy();
        header.insert_header(AGE, age).unwrap();
        header.set_version(Version::HTTP_11);
        if !header.headers.contains_key(CONTENT_LENGTH) {
            header.insert_header(TRANSFER_ENCODING, "chunked").unwrap();
        }
        let length_ok = header
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.parse::<usize>().is_ok());
        if header.status == 200 && length_ok {
            header.insert_header(ACCEPT_RANGES, "bytes").unwrap();
        }
        header.insert_header(X_CACHE, "HIT").unwrap();
        header.insert_header(X_CACHE_TIER, "l1").unwrap();
        header
            .insert_header(CACHE_STATUS, per_request.cache_status.clone())
            .unwrap();
        header.insert_header(AGE, age).unwrap();
        header.insert_header(VIA, per_request.via.clone()).unwrap();
        header
            .insert_header(X_REQUEST_ID, per_request.request_id.clone())
            .unwrap();
        header
            .insert_header(SERVER_TIMING, per_request.server_timing.clone())
            .unwrap();
        header.insert_header(DATE, "0").unwrap();
        header.insert_header(CONNECTION, "keep-alive").unwrap();
        header
    }

    fn per_request() -> PerRequest {
        PerRequest {
            cache_status: HeaderValue::from_static("edge; hit; ttl=10"),
            via: HeaderValue::from_static("1.1 parent, 1.1 edge"),
            request_id: HeaderValue::from_static("edge-1"),
            server_timing: HeaderValue::from_static("edge;dur=0.1"),
        }
    }

    const NGINX: &[(&str, &str)] = &[
        ("Server", "nginx/1.22.1"),
        ("Date", "Sun, 06 Dec 2026 09:00:00 GMT"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "100"),
        ("Last-Modified", "Tue, 01 Dec 2026 23:00:00 GMT"),
        ("ETag", "\"6566d8e2-64\""),
        ("Cache-Control", "max-age=3600"),
        ("Accept-Ranges", "bytes"),
    ];

    /// Names' case, their order, repeated fields, and what the edits replace (a parent's
    /// `Age`, `Via`, `X-Cache`) or add.
    const ODD: &[(&str, &str)] = &[
        ("set-cookie", "a=1"),
        ("x-CUSTOM", "one"),
        ("age", "7"),
        ("Set-Cookie", "b=2"),
        ("via", "1.1 parent"),
        ("X-Cache", "MISS"),
        ("x-custom", ""),
        ("surrogate-key", "t1 t2"),
    ];

    #[test]
    fn the_stored_header_comes_back_field_for_field() {
        for (fields, status) in [(NGINX, 200), (ODD, 200), (ODD, 404), (&[][..], 204)] {
            let meta = stored(fields, status);
            let compact = CompactHeader::new(&meta).unwrap();
            assert_eq!(
                wire(&compact.stored().unwrap()),
                wire(meta.response_header())
            );
            assert_eq!(compact.status(), status);
        }
        let mut header = ResponseHeader::build(299, None).unwrap();
        header.set_reason_phrase(Some("Odd")).unwrap();
        header.append_header("Foo", "bar").unwrap();
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, header);
        let compact = CompactHeader::new(&meta).unwrap();
        assert_eq!(
            wire(&compact.stored().unwrap()),
            wire(meta.response_header())
        );
    }

    #[test]
    fn a_fast_hit_header_is_the_edited_stored_header() {
        for (fields, status) in [(NGINX, 200), (ODD, 200), (ODD, 404), (&[][..], 200)] {
            let meta = stored(fields, status);
            let compact = CompactHeader::new(&meta).unwrap();
            assert!(compact.is_hot());
            let epoch = meta.epoch();
            let now = epoch + Duration::from_secs(42);
            let fast = compact
                .response(now, epoch, per_request())
                .unwrap()
                .unwrap();
            assert_eq!(wire(&fast), wire(&edited(&meta, 42, &per_request())));
        }
    }

    #[test]
    fn a_filled_template_is_the_built_header() {
        for fields in [NGINX, ODD] {
            let meta = stored(fields, 200);
            let compact = CompactHeader::new(&meta).unwrap();
            let epoch = meta.epoch();
            let now = epoch + Duration::from_secs(3);
            let built = compact
                .response(now, epoch, per_request())
                .unwrap()
                .unwrap();
            let template = compact.template().unwrap().unwrap();
            let filled = fill(&template, age(now, epoch), per_request()).unwrap();
            assert_eq!(wire(&filled), wire(&built));
        }
    }

    #[test]
    fn lookups_and_the_stored_via() {
        let compact = CompactHeader::new(&stored(ODD, 200)).unwrap();
        assert_eq!(compact.get(&http::header::SET_COOKIE), Some(&b"a=1"[..]));
        assert_eq!(
            compact.get(&HeaderName::from_static("x-custom")),
            Some(&b"one"[..])
        );
        assert_eq!(compact.get(&CONTENT_LENGTH), None);
        assert_eq!(compact.stored_via().unwrap(), "1.1 parent");
        assert!(
            CompactHeader::new(&stored(NGINX, 200))
                .unwrap()
                .stored_via()
                .is_none()
        );
    }

    #[test]
    fn objects_that_vary_have_no_fast_path() {
        let mut fields = NGINX.to_vec();
        fields.push(("Vary", "Accept-Encoding"));
        let compact = CompactHeader::new(&stored(&fields, 200)).unwrap();
        assert!(!compact.is_hot());
        assert!(
            compact
                .response(SystemTime::now(), SystemTime::now(), per_request())
                .is_none()
        );
    }

    #[test]
    fn the_meta_is_rebuilt_from_its_internal_part_and_the_compact_header() {
        let meta = stored(NGINX, 200);
        let (internal, _) = meta.serialize().unwrap();
        let rebuilt = meta_of(&internal, &CompactHeader::new(&meta).unwrap()).unwrap();
        assert_eq!(rebuilt.serialize().unwrap(), meta.serialize().unwrap());
        assert_eq!(rebuilt.fresh_until(), meta.fresh_until());
        assert_eq!(rebuilt.epoch(), meta.epoch());
    }
}
