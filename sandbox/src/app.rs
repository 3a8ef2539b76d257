//! Multi-file programs: the submitted files checked (count, total size, paths
//! normalised with no `..` and nothing absolute) and written to a host directory that
//! every instance of the job sees read-only as `/app`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use edgebox_wire::sandbox::{FileEncoding, SourceFile};

use crate::service::Rejection;

/// Where the files appear to the guest.
pub const GUEST_DIR: &str = "/app";

/// Longest path accepted, in bytes.
const MAX_PATH: usize = 255;

/// A multi-file program written to disk: removed when the last instance is done.
pub struct AppDir {
    dir: tempfile::TempDir,
    /// Normalised submitted paths, in submission order.
    pub paths: Vec<String>,
    /// The entry file's path (normalised) and its text.
    pub entry: String,
    pub entry_source: String,
}

impl AppDir {
    pub fn host_path(&self) -> &Path {
        self.dir.path()
    }

    /// The entry file as the guest names it (`/app/<entry>`).
    pub fn guest_entry(&self) -> String {
        format!("{GUEST_DIR}/{}", self.entry)
    }

    /// Every file as the guest names it, in the order of [`AppDir::paths`].
    pub fn guest_names(&self) -> Vec<Vec<u8>> {
        self.paths
            .iter()
            .map(|path| format!("{GUEST_DIR}/{path}").into_bytes())
            .collect()
    }
}

/// `path` made canonical (`./a//b.py` → `a/b.py`), or why it is refused.
pub fn normalise(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("{path:?} is absolute; paths are relative to /app"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(format!("{path:?} holds a NUL or a backslash"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{path:?} leaves its directory (`..`)")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!("{path:?} names no file"));
    }
    let normal = parts.join("/");
    if normal.len() > MAX_PATH {
        return Err(format!(
            "a path is {} bytes; the limit is {MAX_PATH}",
            normal.len()
        ));
    }
    Ok(normal)
}

/// Checks the files (422 for paths, count and entry; 413 for size) and writes them out.
pub fn prepare(
    files: Vec<SourceFile>,
    entry: Option<String>,
    max_files: usize,
    max_bytes: u64,
) -> Result<AppDir, Rejection> {
    let invalid = |code: &'static str, message: String| Rejection::new(422, code, message);
    if files.is_empty() {
        return Err(invalid(
            "invalid_files",
            "files must hold at least one file".into(),
        ));
    }
    if files.len() > max_files {
        return Err(invalid(
            "too_many_files",
            format!(
                "{} files; a program may have at most {max_files}",
                files.len()
            ),
        ));
    }
    let entry =
        entry.ok_or_else(|| invalid("invalid_entry", "`files` needs an `entry` path".into()))?;
    let entry = normalise(&entry).map_err(|message| invalid("invalid_entry", message))?;
    let mut decoded = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for (index, file) in files.into_iter().enumerate() {
        let path = normalise(&file.path).map_err(|message| {
            invalid("invalid_path", format!("files[{index}].path: {message}"))
        })?;
        let bytes = match file.encoding.unwrap_or_default() {
            FileEncoding::Utf8 => file.content.into_bytes(),
            FileEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(file.content.trim())
                .map_err(|error| {
                    invalid("invalid_base64", format!("files[{index}].content: {error}"))
                })?,
        };
        total += bytes.len() as u64;
        if total > max_bytes {
            return Err(Rejection::new(
                413,
                "source_too_large",
                format!("the files hold more than {max_bytes} bytes, the limit"),
            ));
        }
        decoded.push((path, bytes));
    }
    // A file and a directory of the same name, or the same file twice.
    for (i, (path, _)) in decoded.iter().enumerate() {
        for (other, _) in &decoded[i + 1..] {
            let nested =
                |a: &str, b: &str| b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'));
            if path == other || nested(path, other) || nested(other, path) {
                return Err(invalid(
                    "duplicate_path",
                    format!("{path:?} and {other:?} cannot both be files"),
                ));
            }
        }
    }
    let entry_source = match decoded.iter().find(|(path, _)| *path == entry) {
        Some((_, bytes)) => String::from_utf8(bytes.clone()).map_err(|_| {
            invalid(
                "invalid_entry",
                format!("the entry {entry:?} is not UTF-8 text"),
            )
        })?,
        None => {
            return Err(invalid(
                "invalid_entry",
                format!("the entry {entry:?} is not one of the files"),
            ));
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("edgebox-app-")
        .tempdir()
        .map_err(|error| Rejection::new(500, "internal", format!("creating /app: {error}")))?;
    let write = |path: &PathBuf, bytes: &[u8]| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)
    };
    for (path, bytes) in &decoded {
        write(&dir.path().join(path), bytes).map_err(|error| {
            Rejection::new(500, "internal", format!("writing /app/{path}: {error}"))
        })?;
    }
    Ok(AppDir {
        dir,
        paths: decoded.into_iter().map(|(path, _)| path).collect(),
        entry,
        entry_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(normalise("./pkg//util.py").unwrap(), "pkg/util.py");
        assert_eq!(normalise("main.py").unwrap(), "main.py");
        for bad in [
            "/etc/passwd",
            "../x.py",
            "a/../../x",
            "",
            ".",
            "a\\b",
            "a\0b",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalise(&"a".repeat(300)).is_err());
    }

    #[test]
    fn files_are_checked_and_written() {
        let file = |path: &str, content: &str| SourceFile {
            path: path.into(),
            content: content.into(),
            encoding: None,
        };
        let app = prepare(
            vec![
                file("main.py", "import pkg.util"),
                file("pkg/util.py", "X = 1"),
            ],
            Some("./main.py".into()),
            4,
            1024,
        )
        .unwrap();
        assert_eq!(app.guest_entry(), "/app/main.py");
        assert_eq!(
            std::fs::read_to_string(app.host_path().join("pkg/util.py")).unwrap(),
            "X = 1"
        );
        let refused = |files, entry: Option<&str>, max_files, max_bytes| {
            prepare(files, entry.map(str::to_owned), max_files, max_bytes)
                .err()
                .map(|rejection| (rejection.status, rejection.code))
        };
        assert_eq!(
            refused(vec![file("a", "")], None, 4, 10),
            Some((422, "invalid_entry"))
        );
        assert_eq!(
            refused(vec![file("a", "")], Some("b"), 4, 10),
            Some((422, "invalid_entry"))
        );
        assert_eq!(
            refused(vec![file("a", ""), file("b", "")], Some("a"), 1, 10),
            Some((422, "too_many_files"))
        );
        assert_eq!(
            refused(vec![file("a", "12345678901")], Some("a"), 4, 10),
            Some((413, "source_too_large"))
        );
        assert_eq!(
            refused(vec![file("a", ""), file("./a", "")], Some("a"), 4, 10),
            Some((422, "duplicate_path"))
        );
        assert_eq!(
            refused(vec![file("a", ""), file("a/b", "")], Some("a"), 4, 10),
            Some((422, "duplicate_path"))
        );
        assert_eq!(
            refused(vec![file("../a", "")], Some("a"), 4, 10),
            Some((422, "invalid_path"))
        );
    }
}
