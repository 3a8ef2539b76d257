//! The `Cache-Status` response header (RFC 9211): this edge's entry — how its cache
//! handled the request — appended to the upstream's entries (a parent edge's), so that the
//! list reads from the cache nearest the origin to the one nearest the client.
//!
//! | `X-Cache`     | entry                                        |
//! |---------------|----------------------------------------------|
//! | `HIT`         | `hit; ttl=N` (`fwd=uri-miss; collapsed` when it waited on another request's fetch) |
//! | `STALE`       | `hit; ttl=-N` (served stale: the ttl is negative) |
//! | `MISS`        | `fwd=uri-miss; stored; ttl=N` (no `stored` when not cacheable) |
//! | `EXPIRED`     | `fwd=stale; stored; ttl=N`                   |
//! | `REVALIDATED` | `fwd=stale; fwd-status=304; ttl=N`           |
//! | `BYPASS`      | `fwd=bypass` (the request is not cacheable); `fwd=uri-miss` when the cache declined to store the response |

use std::fmt::Write;
use std::time::SystemTime;

use edgebox_wire::edge::CacheStatus;
use http::HeaderValue;

use crate::header_text::{StackText, static_value};

pub const NAME: &str = "cache-status";

/// This edge's part of the header.
pub struct Entry {
    pub status: CacheStatus,
    /// The request waited on the cache lock and was answered from another's fetch.
    pub collapsed: bool,
    /// The response is being stored.
    pub stored: bool,
    /// Remaining freshness in seconds (negative when stale).
    pub ttl: Option<i64>,
}

/// The entries every pass-through response carries, made once per edge: they hold no
/// per-request value (no ttl, no upstream part), so a response takes a shared copy instead
/// of formatting and allocating one.
pub struct Fixed {
    /// `NAME; fwd=bypass`: a request the cache did not handle (e.g. the cache is off).
    bypass: HeaderValue,
    /// `NAME; fwd=uri-miss`: a miss whose response is not stored.
    miss: HeaderValue,
}

impl Fixed {
    /// The entries for the cache named `name` ([`cache_name`]).
    pub fn new(name: &str) -> Self {
        let fixed = |status| {
            let entry = Entry {
                status,
                collapsed: false,
                stored: false,
                ttl: None,
            };
            // Made once per process (an edge's state).
            static_value(entry.header(name, None).as_bytes().to_vec())
                .expect("made from a valid header value")
        };
        Self {
            bypass: fixed(CacheStatus::Bypass),
            miss: fixed(CacheStatus::Miss),
        }
    }
}

impl Entry {
    /// As [`Entry::header`], taken from `fixed` when this entry's text is one of those.
    pub fn value(&self, fixed: &Fixed, name: &str, upstream: Option<&HeaderValue>) -> HeaderValue {
        if upstream.is_none() && !self.collapsed && !self.stored {
            match self.status {
                CacheStatus::Bypass if self.ttl.is_none() => return fixed.bypass.clone(),
                // A miss that is not stored shows no ttl.
                CacheStatus::Miss => return fixed.miss.clone(),
                _ => {}
            }
        }
        self.header(name, upstream)
    }

    /// `upstream, this` (or this alone) as a header value; `name` is [`cache_name`].
    pub fn header(&self, name: &str, upstream: Option<&HeaderValue>) -> HeaderValue {
        // Written on the stack when it fits (every hit has one): one allocation, the
        // value's own, instead of a `String` and then shared bytes made from it.
        let mut stack = StackText::<160>::default();
        let value = if self.write(name, upstream, &mut stack).is_ok() {
            HeaderValue::from_bytes(stack.as_bytes())
        } else {
            let mut text = String::with_capacity(64);
            let _ = self.write(name, upstream, &mut text);
            HeaderValue::from_str(&text)
        };
        value.unwrap_or_else(|_| HeaderValue::from_static("edgebox"))
    }

    fn write(
        &self,
        name: &str,
        upstream: Option<&HeaderValue>,
        value: &mut impl Write,
    ) -> std::fmt::Result {
        if let Some(previous) = upstream.and_then(|v| v.to_str().ok()) {
            value.write_str(previous)?;
            value.write_str(", ")?;
        }
        value.write_str(name)?;
        let params = match self.status {
            CacheStatus::Hit if self.collapsed => "; fwd=uri-miss; collapsed",
            CacheStatus::Hit | CacheStatus::Stale => "; hit",
            CacheStatus::Miss => "; fwd=uri-miss",
            CacheStatus::Expired => "; fwd=stale",
            CacheStatus::Revalidated => "; fwd=stale; fwd-status=304",
            CacheStatus::Bypass => "; fwd=bypass",
        };
        value.write_str(params)?;
        let forwarded = matches!(self.status, CacheStatus::Miss | CacheStatus::Expired);
        if forwarded && self.stored {
            value.write_str("; stored")?;
        }
        if let Some(ttl) = self.ttl.filter(|_| !forwarded || self.stored) {
            write!(value, "; ttl={ttl}")?;
        }
        Ok(())
    }
}

