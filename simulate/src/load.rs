//! The load generator: open loop, by the clock. Each planned request is sent at its
//! planned time whatever happened to earlier ones; at most `concurrency` are in flight,
//! and a request due while the bound is reached is dropped and counted, never queued.
//! A request sent more than [`LATE_AFTER`] after its time (the scheduler fell behind)
//! is counted as late.

mod conn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use conn::EdgePool;

use super::SimError;
use super::model::Source;
use super::scenario::{CatalogueObjects, Limit, Protocol, Scenario};
use super::target::Targets;
use super::trace::TraceError;
use super::variant::OBJECTS_PREFIX;
use super::workload::{Plan, Sampler, object_path};

/// A request sent this long after its planned time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(100);

/// Which tier answered, from `X-Cache-Tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    L1,
    L2,
    Parent,
    Origin,
    /// No (or an unknown) `X-Cache-Tier` header.
    Unknown,
}

impl Tier {
    pub const ALL: [Tier; 5] = [
        Tier::L1,
        Tier::L2,
        Tier::Parent,
        Tier::Origin,
        Tier::Unknown,
    ];

    pub fn parse(value: Option<&str>) -> Self {
        let Some(value) = value.map(str::trim) else {
            return Self::Unknown;
        };
        [Self::L1, Self::L2, Self::Parent, Self::Origin]
            .into_iter()
            .find(|tier| value.eq_ignore_ascii_case(tier.name()))
            .unwrap_or(Self::Unknown)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Parent => "parent",
            Self::Origin => "origin",
            Self::Unknown => "unknown",
        }
    }

    /// Served without reaching an origin.
    pub fn offloaded(self) -> bool {
        matches!(self, Self::L1 | Self::L2 | Self::Parent)
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub region: usize,
    /// Position in the plan; also picks the region's edge (`index % edges`).
    pub index: u64,
    pub object: u64,
    pub cacheable: bool,
    /// Planned send time from the start of the run.
    pub at: Duration,
    /// How late it was actually sent.
    pub lag: Duration,
    /// Send to last body byte, as the client saw it.
    pub latency: Duration,
    /// The simulated part from `Server-Timing` (`sim`, or the sum of `sim*` entries).
    pub simulated_ms: Option<f64>,
    /// The edge's own `total` from `Server-Timing`.
    pub server_total_ms: Option<f64>,
    pub outcome: Outcome,
    pub tier: Tier,
    pub x_cache: Option<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Transport failure: `timeout`, `connect`, `body`, `request`.
    Failed(&'static str),
    /// Still in flight when the run was interrupted.
    Cancelled,
}

/// Everything a run of one variant produced.
#[derive(Debug)]
pub struct LoadRun {
    pub samples: Vec<Sample>,
    /// Per region: requests due while `concurrency` were in flight.
    pub dropped: Vec<u64>,
    /// Per region: requests sent more than [`LATE_AFTER`] after their time.
    pub late: Vec<u64>,
    /// Requests of the plan not reached because the run was interrupted.
    pub unsent: u64,
    pub elapsed: Duration,
    /// From the start to the last request sent (the whole duration for duration runs
    /// that were not interrupted): what achieved rates are measured over.
    pub send_window: Duration,
    pub interrupted: bool,
    /// The trace record that stopped the replay mid-stream.
    pub error: Option<TraceError>,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// When to send it, from the start of the run.
    pub at: Duration,
    /// Index into the scenario's client regions.
    pub region: usize,
    /// Position in the whole run.
    pub index: u64,
    pub object: u64,
    pub cacheable: bool,
    pub path: String,
}

/// The URL path a traced object is served at: a file the simulator writes for the
/// origins, of the object's traced size ([`crate::trace_live`]).
pub fn trace_path(object: u64) -> String {
    format!("{OBJECTS_PREFIX}t{object:016x}.bin")
}

/// What a live run sends: the scenario's synthetic plan, or a trace replayed on the wall
/// clock, `scale` real seconds per trace second.
pub enum Requests {
    Plan {
        plan: Plan,
        objects: Arc<CatalogueObjects>,
    },
    Trace {
        source: Box<Source>,
        scale: f64,
        /// Requests per second, for a trace whose records all share one instant.
        rate: f64,
        index: u64,
    },
}

impl Requests {
    /// The scenario's requests from the start: its trace when it names one (`scale`
    /// real seconds per trace second), else its plan.
    pub fn open(
        scenario: &Scenario,
        sampler: Arc<Sampler>,
        scale: f64,
    ) -> Result<Self, TraceError> {
        Ok(match &scenario.trace {
            Some(_) => Self::Trace {
                source: Box::new(Source::open(scenario)?),
                scale,
                rate: scenario.total_rate(),
                index: 0,
            },
            None => Self::Plan {
                plan: Plan::new(scenario, sampler),
                objects: Arc::new(scenario.catalogue.objects.clone()),
            },
        })
    }
}

impl Iterator for Requests {
    type Item = Result<Outgoing, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Plan { plan, objects } => plan.next().map(|planned| {
                Ok(Outgoing {
                    at: planned.at,
                    region: planned.region,
                    index: planned.index,
                    object: u64::from(planned.object),
                    cacheable: planned.cacheable,
                    path: object_path(objects, planned.object, planned.cacheable),
                })
            }),
            Self::Trace {
                source,
                scale,
                rate,
                index,
            } => {
                let request = match source.next()? {
                    Ok(request) => request,
                    Err(err) => return Some(Err(err)),
                };
                let at = if *scale > 0.0 {
                    request.time_ms as f64 / 1000.0 * *scale
                } else {
                    *index as f64 / *rate
                };
                let outgoing = Outgoing {
                    at: Duration::from_secs_f64(at),
                    region: request.region,
                    index: *index,
                    object: request.object,
                    cacheable: request.cacheable,
                    path: trace_path(request.object),
                };
                *index += 1;
                Some(Ok(outgoing))
            }
        }
    }
}

