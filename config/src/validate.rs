//! The one place a deployment file is checked: syntax, types, ranges and every
//! cross-reference. It reports all problems, never just the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use toml::de::DeTable;

use crate::decode::{decode, decode_list, decode_map};
use crate::diagnostics::{Collector, ConfigErrors, join};
use crate::model::*;
use crate::pattern::PathPattern;
use crate::raw::*;

const SECTIONS: &[&str] = &[
    "deployment",
    "regions",
    "latency",
    "nodes",
    "origin_groups",
    "origin",
    "edge",
    "cache",
    "tls",
    "sandbox",
    "control_plane",
];

/// Parses and checks a deployment file.
///
/// `source` names the file in messages; relative paths in the file are resolved
/// against `base_dir`.
pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Deployment, ConfigErrors> {
    let fail = |diagnostics| ConfigErrors {
        file: source.to_owned(),
        diagnostics,
    };

    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let mut collector = Collector::without_index(text);
        for error in syntax_errors {
            collector.error_at("", error.span(), error.message().to_owned());
        }
        return Err(fail(collector.diagnostics));
    }
    let root = root.into_inner();
    let mut c = Collector::new(text, &root);

    let mut raw = RawDocument::default();
    for (key, value) in &root {
        let name = key.get_ref().as_ref();
        match name {
            "deployment" => raw.deployment = decode(&mut c, name, value),
            "regions" => raw.regions = decode_map(&mut c, name, value),
            "latency" => raw.latency = decode(&mut c, name, value),
            "nodes" => raw.nodes = decode_list(&mut c, name, value),
            "origin_groups" => raw.origin_groups = decode_map(&mut c, name, value),
            "origin" => raw.origin = decode(&mut c, name, value),
            "edge" => raw.edge = decode(&mut c, name, value),
            "cache" => raw.cache = decode(&mut c, name, value),
            "tls" => raw.tls = decode(&mut c, name, value),
            "sandbox" => raw.sandbox = decode(&mut c, name, value),
            "control_plane" => raw.control_plane = decode(&mut c, name, value),
            other => c.error_at(
                join("", other),
                Some(key.span()),
                format!(
                    "unknown section `{other}`, expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }
    // Sections that failed to decode were reported; check the rest with defaults so
    // that their own problems are reported too, then fail.
    let deployment = check(&mut c, raw, source, text, base_dir);
    if c.diagnostics.is_empty() {
        return Ok(deployment);
    }
    let mut diagnostics = c.diagnostics;
    diagnostics
        .sort_by_key(|diagnostic| (diagnostic.line.unwrap_or(usize::MAX), diagnostic.column));
    Err(fail(diagnostics))
}

/// The sections as decoded; a section that failed to decode is left at its default.
#[derive(Default)]
struct RawDocument {
    deployment: Option<RawDeployment>,
    regions: Option<Vec<(String, RawRegion)>>,
    latency: Option<RawLatency>,
    nodes: Option<Vec<Option<RawNode>>>,
    origin_groups: Option<Vec<(String, RawOriginGroup)>>,
    origin: Option<RawOrigin>,
    edge: Option<RawEdge>,
    cache: Option<RawCache>,
    tls: Option<RawTls>,
    sandbox: Option<RawSandbox>,
    control_plane: Option<RawControlPlane>,
}

fn check(
    c: &mut Collector<'_>,
    raw: RawDocument,
    source: &str,
    text: &str,
    base_dir: &Path,
) -> Deployment {
    let raw_deployment = raw.deployment.unwrap_or_default();
    let data_dir = base_dir.join(&raw_deployment.data_dir);

    let regions: Vec<Region> = raw
        .regions
        .unwrap_or_default()
        .into_iter()
        .map(|(name, region)| Region {
            name,
            description: region.description,
        })
        .collect();
    if regions.is_empty() {
        c.error(
            "regions",
            "at least one region is required, e.g. [regions.local]",
        );
    }
    let region_set: BTreeSet<&str> = regions.iter().map(|region| region.name.as_str()).collect();

    let latency = check_latency(c, raw.latency.unwrap_or_default(), &region_set);
    let raw_nodes: Vec<(usize, RawNode)> = raw
        .nodes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(index, node)| node.map(|node| (index, node)))
        .collect();
    let raw_groups = raw.origin_groups.unwrap_or_default();
    let group_names: BTreeSet<&str> = raw_groups.iter().map(|(name, _)| name.as_str()).collect();

    let cache = check_cache(c, raw.cache.unwrap_or_default());
    let nodes = check_nodes(c, &raw_nodes, &region_set, &group_names, &cache, base_dir);
    let origin_groups = check_origin_groups(c, raw_groups, &nodes);
    let origin = check_origin(c, raw.origin.unwrap_or_default());
    let edge = check_edge(c, raw.edge.unwrap_or_default());
    let tls = check_tls(c, raw.tls.unwrap_or_default(), base_dir);
    let sandbox = check_sandbox(c, raw.sandbox.unwrap_or_default());
    let control_plane = check_control_plane(c, raw.control_plane.unwrap_or_default(), &data_dir);

    let deployment = Deployment {
        source: source.to_owned(),
        text: text.to_owned(),
        name: raw_deployment.name,
        data_dir,
        regions,
        latency,
        nodes,
        origin_groups,
        origin,
        edge,
        cache,
        tls,
        sandbox,
        control_plane,
    };
    check_topology(c, &deployment, &raw_nodes);
    deployment
}

fn check_latency(c: &mut Collector<'_>, raw: RawLatency, regions: &BTreeSet<&str>) -> LatencyModel {
    let intra_region = check_link(
        c,
        "latency.intra_region",
        raw.intra_region.rtt,
        raw.intra_region.jitter,
        raw.intra_region.loss,
    );
    let mut links = BTreeMap::new();
    for (index, link) in raw.links.into_iter().enumerate() {
        let path = format!("latency.links[{index}]");
        let [a, b] = link.between;
        let mut known = true;
        for region in [&a, &b] {
            if !regions.contains(region.as_str()) {
                c.error(
                    format!("{path}.between"),
                    format!(
                        "unknown region {region:?}; {}",
                        known_list("regions", regions)
                    ),
                );
                known = false;
            }
        }
        if a == b {
            c.error(
                format!("{path}.between"),
                "a link joins two different regions; use latency.intra_region for one region",
            );
            continue;
        }
        let checked = check_link(c, &path, link.rtt, link.jitter, link.loss);
        let key = if a <= b { (a, b) } else { (b, a) };
        if known && links.insert(key.clone(), checked).is_some() {
            c.error(
                format!("{path}.between"),
                format!("link between {:?} and {:?} is listed twice", key.0, key.1),
            );
        }
    }
    if raw.enabled {
        let names: Vec<&str> = regions.iter().copied().collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                if !links.contains_key(&(a.to_string(), b.to_string())) {
                    c.error("latency.links", format!("no link between regions {a:?} and {b:?}; add [[latency.links]] between = [{a:?}, {b:?}]"));
                }
            }
        }
    }
    LatencyModel {
        enabled: raw.enabled,
        intra_region,
        links,
    }
}

