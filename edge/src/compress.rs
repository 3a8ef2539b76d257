//! Response compression: the encoding is negotiated from `Accept-Encoding` with
//! q-values against the configured algorithms (configured order breaks ties), only for
//! the configured content types and at least `min_size` bytes. The gzip and zstd
//! encoders are pingora's; brotli has its own here because pingora's only flushes at the
//! end of the body and never finishes the stream, which strict decoders reject.
//! pingora's negotiation module is not used: it ignores q-values and has fixed size and
//! type rules.

use edgebox_config::{Compression, Encoding};
use pingora::http::ResponseHeader;
use pingora::protocols::http::compression::{Algorithm, Encode};

/// Compression level handed to pingora's encoders (moderate: proxying is latency-bound).
const LEVEL: u32 = 5;

#[derive(Debug, Clone)]
pub struct Policy {
    min_size: u64,
    algorithms: Vec<Encoding>,
    content_types: Vec<String>,
}

impl Policy {
    pub fn new(config: &Compression) -> Option<Self> {
        (config.enabled && !config.algorithms.is_empty()).then(|| Self {
            min_size: config.min_size,
            algorithms: config.algorithms.clone(),
            content_types: config
                .content_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        })
    }

    /// The best encoding the client accepts, if any.
    pub fn negotiate(&self, accept_encoding: &str) -> Option<Encoding> {
        let offers = parse_accept_encoding(accept_encoding);
        let q_for = |token: &str| -> f32 {
            offers
                .iter()
                .find(|(name, _)| name == token)
                .or_else(|| offers.iter().find(|(name, _)| name == "*"))
                .map_or(0.0, |(_, q)| *q)
        };
        let mut best: Option<(Encoding, f32)> = None;
        for &encoding in &self.algorithms {
            let q = q_for(encoding.token());
            if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((encoding, q));
            }
        }
        best.map(|(encoding, _)| encoding)
    }

    /// Whether this response may be compressed at all (type, size, not already encoded).
    /// Also answers whether it varies by `Accept-Encoding`.
    pub fn eligible(&self, response: &ResponseHeader) -> bool {
        self.eligible_fields(response.status.as_u16(), |name| {
            response.headers.get(name).map(|v| v.as_bytes())
        })
    }

    /// [`Self::eligible`] for a response given as its status and a lookup of a field's
    /// (first) value by name: the L1 fast path holds its header in compact form.
    pub fn eligible_fields<'a>(
        &self,
        status: u16,
        get: impl Fn(&http::HeaderName) -> Option<&'a [u8]>,
    ) -> bool {
        if status != 200 || get(&http::header::CONTENT_ENCODING).is_some() {
            return false;
        }
        // As `HeaderValue::to_str`: visible ASCII and tabs only.
        let text = |name| {
            get(&name)
                .filter(|v| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)))
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        if let Some(length) =
            text(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok())
            && length < self.min_size
        {
            return false;
        }
        let Some(content_type) = text(http::header::CONTENT_TYPE) else {
            return false;
        };
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types
            .iter()
            .any(|pattern| match pattern.strip_suffix("/*") {
                Some(prefix) => mime.split('/').next() == Some(prefix),
                None => *pattern == mime,
            })
    }
}

/// `gzip;q=0.5, br` -> [("gzip", 0.5), ("br", 1.0)]; malformed q-values count as 0.
pub fn parse_accept_encoding(header: &str) -> Vec<(String, f32)> {
    header
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            if name.is_empty() {
                return None;
            }
            let mut q = 1.0;
            for param in parts {
                if let Some((key, value)) = param.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    q = value.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
            Some((name, q))
        })
        .collect()
}

/// The codings `normalise_accept_encoding` keeps: those the edge can produce, and the
/// ones that change what it may send (`identity`, `*`), plus `deflate` for origins.
const KNOWN_CODINGS: [&str; 6] = ["*", "br", "deflate", "gzip", "identity", "zstd"];

/// One spelling per meaning of an `Accept-Encoding` value (all its lines joined): known
/// codings only, each once (its first q-value), sorted, q-values to three decimals and
/// `q=1` left out. The edge forwards this, and keys `Vary: Accept-Encoding` variants by
/// it, so the many ways clients write the same preference share one cached variant and
/// an origin sees exactly what the variant was keyed by. `None` when nothing is left.
pub fn normalise_accept_encoding(header: &str) -> Option<String> {
    let mut codings: Vec<(String, f32)> = Vec::new();
    for (name, q) in parse_accept_encoding(header) {
        if KNOWN_CODINGS.contains(&name.as_str()) && !codings.iter().any(|(n, _)| *n == name) {
            codings.push((name, q));
        }
    }
    if codings.is_empty() {
        return None;
    }
    codings.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<String> = codings
        .into_iter()
        .map(|(name, q)| {
            if q >= 1.0 {
                name
            } else {
                let q = format!("{q:.3}");
                format!("{name};q={}", q.trim_end_matches('0').trim_end_matches('.'))
            }
        })
        .collect();
    Some(items.join(", "))
}

/// Replaces `req`'s `Accept-Encoding` lines with [`normalise_accept_encoding`]'s one
/// (or none when nothing known is left).
pub fn normalise_request(req: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
    let accept: Vec<&str> = req
        .headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !req.headers.contains_key(http::header::ACCEPT_ENCODING) {
        return Ok(());
    }
    // Lines that are not text say nothing we can use: dropped like unknown codings.
    match normalise_accept_encoding(&accept.join(",")) {
        Some(value) => req.insert_header(http::header::ACCEPT_ENCODING, value)?,
        None => {
            req.remove_header(&http::header::ACCEPT_ENCODING);
        }
    }
    Ok(())
}

