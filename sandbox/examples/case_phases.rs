//! Times a judged case's instance of CPython entered in different ways (issue 14's judging
//! figure): each variant runs `N` fresh instances one after the other through
//! `exec::run` (Store and WASI setup, instantiation, the guest, dropping the instance),
//! and prints the mean wall and process CPU per instance.
//!
//! `cargo run --release -p edgebox-sandbox --example case_phases [N]` with
//! `EDGEBOX_RUNTIME_DIR` naming a runtime directory that already holds CPython.

use std::sync::Arc;
use std::time::Instant;

use edgebox_sandbox::RuntimeDir;
use edgebox_sandbox::engine::{PoolSizes, SandboxEngine};
use edgebox_sandbox::exec::{self, Program, Sampler};
use edgebox_sandbox::jobs::{Job, Language, Limits, Stream};
use edgebox_sandbox::{pyline, runtimes};

/// Every timed instance's limits: far above what a hello world needs.
const LIMITS: Limits = Limits {
    wall_ms: 10_000,
    cpu_ms: 10_000,
    memory_mb: 256,
    output_bytes: 1 << 20,
};

/// User plus system CPU of this process, in seconds (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Minor page faults of this process so far.
fn minor_faults() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let path = std::env::var_os(runtimes::RUNTIME_DIR_ENV)
        .map(Into::into)
        .unwrap_or_else(|| "target/edgebox-runtimes".into());
    let engine = SandboxEngine::new(
        RuntimeDir { path },
        &PoolSizes {
            instances: 8,
            max_memory: 512 << 20,
        },
    )
    .expect("engine");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let runtime = engine
            .runtime(&runtimes::PYTHON)
            .await
            .expect("CPython runtime");
        let source =
            std::env::var("CASE_SOURCE").unwrap_or_else(|_| "print('hello', input())\n".to_owned());
        let stdin =
            pyline::bootstrap_stdin(source.as_bytes(), pyline::Form::Source, &[], "", b"case\n");
        // The program compiled once, as a judged job does.
        let compile_job = Arc::new(Job::new("compile".into(), Language::Python, LIMITS, false));
        let job_argv = match runtime.prepared {
            true => vec!["python".to_owned()],
            false => pyline::bootstrap_argv(),
        };
        exec::run(
            compile_job.clone(),
            Program {
                pre: runtime.pre.clone(),
                entry: runtime.entry(),
                argv: job_argv.clone(),
                stdin: pyline::bootstrap_stdin(
                    source.as_bytes(),
                    pyline::Form::Compile,
                    &[],
                    "",
                    b"",
                ),
                sampler: Sampler::None,
                scratch: None,
                app: None,
            },
        )
        .await;
        let code = compile_job.output(Stream::Stdout);
        let code_stdin = pyline::bootstrap_stdin(&code, pyline::Form::Code, &[], "", b"case\n");
        let variants: Vec<(&str, Vec<String>, runtimes::Entry)> = vec![
            (
                "job entry, compiled once",
                job_argv.clone(),
                runtime.entry().entry,
            ),
            (
                "job entry (hello world)",
                match runtime.prepared {
                    true => vec!["python".to_owned()],
                    false => pyline::bootstrap_argv(),
                },
                runtime.entry().entry,
            ),
            (
                "run: -u -I -c pass",
                ["python", "-u", "-I", "-c", "pass"]
                    .map(str::to_owned)
                    .to_vec(),
                runtimes::Entry::Snapshot,
            ),
            (
                "turn: bootstrap source",
                Vec::new(),
                runtimes::Entry::Turn {
                    source: String::leak(format!(
                        "{}{}",
                        pyline::BOOTSTRAP_DEFS,
                        pyline::BOOTSTRAP_RUN
                    )),
                },
            ),
            (
                "instantiate only (no _start)",
                Vec::new(),
                runtimes::Entry::Start,
            ),
            (
                "turn: pass",
                Vec::new(),
                runtimes::Entry::Turn { source: "pass" },
            ),
            (
                "turn: os._exit(0)",
                Vec::new(),
                runtimes::Entry::Turn {
                    source: "import os\nos._exit(0)",
                },
            ),
        ];
        let only: Vec<String> = std::env::args().skip(2).collect();
        for (index, (name, argv, entry)) in variants.into_iter().enumerate() {
            if !only.is_empty() && !only.contains(&index.to_string()) {
                continue;
            }
            let mut wall = 0.0;
            let cpu_start = cpu_seconds();
            let faults_start = minor_faults();
            let mut out = Vec::new();
            for i in 0..n + 10 {
                let job = Arc::new(Job::new("phase".into(), Language::Python, LIMITS, false));
                let mut point = runtime.entry();
                point.entry = entry;
                let program = Program {
                    pre: runtime.pre.clone(),
                    entry: point,
                    argv: argv.clone(),
                    stdin: match index {
                        0 => code_stdin.clone(),
                        _ => stdin.clone(),
                    },
                    sampler: Sampler::Python(runtime.probe),
                    scratch: None,
                    app: None,
                };
                let started = Instant::now();
                let outcome = exec::run(job.clone(), program).await;
                if i >= 10 {
                    wall += started.elapsed().as_secs_f64();
                } else if i == 0 {
                    out = job.output(Stream::Stdout);
                    println!(
                        "{name}: {outcome:?} stdout {:?} stderr {:?}",
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&job.output(Stream::Stderr))
                    );
                }
            }
            let cpu = cpu_seconds() - cpu_start;
            let faults = minor_faults() - faults_start;
            let _ = out;
            println!(
                "{name:32} wall {:7.3} ms  cpu {:7.3} ms  {:6.0} minor faults per instance",
                wall * 1000.0 / n as f64,
                cpu * 1000.0 / (n + 10) as f64,
                faults / (n + 10) as f64
            );
        }
    });
}
