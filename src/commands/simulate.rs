//! `edgebox simulate SCENARIO.toml | --example NAME [--out DIR]`: run a CDN workload
//! against a deployment and write a report (table on stdout, `report.json`,
//! `report.html`). The work is in `edgebox_simulate`; this file parses
//! flags, installs the Ctrl-C handling and maps outcomes to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use edgebox_simulate::{self as simulate, SimError, examples, scenario::Limit};
use tokio_util::sync::CancellationToken;

/// Exit code when the deployment cannot be reached or started (sysexits' EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code after Ctrl-C (the partial report is written).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["scenario", "example", "from_json"])))]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,
    /// Scenario file (TOML): deployment, workload, clients per region, catalogue, variants.
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// Run a built-in scenario instead: `tiering`, `lb-policies`, `policies` or `trace-live`.
    #[arg(long, value_name = "NAME")]
    pub example: Option<String>,
    /// Re-render the table and report.html (into --out) from an earlier report.json.
    #[arg(long, value_name = "REPORT_JSON")]
    pub from_json: Option<PathBuf>,
    /// Directory for report.json, report.html and node logs [default: simulate-NAME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Check the scenario, print the planned workload and exit without sending load.
    #[arg(long)]
    pub check: bool,
    /// Print the scenario's text (useful with --example, to copy and edit) and exit.
    #[arg(long)]
    pub print: bool,
    /// Override the scenario's run length, e.g. `5s`.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Override the scenario's run length with a request count.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// No progress bar (it is only drawn on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Run the scenario this way instead of its `mode`: `live` (real processes and HTTP),
    /// `model` (in-process on a virtual clock) or `compare` (live, then model, side by side).
    #[arg(long, value_name = "MODE", value_parser = ["live", "model", "compare"])]
    pub mode: Option<String>,
    /// Model mode: variants replayed at once [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
}

