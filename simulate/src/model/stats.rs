//! What model mode counts while it replays (fixed-size: counters, histograms, a timeline of
//! at most [`MAX_POINTS`] buckets) and the report it turns into — the same shape as live
//! mode's, plus [`ModelStats`].

use std::collections::BTreeMap;

use crate::report::{
    CostTable, ModelStats, Offload, OriginLoad, RegionReport, Route, TierStats, Timeline,
    TimelinePoint, VariantReport,
};
use crate::scenario::{CostModel, Scenario, Variant};

use super::histogram::Histogram;
use super::{Answer, ModelRequest, Served, Topology};

/// Timeline buckets at most; the bucket width doubles when a trace outlasts them.
const MAX_POINTS: usize = 240;
const GIB: f64 = (1u64 << 30) as f64;
const MONTH_S: f64 = 30.0 * 86_400.0;

#[derive(Debug, Clone, Default)]
pub struct RegionCounters {
    pub requests: u64,
    pub bytes: u64,
    /// Requests and bytes per [`Answer`].
    pub tiers: [(u64, u64); 4],
    pub uncacheable: u64,
    pub latency: Histogram,
}

impl RegionCounters {
    fn record(&mut self, request: &ModelRequest, answer: Answer, ms: f64) {
        self.requests += 1;
        self.bytes += request.size;
        let tier = &mut self.tiers[answer.index()];
        tier.0 += 1;
        tier.1 += request.size;
        self.uncacheable += u64::from(!request.cacheable);
        self.latency.record_ms(ms);
    }

    fn merge(&mut self, other: &RegionCounters) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        for (mine, theirs) in self.tiers.iter_mut().zip(other.tiers) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        self.uncacheable += other.uncacheable;
        self.latency.merge(&other.latency);
    }
}

#[derive(Debug, Clone, Default)]
struct OriginCounter {
    requests: u64,
    bytes: u64,
    second: u64,
    in_second: (u64, u64),
    peak: (u64, u64),
}

#[derive(Debug, Clone, Default)]
struct Point {
    requests: u64,
    tiers: [u64; 4],
}

pub struct Counters {
    regions: Vec<RegionCounters>,
    origins: Vec<OriginCounter>,
    bucket_ms: u64,
    points: Vec<Point>,
    /// The timeline bucket of the last request, as `(first ms, end ms, index)`: traces are
    /// in time order, so most requests fall in it without a division.
    cursor: (u64, u64, usize),
    last_ms: u64,
    /// Requests per edge (by the route taken), indexed like `Topology::edges`.
    per_edge: Vec<u64>,
}

impl Counters {
    pub fn new(scenario: &Scenario, topology: &Topology) -> Self {
        Self {
            regions: vec![RegionCounters::default(); scenario.clients.len()],
            origins: vec![OriginCounter::default(); topology.origins.len()],
            bucket_ms: 1000,
            points: Vec::with_capacity(MAX_POINTS),
            cursor: (0, 0, 0),
            last_ms: 0,
            per_edge: vec![0; topology.edges.len()],
        }
    }

    #[inline]
    pub fn record(&mut self, request: &ModelRequest, served: &Served) {
        let Served {
            answer, ms, origin, ..
        } = *served;
        self.per_edge[served.edge] += 1;
        self.regions[request.region].record(request, answer, ms);
        self.last_ms = self.last_ms.max(request.time_ms);
        let (first, end, cached) = self.cursor;
        let bucket = if request.time_ms >= first && request.time_ms < end {
            cached
        } else {
            self.locate(request.time_ms)
        };
        let point = &mut self.points[bucket];
        point.requests += 1;
        point.tiers[answer.index()] += 1;
        if let Some(origin) = origin {
            let counter = &mut self.origins[origin];
            counter.requests += 1;
            counter.bytes += request.size;
            let second = request.time_ms / 1000;
            if second != counter.second {
                counter.second = second;
                counter.in_second = (0, 0);
            }
            counter.in_second.0 += 1;
            counter.in_second.1 += request.size;
            counter.peak.0 = counter.peak.0.max(counter.in_second.0);
            counter.peak.1 = counter.peak.1.max(counter.in_second.1);
        }
    }