fn check_link(
    c: &mut Collector<'_>,
    path: &str,
    rtt: crate::units::Duration,
    jitter: crate::units::Duration,
    loss: f64,
) -> Link {
    if jitter.get() > rtt.get() {
        c.error(
            format!("{path}.jitter"),
            format!("jitter {jitter} is larger than the round trip {rtt}"),
        );
    }
    if !(0.0..1.0).contains(&loss) {
        c.error(
            format!("{path}.loss"),
            format!("loss must be a probability in [0, 1), got {loss}"),
        );
    }
    Link {
        rtt: rtt.get(),
        jitter: jitter.get(),
        loss,
    }
}

fn parse_addr(c: &mut Collector<'_>, path: &str, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.error(path, format!("{text:?} is not a listen address; write IP:PORT, e.g. \"127.0.0.1:8080\" (port 0 picks a free port)"));
            None
        }
    }
}

fn check_nodes(
    c: &mut Collector<'_>,
    raw_nodes: &[(usize, RawNode)],
    regions: &BTreeSet<&str>,
    groups: &BTreeSet<&str>,
    cache: &CacheSettings,
    base_dir: &Path,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut seen_names = HashMap::new();
    let mut control_planes = 0;
    let names: BTreeSet<&str> = raw_nodes
        .iter()
        .map(|(_, node)| node.name.as_str())
        .collect();
    let edge_names: BTreeSet<&str> = raw_nodes
        .iter()
        .filter(|(_, node)| node.role == RawRole::Edge)
        .map(|(_, node)| node.name.as_str())
        .collect();

    for (index, raw) in raw_nodes {
        let path = format!("nodes[{index}]");
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.error(
                format!("{path}.name"),
                format!(
                    "node name {:?} must be non-empty letters, digits, '-' or '_'",
                    raw.name
                ),
            );
        }
        if let Some(first) = seen_names.insert(raw.name.clone(), *index) {
            c.error(
                format!("{path}.name"),
                format!("node name {:?} is already used by nodes[{first}]", raw.name),
            );
        }
        if !regions.contains(raw.region.as_str()) {
            c.error(
                format!("{path}.region"),
                format!(
                    "unknown region {:?}; {}",
                    raw.region,
                    known_list("regions", regions)
                ),
            );
        }

        let role_name = match raw.role {
            RawRole::Edge => "edge",
            RawRole::Origin => "origin",
            RawRole::Sandbox => "sandbox",
            RawRole::ControlPlane => "control-plane",
        };
        let not_for_role = |key: &str, present: bool, c: &mut Collector<'_>| {
            if present {
                c.error(
                    format!("{path}.{key}"),
                    format!("`{key}` does not apply to a node with role {role_name:?}"),
                );
            }
        };
        let is_edge = raw.role == RawRole::Edge;
        let is_origin = raw.role == RawRole::Origin;
        not_for_role("https", !is_edge && raw.https.is_some(), c);
        not_for_role("admin", !is_edge && raw.admin.is_some(), c);
        not_for_role("origin_group", !is_edge && raw.origin_group.is_some(), c);
        not_for_role("parent", !is_edge && raw.parent.is_some(), c);
        not_for_role("l1_capacity", !is_edge && raw.l1_capacity.is_some(), c);
        not_for_role("l2_capacity", !is_edge && raw.l2_capacity.is_some(), c);
        not_for_role("root", !is_origin && raw.root.is_some(), c);
        not_for_role("delay", !is_origin && raw.delay.is_some(), c);

        let listen = raw
            .listen
            .as_deref()
            .and_then(|text| parse_addr(c, &format!("{path}.listen"), text));
        let require_listen = |c: &mut Collector<'_>| {
            if raw.listen.is_none() {
                c.error(
                    format!("{path}.listen"),
                    format!("a {role_name} node needs `listen = \"IP:PORT\"`"),
                );
            }
        };
        let placeholder: SocketAddr = ([127, 0, 0, 1], 0).into();

        let role = match raw.role {
            RawRole::Edge => {
                let https = raw
                    .https
                    .as_deref()
                    .and_then(|text| parse_addr(c, &format!("{path}.https"), text));
                if raw.listen.is_none() && raw.https.is_none() {
                    c.error(
                        format!("{path}.listen"),
                        "an edge needs `listen` (HTTP), `https`, or both",
                    );
                }
                let admin = match raw.admin.as_deref() {
                    Some(text) => parse_addr(c, &format!("{path}.admin"), text),
                    None => {
                        c.error(
                            format!("{path}.admin"),
                            "an edge needs `admin = \"IP:PORT\"` for the control plane",
                        );
                        None
                    }
                };
                let origin_group = match &raw.origin_group {
                    Some(group) if !groups.contains(group.as_str()) => {
                        c.error(
                            format!("{path}.origin_group"),
                            format!(
                                "unknown origin group {group:?}; {}",
                                known_list("origin groups", groups)
                            ),
                        );
                        group.clone()
                    }
                    Some(group) => group.clone(),
                    None => {
                        c.error(
                            format!("{path}.origin_group"),
                            "an edge needs `origin_group`, the origins its misses end at",
                        );
                        String::new()
                    }
                };
                if let Some(parent) = &raw.parent {
                    if parent == &raw.name {
                        c.error(format!("{path}.parent"), "an edge cannot be its own parent");
                    } else if !edge_names.contains(parent.as_str()) {
                        let what = if names.contains(parent.as_str()) {
                            "is not an edge"
                        } else {
                            "does not exist"
                        };
                        c.error(
                            format!("{path}.parent"),
                            format!(
                                "parent {parent:?} {what}; {}",
                                known_list("edges", &edge_names)
                            ),
                        );
                    }
                }
                Role::Edge(EdgeNode {
                    http: listen,
                    https,
                    admin: admin.unwrap_or(placeholder),
                    origin_group,
                    parent: raw.parent.clone(),
                    l1_capacity: raw
                        .l1_capacity
                        .map_or(cache.l1_capacity, |size| size.bytes()),
                    l2_capacity: raw
                        .l2_capacity
                        .map_or(cache.l2_capacity, |size| size.bytes()),
                })
            }
            RawRole::Origin => {
                require_listen(c);
                Role::Origin(OriginNode {
                    listen: listen.unwrap_or(placeholder),
                    root: raw.root.as_ref().map(|root| base_dir.join(root)),
                    delay: raw.delay.map(|delay| delay.get()).unwrap_or_default(),
                })
            }
            RawRole::Sandbox => {
                require_listen(c);
                Role::Sandbox(SandboxNode {
                    listen: listen.unwrap_or(placeholder),
                })
            }
            RawRole::ControlPlane => {
                require_listen(c);
                control_planes += 1;
                if control_planes > 1 {
                    c.error(
                        format!("{path}.role"),
                        "a deployment has at most one control-plane node",
                    );
                }
                Role::ControlPlane(ControlPlaneNode {
                    listen: listen.unwrap_or(placeholder),
                })
            }
        };
        nodes.push(Node {
            name: raw.name.clone(),
            region: raw.region.clone(),
            role,
        });
    }
    nodes
}

