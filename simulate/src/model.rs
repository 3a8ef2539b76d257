//! Model mode (`mode = "model"`): the scenario's deployment as data structures driven by a
//! virtual clock — no processes, no sockets — as fast as one core replays requests.
//!
//! Each variant's deployment (the same checked config live mode starts) becomes a
//! [`Topology`]: its client-facing edges per region, each edge's L1 (the eviction policy the
//! variant names) and L2 (the disk tier's LRU), its parent, its origin group's chooser, and
//! the latency model. The cache decisions are `edgebox-cache-model`'s, the code the edge
//! itself builds its tiers with. Requests come from a trace (streamed), a generated trace
//! (streamed from its generator) or the scenario's synthetic workload, and leave only
//! counters and fixed-size histograms behind: memory is the simulated caches plus a
//! constant, whatever the trace's length.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgebox_cache_model::admission;
use edgebox_cache_model::eviction::{L1, Lru, PolicyKind};
use edgebox_cache_model::freshness::{self, OriginFreshness};
use edgebox_cache_model::latency::{self, Link, LinkMs};
use edgebox_cache_model::lb::{self, Chooser};
use edgebox_config::{Deployment, L1Policy, LbPolicy, OriginTarget, Role};

use crate::report::VariantReport;
use crate::scenario::{Scenario, Variant};
use crate::trace::TraceError;
use crate::workload::Rng;

mod histogram;
mod source;
mod stats;

pub use histogram::Histogram;
pub use source::{ModelRequest, Source};
use stats::Counters;

/// Freshness the simulator's origins give generated objects (`max-age=86400`, see
/// `variant::for_started`), used when a trace gives no `ttl`.
pub const ORIGIN_MAX_AGE_S: u32 = 86_400;
/// Requests a worker reads from its source before replaying them through each of its
/// variants in turn (and between checks of the cancel flag and progress updates).
const BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("variant {variant:?}: {message}")]
    Topology { variant: String, message: String },
}

/// Where a request was answered, as `X-Cache-Tier` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    L1,
    L2,
    Parent,
    Origin,
}

