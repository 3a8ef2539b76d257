//! `Range: bytes=...` parsing and resolution against a representation's length
//! (RFC 9110 §14).

use std::ops::Range;

/// Above this many ranges in one request the header is ignored and the whole
/// representation is sent (RFC 9110 §14.2 lets a server ignore a Range it finds
/// abusive): many tiny ranges cost more than they save.
pub const MAX_RANGES: usize = 64;

/// One range spec as written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// What to send for a request carrying a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Ignore the header and send the whole representation with 200.
    Whole,
    /// Send these byte ranges (half-open, in request order) with 206.
    Partial(Vec<Range<u64>>),
    /// None of the ranges overlaps the representation: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value. `None` when it is not a syntactically valid
/// `bytes` range set, in which case RFC 9110 says to ignore it.
pub fn parse(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty list elements ("bytes=0-1,,2-3") are allowed by the list syntax.
    for part in set
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (first, last) = part.split_once('-')?;
        let spec = if first.is_empty() {
            Spec::Suffix(parse_number(last)?)
        } else {
            let first = parse_number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(parse_number(last)?)
            };
            if last.is_some_and(|last| last < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() { None } else { Some(specs) }
}

fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Resolves parsed specs against a representation of `len` bytes.
///
/// Overlapping or adjacent ranges are coalesced (RFC 9110 §14.2 allows it, and asks
/// servers to, against "many overlapping ranges" amplification): 64 copies of `0-` are
/// one range, never 64 copies of the file. When nothing needs coalescing the request's
/// order is kept, as the RFC asks for multipart answers.
pub fn resolve(specs: &[Spec], len: u64) -> Resolved {
    if specs.len() > MAX_RANGES {
        return Resolved::Whole;
    }
    let ranges: Vec<Range<u64>> = specs
        .iter()
        .filter_map(|spec| match *spec {
            Spec::From { first, .. } if first >= len => None,
            Spec::From { first, last } => {
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                Some(first..end)
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(suffix) => Some(len.saturating_sub(suffix)..len),
        })
        // A suffix of an empty representation is empty: nothing to send.
        .filter(|range| range.start < range.end)
        .collect();
    if ranges.is_empty() {
        return Resolved::Unsatisfiable;
    }
    Resolved::Partial(coalesce(ranges))
}

/// `ranges` with overlapping or touching ones merged. Sorted by start when any were
/// merged; unchanged (request order) otherwise.
fn coalesce(ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut sorted = ranges.clone();
    sorted.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    if merged.len() == ranges.len() {
        ranges
    } else {
        merged
    }
}

/// Whether a multipart answer of `ranges` (disjoint, as [`resolve`] gives them) with
/// `part_overhead` bytes of part headers each and `closing` bytes of final boundary is
/// worth sending instead of the whole `len`-byte representation. It never is when it
/// would be as large as the file: a client gains nothing, and the answer is bounded
/// by the file's size whatever the header asks for.
pub fn multipart_worthwhile(
    ranges: &[Range<u64>],
    len: u64,
    part_overhead: impl Fn(&Range<u64>) -> u64,
    closing: u64,
) -> bool {
    let total = ranges.iter().fold(closing, |total, range| {
        total
            .saturating_add(range.end - range.start)
            .saturating_add(part_overhead(range))
    });
    total < len
}