    /// The timeline bucket of `time_ms`, coarsening the timeline when it would outgrow
    /// [`MAX_POINTS`]; remembered as the cursor.
    fn locate(&mut self, time_ms: u64) -> usize {
        let mut bucket = (time_ms / self.bucket_ms) as usize;
        while bucket >= MAX_POINTS {
            self.coarsen();
            bucket = (time_ms / self.bucket_ms) as usize;
        }
        if self.points.len() <= bucket {
            self.points.resize(bucket + 1, Point::default());
        }
        let first = bucket as u64 * self.bucket_ms;
        self.cursor = (first, first + self.bucket_ms, bucket);
        bucket
    }

    fn coarsen(&mut self) {
        let merged = self
            .points
            .chunks(2)
            .map(|pair| {
                let mut point = Point::default();
                for p in pair {
                    point.requests += p.requests;
                    for (mine, theirs) in point.tiers.iter_mut().zip(p.tiers) {
                        *mine += theirs;
                    }
                }
                point
            })
            .collect();
        self.points = merged;
        self.bucket_ms *= 2;
    }

    pub fn report(
        &self,
        scenario: &Scenario,
        variant: &Variant,
        topology: &Topology,
        (wall_s, cpu_s): (f64, f64),
        interrupted: bool,
    ) -> VariantReport {
        // A trace whose requests all share one second still spans that second.
        let simulated_s = (self.last_ms as f64 / 1000.0).max(1.0);
        let mut total = RegionCounters::default();
        let regions = scenario
            .clients
            .iter()
            .zip(&self.regions)
            .map(|(client, counters)| {
                total.merge(counters);
                let mut report = region_report(&client.name, counters, simulated_s);
                report.planned_rate = client.rate;
                report
            })
            .collect();
        let mut total_report = region_report("total", &total, simulated_s);
        total_report.planned_rate = scenario.total_rate();
        let timeline = Timeline {
            bucket_s: self.bucket_ms as f64 / 1000.0,
            points: self
                .points
                .iter()
                .enumerate()
                .map(|(index, point)| TimelinePoint {
                    t_s: index as f64 * self.bucket_ms as f64 / 1000.0,
                    requests: point.requests,
                    offloaded: point.requests - point.tiers[Answer::Origin.index()],
                    by_tier: Answer::ALL
                        .iter()
                        .map(|answer| (answer.as_str().to_owned(), point.tiers[answer.index()]))
                        .collect(),
                })
                .collect(),
        };
        let routes = topology
            .routes
            .iter()
            .zip(&scenario.clients)
            .flat_map(|(edges, client)| {
                edges.iter().map(|edge| Route {
                    region: client.name.clone(),
                    edge: topology.edges[*edge].name.clone(),
                    url: "model".to_owned(),
                    requests: self.per_edge[*edge],
                    edge_reported: None,
                })
            })
            .collect();
        let origins: Vec<OriginLoad> = topology
            .origins
            .iter()
            .zip(&self.origins)
            .map(|(origin, counter)| OriginLoad {
                name: origin.name.clone(),
                requests: counter.requests,
                bytes: counter.bytes,
                peak_requests_per_s: counter.peak.0,
                peak_bytes_per_s: counter.peak.1,
            })
            .collect();
        let (l1_bytes, l2_bytes) = topology.capacity();
        let cost = scenario.cost.as_ref().map(|model| {
            cost_table(
                model,
                scenario,
                &self.regions,
                &origins,
                (l1_bytes, l2_bytes),
                simulated_s,
            )
        });
        let first_edge = topology.routes.first().and_then(|r| r.first()).copied();
        let requests = total.requests;
        VariantReport {
            name: variant.name.clone(),
            description: variant.description.clone(),
            settings: serde_json::to_value(&variant.settings).unwrap_or_default(),
            elapsed_s: simulated_s,
            interrupted,
            unsent: 0,
            total: total_report,
            regions,
            timeline,
            routes,
            edges: Vec::new(),
            model: Some(ModelStats {
                l1_policy: topology.policy.to_string(),
                l1_capacity: first_edge.map_or(0, |edge| topology.edges[edge].l1_capacity),
                simulated_s,
                wall_s,
                cpu_s,
                requests_per_s: requests as f64 / wall_s.max(1e-9),
                requests_per_cpu_s: requests as f64 / cpu_s.max(1e-9),
                l1_evictions: topology.l1_evictions(),
                origins,
                cost,
            }),
        }
    }
}