/// Whole seconds from `now` until `fresh_until`, negative once past.
pub fn ttl(fresh_until: SystemTime, now: SystemTime) -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match fresh_until.duration_since(now) {
        Ok(left) => secs(left),
        Err(past) => -secs(past.duration()),
    }
}

/// The cache's name in the header: the node name as a structured-field token when it is
/// one (it starts with a letter and uses token characters), else as a quoted string.
pub fn cache_name(node: &str) -> String {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
    if node.starts_with(|c: char| c.is_ascii_alphabetic()) && node.chars().all(tchar) {
        node.to_owned()
    } else {
        let escaped: String = node
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(status: CacheStatus, stored: bool, ttl: Option<i64>) -> Entry {
        Entry {
            status,
            collapsed: false,
            stored,
            ttl,
        }
    }

    #[test]
    fn entries_name_the_cache_and_say_how_it_answered() {
        let shield = HeaderValue::from_static("shield; fwd=uri-miss; stored; ttl=300");
        assert_eq!(
            entry(CacheStatus::Miss, true, Some(300)).header("a", Some(&shield)),
            "shield; fwd=uri-miss; stored; ttl=300, a; fwd=uri-miss; stored; ttl=300"
        );
        assert_eq!(
            entry(CacheStatus::Miss, false, Some(300)).header("a", None),
            "a; fwd=uri-miss"
        );
        assert_eq!(
            entry(CacheStatus::Hit, false, Some(12)).header("a", None),
            "a; hit; ttl=12"
        );
        assert_eq!(
            entry(CacheStatus::Stale, false, Some(-3)).header("a", None),
            "a; hit; ttl=-3"
        );
        assert_eq!(
            entry(CacheStatus::Revalidated, false, Some(60)).header("a", None),
            "a; fwd=stale; fwd-status=304; ttl=60"
        );
        assert_eq!(
            entry(CacheStatus::Bypass, false, None).header("a", None),
            "a; fwd=bypass"
        );
        let collapsed = Entry {
            collapsed: true,
            ..entry(CacheStatus::Hit, false, Some(5))
        };
        assert_eq!(
            collapsed.header("a", None),
            "a; fwd=uri-miss; collapsed; ttl=5"
        );
    }

    #[test]
    fn long_entries_do_not_fit_on_the_stack_and_still_read_whole() {
        let upstream = HeaderValue::from_str(&format!("{}; hit; ttl=3", "s".repeat(300))).unwrap();
        let value = entry(CacheStatus::Hit, false, Some(4)).header("a", Some(&upstream));
        assert_eq!(
            value,
            format!("{}; hit; ttl=3, a; hit; ttl=4", "s".repeat(300)).as_str()
        );
    }

    #[test]
    fn fixed_entries_read_as_formatted_ones() {
        let fixed = Fixed::new("edge-a");
        let upstream = HeaderValue::from_static("shield; hit; ttl=3");
        for status in [
            CacheStatus::Hit,
            CacheStatus::Stale,
            CacheStatus::Miss,
            CacheStatus::Expired,
            CacheStatus::Revalidated,
            CacheStatus::Bypass,
        ] {
            for (collapsed, stored, ttl) in [
                (false, false, None),
                (false, false, Some(7)),
                (false, true, Some(7)),
                (true, false, Some(-2)),
            ] {
                let entry = Entry {
                    status,
                    collapsed,
                    stored,
                    ttl,
                };
                for upstream in [None, Some(&upstream)] {
                    assert_eq!(
                        entry.value(&fixed, "edge-a", upstream),
                        entry.header("edge-a", upstream),
                        "{status:?} {collapsed} {stored} {ttl:?} {upstream:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ttl_is_signed_and_names_are_tokens_or_strings() {
        let now = SystemTime::now();
        assert_eq!(ttl(now + Duration::from_millis(5500), now), 5);
        assert_eq!(ttl(now - Duration::from_millis(2500), now), -2);
        assert_eq!(cache_name("edge-a"), "edge-a");
        assert_eq!(cache_name("0edge"), "\"0edge\"");
        assert_eq!(cache_name("we\"ird"), "\"we\\\"ird\"");
    }
}