#[derive(Debug, clap::Subcommand)]
pub enum SimulateCommand {
    /// Write a synthetic trace: Zipf popularity, one-hit wonders, a daily pattern (seeded).
    TraceGen(TraceGenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceGenArgs {
    /// Requests in the trace.
    #[arg(long, value_name = "N")]
    pub requests: u64,
    /// Objects in the catalogue (one-hit wonders come on top).
    #[arg(long, value_name = "M")]
    pub objects: u64,
    /// Zipf exponent of popularity (0 = uniform).
    #[arg(long, value_name = "A", default_value_t = 0.9)]
    pub zipf: f64,
    /// Share of requests (0..1) for objects requested only once.
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub one_hit_wonders: f64,
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// `csv` (timestamp,object_id,size) or `oracle` (libCacheSim oracleGeneral).
    #[arg(long, value_name = "FORMAT", default_value = "oracle", value_parser = ["csv", "oracle"])]
    pub format: String,
    /// zstd-compress the output.
    #[arg(long)]
    pub zstd: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Median object size (log-normal around it), e.g. `16KiB`.
    #[arg(long, value_name = "SIZE", default_value = "16KiB")]
    pub size: edgebox_config::units::ByteSize,
    /// Client regions for a CSV `region` column, comma-separated (none: no column).
    #[arg(long, value_name = "REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
}

fn trace_gen(args: TraceGenArgs) -> anyhow::Result<ExitCode> {
    use simulate::trace::{Format, generate};
    let options = generate::Options {
        requests: args.requests,
        objects: args.objects,
        zipf: args.zipf,
        one_hit_wonders: args.one_hit_wonders,
        seed: args.seed,
        median_size: args.size.bytes(),
        regions: args.regions,
        ..generate::Options::default()
    };
    let problems = generate::problems(&options);
    if !problems.is_empty() {
        for (key, message) in problems {
            eprintln!(
                "edgebox simulate trace-gen: --{}: {message}",
                key.replace('_', "-")
            );
        }
        return Ok(ExitCode::from(64));
    }
    let format = Format::parse(&args.format).expect("clap checked the format");
    if format == Format::Oracle && !options.regions.is_empty() {
        eprintln!(
            "edgebox simulate trace-gen: --regions needs --format csv (oracleGeneral has no region field)"
        );
        return Ok(ExitCode::from(64));
    }
    let written = generate::write(&options, format, args.zstd, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {written} requests to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    text.parse::<edgebox_config::units::Duration>()
        .map(|duration| duration.get())
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    if let Some(SimulateCommand::TraceGen(trace_args)) = args.command.take() {
        return trace_gen(trace_args);
    }
    if let Some(path) = &args.from_json {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: simulate::report::Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a simulate report", path.display()))?;
        let out_dir = args
            .out
            .clone()
            .unwrap_or_else(|| path.parent().map(PathBuf::from).unwrap_or_default());
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let outcome = simulate::write_report(&report, &out_dir)?;
        print!("{}", simulate::report::table(&report));
        println!("\nreport: {}", outcome.html_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match (&args.scenario, &args.example) {
        (Some(path), _) => {
            if args.print {
                print!(
                    "{}",
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?
                );
                return Ok(ExitCode::SUCCESS);
            }
            simulate::scenario::load_file(path)
        }
        (None, Some(name)) => {
            if args.print {
                match examples::text(name) {
                    Some(text) => print!("{text}"),
                    None => return Ok(unknown_example(name)),
                }
                return Ok(ExitCode::SUCCESS);
            }
            match examples::load(name) {
                Some(loaded) => loaded,
                None => return Ok(unknown_example(name)),
            }
        }
        (None, None) => unreachable!("clap requires a scenario, --example or --from-json"),
    };
    let mut scenario = match loaded {
        Ok(scenario) => scenario,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::from(edgebox_config::EXIT_CONFIG as u8));
        }
    };
    if let Some(mode) = &args.mode {
        let text = scenario
            .text
            .lines()
            .filter(|line| !line.trim_start().starts_with("mode"))
            .collect::<Vec<_>>()
            .join("\n");
        // Checked again as if written in the file, so every rule about modes applies.
        let reparsed = simulate::scenario::parse(
            &format!("mode = {mode:?}\n{text}"),
            &scenario.source,
            &scenario_base_dir(&args),
            &scenario.name,
        );
        scenario = match reparsed {
            Ok(scenario) => scenario,
            Err(errors) => {
                eprint!("{errors}");
                return Ok(ExitCode::from(edgebox_config::EXIT_CONFIG as u8));
            }
        };
    }
    if let Some(duration) = args.duration {
        scenario.workload.limit = Limit::Duration(duration);
    }
    if let Some(requests) = args.requests {
        scenario.workload.limit = Limit::Requests(requests);
    }
    let planned = simulate::workload::Plan::len_hint(&scenario);
    let overridden = args.duration.is_some() || args.requests.is_some();
    let live = scenario.mode == simulate::scenario::Mode::Live;
    if overridden && (planned == 0 || (live && planned as f64 > simulate::scenario::MAX_PLANNED)) {
        eprintln!(
            "edgebox simulate: the override plans {planned} requests; it must plan between 1 and {}",
            simulate::scenario::MAX_PLANNED
        );
        return Ok(ExitCode::from(64));
    }
    if args.check {
        println!(
            "scenario {:?} is valid: {} variant(s) [{}], about {planned} requests per variant at {}/s from {}",
            scenario.name,
            scenario.variants.len(),
            scenario
                .variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            scenario.total_rate(),
            scenario
                .clients
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        return Ok(ExitCode::SUCCESS);
    }

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("simulate-{}", scenario.name)));
    let options = simulate::Options {
        out_dir,
        exe: std::env::current_exe().context("finding the edgebox executable")?,
        progress: !args.no_progress,
        threads: args.threads.map(usize::from),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the simulator's runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let mut signals = edgebox_node::shutdown::StopSignals::install()
            .context("installing the SIGINT/SIGTERM handlers")?;
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("\nedgebox simulate: stopping (Ctrl-C again to quit at once)");
            on_signal.cancel();
            signals.recv().await;
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
        match simulate::run(scenario, &options, cancel.clone()).await {
            Ok(outcome) => {
                print!("{}", simulate::report::table(&outcome.report));
                println!("\nreport: {}", outcome.html_path.display());
                println!("json:   {}", outcome.json_path.display());
                Ok(if outcome.report.interrupted && !outcome.trace_error {
                    ExitCode::from(EXIT_INTERRUPTED)
                } else if outcome.trace_error {
                    // A bad record mid-stream: bad input, like a bad scenario.
                    ExitCode::from(edgebox_config::EXIT_CONFIG as u8)
                } else if outcome.report.error.is_some() {
                    ExitCode::from(EXIT_UNAVAILABLE)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Err(SimError::Scenario(errors)) => {
                eprint!("{errors}");
                Ok(ExitCode::from(edgebox_config::EXIT_CONFIG as u8))
            }
            Err(SimError::Model(error)) => {
                // A bad trace (file, record and field) or a variant whose deployment does
                // not build: bad input, found before any request was replayed.
                eprintln!("edgebox simulate: {error}");
                eprintln!("edgebox simulate: nothing was replayed");
                Ok(ExitCode::from(edgebox_config::EXIT_CONFIG as u8))
            }
            Err(SimError::Interrupted) => {
                eprintln!("edgebox simulate: interrupted before any load was sent; no report");
                Ok(ExitCode::from(EXIT_INTERRUPTED))
            }
            Err(error @ (SimError::Unreachable(_) | SimError::Deployment(_))) => {
                eprintln!("edgebox simulate: {error}");
                eprintln!("edgebox simulate: no load was sent");
                Ok(ExitCode::from(EXIT_UNAVAILABLE))
            }
            Err(error) => Err(error.into()),
        }
    })
}

/// The directory a scenario's relative paths resolve against.
fn scenario_base_dir(args: &Args) -> PathBuf {
    match &args.scenario {
        Some(path) => edgebox_config::base_dir_of_file(path),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

fn unknown_example(name: &str) -> ExitCode {
    eprintln!(
        "edgebox simulate: no example {name:?}; examples: {}",
        examples::names().join(", ")
    );
    ExitCode::from(64)
}
