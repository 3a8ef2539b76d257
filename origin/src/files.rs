//! Opening files under the served root through a cap-std `Dir`, and the validators
//! (`ETag`, `Last-Modified`) derived from their metadata.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::request_path::RelativePath;

/// Why a file could not be served. Carries no filesystem path: these reach clients.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no such file")]
    NotFound,
    /// Includes paths that resolve outside the root (cap-std reports an escape as
    /// permission denied).
    #[error("access to this path is not allowed")]
    Forbidden,
    #[error("reading the file failed")]
    Io(#[source] io::Error),
}

impl From<io::Error> for OpenError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::InvalidInput => OpenError::NotFound,
            io::ErrorKind::PermissionDenied => OpenError::Forbidden,
            _ => OpenError::Io(err),
        }
    }
}

/// The served directory. Every open goes through the capability, which refuses `..`,
/// absolute paths and symlinks that lead outside it.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
}

/// An open regular file with what the response headers need.
#[derive(Debug)]
pub struct OpenFile {
    pub file: std::fs::File,
    /// The path actually served (`dir/index.html` for a directory).
    pub path: RelativePath,
    pub len: u64,
    pub modified: SystemTime,
    pub etag: String,
}

impl Root {
    pub fn open_ambient(path: &Path) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(Self { dir })
    }

    /// Opens the file a request path names: the file itself, or `index.html` inside a
    /// directory. Blocking: call it on the blocking pool.
    pub fn open(&self, path: &RelativePath) -> Result<OpenFile, OpenError> {
        let mut path = path.clone();
        let mut metadata = self.metadata(&path)?;
        if metadata.is_dir() {
            path = path.join("index.html");
            metadata = self.metadata(&path)?;
        }
        // Checked before opening: opening a FIFO for reading would block until a writer
        // appears, and devices have no meaningful length.
        if !metadata.is_file() {
            return Err(OpenError::NotFound);
        }
        let file = self.dir.open(path.as_str())?.into_std();
        // Validators come from the opened file, so they describe the bytes we send even
        // if the path was replaced between the two calls.
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(OpenError::NotFound);
        }
        let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
        let len = metadata.len();
        Ok(OpenFile {
            file,
            etag: etag(len, modified),
            path,
            len,
            modified,
        })
    }

    fn metadata(&self, path: &RelativePath) -> Result<cap_std::fs::Metadata, OpenError> {
        let name = if path.is_root() { "." } else { path.as_str() };
        Ok(self.dir.metadata(name)?)
    }
}

/// A strong entity tag from size and modification time. It does not involve the inode
/// or the node, so origins serving copies of the same content (the sample site has
/// fixed mtimes) agree on it.
pub fn etag(len: u64, modified: SystemTime) -> String {
    let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "\"{len:x}-{:x}.{:09}\"",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    )
}