impl Answer {
    pub const ALL: [Answer; 4] = [Self::L1, Self::L2, Self::Parent, Self::Origin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Parent => "parent",
            Self::Origin => "origin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub answer: Answer,
    pub ms: f64,
    pub origin: Option<usize>,
    pub edge: usize,
}

/// One edge: its tiers, parent and origin group.
pub struct EdgeModel {
    pub name: String,
    pub region: String,
    region_index: usize,
    l1: Option<L1>,
    l1_max_object: u64,
    l2: Option<Lru>,
    parent: Option<usize>,
    group: usize,
    /// `rtt_ms[i]`: the round trip from this edge to member `i` of its group.
    rtt_ms: Vec<u64>,
    pub l1_capacity: u64,
    pub l2_capacity: u64,
}

/// One origin of a group.
pub struct OriginModel {
    pub name: String,
    pub region: Option<String>,
    region_index: Option<usize>,
    delay_ms: f64,
}

struct Group {
    chooser: Chooser,
    members: Vec<usize>,
}

/// A variant's deployment, ready to serve requests.
pub struct Topology {
    pub edges: Vec<EdgeModel>,
    pub origins: Vec<OriginModel>,
    groups: Vec<Group>,
    /// Client-facing edges per client region (scenario order).
    routes: Vec<Vec<usize>>,
    /// Round-robin position per client region.
    route_next: Vec<usize>,
    /// `links[a * region_count + b]`: the link between regions `a` and `b` of the
    /// deployment, when the latency model is on (looked up once, not per request).
    links: Vec<Option<LinkMs>>,
    region_count: usize,
    /// Region index of each client region.
    client_regions: Vec<usize>,
    cache_enabled: bool,
    max_object_size: u64,
    pub policy: PolicyKind,
    rng: Rng,
}

fn policy_of(policy: &LbPolicy) -> lb::Policy {
    match policy {
        LbPolicy::RoundRobin => lb::Policy::RoundRobin,
        LbPolicy::Weighted => lb::Policy::Weighted,
        LbPolicy::ConsistentHash { .. } => lb::Policy::ConsistentHash,
        LbPolicy::LeastConnections => lb::Policy::LeastConnections,
        LbPolicy::LatencyAware => lb::Policy::LatencyAware,
    }
}

/// Expected objects per tier, to size maps up front (a hint: maps still grow).
fn expected_objects(capacity: u64) -> usize {
    (capacity / 8192).clamp(16, 1 << 16) as usize
}

impl Topology {
    /// Builds the model of `deployment` for the scenario's clients, routed by `routes_from`
    /// (the base deployment, so that every variant sends a region to the same edges).
    pub fn new(
        deployment: &Deployment,
        routes_from: &Deployment,
        scenario: &Scenario,
        policy: PolicyKind,
        seed: u64,
    ) -> Result<Self, String> {
        let chosen = crate::target::choose(
            routes_from,
            &scenario.clients,
            crate::scenario::Protocol::Http,
            &|_, _| Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
        )
        .map_err(|err| err.to_string())?;
        let mut origins = Vec::new();
        let mut groups = Vec::new();
        let mut group_names = Vec::new();
        for (name, group) in &deployment.origin_groups {
            let mut members = Vec::new();
            let mut weights = Vec::new();
            for member in &group.members {
                let (label, region, delay) = match &member.target {
                    OriginTarget::Node { name, .. } => {
                        let node = deployment.node(name);
                        let delay = node.and_then(|node| match &node.role {
                            Role::Origin(origin) => Some(origin.delay),
                            _ => None,
                        });
                        (
                            name.clone(),
                            node.map(|node| node.region.clone()),
                            delay.unwrap_or_default(),
                        )
                    }
                    OriginTarget::Host { host, port } => {
                        (format!("{host}:{port}"), None, Duration::ZERO)
                    }
                };
                let index = match origins.iter().position(|o: &OriginModel| o.name == label) {
                    Some(index) => index,
                    None => {
                        origins.push(OriginModel {
                            name: label,
                            region,
                            region_index: None,
                            delay_ms: delay.as_secs_f64() * 1000.0,
                        });
                        origins.len() - 1
                    }
                };
                members.push(index);
                weights.push(member.weight.max(1));
            }
            if members.is_empty() {
                return Err(format!("origin group {name:?} has no members"));
            }
            groups.push(Group {
                chooser: Chooser::new(policy_of(&group.policy), weights),
                members,
            });
            group_names.push(name.clone());
        }
        let mut region_names: Vec<String> =
            deployment.regions.iter().map(|r| r.name.clone()).collect();
        let mut region_index = |name: &str| match region_names.iter().position(|r| r == name) {
            Some(index) => index,
            None => {
                region_names.push(name.to_owned());
                region_names.len() - 1
            }
        };
        let client_regions: Vec<usize> = scenario
            .clients
            .iter()
            .map(|c| region_index(&c.name))
            .collect();
        for origin in &mut origins {
            origin.region_index = origin.region.as_deref().map(&mut region_index);
        }
        let edge_names: Vec<String> = deployment
            .edges()
            .map(|(node, _)| node.name.clone())
            .collect();
        let mut edges = Vec::new();
        for (node, edge) in deployment.edges() {
            let group = group_names
                .iter()
                .position(|name| *name == edge.origin_group)
                .ok_or_else(|| format!("edge {:?}: unknown origin group", node.name))?;
            let parent = match &edge.parent {
                Some(parent) => Some(
                    edge_names
                        .iter()
                        .position(|name| name == parent)
                        .ok_or_else(|| format!("edge {:?}: unknown parent", node.name))?,
                ),
                None => None,
            };
            let rtt_ms = groups[group]
                .members
                .iter()
                .map(|member| {
                    let region = origins[*member].region.as_deref().unwrap_or(&node.region);
                    deployment
                        .latency
                        .link(&node.region, region)
                        .map_or(0, |link| link.rtt.as_millis() as u64)
                })
                .collect();
            let enabled = deployment.cache.enabled;
            edges.push(EdgeModel {
                name: node.name.clone(),
                region: node.region.clone(),
                region_index: region_index(&node.region),
                l1: (enabled && edge.l1_capacity > 0)
                    .then(|| L1::new(policy, edge.l1_capacity, expected_objects(edge.l1_capacity))),
                l1_max_object: admission::l1_max_object(
                    edge.l1_capacity,
                    deployment.cache.max_object_size,
                ),
                l2: (enabled && edge.l2_capacity > 0)
                    .then(|| Lru::new(edge.l2_capacity, expected_objects(edge.l2_capacity))),
                parent,
                group,
                rtt_ms,
                l1_capacity: edge.l1_capacity,
                l2_capacity: edge.l2_capacity,
            });
        }
        let routes = chosen
            .per_region
            .iter()
            .map(|edges_of_region| {
                edges_of_region
                    .iter()
                    .filter_map(|edge| edge_names.iter().position(|name| *name == edge.name))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        if routes.iter().any(Vec::is_empty) {
            return Err("a client region has no edge".to_owned());
        }
        let region_count = region_names.len();
        let mut links = vec![None; region_count * region_count];
        if deployment.latency.enabled {
            for (a, from) in region_names.iter().enumerate() {
                for (b, to) in region_names.iter().enumerate() {
                    links[a * region_count + b] = deployment.latency.link(from, to).map(|link| {
                        LinkMs::from(&Link {
                            rtt: link.rtt,
                            jitter: link.jitter,
                            loss: link.loss,
                        })
                    });
                }
            }
        }
        Ok(Self {
            route_next: vec![0; routes.len()],
            routes,
            edges,
            origins,
            groups,
            links,
            region_count,
            client_regions,
            cache_enabled: deployment.cache.enabled,
            max_object_size: deployment.cache.max_object_size,
            policy,
            rng: Rng::stream(seed, "model-latency"),
        })
    }

    /// One exchange between two regions (indices into the region table), in milliseconds.
    #[inline]
    fn hop(&mut self, a: usize, b: usize) -> f64 {
        let Some(link) = self.links[a * self.region_count + b] else {
            return 0.0;
        };
        // The same draws as the edge makes: none for a link without jitter or loss.
        let jitter = if link.jitter_ms == 0.0 {
            0.5
        } else {
            self.rng.next_f64()
        };
        let loss = if link.loss > 0.0 {
            self.rng.next_f64()
        } else {
            1.0
        };
        latency::exchange_ms(&link, jitter, loss)
    }

    /// Serves one request: where it was answered, the simulated milliseconds, which origin
    /// served it (if one did) and the client-facing edge it was sent to.
    pub fn serve(&mut self, request: &ModelRequest) -> Served {
        let routes = &self.routes[request.region];
        let edge = if routes.len() == 1 {
            routes[0]
        } else {
            let slot = self.route_next[request.region];
            self.route_next[request.region] = slot.wrapping_add(1);
            routes[slot % routes.len()]
        };
        let mut ms = self.hop(
            self.client_regions[request.region],
            self.edges[edge].region_index,
        );
        let (answer, upstream_ms, origin) = self.at_edge(edge, request);
        ms += upstream_ms;
        Served {
            answer,
            ms,
            origin,
            edge,
        }
    }

    fn at_edge(&mut self, edge: usize, request: &ModelRequest) -> (Answer, f64, Option<usize>) {
        let now = request.time_ms;
        let cacheable = self.cache_enabled && request.cacheable;
        if cacheable {
            let model = &mut self.edges[edge];
            if let Some(l1) = &mut model.l1
                && let Some(expires) = l1.get(request.object)
                && freshness::fresh_until(expires, now)
            {
                return (Answer::L1, 0.0, None);
            }
            if let Some(l2) = &mut model.l2
                && let Some(expires) = l2.get(request.object)
                && freshness::fresh_until(expires, now)
            {
                // An L2 hit small enough for L1 is promoted, as the edge's tiered storage does.
                if let Some(l1) = &mut model.l1
                    && admission::l1_fits(model.l1_capacity, model.l1_max_object, request.size)
                {
                    l1.insert(request.object, admission::l1_weight(request.size), expires);
                }
                return (Answer::L2, 0.0, None);
            }
        }
        let (answer, ms, origin) = match self.edges[edge].parent {
            Some(parent) => {
                let hop = self.hop(
                    self.edges[edge].region_index,
                    self.edges[parent].region_index,
                );
                let (upstream, ms, origin) = self.at_edge(parent, request);
                let answer = if upstream == Answer::Origin {
                    Answer::Origin
                } else {
                    Answer::Parent
                };
                (answer, hop + ms, origin)
            }
            None => {
                let model = &self.edges[edge];
                let group = &mut self.groups[model.group];
                let chosen = group.chooser.choose(request.object, &model.rtt_ms);
                let origin = group.members[chosen];
                let from = model.region_index;
                let to = self.origins[origin].region_index.unwrap_or(from);
                let delay = self.origins[origin].delay_ms;
                let hop = self.hop(from, to);
                (Answer::Origin, hop + delay, Some(origin))
            }
        };
        if cacheable {
            self.store(edge, request);
        }
        (answer, ms, origin)
    }

    fn store(&mut self, edge: usize, request: &ModelRequest) {
        let origin = OriginFreshness {
            explicit: Some(Duration::from_secs(u64::from(
                request.ttl_s.unwrap_or(ORIGIN_MAX_AGE_S),
            ))),
            forbidden: false,
        };
        let Some(ttl) = freshness::ttl(origin, None) else {
            return;
        };
        let expires = request.time_ms.saturating_add(ttl.as_millis() as u64);
        let max_object = self.max_object_size;
        let model = &mut self.edges[edge];
        if let Some(l2) = &mut model.l2
            && request.size <= max_object
        {
            l2.insert(request.object, request.size, expires);
        }
        if let Some(l1) = &mut model.l1
            && admission::l1_fits(model.l1_capacity, model.l1_max_object, request.size)
        {
            l1.insert(request.object, admission::l1_weight(request.size), expires);
        }
    }

    /// Bytes of L1 and of L2 configured over every edge (for the storage cost).
    pub fn capacity(&self) -> (u64, u64) {
        let l1 = self.edges.iter().map(|edge| edge.l1_capacity).sum();
        let l2 = self.edges.iter().map(|edge| edge.l2_capacity).sum();
        (l1, l2)
    }

    /// Evictions so far in L1, summed over edges.
    pub fn l1_evictions(&self) -> u64 {
        self.edges
            .iter()
            .filter_map(|edge| edge.l1.as_ref())
            .map(|l1| l1.usage().evictions)
            .sum()
    }
}

/// CPU time this thread has run, from Linux's `/proc/thread-self/schedstat` (nanoseconds
/// on CPU, first field). On a shared machine wall time measures the neighbours too; the
/// thread's own CPU time is what "requests per second on one core" means.
pub fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

/// Progress shared by every variant's worker, for the bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub simulated_ms: AtomicU64,
}

/// One variant being replayed: its topology and counters, and the wall time it has spent
/// serving requests.
struct Replay<'s> {
    index: usize,
    variant: &'s Variant,
    topology: Topology,
    counters: Counters,
    busy: Duration,
}

impl Replay<'_> {
    /// The hot loop: no allocation, no clock, no lock — the topology serves, the counters
    /// add.
    fn replay(&mut self, batch: &[ModelRequest]) {
        let started = Instant::now();
        for request in batch {
            let served = self.topology.serve(request);
            self.counters.record(request, &served);
        }
        self.busy += started.elapsed();
    }
}

