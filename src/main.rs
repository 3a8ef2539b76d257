//! `edgebox`: one binary for every daemon of a deployment and the tools that drive it.
//!
//! This file only parses arguments and dispatches; each command lives in `commands/`.

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Every daemon makes and frees many small, short-lived allocations per request (header
/// maps, values, buffers); glibc's malloc was ~19 % of the edge's CPU on cache hits
/// (`malloc`, `_int_free`, `malloc_consolidate`), mimalloc's per-thread free lists make them
/// cheap. See benches/results/edge_hot_path.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Errors are values on the daemons' hot paths (every Python job ends in wasmtime's
    // `proc_exit` error, every refused request builds one): with `RUST_BACKTRACE=1` in the
    // environment, each would capture a backtrace nobody prints (~5 % of the sandbox's
    // CPU). Library backtraces stay off unless asked for by name; panics still honour
    // `RUST_BACKTRACE`.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first statement of `main`: no other thread exists yet to read the
        // environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = commands::Cli::parse();
    commands::init_tracing(cli.log_format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("edgebox: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