/// Live counters for the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
    pub offloaded: AtomicU64,
}

/// The HTTP client of a run.
#[derive(Clone)]
pub enum Client {
    /// Plain HTTP: the generator's own keep-alive connections per edge ([`conn`]).
    Http {
        timeout: Duration,
        connect_timeout: Duration,
    },
    /// HTTPS through reqwest, which checks the edges' certificates.
    Https(reqwest::Client),
}

/// Builds the HTTP client used for a run.
pub fn client(scenario: &Scenario) -> Result<Client, SimError> {
    let workload = &scenario.workload;
    let connect_timeout = workload.timeout.min(Duration::from_secs(5));
    if workload.protocol != Protocol::Https {
        return Ok(Client::Http {
            timeout: workload.timeout,
            connect_timeout,
        });
    }
    edgebox_node::install_crypto();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(workload.timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(workload.concurrency);
    match &workload.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| SimError::Io {
                what: format!("reading the CA file {}", path.display()),
                source,
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|err| {
                SimError::Deployment(format!(
                    "{} is not a PEM certificate: {err}",
                    path.display()
                ))
            })?;
            builder = builder.tls_certs_only([certificate]);
        }
        None => builder = builder.tls_danger_accept_invalid_certs(true),
    }
    builder
        .build()
        .map(Client::Https)
        .map_err(|err| SimError::Deployment(format!("building the HTTP client: {err}")))
}

/// Where one region's requests go: per edge of the region, its base URL and (plain
/// HTTP) its connection pool.
struct Route {
    url: String,
    pool: Option<Arc<EdgePool>>,
}

/// One pool per edge URL (regions that share an edge share its pool), connections
/// opened before the clock starts.
async fn routes(
    targets: &Targets,
    client: &Client,
    concurrency: usize,
    connections_per_edge: usize,
) -> Vec<Vec<Route>> {
    let mut pools: HashMap<&str, Arc<EdgePool>> = HashMap::new();
    let routes: Vec<Vec<Route>> = targets
        .per_region
        .iter()
        .map(|edges| {
            edges
                .iter()
                .map(|edge| {
                    let pool = match client {
                        Client::Http {
                            connect_timeout, ..
                        } => pools
                            .entry(edge.url.as_str())
                            .or_insert_with(|| {
                                Arc::new(EdgePool::new(&edge.url, *connect_timeout, connections_per_edge).expect(
                                    "the scenario check gives every edge an http:// URL under protocol = \"http\"",
                                ))
                            })
                            .clone()
                            .into(),
                        Client::Https(_) => None,
                    };
                    Route {
                        url: edge.url.clone(),
                        pool,
                    }
                })
                .collect()
        })
        .collect();
    let each = conn::PREOPEN_PER_EDGE
        .min(concurrency / pools.len().max(1))
        .min(connections_per_edge);
    futures_util::future::join_all(pools.values().map(|pool| pool.preopen(each))).await;
    routes
}

