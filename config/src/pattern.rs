//! URL path globs for per-path rules: `*` matches within one segment, `**` across segments.

use std::fmt;

use serde::{Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of segments, including none.
    AnyDepth,
    /// A segment glob, possibly with `*` wildcards.
    Glob(String),
}

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("path pattern {0:?} must start with '/'")]
    NotAbsolute(String),
    #[error("'**' must be a whole segment in {0:?}")]
    PartialAnyDepth(String),
}

impl PathPattern {
    /// Parses a pattern; it must start with `/`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute(text.to_owned()));
        }
        let segments = text[1..]
            .split('/')
            .map(|segment| match segment {
                "**" => Ok(Segment::AnyDepth),
                s if s.contains("**") => Err(PatternError::PartialAnyDepth(text.to_owned())),
                s => Ok(Segment::Glob(s.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request path (without query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        match_segments(&self.segments, rest.split('/'))
    }
}

/// Walks the path's segments lazily (rate-limit rules match every request's path, so
/// no allocation here); `**` retries the rest of the pattern from each later segment.
fn match_segments(pattern: &[Segment], mut parts: std::str::Split<'_, char>) -> bool {
    match pattern.split_first() {
        None => parts.next().is_none(),
        Some((Segment::AnyDepth, rest)) => loop {
            if match_segments(rest, parts.clone()) {
                return true;
            }
            if parts.next().is_none() {
                return false;
            }
        },
        Some((Segment::Glob(glob), rest)) => match parts.next() {
            Some(part) => {
                glob_matches(glob.as_bytes(), part.as_bytes()) && match_segments(rest, parts)
            }
            None => false,
        },
    }
}

/// `*` matches any run of bytes within a segment; everything else matches itself.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    match glob.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.text)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::PathPattern;

    #[track_caller]
    fn check(pattern: &str, path: &str, expected: bool) {
        assert_eq!(
            PathPattern::parse(pattern).unwrap().matches(path),
            expected,
            "{pattern} vs {path}"
        );
    }

    #[test]
    fn globs() {
        check("/assets/**", "/assets/a/b.css", true);
        check("/assets/**", "/assets/", true);
        check("/assets/**", "/other/a.css", false);
        check("/**/*.css", "/a/b/c.css", true);
        check("/**/*.css", "/c.css", true);
        check("/**/*.css", "/c.js", false);
        check("/*.html", "/index.html", true);
        check("/*.html", "/a/index.html", false);
        check("/**", "/anything/at/all", true);
        check("/**", "/", true);
        check("/a/**/b", "/a/x/y/b", true);
        check("/a/**/b", "/a/b", true);
        check("/a/**/b", "/a/x/c", false);
        check("/a/*", "/a/", true);
        check("/a/*", "/a", false);
        assert!(PathPattern::parse("assets").is_err());
        assert!(PathPattern::parse("/a**b").is_err());
    }
}