fn check_origin_groups(
    c: &mut Collector<'_>,
    raw: Vec<(String, RawOriginGroup)>,
    nodes: &[Node],
) -> BTreeMap<String, OriginGroup> {
    let mut groups = BTreeMap::new();
    for (name, group) in raw {
        let path = join("origin_groups", &name);
        let policy = match group.policy.as_str() {
            "round_robin" => Some(LbPolicy::RoundRobin),
            "weighted" => Some(LbPolicy::Weighted),
            "consistent_hash" => {
                let key = match group.hash_key.as_deref() {
                    None | Some("path") => HashKey::Path,
                    Some(key) => match key.strip_prefix("header:") {
                        Some(header) if !header.is_empty() => {
                            HashKey::Header(header.to_ascii_lowercase())
                        }
                        _ => {
                            c.error(
                                format!("{path}.hash_key"),
                                format!("hash_key {key:?} must be \"path\" or \"header:NAME\""),
                            );
                            HashKey::Path
                        }
                    },
                };
                Some(LbPolicy::ConsistentHash { key })
            }
            "least_connections" => Some(LbPolicy::LeastConnections),
            "latency_aware" => Some(LbPolicy::LatencyAware),
            other => {
                c.error(
                    format!("{path}.policy"),
                    format!("unknown policy {other:?}; expected round_robin, weighted, consistent_hash, least_connections or latency_aware"),
                );
                None
            }
        };
        if group.hash_key.is_some()
            && !matches!(policy, Some(LbPolicy::ConsistentHash { .. }) | None)
        {
            c.error(
                format!("{path}.hash_key"),
                "hash_key only applies to policy = \"consistent_hash\"",
            );
        }
        if group.members.is_empty() {
            c.error(
                format!("{path}.members"),
                "an origin group needs at least one member",
            );
        }
        let mut members = Vec::new();
        for (index, member) in group.members.into_iter().enumerate() {
            let member_path = format!("{path}.members[{index}]");
            if member.weight == 0 {
                c.error(format!("{member_path}.weight"), "weight must be at least 1");
            }
            let target = match (&member.node, &member.host) {
                (Some(node_name), None) => {
                    if member.port.is_some() {
                        c.error(
                            format!("{member_path}.port"),
                            "`port` goes with `host`; a node member uses the node's listen address",
                        );
                    }
                    match nodes.iter().find(|node| &node.name == node_name) {
                        Some(Node {
                            role: Role::Origin(origin),
                            ..
                        }) => Some(OriginTarget::Node {
                            name: node_name.clone(),
                            addr: origin.listen,
                        }),
                        Some(_) => {
                            c.error(
                                format!("{member_path}.node"),
                                format!("node {node_name:?} is not an origin"),
                            );
                            None
                        }
                        None => {
                            let origins: BTreeSet<&str> = nodes
                                .iter()
                                .filter(|node| matches!(node.role, Role::Origin(_)))
                                .map(|node| node.name.as_str())
                                .collect();
                            c.error(
                                format!("{member_path}.node"),
                                format!(
                                    "unknown node {node_name:?}; {}",
                                    known_list("origins", &origins)
                                ),
                            );
                            None
                        }
                    }
                }
                (None, Some(host)) => match member.port {
                    Some(port) if !host.is_empty() => Some(OriginTarget::Host {
                        host: host.clone(),
                        port,
                    }),
                    Some(_) => {
                        c.error(format!("{member_path}.host"), "host must not be empty");
                        None
                    }
                    None => {
                        c.error(
                            format!("{member_path}.port"),
                            format!("member host {host:?} needs a `port`"),
                        );
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    c.error(
                        member_path.clone(),
                        "a member has either `node` or `host`, not both",
                    );
                    None
                }
                (None, None) => {
                    c.error(
                        member_path.clone(),
                        "a member needs `node = \"NAME\"` or `host = \"NAME\"` with `port`",
                    );
                    None
                }
            };
            if let Some(target) = target {
                members.push(OriginMember {
                    target,
                    weight: member.weight.max(1),
                });
            }
        }
        let health = group.health;
        if !health.path.starts_with('/') {
            c.error(
                format!("{path}.health.path"),
                format!("health path {:?} must start with '/'", health.path),
            );
        }
        if health.healthy_threshold == 0 || health.unhealthy_threshold == 0 {
            c.error(
                format!("{path}.health"),
                "health thresholds must be at least 1",
            );
        }
        if health.interval.get().is_zero() {
            c.error(
                format!("{path}.health.interval"),
                "health interval must be positive",
            );
        }
        groups.insert(
            name,
            OriginGroup {
                policy: policy.unwrap_or(LbPolicy::RoundRobin),
                members,
                health: HealthCheck {
                    path: health.path,
                    interval: health.interval.get(),
                    timeout: health.timeout.get(),
                    healthy_threshold: health.healthy_threshold,
                    unhealthy_threshold: health.unhealthy_threshold,
                },
                connect_timeout: group.connect_timeout.get(),
                read_timeout: group.read_timeout.get(),
                retries: group.retries,
            },
        );
    }
    groups
}

fn check_pattern(c: &mut Collector<'_>, path: String, text: &str) -> PathPattern {
    PathPattern::parse(text).unwrap_or_else(|message| {
        c.error(path, message);
        PathPattern::parse("/**").expect("literal pattern parses")
    })
}

fn check_origin(c: &mut Collector<'_>, raw: RawOrigin) -> OriginSettings {
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| {
            let path = format!("origin.rules[{index}]");
            for (key_index, key) in rule.surrogate_keys.iter().enumerate() {
                if key.is_empty() || key.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                    c.error(
                        format!("{path}.surrogate_keys[{key_index}]"),
                        format!("surrogate key {key:?} must be non-empty without spaces"),
                    );
                }
            }
            if let Some(value) = &rule.cache_control
                && value.chars().any(|ch| ch.is_control())
            {
                c.error(
                    format!("{path}.cache_control"),
                    "cache_control must not contain control characters",
                );
            }
            HeaderRule {
                pattern: check_pattern(c, format!("{path}.pattern"), &rule.pattern),
                cache_control: rule.cache_control,
                surrogate_keys: rule.surrogate_keys,
            }
        })
        .collect();
    OriginSettings { rules }
}

