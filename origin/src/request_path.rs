//! Turning a request path into a path relative to the served root, refusing anything
//! that could name a file outside it.
//!
//! This is the first of two guards: the second is that files are opened through a
//! cap-std `Dir`, which refuses paths (including symlinks) that resolve outside the root.

use std::fmt;

/// Why a request path was refused. Messages never mention the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    #[error("the request path is not valid UTF-8")]
    NotUtf8,
    #[error("the request path contains a NUL byte")]
    Nul,
    #[error("the request path contains a backslash")]
    Backslash,
    #[error("the request path contains a '..' segment")]
    DotDot,
}

/// A decoded path relative to the root: segments joined by `/`, none of them empty,
/// `.` or `..`. Empty for the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativePath(String);

impl RelativePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}/{name}", self.0))
        }
    }

    /// The URL path form, with a leading `/`, for matching header rules.
    pub fn url_path(&self) -> String {
        format!("/{}", self.0)
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Decodes the path of a request URI (without query) into a [`RelativePath`].
///
/// Percent-escapes are decoded first and the checks run on the decoded text, so that
/// `%2e%2e`, `%2f` and `%5c` cannot smuggle a `..`, a separator or a backslash past them.
/// Empty and `.` segments are dropped, which also turns `//etc/passwd` into `etc/passwd`
/// under the root.
pub fn decode(raw: &str) -> Result<RelativePath, PathError> {
    let bytes = percent_decode(raw.as_bytes())?;
    let text = String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
    if text.contains('\0') {
        return Err(PathError::Nul);
    }
    if text.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut segments = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            segment => segments.push(segment),
        }
    }
    Ok(RelativePath(segments.join("/")))
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let high = input.get(i + 1).and_then(|b| hex_value(*b));
            let low = input.get(i + 2).and_then(|b| hex_value(*b));
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err(PathError::BadEscape),
            }
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}