pub fn region_report(name: &str, counters: &RegionCounters, elapsed_s: f64) -> RegionReport {
    let ratio = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    };
    let mut tiers = BTreeMap::new();
    for answer in Answer::ALL {
        let (requests, bytes) = counters.tiers[answer.index()];
        tiers.insert(
            answer.as_str().to_owned(),
            TierStats {
                requests,
                ratio: ratio(requests, counters.requests),
                bytes,
            },
        );
    }
    tiers.insert("unknown".to_owned(), TierStats::default());
    let origin = counters.tiers[Answer::Origin.index()];
    let offloaded = counters.requests - origin.0;
    let offloaded_bytes = counters.bytes - origin.1;
    let hits = counters.tiers[Answer::L1.index()].0 + counters.tiers[Answer::L2.index()].0;
    let mut x_cache = BTreeMap::new();
    if counters.requests > 0 {
        x_cache.insert("HIT".to_owned(), hits);
        x_cache.insert("MISS".to_owned(), counters.requests - hits);
    }
    RegionReport {
        region: name.to_owned(),
        planned_rate: 0.0,
        achieved_rate: counters.requests as f64 / elapsed_s,
        requests: counters.requests,
        ok: counters.requests,
        status: if counters.requests > 0 {
            BTreeMap::from([("2xx".to_owned(), counters.requests)])
        } else {
            BTreeMap::new()
        },
        tiers,
        x_cache,
        hit_ratio: ratio(offloaded, counters.requests),
        origin_offload: Offload {
            requests: ratio(offloaded, counters.requests),
            bytes: ratio(offloaded_bytes, counters.bytes),
        },
        bytes: counters.bytes,
        latency_ms: counters.latency.percentiles(),
        simulated_ms: counters.latency.percentiles(),
        server_total_ms: None,
        latency_cdf: counters.latency.cdf(60),
        ..RegionReport::default()
    }
}

/// What a variant's traffic costs under the scenario's `[cost]` prices: bytes delivered to
/// each client region, requests and bytes fetched from origins, and the configured cache
/// capacity of every edge held for the simulated time.
pub fn cost_table(
    model: &CostModel,
    scenario: &Scenario,
    regions: &[RegionCounters],
    origins: &[OriginLoad],
    (l1_bytes, l2_bytes): (u64, u64),
    simulated_s: f64,
) -> CostTable {
    let client_egress = scenario
        .clients
        .iter()
        .zip(regions)
        .map(|(client, counters)| {
            let price = model
                .egress_per_gib
                .get(&client.name)
                .copied()
                .unwrap_or(model.egress_default_per_gib);
            counters.bytes as f64 / GIB * price
        })
        .sum::<f64>();
    let origin_requests: u64 = origins.iter().map(|o| o.requests).sum();
    let origin_bytes: u64 = origins.iter().map(|o| o.bytes).sum();
    let months = simulated_s / MONTH_S;
    let storage = (l1_bytes as f64 / GIB * model.memory_per_gib_month
        + l2_bytes as f64 / GIB * model.disk_per_gib_month)
        * months;
    let origin_request_cost = origin_requests as f64 / 1e6 * model.origin_requests_per_million;
    let origin_egress = origin_bytes as f64 / GIB * model.origin_egress_per_gib;
    let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
    CostTable {
        currency: model.currency.clone(),
        client_egress: round(client_egress),
        origin_requests: round(origin_request_cost),
        origin_egress: round(origin_egress),
        storage: round(storage),
        total: round(client_egress + origin_request_cost + origin_egress + storage),
    }
}