/// Checks that every edge accepts TCP connections, without sending a request.
pub async fn check_reachable(targets: &Targets) -> Result<(), SimError> {
    for edge in targets.per_region.iter().flatten() {
        let authority = edge
            .url
            .split("://")
            .nth(1)
            .unwrap_or(&edge.url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let connect = tokio::net::TcpStream::connect(authority.clone());
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(SimError::Unreachable(format!(
                    "edge {} at {}: {err}",
                    edge.name, edge.url
                )));
            }
            Err(_) => {
                return Err(SimError::Unreachable(format!(
                    "edge {} at {}: no answer within 3s",
                    edge.name, edge.url
                )));
            }
        }
    }
    Ok(())
}

/// Sends `requests` once against `targets`, each at its time.
pub async fn run(
    scenario: &Scenario,
    requests: Requests,
    targets: &Targets,
    client: Client,
    counters: Arc<Counters>,
    cancel: &CancellationToken,
) -> LoadRun {
    let regions = scenario.clients.len();
    let mut run = LoadRun {
        samples: Vec::new(),
        dropped: vec![0; regions],
        late: vec![0; regions],
        unsent: 0,
        elapsed: Duration::ZERO,
        send_window: Duration::ZERO,
        interrupted: false,
        error: None,
    };
    let concurrency = scenario.workload.concurrency;
    let routes = routes(
        targets,
        &client,
        concurrency,
        scenario.workload.connections_per_edge,
    )
    .await;
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut in_flight: JoinSet<Sample> = JoinSet::new();
    // Header values made once: each request clones a reference-counted buffer.
    let region_names: Vec<HeaderValue> = scenario
        .clients
        .iter()
        .map(|c| HeaderValue::from_str(&c.name).expect("the scenario check refuses other names"))
        .collect();
    let timeout = scenario.workload.timeout;
    let seed = scenario.seed;
    let start = tokio::time::Instant::now();
    let mut plan = requests;

    while let Some(request) = plan.next() {
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                // A bad record mid-stream: stop sending; what was sent is reported.
                run.error = Some(err);
                run.interrupted = true;
                break;
            }
        };
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(sample) = done {
                record(&counters, &sample);
                run.samples.push(sample);
            }
        }
        let due = start + request.at;
        // Only wait when the request is not due yet: at thousands per second most are
        // due by the time the previous one is sent, and a timer each costs CPU.
        if tokio::time::Instant::now() < due {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    run.interrupted = true;
                    run.unsent = 1 + plan.by_ref().count() as u64;
                    break;
                }
                _ = tokio::time::sleep_until(due) => {}
            }
        } else if cancel.is_cancelled() {
            run.interrupted = true;
            run.unsent = 1 + plan.by_ref().count() as u64;
            break;
        }
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            run.dropped[request.region] += 1;
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if lag > LATE_AFTER {
            run.late[request.region] += 1;
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let edges = &routes[request.region];
        let route = &edges[(request.index % edges.len() as u64) as usize];
        let headers = [
            (REGION_HEADER, region_names[request.region].clone()),
            (
                REQUEST_ID_HEADER,
                HeaderValue::try_from(format!("sim-{seed}-{}", request.index))
                    .expect("digits and dashes"),
            ),
        ];
        let exchange = match (&route.pool, &client) {
            (Some(pool), _) => Exchange::Pooled(pool.clone()),
            (None, Client::Https(client)) => Exchange::Reqwest {
                client: client.clone(),
                url: format!("{}{}", route.url, request.path),
            },
            (None, Client::Http { .. }) => unreachable!("plain HTTP routes have a pool"),
        };
        let cancel = cancel.clone();
        in_flight.spawn(async move {
            let _permit = permit;
            tokio::select! {
                sample = send(exchange, headers, timeout, &request, lag) => sample,
                _ = cancel.cancelled() => cancelled(&request, lag),
            }
        });
    }
    if let Limit::Duration(duration) = scenario.workload.limit
        && !run.interrupted
        && scenario.trace.is_none()
    {
        // The plan ends with its last request; the run lasts its whole duration.
        tokio::select! {
            _ = cancel.cancelled() => run.interrupted = true,
            _ = tokio::time::sleep_until(start + duration) => {}
        }
    }
    run.send_window = start.elapsed();
    while let Some(done) = in_flight.join_next().await {
        if let Ok(sample) = done {
            record(&counters, &sample);
            run.samples.push(sample);
        }
    }
    run.interrupted |= cancel.is_cancelled();
    run.elapsed = start.elapsed();
    run.samples.sort_by_key(|sample| sample.at);
    run
}

const REGION_HEADER: HeaderName = HeaderName::from_static("x-edgebox-region");
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// How one request goes out.
enum Exchange {
    Pooled(Arc<EdgePool>),
    Reqwest {
        client: reqwest::Client,
        url: String,
    },
}

