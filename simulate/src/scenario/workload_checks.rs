//! Checks of a scenario's workload: arrivals, client regions, the object catalogue and
//! the settings every variant may override.

use super::*;

/// Connections the load generator keeps to one edge at most, unless the scenario says
/// otherwise. Without a bound, a stall of a few hundred milliseconds made the generator
/// open a connection per request due meanwhile (2,800 to one edge in one 20 s run), and
/// the edges' cost of accepting them prolonged the stall (benches/results/simulate.md,
/// "Live replay: what stalled"). 256 covers 2,500 requests/s at 100 ms of latency per edge.
pub const DEFAULT_CONNECTIONS_PER_EDGE: u64 = 256;

/// `model`: the scenario runs in model mode, where only counters are kept, so the live
/// limits on planned requests and rates do not apply. `whole_trace`: requests come from a
/// trace, which may be replayed whole (neither `duration` nor `requests`).
pub(super) fn check_workload(
    c: &mut Collector<'_>,
    raw: RawWorkload,
    base_dir: &Path,
    model: bool,
    whole_trace: bool,
) -> Workload {
    let limit = match (raw.duration, raw.requests) {
        (None, None) if whole_trace => Limit::Requests(u64::MAX),
        (Some(_), Some(_)) => {
            c.error("workload", "give `duration` or `requests`, not both");
            Limit::Requests(1)
        }
        (None, None) => {
            c.error(
                "workload",
                "give how long to run: `duration = \"30s\"` or `requests = 10000`",
            );
            Limit::Requests(1)
        }
        (Some(duration), None) => {
            let duration = duration.get();
            if duration.is_zero() || (!model && duration > Duration::from_secs(24 * 3600)) {
                c.error(
                    "workload.duration",
                    "duration must be positive and at most 24h",
                );
            }
            Limit::Duration(duration)
        }
        (None, Some(requests)) => {
            if requests == 0 || (!model && requests as f64 > MAX_PLANNED) {
                c.error(
                    "workload.requests",
                    format!("requests must be between 1 and {MAX_PLANNED}"),
                );
            }
            Limit::Requests(requests)
        }
    };
    let concurrency = raw.concurrency.unwrap_or(256);
    if !(1..=10_000).contains(&concurrency) {
        c.error(
            "workload.concurrency",
            format!("concurrency must be between 1 and 10000, got {concurrency}"),
        );
    }
    let connections_per_edge = raw
        .connections_per_edge
        .unwrap_or(DEFAULT_CONNECTIONS_PER_EDGE);
    if !(1..=10_000).contains(&connections_per_edge) {
        c.error(
            "workload.connections_per_edge",
            format!("connections_per_edge must be between 1 and 10000, got {connections_per_edge}"),
        );
    }
    let timeout = raw.timeout.map_or(Duration::from_secs(10), |t| t.get());
    if timeout.is_zero() {
        c.error("workload.timeout", "timeout must be positive");
    }
    let arrivals = match raw.arrivals.as_deref() {
        None | Some("poisson") => Arrivals::Poisson,
        Some("constant") => Arrivals::Constant,
        Some(other) => {
            c.error(
                "workload.arrivals",
                format!("unknown arrivals {other:?}; expected \"poisson\" or \"constant\""),
            );
            Arrivals::Poisson
        }
    };
    let uncacheable = raw.uncacheable.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&uncacheable) {
        c.error(
            "workload.uncacheable",
            format!("uncacheable is a share in [0, 1], got {uncacheable}"),
        );
    }
    let protocol = match raw.protocol.as_deref() {
        None | Some("http") => Protocol::Http,
        Some("https") => Protocol::Https,
        Some(other) => {
            c.error(
                "workload.protocol",
                format!("unknown protocol {other:?}; expected \"http\" or \"https\""),
            );
            Protocol::Http
        }
    };
    let ca_file = raw.ca_file.map(|file| base_dir.join(file));
    if let Some(file) = &ca_file {
        if protocol != Protocol::Https {
            c.error(
                "workload.ca_file",
                "ca_file only applies to protocol = \"https\"",
            );
        }
        if !file.is_file() {
            c.error(
                "workload.ca_file",
                format!("{} does not exist or is not a file", file.display()),
            );
        }
    }
    Workload {
        limit,
        concurrency: concurrency.clamp(1, 10_000) as usize,
        connections_per_edge: connections_per_edge.clamp(1, 10_000) as usize,
        timeout,
        arrivals,
        uncacheable: uncacheable.clamp(0.0, 1.0),
        protocol,
        ca_file,
    }
}

