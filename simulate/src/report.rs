//! What a run found, per variant and client region: requests, hit ratio by tier, origin
//! offload, latency percentiles (client-measured and the simulated part), errors; as
//! JSON (this module's types serialise to `report.json`) and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use edgebox_wire::edge::EdgeStats as WireEdgeStats;
use serde::{Deserialize, Serialize};

use super::load::{LoadRun, Outcome, Sample, Tier};
use super::scenario::{Limit, Scenario, Settings};
use super::target::{Edge, Targets};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: ScenarioSummary,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// The run was stopped (Ctrl-C) before every variant finished: the report is partial.
    pub interrupted: bool,
    /// Why the run stopped early other than Ctrl-C (e.g. a variant's deployment failed
    /// to start); the variants before it are reported.
    #[serde(default)]
    pub error: Option<String>,
    /// `live` (real processes and HTTP) or `model` (in-process, virtual clock).
    #[serde(default = "live")]
    pub mode: String,
    pub variants: Vec<VariantReport>,
    /// `compare` mode: each variant's share of requests per tier, live against model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agreement: Vec<Agreement>,
}

/// One variant run live and in model mode: who answered, side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agreement {
    pub variant: String,
    /// `l1`, `l2`, `parent`, `origin`, then `offload` (origin offload by requests).
    pub rows: Vec<AgreementRow>,
    /// The largest difference of any row, in percentage points.
    pub max_difference_pp: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgreementRow {
    pub tier: String,
    pub live: f64,
    pub model: f64,
    pub difference_pp: f64,
}

/// Live and model shares per tier, live counted over the requests that were answered
/// (a request dropped at the concurrency bound or failed has no tier to compare).
pub fn agreement(live: &VariantReport, model: &VariantReport) -> Agreement {
    let answered: u64 = ["l1", "l2", "parent", "origin"]
        .iter()
        .map(|tier| live.total.tiers.get(*tier).map_or(0, |t| t.requests))
        .sum();
    let share = |report: &VariantReport, tier: &str, total: u64| {
        let requests = report.total.tiers.get(tier).map_or(0, |t| t.requests);
        if total == 0 {
            0.0
        } else {
            requests as f64 / total as f64
        }
    };
    let mut rows: Vec<AgreementRow> = ["l1", "l2", "parent", "origin"]
        .iter()
        .map(|tier| {
            let live_share = share(live, tier, answered);
            let model_share = share(model, tier, model.total.requests);
            AgreementRow {
                tier: (*tier).to_owned(),
                live: live_share,
                model: model_share,
                difference_pp: (live_share - model_share).abs() * 100.0,
            }
        })
        .collect();
    let origin = |rows: &[AgreementRow], pick: fn(&AgreementRow) -> f64| {
        1.0 - rows
            .iter()
            .find(|row| row.tier == "origin")
            .map_or(0.0, pick)
    };
    let (live_offload, model_offload) = (
        origin(&rows, |row| row.live),
        origin(&rows, |row| row.model),
    );
    rows.push(AgreementRow {
        tier: "offload".to_owned(),
        live: live_offload,
        model: model_offload,
        difference_pp: (live_offload - model_offload).abs() * 100.0,
    });
    Agreement {
        variant: live.name.clone(),
        max_difference_pp: rows.iter().map(|row| row.difference_pp).fold(0.0, f64::max),
        rows,
    }
}