fn record(counters: &Counters, sample: &Sample) {
    counters.done.fetch_add(1, Ordering::Relaxed);
    match sample.outcome {
        Outcome::Status(status) if status < 400 => {
            if sample.tier.offloaded() {
                counters.offloaded.fetch_add(1, Ordering::Relaxed);
            }
        }
        Outcome::Cancelled => {}
        _ => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn cancelled(request: &Outgoing, lag: Duration) -> Sample {
    Sample {
        region: request.region,
        index: request.index,
        object: request.object,
        cacheable: request.cacheable,
        at: request.at,
        lag,
        latency: Duration::ZERO,
        simulated_ms: None,
        server_total_ms: None,
        outcome: Outcome::Cancelled,
        tier: Tier::Unknown,
        x_cache: None,
        bytes: 0,
    }
}

async fn send(
    exchange: Exchange,
    headers: [(HeaderName, HeaderValue); 2],
    timeout: Duration,
    request: &Outgoing,
    lag: Duration,
) -> Sample {
    let mut sample = cancelled(request, lag);
    let started = Instant::now();
    match exchange {
        Exchange::Pooled(pool) => {
            let target = match pool.target(&request.path) {
                Ok(target) => target,
                Err(err) => {
                    tracing::debug!(error = %err, path = %request.path, "not a request target");
                    sample.outcome = Outcome::Failed("request");
                    return sample;
                }
            };
            match tokio::time::timeout(timeout, pool.get(&target, &headers)).await {
                Ok(Ok(answer)) => {
                    read_headers(&answer.head.headers, &mut sample);
                    sample.bytes = answer.bytes;
                    sample.outcome = Outcome::Status(answer.head.status.as_u16());
                }
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "request failed");
                    sample.outcome = Outcome::Failed(err.kind());
                }
                Err(_) => sample.outcome = Outcome::Failed("timeout"),
            }
        }
        Exchange::Reqwest { client, url } => {
            let [region, id] = headers;
            let response = client
                .get(url)
                .header(region.0, region.1)
                .header(id.0, id.1)
                .send()
                .await;
            let mut response = match response {
                Ok(response) => response,
                Err(err) => {
                    sample.latency = started.elapsed();
                    sample.outcome = Outcome::Failed(classify(&err));
                    tracing::debug!(error = %err, "request failed");
                    return sample;
                }
            };
            read_headers(response.headers(), &mut sample);
            let status = response.status().as_u16();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => sample.bytes += chunk.len() as u64,
                    Ok(None) => break,
                    Err(err) => {
                        sample.latency = started.elapsed();
                        sample.outcome =
                            Outcome::Failed(if err.is_timeout() { "timeout" } else { "body" });
                        return sample;
                    }
                }
            }
            sample.outcome = Outcome::Status(status);
        }
    }
    sample.latency = started.elapsed();
    sample
}

/// The tier, `X-Cache` and `Server-Timing` of a response into `sample`.
fn read_headers(headers: &HeaderMap, sample: &mut Sample) {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    sample.tier = Tier::parse(text("x-cache-tier"));
    sample.x_cache = text("x-cache").map(|value| {
        value
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
    });
    (sample.simulated_ms, sample.server_total_ms) = parse_server_timing(
        headers
            .get_all("server-timing")
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
}

fn classify(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// Reads `Server-Timing` values: returns the simulated part (an entry named `sim`, or
/// else the sum of entries whose name starts with `sim`) and the `total` entry.
pub fn parse_server_timing<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> (Option<f64>, Option<f64>) {
    let mut exact_sim = None;
    let mut sim_parts: Option<f64> = None;
    let mut total = None;
    for entry in values.into_iter().flat_map(|value| value.split(',')) {
        let mut params = entry.split(';').map(str::trim);
        let name = params.next().unwrap_or_default();
        let duration = params.find_map(|param| {
            let (key, value) = param.split_once('=')?;
            if key.trim().eq_ignore_ascii_case("dur") {
                value.trim().trim_matches('"').parse::<f64>().ok()
            } else {
                None
            }
        });
        let Some(duration) = duration.filter(|d| d.is_finite() && *d >= 0.0) else {
            continue;
        };
        if name.eq_ignore_ascii_case("sim") {
            exact_sim = Some(duration);
        } else if name
            .get(..3)
            .is_some_and(|head| head.eq_ignore_ascii_case("sim"))
        {
            *sim_parts.get_or_insert(0.0) += duration;
        } else if name.eq_ignore_ascii_case("total") {
            total = Some(duration);
        }
    }
    (exact_sim.or(sim_parts), total)
}