pub(super) fn check_clients(
    c: &mut Collector<'_>,
    raw: Option<Vec<(String, RawClients)>>,
    workload: &Workload,
    model: bool,
) -> Vec<ClientRegion> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        c.error(
            "clients",
            "place clients in at least one region, e.g. [clients.eu-west] rate = 100",
        );
    }
    let mut clients = Vec::new();
    for (name, client) in raw {
        if http::HeaderValue::from_str(&name).is_err() {
            // The name is sent in `X-Edgebox-Region`.
            c.error(
                join_key_path("clients", &name),
                "a region name is printable ASCII (it is sent in the X-Edgebox-Region header)",
            );
            continue;
        }
        let path = join_key_path(&join_key_path("clients", &name), "rate");
        if !client.rate.is_finite() || client.rate <= 0.0 {
            c.error(
                path,
                format!(
                    "impossible rate {}: a rate is a positive number of requests per second",
                    client.rate
                ),
            );
            continue;
        }
        if !model && client.rate > MAX_TOTAL_RATE {
            c.error(
                path,
                format!(
                    "impossible rate {}/s: at most {MAX_TOTAL_RATE}/s in all can be generated on one machine",
                    client.rate
                ),
            );
            continue;
        }
        clients.push(ClientRegion {
            name,
            rate: client.rate,
        });
    }
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    let total: f64 = clients.iter().map(|client| client.rate).sum();
    if !model && total > MAX_TOTAL_RATE {
        c.error(
            "clients",
            format!("impossible total rate {total}/s: at most {MAX_TOTAL_RATE}/s can be generated on one machine"),
        );
    }
    if let Limit::Duration(duration) = workload.limit
        && total > 0.0
    {
        let planned = total * duration.as_secs_f64();
        if planned < 1.0 {
            c.error(
                "workload.duration",
                format!(
                    "at {total}/s for {} no request would be sent; run longer or faster",
                    edgebox_config::units::Duration(duration)
                ),
            );
        }
        if !model && planned > MAX_PLANNED {
            c.error(
                "workload.duration",
                format!(
                    "{total}/s for {} plans {planned:.0} requests; at most {MAX_PLANNED} per run",
                    edgebox_config::units::Duration(duration)
                ),
            );
        }
    }
    clients
}