fn live() -> String {
    "live".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub name: String,
    pub description: String,
    pub source: String,
    pub seed: u64,
    /// Fingerprint of the planned request sequence; equal digests, equal workloads.
    pub workload_digest: String,
    pub planned_requests: u64,
    pub limit: serde_json::Value,
    pub concurrency: usize,
    pub arrivals: serde_json::Value,
    pub uncacheable: f64,
    pub popularity: serde_json::Value,
    pub catalogue: serde_json::Value,
    pub clients: Vec<ClientSummary>,
    /// What the load was sent to, in words.
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSummary {
    pub region: String,
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantReport {
    pub name: String,
    pub description: String,
    pub settings: serde_json::Value,
    pub elapsed_s: f64,
    /// This variant was cut short by Ctrl-C.
    pub interrupted: bool,
    /// Planned requests never sent because of the interruption.
    pub unsent: u64,
    pub total: RegionReport,
    pub regions: Vec<RegionReport>,
    pub timeline: Timeline,
    /// Which edge each region's clients were sent to.
    pub routes: Vec<Route>,
    /// Each edge's own counters over the run (from its admin `/stats`), when available.
    pub edges: Vec<EdgeStats>,
    /// Model mode only: the policy and size simulated, speed, origin load and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStats>,
}

/// What model mode adds to a variant's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelStats {
    pub l1_policy: String,
    /// L1 bytes of each client-facing edge: the x axis of the miss-ratio curves.
    pub l1_capacity: u64,
    /// Virtual time the requests spanned.
    pub simulated_s: f64,
    /// Wall-clock time the replay took.
    pub wall_s: f64,
    /// CPU time the replaying thread ran (wall time where the OS does not say).
    #[serde(default)]
    pub cpu_s: f64,
    pub requests_per_s: f64,
    /// Requests per second of the replaying thread's own CPU time: the speed on one core,
    /// whatever else the machine was running.
    #[serde(default)]
    pub requests_per_cpu_s: f64,
    pub l1_evictions: u64,
    /// Load on each origin: totals and the busiest second.
    pub origins: Vec<OriginLoad>,
    /// Present when the scenario has a `[cost]` section.
    pub cost: Option<CostTable>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OriginLoad {
    pub name: String,
    pub requests: u64,
    pub bytes: u64,
    pub peak_requests_per_s: u64,
    pub peak_bytes_per_s: u64,
}

/// A variant's traffic priced by the scenario's `[cost]`, for the simulated time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CostTable {
    pub currency: String,
    /// Bytes delivered to clients, priced per region.
    pub client_egress: f64,
    pub origin_requests: f64,
    pub origin_egress: f64,
    /// Every edge's L1 and L2 capacity, held for the simulated time.
    pub storage: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    pub region: String,
    pub edge: String,
    pub url: String,
    /// Requests the simulator sent to this edge.
    pub requests: u64,
    /// Requests this edge counted itself over the run (admin `/stats`), when available;
    /// equal to `requests` when nothing else sent it traffic.
    pub edge_reported: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionReport {
    pub region: String,
    pub planned_rate: f64,
    /// Requests sent per second, over the time requests were being sent.
    pub achieved_rate: f64,
    /// Requests sent (including ones cancelled by an interruption).
    pub requests: u64,
    /// Requests answered with a status below 400.
    pub ok: u64,
    /// Transport failures and statuses of 400 and above.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Due while `concurrency` requests were in flight: not sent.
    pub dropped: u64,
    /// Sent more than 100 ms after their planned time.
    pub late: u64,
    /// In flight when the run was interrupted.
    pub cancelled: u64,
    pub status: BTreeMap<String, u64>,
    /// Successful requests by the tier that answered (`X-Cache-Tier`).
    pub tiers: BTreeMap<String, TierStats>,
    /// Successful requests by `X-Cache` value (`HIT`, `MISS`, ... or `none`).
    pub x_cache: BTreeMap<String, u64>,
    /// Share of successful requests answered by l1, l2 or the parent.
    pub hit_ratio: f64,
    pub origin_offload: Offload,
    pub bytes: u64,
    /// Client-measured time from sending to the last body byte.
    pub latency_ms: Option<Percentiles>,
    /// The simulated part, from `Server-Timing`.
    pub simulated_ms: Option<Percentiles>,
    /// The edge's own total, from `Server-Timing`.
    pub server_total_ms: Option<Percentiles>,
    /// `[latency_ms, cumulative share]` points of the latency distribution.
    pub latency_cdf: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierStats {
    pub requests: u64,
    pub ratio: f64,
    pub bytes: u64,
}

/// Share of successful requests and of their bytes that never reached an origin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Offload {
    pub requests: f64,
    pub bytes: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_s: f64,
    pub points: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Start of the bucket, seconds from the start of the run.
    pub t_s: f64,
    /// Successful requests planned in this bucket.
    pub requests: u64,
    /// Of which answered without reaching an origin.
    pub offloaded: u64,
    pub by_tier: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeStats {
    pub edge: String,
    pub region: String,
    /// `requests.total` after minus before the run.
    pub requests: Option<u64>,
    /// The edge's `cache` counters after the run, as it reported them.
    pub cache: Option<edgebox_wire::edge::CacheStats>,
    pub error: Option<String>,
}

pub fn summarize(
    scenario: &Scenario,
    digest: String,
    planned: u64,
    target: String,
) -> ScenarioSummary {
    ScenarioSummary {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        source: scenario.source.clone(),
        seed: scenario.seed,
        workload_digest: digest,
        planned_requests: planned,
        limit: serde_json::to_value(scenario.workload.limit).unwrap_or_default(),
        concurrency: scenario.workload.concurrency,
        arrivals: serde_json::to_value(scenario.workload.arrivals).unwrap_or_default(),
        uncacheable: scenario.workload.uncacheable,
        popularity: serde_json::to_value(scenario.catalogue.popularity).unwrap_or_default(),
        catalogue: serde_json::to_value(&scenario.catalogue.objects).unwrap_or_default(),
        clients: scenario
            .clients
            .iter()
            .map(|client| ClientSummary {
                region: client.name.clone(),
                rate: client.rate,
            })
            .collect(),
        target,
    }
}

/// Builds one variant's report from its run.
pub fn variant_report(
    scenario: &Scenario,
    name: &str,
    description: &str,
    settings: &Settings,
    run: &LoadRun,
    targets: &Targets,
    edges: Vec<EdgeStats>,
) -> VariantReport {
    let elapsed = run.send_window.as_secs_f64().max(1e-9);
    let mut regions = Vec::new();
    for (index, client) in scenario.clients.iter().enumerate() {
        let samples: Vec<&Sample> = run.samples.iter().filter(|s| s.region == index).collect();
        let mut region = region_report(&client.name, &samples, elapsed);
        region.planned_rate = client.rate;
        region.dropped = run.dropped[index];
        region.late = run.late[index];
        regions.push(region);
    }
    let all: Vec<&Sample> = run.samples.iter().collect();
    let mut total = region_report("all", &all, elapsed);
    total.planned_rate = scenario.total_rate();
    total.dropped = run.dropped.iter().sum();
    total.late = run.late.iter().sum();
    let routes = scenario
        .clients
        .iter()
        .zip(&targets.per_region)
        .enumerate()
        .flat_map(|(region, (client, region_edges))| {
            let count = region_edges.len() as u64;
            let samples = &run.samples;
            let edges = &edges;
            region_edges
                .iter()
                .enumerate()
                .map(move |(slot, edge): (usize, &Edge)| Route {
                    region: client.name.clone(),
                    edge: edge.name.clone(),
                    url: edge.url.clone(),
                    requests: samples
                        .iter()
                        .filter(|s| s.region == region && s.index % count == slot as u64)
                        .count() as u64,
                    edge_reported: edges
                        .iter()
                        .find(|stats| stats.edge == edge.name)
                        .and_then(|stats| stats.requests),
                })
        })
        .collect();
    VariantReport {
        name: name.to_owned(),
        description: description.to_owned(),
        settings: serde_json::to_value(settings).unwrap_or_default(),
        elapsed_s: run.elapsed.as_secs_f64(),
        interrupted: run.interrupted,
        unsent: run.unsent,
        total,
        regions,
        timeline: timeline(&run.samples, scenario),
        routes,
        edges,
        model: None,
    }
}

fn region_report(name: &str, samples: &[&Sample], elapsed_s: f64) -> RegionReport {
    let mut report = RegionReport {
        region: name.to_owned(),
        ..RegionReport::default()
    };
    let mut latencies = Vec::new();
    let mut simulated = Vec::new();
    let mut server_total = Vec::new();
    let mut offloaded_requests = 0u64;
    let mut offloaded_bytes = 0u64;
    for tier in Tier::ALL {
        report
            .tiers
            .insert(tier.name().to_owned(), TierStats::default());
    }
    for sample in samples {
        report.requests += 1;
        match &sample.outcome {
            Outcome::Cancelled => report.cancelled += 1,
            Outcome::Failed(kind) => {
                report.errors += 1;
                *report.errors_by_kind.entry((*kind).to_owned()).or_default() += 1;
            }
            Outcome::Status(status) => {
                *report
                    .status
                    .entry(format!("{}xx", status / 100))
                    .or_default() += 1;
                if *status >= 400 {
                    report.errors += 1;
                    *report
                        .errors_by_kind
                        .entry(format!("http_{status}"))
                        .or_default() += 1;
                    continue;
                }
                report.ok += 1;
                report.bytes += sample.bytes;
                let tier = report
                    .tiers
                    .entry(sample.tier.name().to_owned())
                    .or_default();
                tier.requests += 1;
                tier.bytes += sample.bytes;
                *report
                    .x_cache
                    .entry(sample.x_cache.clone().unwrap_or_else(|| "none".to_owned()))
                    .or_default() += 1;
                if sample.tier.offloaded() {
                    offloaded_requests += 1;
                    offloaded_bytes += sample.bytes;
                }
                latencies.push(sample.latency.as_secs_f64() * 1000.0);
                if let Some(sim) = sample.simulated_ms {
                    simulated.push(sim);
                }
                if let Some(total) = sample.server_total_ms {
                    server_total.push(total);
                }
            }
        }
    }
    for tier in report.tiers.values_mut() {
        tier.ratio = ratio(tier.requests, report.ok);
    }
    report.hit_ratio = ratio(offloaded_requests, report.ok);
    report.origin_offload = Offload {
        requests: ratio(offloaded_requests, report.ok),
        bytes: ratio(offloaded_bytes, report.bytes),
    };
    report.achieved_rate = (report.requests as f64) / elapsed_s;
    report.latency_cdf = cdf(&mut latencies.clone(), 60);
    report.latency_ms = percentiles(&mut latencies);
    report.simulated_ms = percentiles(&mut simulated);
    report.server_total_ms = percentiles(&mut server_total);
    report
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Nearest-rank percentile of sorted values.
fn rank(sorted: &[f64], q: f64) -> f64 {
    let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

pub fn percentiles(values: &mut [f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Percentiles {
        count: values.len() as u64,
        p50: round3(rank(values, 0.50)),
        p90: round3(rank(values, 0.90)),
        p99: round3(rank(values, 0.99)),
        mean: round3(values.iter().sum::<f64>() / values.len() as f64),
        max: round3(values[values.len() - 1]),
    })
}

fn cdf(values: &mut [f64], points: usize) -> Vec<[f64; 2]> {
    if values.is_empty() {
        return Vec::new();
    }
    values.sort_by(f64::total_cmp);
    (0..=points)
        .map(|step| {
            let q = step as f64 / points as f64;
            let value = if step == 0 {
                values[0]
            } else {
                rank(values, q)
            };
            [round3(value), round3(q)]
        })
        .collect()
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn timeline(samples: &[Sample], scenario: &Scenario) -> Timeline {
    let span = match scenario.workload.limit {
        Limit::Duration(duration) => duration.as_secs_f64(),
        Limit::Requests(_) => samples.last().map_or(0.0, |s| s.at.as_secs_f64()),
    };
    let bucket_s = nice_bucket(span / 40.0);
    let buckets = ((span / bucket_s).ceil() as usize).max(1);
    let mut points: Vec<TimelinePoint> = (0..buckets)
        .map(|index| TimelinePoint {
            t_s: round3(index as f64 * bucket_s),
            ..TimelinePoint::default()
        })
        .collect();
    for sample in samples {
        if !matches!(sample.outcome, Outcome::Status(status) if status < 400) {
            continue;
        }
        let index = ((sample.at.as_secs_f64() / bucket_s) as usize).min(buckets - 1);
        let point = &mut points[index];
        point.requests += 1;
        if sample.tier.offloaded() {
            point.offloaded += 1;
        }
        *point
            .by_tier
            .entry(sample.tier.name().to_owned())
            .or_default() += 1;
    }
    Timeline { bucket_s, points }
}

fn nice_bucket(raw: f64) -> f64 {
    const STEPS: [f64; 12] = [
        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
    ];
    STEPS.into_iter().find(|step| *step >= raw).unwrap_or(600.0)
}

/// Reads every edge's admin `/stats` (before or after a run).
pub async fn edge_counters(targets: &Targets) -> BTreeMap<String, Result<WireEdgeStats, String>> {
    edgebox_node::install_crypto();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build();
    let mut counters = BTreeMap::new();
    let Ok(client) = client else { return counters };
    for edge in &targets.all_edges {
        let Some(admin) = &edge.admin else { continue };
        let result = async {
            let mut request = client.get(format!("{admin}/stats"));
            if let Some(credential) = &edge.credential {
                request = request.bearer_auth(credential);
            }
            let response = request.send().await.map_err(|err| err.to_string())?;
            if !response.status().is_success() {
                return Err(format!("GET /stats: {}", response.status()));
            }
            response
                .json::<WireEdgeStats>()
                .await
                .map_err(|err| err.to_string())
        }
        .await;
        counters.insert(edge.name.clone(), result);
    }
    counters
}

/// Per-edge differences between two [`edge_counters`] readings.
pub fn edge_stats(
    targets: &Targets,
    before: &BTreeMap<String, Result<WireEdgeStats, String>>,
    after: &BTreeMap<String, Result<WireEdgeStats, String>>,
) -> Vec<EdgeStats> {
    targets
        .all_edges
        .iter()
        .filter(|edge| edge.admin.is_some())
        .map(|edge| {
            let (requests, cache, error) = match (before.get(&edge.name), after.get(&edge.name)) {
                (Some(Ok(before)), Some(Ok(after))) => (
                    Some(after.requests.total.saturating_sub(before.requests.total)),
                    Some(after.cache.clone()),
                    None,
                ),
                (_, Some(Err(err))) | (Some(Err(err)), _) => (None, None, Some(err.clone())),
                _ => (None, None, Some("not read".to_owned())),
            };
            EdgeStats {
                edge: edge.name.clone(),
                region: edge.region.clone(),
                requests,
                cache,
                error,
            }
        })
        .collect()
}

fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn ms(value: Option<&Percentiles>, pick: fn(&Percentiles) -> f64) -> String {
    value.map_or_else(|| "-".to_owned(), |p| format!("{:.1}", pick(p)))
}

/// The report as text tables: one per variant, then a comparison of variants.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.scenario;
    let _ = writeln!(
        out,
        "scenario {:?}: seed {}, {} planned requests (workload {}), target: {}",
        s.name, s.seed, s.planned_requests, s.workload_digest, s.target
    );
    if report.interrupted {
        let _ = writeln!(out, "INTERRUPTED: this report is partial");
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "STOPPED EARLY: {error}");
    }
    for agreement in &report.agreement {
        let _ = writeln!(
            out,
            "\nlive vs model, variant {:?} (share of answered requests; largest difference {:.2} pp)",
            agreement.variant, agreement.max_difference_pp
        );
        for row in &agreement.rows {
            let _ = writeln!(
                out,
                "  {:<8} live {:>6.2}%  model {:>6.2}%  difference {:>5.2} pp",
                row.tier,
                row.live * 100.0,
                row.model * 100.0,
                row.difference_pp
            );
        }
    }
    for variant in &report.variants {
        let _ = writeln!(
            out,
            "\nvariant {:?}{} — {:.1}s{}",
            variant.name,
            if variant.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", variant.description)
            },
            variant.elapsed_s,
            if variant.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  {:<10} {:>7} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "REGION",
            "REQS",
            "RATE/s",
            "L1",
            "L2",
            "PARENT",
            "ORIGIN",
            "UNKNOWN",
            "HIT",
            "OFFLOAD r/b",
            "P50ms",
            "P90ms",
            "P99ms",
            "SIMp50",
            "SIMp99",
            "ERR",
            "DROP"
        );
        for region in variant
            .regions
            .iter()
            .chain(std::iter::once(&variant.total))
        {
            let tier = |name: &str| pct(region.tiers.get(name).map_or(0.0, |t| t.ratio));
            let _ = writeln!(
                out,
                "  {:<10} {:>7} {:>7.1} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
                region.region,
                region.requests,
                region.achieved_rate,
                tier("l1"),
                tier("l2"),
                tier("parent"),
                tier("origin"),
                tier("unknown"),
                pct(region.hit_ratio),
                format!(
                    "{}/{}",
                    pct(region.origin_offload.requests),
                    pct(region.origin_offload.bytes)
                ),
                ms(region.latency_ms.as_ref(), |p| p.p50),
                ms(region.latency_ms.as_ref(), |p| p.p90),
                ms(region.latency_ms.as_ref(), |p| p.p99),
                ms(region.simulated_ms.as_ref(), |p| p.p50),
                ms(region.simulated_ms.as_ref(), |p| p.p99),
                region.errors,
                region.dropped,
            );
        }
        let reported: Vec<String> = variant
            .edges
            .iter()
            .map(|edge| match (edge.requests, &edge.error) {
                (Some(requests), _) => match edge.cache.as_ref().and_then(|c| c.l1_policy.as_ref())
                {
                    Some(policy) => format!("{} {requests} (L1 {policy})", edge.edge),
                    None => format!("{} {requests}", edge.edge),
                },
                (None, Some(error)) => format!("{} ? ({error})", edge.edge),
                (None, None) => format!("{} ?", edge.edge),
            })
            .collect();
        if !reported.is_empty() {
            let _ = writeln!(out, "  edges' own request counts: {}", reported.join(", "));
        }
    }
    if report.variants.len() > 1 {
        let _ = writeln!(out, "\ncomparison (all regions)");
        let _ = writeln!(
            out,
            "  {:<20} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>6}",
            "VARIANT", "HIT", "OFFLOAD", "OFFL.BYTES", "P50ms", "P99ms", "SIMp99", "ERR"
        );
        for variant in &report.variants {
            let t = &variant.total;
            let _ = writeln!(
                out,
                "  {:<20} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>6}",
                variant.name,
                pct(t.hit_ratio),
                pct(t.origin_offload.requests),
                pct(t.origin_offload.bytes),
                ms(t.latency_ms.as_ref(), |p| p.p50),
                ms(t.latency_ms.as_ref(), |p| p.p99),
                ms(t.simulated_ms.as_ref(), |p| p.p99),
                t.errors
            );
        }
    }
    out
}