fn check_edge(c: &mut Collector<'_>, raw: RawEdge) -> EdgeSettings {
    let limits = raw.limits;
    if limits.max_header_size.bytes() < 1024 {
        c.error(
            "edge.limits.max_header_size",
            "max_header_size below 1KiB would reject ordinary requests",
        );
    }
    let mut algorithms = Vec::new();
    for (index, name) in raw.compression.algorithms.iter().enumerate() {
        match name.as_str() {
            "gzip" => algorithms.push(Encoding::Gzip),
            "br" => algorithms.push(Encoding::Br),
            "zstd" => algorithms.push(Encoding::Zstd),
            other => c.error(
                format!("edge.compression.algorithms[{index}]"),
                format!("unknown compression {other:?}; expected gzip, br or zstd"),
            ),
        }
    }
    if raw.worker_threads > 1024 {
        c.error(
            "edge.worker_threads",
            format!("{} threads is more than any machine needs; 0 means one per core", raw.worker_threads),
        );
    }
    EdgeSettings {
        worker_threads: raw.worker_threads,
        max_header_size: limits.max_header_size.bytes(),
        max_body_size: limits.max_body_size.bytes(),
        client_timeout: limits.client_timeout.get(),
        shutdown_grace: raw
            .shutdown_grace
            .map(|grace| grace.get())
            .unwrap_or(std::time::Duration::from_secs(10)),
        compression: Compression {
            enabled: raw.compression.enabled,
            min_size: raw.compression.min_size.bytes(),
            algorithms,
            content_types: raw
                .compression
                .content_types
                .iter()
                .map(|ty| ty.to_ascii_lowercase())
                .collect(),
        },
    }
}