pub(super) fn check_catalogue(
    c: &mut Collector<'_>,
    raw: RawCatalogue,
    target: &Target,
    workload: &Workload,
) -> Catalogue {
    let popularity = match raw.popularity.as_deref() {
        None | Some("zipf") => {
            let s = raw.zipf_s.unwrap_or(1.0);
            if !s.is_finite() || s <= 0.0 || s > 10.0 {
                c.error(
                    "catalogue.zipf_s",
                    format!("the Zipf exponent must be in (0, 10], got {s}"),
                );
            }
            Popularity::Zipf {
                s: if s.is_finite() {
                    s.clamp(0.01, 10.0)
                } else {
                    1.0
                },
            }
        }
        Some("uniform") => {
            if raw.zipf_s.is_some() {
                c.error(
                    "catalogue.zipf_s",
                    "zipf_s only applies to popularity = \"zipf\"",
                );
            }
            Popularity::Uniform
        }
        Some(other) => {
            c.error(
                "catalogue.popularity",
                format!("unknown popularity {other:?}; expected \"zipf\" or \"uniform\""),
            );
            Popularity::Uniform
        }
    };
    let generated = matches!(target, Target::Start { .. });
    let objects = if generated {
        for (key, given) in [
            ("paths", raw.paths.is_some()),
            ("uncacheable_paths", raw.uncacheable_paths.is_some()),
        ] {
            if given {
                c.error(
                    format!("catalogue.{key}"),
                    "paths are for running deployments; the simulator writes the catalogue itself for a deployment it starts",
                );
            }
        }
        let count = raw.objects.unwrap_or(1000);
        if count == 0 || count > MAX_OBJECTS {
            c.error(
                "catalogue.objects",
                format!("objects must be between 1 and {MAX_OBJECTS}, got {count}"),
            );
        }
        let median_size = raw.size.map_or(16 * 1024, |size| size.bytes());
        let min_size = raw.min_size.map_or(128, |size| size.bytes());
        let max_size = raw.max_size.map_or(1024 * 1024, |size| size.bytes());
        let size_sigma = raw.size_sigma.unwrap_or(1.0);
        if min_size == 0 {
            c.error("catalogue.min_size", "objects need at least one byte");
        }
        if !(min_size..=max_size).contains(&median_size) {
            c.error(
                "catalogue.size",
                format!("the median size {median_size} must lie between min_size {min_size} and max_size {max_size}"),
            );
        }
        if !size_sigma.is_finite() || !(0.0..=4.0).contains(&size_sigma) {
            c.error(
                "catalogue.size_sigma",
                format!("size_sigma must be in [0, 4], got {size_sigma}"),
            );
        }
        let objects = CatalogueObjects::Generated {
            count: count.clamp(1, MAX_OBJECTS) as u32,
            median_size,
            size_sigma: if size_sigma.is_finite() {
                size_sigma.clamp(0.0, 4.0)
            } else {
                0.0
            },
            min_size: min_size.max(1),
            max_size: max_size.max(min_size.max(1)),
        };
        let total = crate::workload::catalogue_bytes(&objects, 0);
        if total > MAX_CATALOGUE_BYTES {
            c.error(
                "catalogue",
                format!(
                    "the catalogue would need {} on disk; at most {}",
                    edgebox_config::units::ByteSize(total),
                    edgebox_config::units::ByteSize(MAX_CATALOGUE_BYTES)
                ),
            );
        }
        objects
    } else {
        for (key, given) in [
            ("objects", raw.objects.is_some()),
            ("size", raw.size.is_some()),
            ("size_sigma", raw.size_sigma.is_some()),
            ("min_size", raw.min_size.is_some()),
            ("max_size", raw.max_size.is_some()),
        ] {
            if given {
                c.error(
                    format!("catalogue.{key}"),
                    "a running deployment serves its own files; list them in catalogue.paths",
                );
            }
        }
        let paths = raw
            .paths
            .unwrap_or_else(|| SAMPLE_PATHS.iter().map(|path| (*path).to_owned()).collect());
        let uncacheable_paths = raw.uncacheable_paths.unwrap_or_default();
        if paths.is_empty() {
            c.error("catalogue.paths", "list at least one path");
        }
        for (key, list) in [("paths", &paths), ("uncacheable_paths", &uncacheable_paths)] {
            for (index, path) in list.iter().enumerate() {
                if !path.starts_with('/')
                    || path.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    c.error(
                        format!("catalogue.{key}[{index}]"),
                        format!("{path:?} is not a request path; write e.g. \"/index.html\""),
                    );
                }
            }
        }
        if workload.uncacheable > 0.0 && uncacheable_paths.is_empty() {
            c.error(
                "workload.uncacheable",
                "uncacheable requests against a running deployment need catalogue.uncacheable_paths (paths its origins mark no-store)",
            );
        }
        CatalogueObjects::Listed {
            paths,
            uncacheable_paths,
        }
    };
    Catalogue {
        popularity,
        objects,
    }
}

pub(super) const POLICIES: &[&str] = &[
    "round_robin",
    "weighted",
    "consistent_hash",
    "least_connections",
    "latency_aware",
];

pub(super) fn check_settings(
    c: &mut Collector<'_>,
    path: &str,
    raw: RawSettings,
    variant: bool,
) -> Settings {
    if !variant {
        for (key, given) in [
            ("name", raw.name.is_some()),
            ("description", raw.description.is_some()),
        ] {
            if given {
                c.error(
                    format!("{path}.{key}"),
                    format!("`{key}` belongs to a [[variants]] entry"),
                );
            }
        }
    }
    if let Some(policy) = &raw.lb_policy
        && !POLICIES.contains(&policy.as_str())
    {
        c.error(
            format!("{path}.lb_policy"),
            format!(
                "unknown policy {policy:?}; expected {}",
                POLICIES.join(", ")
            ),
        );
    }
    if let Some(scale) = raw.latency_scale
        && (!scale.is_finite() || scale <= 0.0 || scale > 100.0)
    {
        c.error(
            format!("{path}.latency_scale"),
            format!("latency_scale must be in (0, 100], got {scale}"),
        );
    }
    let l1_policy = raw.l1_policy.as_deref().and_then(|policy| {
        policy
            .parse::<PolicyKind>()
            .map_err(|err| c.error(format!("{path}.l1_policy"), err.to_string()))
            .ok()
    });
    Settings {
        l1_policy,
        tiering: raw.tiering,
        cache: raw.cache,
        l1_capacity: raw.l1_capacity.map(|size| size.bytes()),
        l2_capacity: raw.l2_capacity.map(|size| size.bytes()),
        lb_policy: raw.lb_policy,
        latency: raw.latency,
        latency_scale: raw.latency_scale,
        origin_delay: raw
            .origin_delay
            .unwrap_or_default()
            .into_iter()
            .map(|(node, delay)| (node, delay.get().as_micros() as u64))
            .collect(),
    }
}
