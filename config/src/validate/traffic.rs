//! `[edge]`'s traffic settings: the trusted proxies, `[edge.rate_limit]` and
//! `[edge.access_log]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sections::check_pattern;
use crate::cidr::Cidr;
use crate::diagnostics::Collector;
use crate::model::*;
use crate::raw::*;

/// The shortest refill interval a rule may ask for: beyond a million requests per second
/// per client a rule limits nothing an edge could serve.
const MIN_INTERVAL: Duration = Duration::from_micros(1);

pub(super) fn check_trusted_proxies(c: &mut Collector<'_>, raw: &[String]) -> Vec<Cidr> {
    raw.iter()
        .enumerate()
        .filter_map(|(index, text)| {
            Cidr::parse(text.trim())
                .map_err(|message| c.error(format!("edge.trusted_proxies[{index}]"), message))
                .ok()
        })
        .collect()
}

pub(super) fn check_rate_limit(c: &mut Collector<'_>, raw: RawRateLimit) -> Vec<RateRule> {
    raw.rules
        .into_iter()
        .enumerate()
        .filter_map(|(index, rule)| check_rule(c, &format!("edge.rate_limit.rules[{index}]"), rule))
        .collect()
}

fn check_rule(c: &mut Collector<'_>, path: &str, raw: RawRateRule) -> Option<RateRule> {
    let pattern = check_pattern(c, format!("{path}.pattern"), &raw.pattern);
    let mut ok = true;
    let mut fail = |c: &mut Collector<'_>, key: &str, message: String| {
        c.error(format!("{path}.{key}"), message);
        ok = false;
    };
    if raw.rate == 0 {
        fail(
            c,
            "rate",
            "rate must be at least 1 request per `per`; remove the rule to stop limiting".into(),
        );
    }
    let per = raw.per.get();
    if per.is_zero() {
        fail(c, "per", "the period must be longer than zero".into());
    } else if raw.rate > 0 && per / raw.rate < MIN_INTERVAL {
        fail(
            c,
            "rate",
            format!(
                "{} per {} is more than a million requests per second per client; that limits nothing",
                raw.rate, raw.per
            ),
        );
    }
    let burst = raw.burst.unwrap_or(raw.rate);
    if raw.burst == Some(0) {
        fail(
            c,
            "burst",
            "burst must be at least 1 (no request could ever pass)".into(),
        );
    }
    let key = match (raw.key.as_str(), raw.header) {
        ("ip", None) => Some(RateKey::Ip),
        ("ip", Some(_)) => {
            fail(
                c,
                "header",
                "`header` is only used with key = \"header\"".into(),
            );
            None
        }
        ("header", Some(name)) => {
            if valid_header_name(&name) {
                Some(RateKey::Header(name.to_ascii_lowercase()))
            } else {
                fail(c, "header", format!("{name:?} is not an HTTP header name"));
                None
            }
        }
        ("header", None) => {
            fail(
                c,
                "header",
                "key = \"header\" needs `header`, the request header to key by, e.g. \"x-api-key\""
                    .into(),
            );
            None
        }
        (other, _) => {
            fail(
                c,
                "key",
                format!("unknown key {other:?}; expected \"ip\" or \"header\""),
            );
            None
        }
    };
    let key = key?;
    ok.then_some(RateRule {
        pattern,
        rate: raw.rate,
        per,
        burst,
        key,
    })
}

/// RFC 9110 token characters.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `data_dir` stands for the node data dirs a relative path is under (which may not
/// exist yet): its nearest existing ancestor must be a writable directory.
pub(super) fn check_access_log(
    c: &mut Collector<'_>,
    raw: Option<RawAccessLog>,
    data_dir: &Path,
) -> Option<AccessLog> {
    let raw = raw?;
    let format = match raw.format.as_str() {
        "json" => Some(AccessLogFormat::Json),
        "common" => Some(AccessLogFormat::Common),
        "combined" => Some(AccessLogFormat::Combined),
        other => {
            c.error(
                "edge.access_log.format",
                format!("unknown format {other:?}; expected \"json\", \"common\" or \"combined\""),
            );
            None
        }
    };
    let target = match raw.path.as_str() {
        "stderr" => Some(AccessLogTarget::Stderr),
        "" => {
            c.error(
                "edge.access_log.path",
                "the path is empty; write \"stderr\" or a file",
            );
            None
        }
        file => {
            let path = PathBuf::from(file);
            let probe = if path.is_absolute() {
                path.clone()
            } else {
                data_dir.join("nodes").join("node").join(&path)
            };
            match unwritable(&probe) {
                Some(why) => {
                    c.error("edge.access_log.path", format!("{file:?}: {why}"));
                    None
                }
                None => Some(AccessLogTarget::File(path)),
            }
        }
    };
    let (format, target) = (format?, target?);
    raw.enabled.then_some(AccessLog { format, target })
}

/// Why lines could not be appended to `path`, as far as its metadata says (running as
/// root, permissions say little; a write that fails later is reported in `/healthz`).
fn unwritable(path: &Path) -> Option<String> {
    if path.as_os_str().to_string_lossy().ends_with('/') {
        return Some("names a directory, not a file".into());
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return Some("is a directory".into());
        }
        if meta.permissions().readonly() {
            return Some("the file is read-only".into());
        }
        return None;
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        if let Ok(meta) = std::fs::metadata(dir) {
            if !meta.is_dir() {
                return Some(format!("{} is not a directory", dir.display()));
            }
            if meta.permissions().readonly() {
                return Some(format!("{} is not writable", dir.display()));
            }
            return None;
        }
        ancestor = dir.parent();
    }
    None
}