fn check_cache(c: &mut Collector<'_>, raw: RawCache) -> CacheSettings {
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| TtlRule {
            pattern: check_pattern(c, format!("cache.rules[{index}].pattern"), &rule.pattern),
            ttl: rule.ttl.get(),
        })
        .collect();
    if raw.l1_capacity.bytes() == 0 && raw.enabled {
        c.error(
            "cache.l1_capacity",
            "the memory tier needs some capacity; set cache.enabled = false to turn caching off",
        );
    }
    CacheSettings {
        enabled: raw.enabled,
        l1_capacity: raw.l1_capacity.bytes(),
        l2_capacity: raw.l2_capacity.bytes(),
        max_object_size: raw.max_object_size.bytes(),
        stale_while_revalidate: raw.stale_while_revalidate.get(),
        stale_if_error: raw.stale_if_error.get(),
        rules,
        fast_path: raw.fast_path,
    }
}

fn check_tls(c: &mut Collector<'_>, raw: RawTls, base_dir: &Path) -> TlsSettings {
    let certificates = raw
        .certificates
        .into_iter()
        .enumerate()
        .map(|(index, cert)| {
            let path = format!("tls.certificates[{index}]");
            if cert.names.is_empty() {
                c.error(
                    format!("{path}.names"),
                    "a certificate needs at least one server name",
                );
            }
            for (name_index, name) in cert.names.iter().enumerate() {
                let valid = !name.is_empty()
                    && name.trim_start_matches("*.").split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                    });
                if !valid {
                    c.error(
                        format!("{path}.names[{name_index}]"),
                        format!("{name:?} is not a DNS name"),
                    );
                }
            }
            let cert_path = base_dir.join(&cert.cert);
            let key_path = base_dir.join(&cert.key);
            for (key, file) in [("cert", &cert_path), ("key", &key_path)] {
                if !file.is_file() {
                    c.error(
                        format!("{path}.{key}"),
                        format!("{} does not exist or is not a file", file.display()),
                    );
                }
            }
            Certificate {
                names: cert.names,
                cert: cert_path,
                key: key_path,
            }
        })
        .collect();
    TlsSettings { certificates }
}

