//! `edgebox simulate`: drive a workload from clients in regions against a deployment,
//! once per variant of its config, and report hit ratio per tier, origin offload,
//! latency and errors per region.
//!
//! The life of a run: a scenario file is checked in one place ([`scenario`]); the
//! workload is a pure function of its seed ([`workload`]); the target is prepared — a
//! deployment the simulator starts itself ([`deploy`], each variant a rewritten config
//! ([`variant`]) on a fresh data directory), a running one driven through its control
//! plane ([`control`]), or edges named directly; the load generator ([`load`]) runs the
//! same plan against each variant, open loop; and the report ([`report`], [`html`]) is
//! written even when the run is interrupted.

pub mod control;
pub mod deploy;
pub mod examples;
pub mod html;
pub mod load;
pub mod model;
mod raw;
pub mod report;
pub mod scenario;
pub mod target;
pub mod trace;
pub mod trace_live;
pub mod variant;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgebox_config::Deployment;
use tokio_util::sync::CancellationToken;

pub use scenario::{Scenario, ScenarioErrors, Target};

/// Why a simulation could not run (problems in the scenario file are [`ScenarioErrors`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Scenario(#[from] ScenarioErrors),
    #[error("cannot reach the deployment: {0}")]
    Unreachable(String),
    #[error("deployment: {0}")]
    Deployment(String),
    #[error("deployment: {0}")]
    Target(#[from] target::TargetError),
    #[error("deployment: {0}")]
    Variant(#[from] variant::VariantError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted before any load was sent")]
    Interrupted,
    #[error(transparent)]
    Model(#[from] model::ModelError),
}

/// How to run, beyond what the scenario says.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `report.json`, `report.html` and node logs go.
    pub out_dir: PathBuf,
    /// The `edgebox` executable, to start deployment nodes with.
    pub exe: PathBuf,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Model mode: variants replayed at once (default: one per core).
    pub threads: Option<usize>,
}

/// A finished (or interrupted) simulation.
#[derive(Debug)]
pub struct Outcome {
    pub report: report::Report,
    pub json_path: PathBuf,
    pub html_path: PathBuf,
    /// The run was stopped mid-stream by a bad trace record (`report.error` says which):
    /// bad input, not an unavailable deployment.
    pub trace_error: bool,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the load goes to while one variant runs.
enum Prepared {
    Started {
        work: tempfile::TempDir,
        base_dir: PathBuf,
        catalogue_root: PathBuf,
        base: Box<Deployment>,
        /// A trace replayed live: what its read-through found.
        trace: Option<trace_live::Checked>,
    },
    Running {
        control_plane: control::ControlPlane,
        original: String,
        targets: target::Targets,
    },
    Edges(target::Targets),
}

/// Runs a checked scenario: every variant in turn, then writes the report. Fails before
/// sending any load when the target cannot be reached or the scenario does not fit it.
/// Cancelling `cancel` stops the load promptly; the partial report is still written.
pub async fn run(
    scenario: Scenario,
    options: &Options,
    cancel: CancellationToken,
) -> Result<Outcome, SimError> {
    match scenario.mode {
        scenario::Mode::Model => run_model(scenario, options, cancel).await,
        scenario::Mode::Live => run_live(scenario, options, cancel).await,
        scenario::Mode::Compare => run_compare(scenario, options, cancel).await,
    }
}

/// `compare` mode: the scenario live, then the same requests in model mode; one report
/// with both sets of variants and, per variant, the share each tier answered side by side.
async fn run_compare(
    scenario: Scenario,
    options: &Options,
    cancel: CancellationToken,
) -> Result<Outcome, SimError> {
    let mut model_scenario = scenario.clone();
    model_scenario.mode = scenario::Mode::Model;
    let live = run_live(scenario, options, cancel.clone()).await?;
    if live.report.interrupted || live.report.error.is_some() {
        return Ok(live);
    }
    eprintln!("edgebox simulate: the same requests in model mode");
    let model = run_model(model_scenario, options, cancel).await?;
    let mut report = live.report;
    report.mode = "compare".to_owned();
    report.agreement = report
        .variants
        .iter()
        .zip(&model.report.variants)
        .map(|(live, model)| report::agreement(live, model))
        .collect();
    let mut variants = Vec::new();
    for (mut variant, suffix) in report
        .variants
        .drain(..)
        .map(|v| (v, "live"))
        .chain(model.report.variants.into_iter().map(|v| (v, "model")))
    {
        variant.name = format!("{} ({suffix})", variant.name);
        variants.push(variant);
    }
    report.variants = variants;
    report.interrupted = model.report.interrupted;
    report.error = model.report.error;
    report.finished_at = now_rfc3339();
    let mut written = write_report(&report, &options.out_dir)?;
    written.trace_error = model.trace_error;
    Ok(written)
}

/// Live mode: real processes, real HTTP, on the wall clock.
async fn run_live(
    mut scenario: Scenario,
    options: &Options,
    cancel: CancellationToken,
) -> Result<Outcome, SimError> {
    edgebox_node::install_crypto();
    let started_at = now_rfc3339();

    let (prepared, target_text) = prepare(&mut scenario).await?;
    // Only now, so that a scenario or target that fails leaves nothing behind.
    std::fs::create_dir_all(&options.out_dir).map_err(|source| SimError::Io {
        what: format!("creating {}", options.out_dir.display()),
        source,
    })?;
    let sampler = Arc::new(workload::Sampler::new(
        scenario.catalogue.popularity,
        workload::object_count(&scenario.catalogue.objects),
    ));
    let checked_trace = match &prepared {
        Prepared::Started { trace, .. } => trace.clone(),
        _ => None,
    };
    let (digest, planned) = match &checked_trace {
        Some(checked) => (checked.digest.clone(), checked.records),
        None => workload::digest(&scenario, sampler.clone()),
    };
    let scale = checked_trace
        .as_ref()
        .map_or(0.0, |checked| checked.scale(scenario.total_rate()));
    let summary = report::summarize(&scenario, digest, planned, target_text);
    let mut report = report::Report {
        scenario: summary,
        started_at,
        finished_at: String::new(),
        interrupted: false,
        error: None,
        mode: "live".to_owned(),
        variants: Vec::new(),
        agreement: Vec::new(),
    };

    let mut trace_error = false;
    let result = run_variants(
        &scenario,
        options,
        &prepared,
        (sampler, scale),
        &cancel,
        &mut report,
        &mut trace_error,
    )
    .await;

    if let Prepared::Running {
        control_plane,
        original,
        ..
    } = &prepared
        && scenario.variants.iter().any(|v| !v.settings.is_empty())
        && let Err(err) = control_plane.apply(original, scenario.ready_timeout).await
    {
        tracing::error!("putting the original config back: {err}");
        eprintln!("edgebox simulate: putting the original config back: {err}");
    }
    drop(prepared);
    if let Err(err) = result {
        if report.variants.is_empty() {
            return Err(err);
        }
        eprintln!("edgebox simulate: {err}; writing the partial report");
        report.error = Some(err.to_string());
    }
    report.interrupted |= cancel.is_cancelled();
    report.finished_at = now_rfc3339();
    let mut written = write_report(&report, &options.out_dir)?;
    written.trace_error = trace_error;
    Ok(written)
}

/// Model mode: checks the trace whole first (a bad record stops the run before any
/// variant replays), then replays every variant in parallel on the virtual clock.
async fn run_model(
    scenario: Scenario,
    options: &Options,
    cancel: CancellationToken,
) -> Result<Outcome, SimError> {
    let started_at = now_rfc3339();
    let (planned, target_text) = match &scenario.trace {
        Some(scenario::TraceSpec::File { path, format }) => {
            let (path, format) = (path.clone(), *format);
            let regions: Vec<String> = scenario.clients.iter().map(|c| c.name.clone()).collect();
            eprintln!("edgebox simulate: checking {}", path.display());
            let summary =
                tokio::task::spawn_blocking(move || trace::check(&path, format, &regions))
                    .await
                    .expect("trace check does not panic")
                    .map_err(model::ModelError::from)?;
            let text = format!(
                "trace {} ({} records over {:.0} s), model of {}",
                scenario_trace_name(&scenario),
                summary.records,
                summary.last_ms as f64 / 1000.0,
                scenario
                    .deployment()
                    .map_or("the deployment", |d| d.source.as_str())
            );
            (summary.records, text)
        }
        Some(scenario::TraceSpec::Generate(generated)) => (
            generated.requests,
            format!(
                "generated trace ({} requests, {} objects, zipf {}, {}% one-hit wonders), model of {}",
                generated.requests,
                generated.objects,
                generated.zipf,
                generated.one_hit_wonders * 100.0,
                scenario
                    .deployment()
                    .map_or("the deployment", |d| d.source.as_str())
            ),
        ),
        None => (
            workload::Plan::len_hint(&scenario),
            format!(
                "synthetic workload, model of {}",
                scenario
                    .deployment()
                    .map_or("the deployment", |d| d.source.as_str())
            ),
        ),
    };
    let planned = match scenario.workload.limit {
        scenario::Limit::Requests(limit) => planned.min(limit),
        scenario::Limit::Duration(_) => planned,
    };
    std::fs::create_dir_all(&options.out_dir).map_err(|source| SimError::Io {
        what: format!("creating {}", options.out_dir.display()),
        source,
    })?;
    let digest = {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(scenario.text.as_bytes());
        hasher.update(planned.to_le_bytes());
        let hash = hasher.finalize();
        hash[..8].iter().map(|byte| format!("{byte:02x}")).collect()
    };
    let mut report = report::Report {
        scenario: report::summarize(&scenario, digest, planned, target_text),
        started_at,
        finished_at: String::new(),
        interrupted: false,
        error: None,
        mode: "model".to_owned(),
        variants: Vec::new(),
        agreement: Vec::new(),
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(model::Progress::default());
    let watcher = {
        let (stop, cancel) = (stop.clone(), cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let bar = options
        .progress
        .then(|| model_progress_bar(planned * scenario.variants.len() as u64, progress.clone()));
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let shared = Arc::new(scenario);
    let outcome = {
        let (scenario, stop, progress) = (shared.clone(), stop.clone(), progress.clone());
        tokio::task::spawn_blocking(move || model::run_all(&scenario, &stop, &progress, threads))
            .await
            .expect("model runs do not panic")
    };
    watcher.abort();
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let outcome = outcome?;
    report.variants = outcome.reports;
    let trace_error = outcome.error.is_some();
    if let Some(err) = outcome.error {
        eprintln!("edgebox simulate: {err}; writing the partial report");
        report.error = Some(err.to_string());
    }
    report.interrupted = cancel.is_cancelled();
    report.finished_at = now_rfc3339();
    let mut written = write_report(&report, &options.out_dir)?;
    written.trace_error = trace_error;
    Ok(written)
}

fn scenario_trace_name(scenario: &Scenario) -> String {
    match &scenario.trace {
        Some(scenario::TraceSpec::File { path, .. }) => path.display().to_string(),
        _ => String::new(),
    }
}

/// The model's bar: requests replayed over every variant, the virtual time reached and
/// the replay speed.
fn model_progress_bar(
    total: u64,
    progress: Arc<model::Progress>,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "model [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    )
    .expect("valid template");
    bar.set_style(style);
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            let done = progress.done.load(Ordering::Relaxed);
            let simulated = progress.simulated_ms.load(Ordering::Relaxed) / 1000;
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            ticking.set_position(done);
            ticking.set_message(format!(
                "simulated {:02}:{:02}:{:02} · {:.2} M req/s",
                simulated / 3600,
                simulated / 60 % 60,
                simulated % 60,
                rate / 1e6
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (bar, ticker)
}

/// Writes `report.json` and `report.html` into `out_dir`.
pub fn write_report(report: &report::Report, out_dir: &Path) -> Result<Outcome, SimError> {
    let json_path = out_dir.join("report.json");
    let html_path = out_dir.join("report.html");
    let json = serde_json::to_string_pretty(report).expect("reports serialise");
    // Replaced atomically: a reader never sees half a report.
    let write = |path: &Path, contents: &str| {
        edgebox_node::fs::atomic_write(path, contents.as_bytes()).map_err(|source| SimError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    };
    write(&json_path, &json)?;
    write(&html_path, &html::render(report))?;
    Ok(Outcome {
        report: report.clone(),
        json_path,
        html_path,
        trace_error: false,
    })
}

/// Makes the target ready for load (or fails before any is sent): checks that it can
/// be reached, binds a running deployment's config, writes the catalogue for a deployment
/// the simulator starts. Returns it with a description for the report.
async fn prepare(scenario: &mut Scenario) -> Result<(Prepared, String), SimError> {
    match scenario.target.clone() {
        Target::Edges { edges } => {
            let targets = target::direct(&edges, &scenario.clients);
            load::check_reachable(&targets).await?;
            let text = edges
                .iter()
                .map(|(region, urls)| format!("{region}: {}", urls.join(" ")))
                .collect::<Vec<_>>()
                .join("; ");
            Ok((Prepared::Edges(targets), format!("edges {text}")))
        }
        Target::Running {
            control_plane,
            token,
            ..
        } => {
            let cp = control::ControlPlane::new(&control_plane, &token)?;
            cp.check_reachable().await?;
            let current = cp.config().await?;
            let deployment = edgebox_config::parse(
                &current.toml,
                &format!("config version {} of {control_plane}", current.version),
                &std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            )
            .map_err(|errors| SimError::Deployment(errors.to_string()))?;
            scenario.bind(deployment.clone())?;
            // Nodes report the addresses they bound; configured ones stand in otherwise.
            let addrs = cp.addresses().await.unwrap_or_else(|err| {
                tracing::warn!("cannot list nodes, using configured addresses: {err}");
                Default::default()
            });
            let mut targets = target::choose(
                &deployment,
                &scenario.clients,
                scenario.workload.protocol,
                &|node, service| {
                    addrs
                        .get(&(node.to_owned(), service.to_owned()))
                        .copied()
                        .or_else(|| target::configured_addr(&deployment, node, service))
                },
            )?;
            if let Some(started_with) = cp.started_with().await {
                targets.credentials_from(&started_with);
            }
            load::check_reachable(&targets).await?;
            Ok((
                Prepared::Running {
                    control_plane: cp,
                    original: current.toml,
                    targets,
                },
                format!(
                    "running deployment at {control_plane} (config version {})",
                    current.version
                ),
            ))
        }
        Target::Start {
            location,
            deployment,
        } => {
            let work = tempfile::Builder::new()
                .prefix("edgebox-simulate-")
                .tempdir()
                .map_err(|source| SimError::Io {
                    what: "creating a work directory".to_owned(),
                    source,
                })?;
            let catalogue_root = work.path().join("catalogue");
            let root = catalogue_root.clone();
            let mut trace = None;
            let mut text = format!(
                "{} started by the simulator (edges and origins, on free ports)",
                deployment.source
            );
            if scenario.trace.is_some() {
                // Every record is checked (and the objects written) before any load.
                eprintln!(
                    "edgebox simulate: checking {} and writing its objects",
                    trace_live::trace_name(scenario)
                );
                let checking = scenario.clone();
                let checked =
                    tokio::task::spawn_blocking(move || trace_live::prepare(&checking, &root))
                        .await
                        .expect("the trace check does not panic")
                        .map_err(model::ModelError::from)?;
                text = format!(
                    "trace {} ({} requests over {:.0} s of trace time, {} objects, replayed at {} requests/s), {text}",
                    trace_live::trace_name(scenario),
                    checked.records,
                    checked.span_ms as f64 / 1000.0,
                    checked.objects,
                    scenario.total_rate(),
                );
                trace = Some(checked);
            } else {
                let objects = scenario.catalogue.objects.clone();
                let seed = scenario.seed;
                let bytes = tokio::task::spawn_blocking(move || {
                    workload::write_catalogue(&objects, seed, &root)
                })
                .await
                .expect("catalogue writer does not panic")
                .map_err(|source| SimError::Io {
                    what: format!("writing the catalogue under {}", catalogue_root.display()),
                    source,
                })?;
                tracing::info!(bytes, root = %catalogue_root.display(), "catalogue written");
            }
            Ok((
                Prepared::Started {
                    work,
                    base_dir: scenario::deployment_base_dir(&location),
                    catalogue_root,
                    base: deployment,
                    trace,
                },
                text,
            ))
        }
    }
}

async fn run_variants(
    scenario: &Scenario,
    options: &Options,
    prepared: &Prepared,
    (sampler, scale): (Arc<workload::Sampler>, f64),
    cancel: &CancellationToken,
    report: &mut report::Report,
    trace_error: &mut bool,
) -> Result<(), SimError> {
    for (index, variant) in scenario.variants.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        eprintln!(
            "edgebox simulate: variant {}/{} {:?}",
            index + 1,
            scenario.variants.len(),
            variant.name
        );
        let mut started = None;
        let targets = match prepared {
            Prepared::Edges(targets) => targets.clone(),
            Prepared::Running {
                control_plane,
                targets,
                ..
            } => {
                if let Some(text) = &variant.deployment_text
                    && !variant.settings.is_empty()
                {
                    control_plane.apply(text, scenario.ready_timeout).await?;
                }
                control_plane.purge_all().await?;
                targets.clone()
            }
            Prepared::Started {
                work,
                base_dir,
                catalogue_root,
                base,
                ..
            } => {
                let text = variant.deployment_text.as_deref().unwrap_or(&base.text);
                let dir = work.path().join(format!("variant-{index}"));
                let log_dir = options.out_dir.join("logs").join(slug(&variant.name));
                let started_variant = start_variant(
                    text,
                    base_dir,
                    catalogue_root,
                    &dir,
                    &log_dir,
                    scenario.ready_timeout,
                    &options.exe,
                    cancel,
                )
                .await;
                let running = match started_variant {
                    Ok(running) => running,
                    Err(SimError::Interrupted) => break,
                    Err(err) => return Err(err),
                };
                // Routes come from the base deployment so that every variant sends the
                // same request to the same edge, even one that removes the shield.
                let chosen = target::choose(
                    base,
                    &scenario.clients,
                    scenario.workload.protocol,
                    &|node, service| running.addr(node, service),
                );
                let chosen = match chosen {
                    Ok(mut chosen) => {
                        chosen.credentials_from(&running.deployment);
                        chosen
                    }
                    Err(err) => {
                        let mut running = running;
                        running.stop(Duration::from_secs(15)).await;
                        return Err(SimError::Target(err));
                    }
                };
                started = Some(running);
                chosen
            }
        };
        let planned = report.scenario.planned_requests;
        let outcome = run_one(
            scenario,
            planned,
            variant,
            index,
            &targets,
            (sampler.clone(), scale),
            options,
            cancel,
        )
        .await;
        if let Some(mut running) = started {
            running.stop(Duration::from_secs(15)).await;
        }
        let (variant_report, error) = outcome?;
        report.variants.push(variant_report);
        if let Some(err) = error {
            // A bad record mid-stream: this variant's partial report is kept, no other
            // variant runs.
            *trace_error = true;
            return Err(model::ModelError::from(err).into());
        }
    }
    Ok(())
}

/// Writes a variant's deployment (free ports, its own data directory) and starts it.
/// A port taken by someone else between choosing and binding makes a node fail with
/// "address in use"; then new ports are chosen and the start is tried again.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn start_variant(
    text: &str,
    base_dir: &Path,
    catalogue_root: &Path,
    dir: &Path,
    log_dir: &Path,
    ready_timeout: Duration,
    exe: &Path,
    cancel: &CancellationToken,
) -> Result<deploy::Started, SimError> {
    const ATTEMPTS: usize = 3;
    let io = |what: String| move |source| SimError::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let config_path = dir.join("deployment.toml");
    for attempt in 1..=ATTEMPTS {
        let rewritten = variant::for_started(text, base_dir, &dir.join("data"), catalogue_root)?;
        std::fs::write(&config_path, &rewritten)
            .map_err(io(format!("writing {}", config_path.display())))?;
        let deployment = edgebox_config::load_file(&config_path)
            .map_err(|errors| SimError::Deployment(errors.to_string()))?;
        match deploy::start(
            exe,
            &config_path,
            &deployment,
            log_dir,
            ready_timeout,
            cancel,
        )
        .await
        {
            Err(SimError::Deployment(message))
                if attempt < ATTEMPTS && message.to_ascii_lowercase().contains("in use") =>
            {
                tracing::warn!(
                    attempt,
                    "a port was taken meanwhile; starting again on other ports"
                );
            }
            result => return result,
        }
    }
    unreachable!("the last attempt returns")
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
#[tracing::instrument(name = "variant", skip_all, fields(variant = %variant.name))]
async fn run_one(
    scenario: &Scenario,
    planned: u64,
    variant: &scenario::Variant,
    index: usize,
    targets: &target::Targets,
    (sampler, scale): (Arc<workload::Sampler>, f64),
    options: &Options,
    cancel: &CancellationToken,
) -> Result<(report::VariantReport, Option<trace::TraceError>), SimError> {
    let client = load::client(scenario)?;
    let requests =
        load::Requests::open(scenario, sampler, scale).map_err(model::ModelError::from)?;
    let before = report::edge_counters(targets).await;
    if let Some(policy) = variant.settings.l1_policy {
        check_l1_policy(policy, &before)?;
    }
    let counters = Arc::new(load::Counters::default());
    let progress = progress_bar(
        scenario,
        planned,
        variant,
        index,
        options.progress,
        counters.clone(),
    );
    let mut run = load::run(scenario, requests, targets, client, counters, cancel).await;
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    let after = report::edge_counters(targets).await;
    let edges = report::edge_stats(targets, &before, &after);
    let error = run.error.take();
    let report = report::variant_report(
        scenario,
        &variant.name,
        &variant.description,
        &variant.settings,
        &run,
        targets,
        edges,
    );
    Ok((report, error))
}

/// Fails a variant whose edges say they run another L1 policy than it asks for: an edge
/// builds L1 when it starts and a reload keeps it, so a running deployment reconfigured
/// through its control plane keeps its old policy (a deployment the simulator starts runs
/// the variant's config from the start). Edges that do not say are not held against it.
fn check_l1_policy(
    policy: edgebox_cache_model::eviction::PolicyKind,
    stats: &BTreeMap<String, Result<edgebox_wire::edge::EdgeStats, String>>,
) -> Result<(), SimError> {
    for (edge, stats) in stats {
        if let Ok(stats) = stats
            && let Some(running) = &stats.cache.l1_policy
            && running != policy.as_str()
        {
            return Err(SimError::Deployment(format!(
                "edge {edge} runs L1 policy {running:?}, the variant asks for {:?}: an edge builds L1 when it starts and a reload keeps it; restart the edges (or let the simulator start the deployment)",
                policy.as_str()
            )));
        }
    }
    Ok(())
}

fn progress_bar(
    scenario: &Scenario,
    planned: u64,
    variant: &scenario::Variant,
    index: usize,
    show: bool,
    counters: Arc<load::Counters>,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(planned),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    )
    .expect("valid template");
    bar.set_style(style);
    bar.set_prefix(format!(
        "[{}/{}] {}",
        index + 1,
        scenario.variants.len(),
        variant.name
    ));
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let sent = counters.sent.load(Ordering::Relaxed);
            let done = counters.done.load(Ordering::Relaxed);
            let errors = counters.errors.load(Ordering::Relaxed);
            let dropped = counters.dropped.load(Ordering::Relaxed);
            let offloaded = counters.offloaded.load(Ordering::Relaxed);
            let ok = done.saturating_sub(errors);
            let hit = if ok == 0 {
                0.0
            } else {
                offloaded as f64 / ok as f64 * 100.0
            };
            ticking.set_position(sent + dropped);
            ticking.set_message(format!(
                "in flight {} · err {errors} · dropped {dropped} · from cache {hit:.1}%",
                sent.saturating_sub(done)
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((bar, ticker))
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