/// A streaming encoder for the chosen encoding.
pub fn encoder(encoding: Encoding) -> Option<Box<dyn Encode + Send + Sync>> {
    let algorithm = match encoding {
        Encoding::Gzip => Algorithm::Gzip,
        Encoding::Br => return Some(Box::new(Brotli::new())),
        Encoding::Zstd => Algorithm::Zstd,
    };
    algorithm.compressor(LEVEL)
}

/// Streaming brotli that terminates the stream properly at the end of the body.
struct Brotli {
    writer: Option<brotli::CompressorWriter<Vec<u8>>>,
    total_in: usize,
    total_out: usize,
}

impl Brotli {
    fn new() -> Self {
        Self {
            writer: Some(brotli::CompressorWriter::new(Vec::new(), 4096, LEVEL, 22)),
            total_in: 0,
            total_out: 0,
        }
    }
}

impl Encode for Brotli {
    fn encode(&mut self, input: &[u8], end: bool) -> pingora::Result<bytes::Bytes> {
        use pingora::{OkOrErr, OrErr};
        use std::io::Write;
        let writer = self.writer.as_mut().or_err(
            pingora::ErrorType::InternalError,
            "brotli stream already finished",
        )?;
        writer.write_all(input).or_err(
            pingora::ErrorType::InternalError,
            "while compressing brotli",
        )?;
        self.total_in += input.len();
        let out = if end {
            self.writer
                .take()
                .map(|w| w.into_inner())
                .unwrap_or_default()
        } else {
            std::mem::take(writer.get_mut())
        };
        self.total_out += out.len();
        Ok(out.into())
    }

    fn stat(&self) -> (&'static str, usize, usize, std::time::Duration) {
        (
            "brotli",
            self.total_in,
            self.total_out,
            std::time::Duration::ZERO,
        )
    }
}

/// Adds `Accept-Encoding` to `Vary`, keeping what the origin put there.
pub fn add_vary(response: &mut ResponseHeader) {
    let existing: Vec<String> = response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let already = existing.iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
    });
    if !already {
        let value = if existing.is_empty() {
            "Accept-Encoding".to_owned()
        } else {
            format!("{}, Accept-Encoding", existing.join(", "))
        };
        let _ = response.insert_header(http::header::VARY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min_size: 10,
            algorithms: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
            content_types: vec!["text/*".into(), "application/json".into()],
        }
    }

    #[test]
    fn accept_encoding_has_one_spelling_per_meaning() {
        let same = [
            "gzip, br",
            "br,gzip",
            "BR;q=1.0, gzip;q=1, x-custom",
            "br, gzip, br;q=0",
        ];
        for value in same {
            assert_eq!(
                normalise_accept_encoding(value).as_deref(),
                Some("br, gzip"),
                "{value}"
            );
        }
        assert_eq!(
            normalise_accept_encoding("gzip;q=0.50, identity;q=0, *;q=0.1").as_deref(),
            Some("*;q=0.1, gzip;q=0.5, identity;q=0")
        );
        assert_eq!(normalise_accept_encoding("x-unknown, ;q=1"), None);
        // What negotiation picks is unchanged by normalising.
        let p = policy();
        for value in [
            "gzip;q=1, br;q=0.5",
            "br;q=0.2, zstd;q=0.1, gzip;q=0.3",
            "*;q=0.5, gzip;q=0",
        ] {
            let normalised = normalise_accept_encoding(value).unwrap();
            assert_eq!(p.negotiate(value), p.negotiate(&normalised), "{value}");
        }
    }

    #[test]
    fn negotiation_honours_q_values_and_preference() {
        let p = policy();
        assert_eq!(p.negotiate("gzip"), Some(Encoding::Gzip));
        assert_eq!(p.negotiate("gzip, br"), Some(Encoding::Br));
        assert_eq!(
            p.negotiate("gzip;q=1.0, br;q=0.5, zstd;q=0.1"),
            Some(Encoding::Gzip)
        );
        assert_eq!(p.negotiate("*;q=0.2, gzip;q=0"), Some(Encoding::Zstd));
        assert_eq!(p.negotiate("identity"), None);
        assert_eq!(p.negotiate("br;q=0, gzip;q=0, zstd;q=0"), None);
        assert_eq!(p.negotiate(""), None);
    }

    #[test]
    fn every_encoder_produces_a_complete_stream() {
        use std::io::Read;
        let input: Vec<u8> = b"hello brotli "
            .iter()
            .copied()
            .cycle()
            .take(50_000)
            .collect();
        for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut encoder = encoder(encoding).unwrap();
            let mut out = Vec::new();
            for chunk in input.chunks(7000) {
                out.extend_from_slice(&encoder.encode(chunk, false).unwrap());
            }
            out.extend_from_slice(&encoder.encode(&[], true).unwrap());
            if encoding == Encoding::Br {
                let mut decoded = Vec::new();
                brotli::Decompressor::new(&out[..], 4096)
                    .read_to_end(&mut decoded)
                    .unwrap();
                assert_eq!(decoded, input);
            }
            assert!(out.len() < input.len() / 10, "{encoding:?}");
        }
    }

    #[test]
    fn eligibility_checks_type_size_and_existing_encoding() {
        let p = policy();
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", "text/html; charset=utf-8")
            .unwrap();
        r.insert_header("content-length", "100").unwrap();
        assert!(p.eligible(&r));
        r.insert_header("content-length", "5").unwrap();
        assert!(!p.eligible(&r));
        r.insert_header("content-length", "100").unwrap();
        r.insert_header("content-encoding", "gzip").unwrap();
        assert!(!p.eligible(&r));
        let mut img = ResponseHeader::build(200, None).unwrap();
        img.insert_header("content-type", "image/png").unwrap();
        assert!(!p.eligible(&img));
    }
}