/// What a run of every variant gave: one report per variant in the scenario's order
/// (partial, marked interrupted, when it was stopped), and the trace error that stopped
/// it mid-stream, if one did.
#[derive(Debug)]
pub struct Outcome {
    pub reports: Vec<VariantReport>,
    pub error: Option<TraceError>,
}

/// Replays `replays` in lockstep over one stream of requests: a batch is read (or
/// generated) once and served by each variant in turn, so a sweep reads its trace once per
/// worker, not once per variant. Each variant's time is its own serving time plus an
/// equal share of the reading; CPU time is the thread's, shared out in the same
/// proportions.
fn run_group(
    scenario: &Scenario,
    mut replays: Vec<Replay<'_>>,
    mut source: Source,
    stop: &dyn Fn() -> bool,
    progress: &Progress,
) -> (Vec<(usize, VariantReport)>, Option<TraceError>) {
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut batch = Vec::with_capacity(BATCH);
    let mut reading = Duration::ZERO;
    let mut error = None;
    let mut interrupted = false;
    loop {
        let read_started = Instant::now();
        batch.clear();
        let filled = source.fill(&mut batch, BATCH);
        reading += read_started.elapsed();
        for replay in &mut replays {
            replay.replay(&batch);
        }
        progress
            .done
            .fetch_add((batch.len() * replays.len()) as u64, Ordering::Relaxed);
        if let Some(last) = batch.last() {
            progress
                .simulated_ms
                .fetch_max(last.time_ms, Ordering::Relaxed);
        }
        match filled {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                error = Some(err);
                interrupted = true;
                break;
            }
        }
        if stop() {
            interrupted = true;
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_started
        .zip(thread_cpu_seconds())
        .map_or(wall, |(before, after)| after - before);
    let cpu_per_wall = if wall > 0.0 { cpu / wall } else { 1.0 };
    let share = reading.as_secs_f64() / replays.len().max(1) as f64;
    let reports = replays
        .iter()
        .map(|replay| {
            let wall_s = replay.busy.as_secs_f64() + share;
            let report = replay.counters.report(
                scenario,
                replay.variant,
                &replay.topology,
                (wall_s, wall_s * cpu_per_wall),
                interrupted,
            );
            (replay.index, report)
        })
        .collect();
    (reports, error)
}

/// Runs one variant over `source` on this thread (`stop` is asked between batches).
pub fn run_variant(
    scenario: &Scenario,
    variant: &Variant,
    topology: Topology,
    source: Source,
    stop: &dyn Fn() -> bool,
    progress: &Progress,
) -> Result<VariantReport, ModelError> {
    let counters = Counters::new(scenario, &topology);
    let replay = Replay {
        index: 0,
        variant,
        topology,
        counters,
        busy: Duration::ZERO,
    };
    let (mut reports, error) = run_group(scenario, vec![replay], source, stop, progress);
    match error {
        Some(err) => Err(err.into()),
        None => Ok(reports.pop().expect("one variant").1),
    }
}

/// Relative cost of replaying a variant, to balance workers: TinyUFO (a concurrent cache
/// behind locks and epochs) costs about three times the others.
fn cost_estimate(variant: &Variant) -> u64 {
    let policy = match variant.settings.l1_policy {
        Some(PolicyKind::Tinyufo) => 3,
        _ => 1,
    };
    // Larger tiers miss the CPU caches more.
    let size = variant
        .settings
        .l1_capacity
        .map_or(30, |bytes| u64::from(64 - bytes.max(1).leading_zeros()));
    policy * (size + 10)
}

/// Runs every variant, split over `threads` workers that each replay their variants in
/// lockstep over their own stream of the requests (largest first to the least loaded
/// worker). Topologies and sources are all built before any replay starts, so a bad
/// deployment or an unreadable trace fails the run with nothing replayed. Reports come back
/// in the scenario's variant order; a trace error mid-stream (or `cancel`) stops every
/// worker, and the partial reports come back with the error.
pub fn run_all(
    scenario: &Scenario,
    cancel: &AtomicBool,
    progress: &Progress,
    threads: usize,
) -> Result<Outcome, ModelError> {
    let count = scenario.variants.len();
    let workers = threads.clamp(1, count.max(1));
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|index| std::cmp::Reverse(cost_estimate(&scenario.variants[*index])));
    let mut groups: Vec<(u64, Vec<Replay<'_>>)> = (0..workers).map(|_| (0, Vec::new())).collect();
    for index in order {
        let variant = &scenario.variants[index];
        let topology = topology_of(scenario, variant, index)?;
        let counters = Counters::new(scenario, &topology);
        let group = groups
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one worker");
        group.0 += cost_estimate(variant);
        group.1.push(Replay {
            index,
            variant,
            topology,
            counters,
            busy: Duration::ZERO,
        });
    }
    let mut work = Vec::new();
    for (_, replays) in groups {
        if !replays.is_empty() {
            work.push((replays, Source::open(scenario)?));
        }
    }
    let failed = AtomicBool::new(false);
    let stop = || cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
    let results: Mutex<Vec<(usize, VariantReport)>> = Mutex::new(Vec::with_capacity(count));
    let first_error: Mutex<Option<TraceError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for (replays, source) in work {
            let (stop, failed, results, first_error) = (&stop, &failed, &results, &first_error);
            scope.spawn(move || {
                let (reports, error) = run_group(scenario, replays, source, stop, progress);
                if let Some(err) = error {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(err);
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(reports);
            });
        }
    });
    let mut reports = results.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|(index, _)| *index);
    Ok(Outcome {
        reports: reports.into_iter().map(|(_, report)| report).collect(),
        error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

/// The topology of a variant: its deployment as bound by the scenario check.
pub fn topology_of(
    scenario: &Scenario,
    variant: &Variant,
    index: usize,
) -> Result<Topology, ModelError> {
    let topology_error = |message: String| ModelError::Topology {
        variant: variant.name.clone(),
        message,
    };
    let base = scenario
        .deployment()
        .ok_or_else(|| topology_error("model mode needs the deployment's config".to_owned()))?;
    let deployment = match &variant.deployment_text {
        Some(text) => edgebox_config::parse(text, &base.source, &base.base_dir)
            .map_err(|errors| topology_error(errors.to_string()))?,
        None => base.clone(),
    };
    // The variant's policy, else the deployment's own `[cache] l1_policy`; moka (the
    // edge's default, a W-TinyLFU the model does not have) is simulated as LRU.
    let policy = variant
        .settings
        .l1_policy
        .unwrap_or(match deployment.cache.l1_policy {
            L1Policy::Moka | L1Policy::Lru => PolicyKind::Lru,
            L1Policy::S3fifo => PolicyKind::S3fifo,
            L1Policy::Sieve => PolicyKind::Sieve,
            L1Policy::Tinyufo => PolicyKind::Tinyufo,
        });
    Topology::new(
        &deployment,
        base,
        scenario,
        policy,
        scenario.seed ^ index as u64,
    )
    .map_err(topology_error)
}

#[cfg(test)]
mod tests;