fn check_sandbox(c: &mut Collector<'_>, raw: RawSandbox) -> SandboxSettings {
    let limits = |limits: &RawJobLimits| JobLimits {
        wall: limits.wall.get(),
        cpu: limits.cpu.get(),
        memory: limits.memory.bytes(),
        output: limits.output.bytes(),
    };
    let defaults = limits(&raw.defaults);
    let maximums = limits(&raw.maximums);
    let pairs = [
        ("wall", defaults.wall > maximums.wall),
        ("cpu", defaults.cpu > maximums.cpu),
        ("memory", defaults.memory > maximums.memory),
        ("output", defaults.output > maximums.output),
    ];
    for (key, exceeds) in pairs {
        if exceeds {
            c.error(
                format!("sandbox.defaults.{key}"),
                format!("the default {key} limit exceeds sandbox.maximums.{key}"),
            );
        }
    }
    if maximums.memory > 4 * 1024 * 1024 * 1024 {
        c.error(
            "sandbox.maximums.memory",
            "wasm32 guests cannot address more than 4GiB",
        );
    }
    for (key, value) in [("wall", defaults.wall), ("cpu", defaults.cpu)] {
        if value.is_zero() {
            c.error(
                format!("sandbox.defaults.{key}"),
                format!("{key} limit must be positive"),
            );
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    SandboxSettings {
        max_concurrent_jobs: if raw.max_concurrent_jobs == 0 {
            cores
        } else {
            raw.max_concurrent_jobs
        },
        queue_length: raw.queue_length,
        keep_finished: raw.keep_finished.get(),
        max_source_size: raw.max_source_size.bytes(),
        max_stdin_size: raw.max_stdin_size.bytes(),
        scratch_size: raw.scratch_size.bytes(),
        defaults,
        maximums,
    }
}

fn check_control_plane(
    c: &mut Collector<'_>,
    raw: RawControlPlane,
    data_dir: &Path,
) -> ControlPlaneSettings {
    let mut names = BTreeSet::new();
    let tokens = raw
        .tokens
        .into_iter()
        .enumerate()
        .filter_map(|(index, token)| {
            let path = format!("control_plane.tokens[{index}]");
            if !names.insert(token.name.clone()) {
                c.error(
                    format!("{path}.name"),
                    format!("token name {:?} is used twice", token.name),
                );
            }
            let role = match token.role.as_str() {
                "operator" => Some(TokenRole::Operator),
                "submitter" => Some(TokenRole::Submitter),
                other => {
                    c.error(
                        format!("{path}.role"),
                        format!("unknown role {other:?}; expected \"operator\" or \"submitter\""),
                    );
                    None
                }
            };
            let secret = match (token.token, token.token_env, token.token_file) {
                (Some(secret), None, None) if secret.len() >= 16 => {
                    Some(TokenSecret::Inline(secret))
                }
                (Some(_), None, None) => {
                    c.error(
                        format!("{path}.token"),
                        "a token must be at least 16 characters",
                    );
                    None
                }
                (None, Some(var), None) => Some(TokenSecret::Env(var)),
                (None, None, Some(file)) => Some(TokenSecret::File(data_dir.join(file))),
                _ => {
                    c.error(
                        path.clone(),
                        "give exactly one of `token`, `token_env` or `token_file`",
                    );
                    None
                }
            };
            Some(Token {
                name: token.name,
                role: role?,
                secret: secret?,
            })
        })
        .collect();
    ControlPlaneSettings { tokens }
}

/// Checks that span nodes: parent chains end, edges share their parent's origin group,
/// and no two listeners share an address.
fn check_topology(c: &mut Collector<'_>, deployment: &Deployment, raw_nodes: &[(usize, RawNode)]) {
    let index_of: HashMap<&str, usize> = raw_nodes
        .iter()
        .map(|(index, node)| (node.name.as_str(), *index))
        .collect();
    let path_of = |name: &str, key: &str| {
        format!("nodes[{}].{key}", index_of.get(name).copied().unwrap_or(0))
    };

    for (node, edge) in deployment.edges() {
        let mut chain = vec![node.name.as_str()];
        let mut current = edge;
        while let Some(parent) = &current.parent {
            let Some((_, parent_edge)) = deployment
                .edges()
                .find(|(candidate, _)| &candidate.name == parent)
            else {
                break; // reported by check_nodes
            };
            if chain.contains(&parent.as_str()) {
                // Report each loop once, at the node whose name sorts first.
                if chain.len() > 1 && chain.iter().min() == Some(&node.name.as_str()) {
                    chain.push(parent);
                    c.error(
                        path_of(&node.name, "parent"),
                        format!("parent loop: {}", chain.join(" -> ")),
                    );
                }
                break;
            }
            chain.push(parent);
            current = parent_edge;
        }
        if let Some(parent) = &edge.parent
            && let Some((_, parent_edge)) = deployment
                .edges()
                .find(|(candidate, _)| &candidate.name == parent)
            && parent_edge.origin_group != edge.origin_group
            && deployment.origin_groups.contains_key(&edge.origin_group)
            && deployment
                .origin_groups
                .contains_key(&parent_edge.origin_group)
        {
            c.error(
                path_of(&node.name, "origin_group"),
                format!(
                    "edge {:?} uses origin group {:?} but its parent {parent:?} uses {:?}; a parent must front the same origins",
                    node.name, edge.origin_group, parent_edge.origin_group
                ),
            );
        }
    }

    let mut listeners: HashMap<SocketAddr, (String, &str)> = HashMap::new();
    for node in &deployment.nodes {
        for (label, addr) in node.listeners() {
            if addr.port() == 0 {
                continue;
            }
            let key = match label {
                "http" if matches!(node.role, Role::Edge(_)) => "listen",
                "http" | "api" => "listen",
                other => other,
            };
            if let Some((other_node, other_label)) =
                listeners.insert(addr, (node.name.clone(), label))
            {
                c.error(
                    path_of(&node.name, key),
                    format!("{addr} is already the {other_label} listener of node {other_node:?}"),
                );
            }
        }
    }
}

fn known_list(what: &str, names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        format!("no {what} are defined")
    } else {
        let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
        format!("known {what}: {}", quoted.join(", "))
    }
}
