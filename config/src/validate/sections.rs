//! The shared sections of a deployment file: `[origin_groups.*]`, `[origin]`, `[edge]`,
//! `[cache]`, `[tls]`, `[sandbox]` and `[control_plane]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::known_list;
use crate::diagnostics::{Collector, join};
use crate::model::*;
use crate::pattern::PathPattern;
use crate::raw::*;

pub(super) fn check_origin_groups(
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

pub(super) fn check_pattern(c: &mut Collector<'_>, path: String, text: &str) -> PathPattern {
    PathPattern::parse(text).unwrap_or_else(|error| {
        c.error(path, error.to_string());
        PathPattern::parse("/**").expect("literal pattern parses")
    })
}

pub(super) fn check_origin(c: &mut Collector<'_>, raw: RawOrigin) -> OriginSettings {
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

pub(super) fn check_edge(c: &mut Collector<'_>, raw: RawEdge, data_dir: &Path) -> EdgeSettings {
    let hosts = check_hosts(c, raw.hosts);
    let hop_key = match (raw.hop_key, raw.hop_key_env, raw.hop_key_file) {
        (None, None, None) => TokenSecret::File(data_dir.join("secrets/hop-key")),
        (Some(key), None, None) => {
            if key.len() < 16 {
                c.error("edge.hop_key", "a hop key must be at least 16 characters");
            }
            TokenSecret::Inline(key)
        }
        (None, Some(var), None) => TokenSecret::Env(var),
        (None, None, Some(file)) => TokenSecret::File(data_dir.join(file)),
        _ => {
            c.error(
                "edge",
                "give at most one of `hop_key`, `hop_key_env` or `hop_key_file`",
            );
            TokenSecret::File(data_dir.join("secrets/hop-key"))
        }
    };
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
            format!(
                "{} threads is more than any machine needs; 0 means one per core",
                raw.worker_threads
            ),
        );
    }
    EdgeSettings {
        trusted_proxies: super::traffic::check_trusted_proxies(c, &raw.trusted_proxies),
        rate_limit: super::traffic::check_rate_limit(c, raw.rate_limit),
        access_log: super::traffic::check_access_log(c, raw.access_log, data_dir),
        hosts,
        hop_key,
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

/// `[edge.hosts]`: names as the edge compares them (lower case; an IPv6 literal in the
/// spelling `std` prints), so that a request's normalised host matches by equality.
fn check_hosts(c: &mut Collector<'_>, raw: RawHosts) -> Hosts {
    let mut names = Vec::new();
    for (index, name) in raw.names.iter().enumerate() {
        match host_name(name, true) {
            Some(name) => names.push(name),
            None => c.error(
                format!("edge.hosts.names[{index}]"),
                format!(
                    "{name:?} is not a host name, an IP address or `*.name` (no port, no path)"
                ),
            ),
        }
    }
    let unknown = match raw.unknown.as_str() {
        "default" => UnknownHost::Default,
        "reject" => UnknownHost::Reject,
        other => {
            c.error(
                "edge.hosts.unknown",
                format!("unknown policy {other:?}; expected \"default\" or \"reject\""),
            );
            UnknownHost::Default
        }
    };
    let default = match &raw.default {
        Some(name) => host_name(name, false).unwrap_or_else(|| {
            c.error(
                "edge.hosts.default",
                format!("{name:?} is not a host name or an IP address (no port, no path)"),
            );
            String::new()
        }),
        None => match names.iter().find(|name| !name.starts_with("*.")) {
            Some(name) => name.clone(),
            None => {
                if unknown == UnknownHost::Default {
                    c.error(
                        "edge.hosts.default",
                        "unknown hosts are served as the default host: name one (no exact name in `names` to take it from)",
                    );
                }
                String::new()
            }
        },
    };
    Hosts {
        names,
        unknown,
        default,
    }
}

/// `name` lower-cased when it is a DNS name, an IPv4 address or a bracketed IPv6 address
/// (canonical spelling), or `*.name` when `wildcard`; `None` otherwise.
fn host_name(name: &str, wildcard: bool) -> Option<String> {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let address: std::net::Ipv6Addr = literal.parse().ok()?;
        return Some(format!("[{address}]"));
    }
    let (prefix, rest) = match name.strip_prefix("*.") {
        Some(rest) if wildcard => ("*.", rest),
        _ => ("", name),
    };
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        });
    valid.then(|| format!("{prefix}{}", rest.to_ascii_lowercase()))
}

pub(super) fn check_cache(c: &mut Collector<'_>, raw: RawCache) -> CacheSettings {
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
    let l1_policy = match raw.l1_policy.as_deref() {
        None => L1Policy::default(),
        Some(name) => L1Policy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == name)
            .unwrap_or_else(|| {
                let known: Vec<&str> = L1Policy::ALL.iter().map(|p| p.as_str()).collect();
                c.error(
                    "cache.l1_policy",
                    format!(
                        "unknown L1 eviction policy {name:?}; known: {}",
                        known.join(", ")
                    ),
                );
                L1Policy::default()
            }),
    };
    CacheSettings {
        enabled: raw.enabled,
        l1_capacity: raw.l1_capacity.bytes(),
        l1_policy,
        l2_capacity: raw.l2_capacity.bytes(),
        max_object_size: raw.max_object_size.bytes(),
        stale_while_revalidate: raw.stale_while_revalidate.get(),
        stale_if_error: raw.stale_if_error.get(),
        rules,
        fast_path: raw.fast_path,
        strip_set_cookie: raw.strip_set_cookie,
    }
}

pub(super) fn check_tls(c: &mut Collector<'_>, raw: RawTls, base_dir: &Path) -> TlsSettings {
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

pub(super) fn check_sandbox(
    c: &mut Collector<'_>,
    raw: RawSandbox,
    data_dir: &Path,
    base_dir: &Path,
) -> SandboxSettings {
    let callbacks = check_callbacks(c, raw.callbacks, data_dir, base_dir);
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
    let positive = [
        ("max_finished_jobs", raw.max_finished_jobs as u64),
        (
            "max_subscribers_per_job",
            raw.max_subscribers_per_job as u64,
        ),
        ("max_subscribers", raw.max_subscribers as u64),
        ("compile_concurrency", raw.compile_concurrency as u64),
        ("max_test_cases", raw.max_test_cases as u64),
        ("max_parallel_cases", raw.max_parallel_cases as u64),
        ("max_files", raw.max_files as u64),
        ("scratch_files", raw.scratch_files),
        ("scratch_size", raw.scratch_size.bytes()),
    ];
    for (key, value) in positive {
        if value == 0 {
            c.error(
                format!("sandbox.{key}"),
                format!("{key} must be at least 1"),
            );
        }
    }
    if raw.max_subscribers_per_job > raw.max_subscribers {
        c.error(
            "sandbox.max_subscribers_per_job",
            format!(
                "max_subscribers_per_job ({}) exceeds max_subscribers ({})",
                raw.max_subscribers_per_job, raw.max_subscribers
            ),
        );
    }
    if raw.subscriber_send_timeout.get().is_zero() {
        c.error(
            "sandbox.subscriber_send_timeout",
            "subscriber_send_timeout must be positive",
        );
    }
    // The newest finished job must fit on its own, or a job could be forgotten the
    // moment it finishes.
    let one_job = maximums.output.saturating_mul(2);
    if raw.max_finished_bytes.bytes() < one_job {
        c.error(
            "sandbox.max_finished_bytes",
            format!(
                "max_finished_bytes ({} bytes) must hold one job's maximum output on both \
                 streams (2 x sandbox.maximums.output = {one_job} bytes)",
                raw.max_finished_bytes.bytes()
            ),
        );
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
        scratch_files: raw.scratch_files,
        max_finished_jobs: raw.max_finished_jobs,
        max_finished_bytes: raw.max_finished_bytes.bytes(),
        max_subscribers_per_job: raw.max_subscribers_per_job,
        max_subscribers: raw.max_subscribers,
        subscriber_send_timeout: raw.subscriber_send_timeout.get(),
        compile_concurrency: raw.compile_concurrency,
        max_files: raw.max_files,
        callbacks,
        max_test_cases: raw.max_test_cases,
        max_tests_size: raw.max_tests_size.bytes(),
        max_parallel_cases: raw.max_parallel_cases,
        defaults,
        maximums,
    }
}

fn check_callbacks(
    c: &mut Collector<'_>,
    raw: RawCallbacks,
    data_dir: &Path,
    base_dir: &Path,
) -> CallbackSettings {
    let default_file = || TokenSecret::File(data_dir.join("secrets/callback-key"));
    let secret = match (raw.secret, raw.secret_env, raw.secret_file) {
        (None, None, None) => default_file(),
        (Some(key), None, None) => {
            if key.len() < 16 {
                c.error(
                    "sandbox.callbacks.secret",
                    "a callback key must be at least 16 characters",
                );
            }
            TokenSecret::Inline(key)
        }
        (None, Some(var), None) => TokenSecret::Env(var),
        (None, None, Some(file)) => TokenSecret::File(data_dir.join(file)),
        _ => {
            c.error(
                "sandbox.callbacks",
                "give at most one of `secret`, `secret_env` or `secret_file`",
            );
            default_file()
        }
    };
    let mut allow = Vec::new();
    for (index, entry) in raw.allow.iter().enumerate() {
        match parse_destination(entry) {
            Ok(destination) => allow.push(destination),
            Err(message) => c.error(format!("sandbox.callbacks.allow[{index}]"), message),
        }
    }
    if raw.attempts == 0 {
        c.error("sandbox.callbacks.attempts", "attempts must be at least 1");
    }
    if raw.timeout.get().is_zero() {
        c.error("sandbox.callbacks.timeout", "timeout must be positive");
    }
    let ca_file = raw.ca_file.map(|file| base_dir.join(file));
    if let Some(file) = &ca_file {
        match std::fs::read_to_string(file) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => c.error(
                "sandbox.callbacks.ca_file",
                format!("{} holds no PEM certificate", file.display()),
            ),
            Err(error) => c.error(
                "sandbox.callbacks.ca_file",
                format!("cannot read {}: {error}", file.display()),
            ),
        }
    }
    CallbackSettings {
        allow,
        attempts: raw.attempts,
        timeout: raw.timeout.get(),
        backoff: raw.backoff.get(),
        secret,
        ca_file,
    }
}

/// `10.0.0.0/8`, `::1/128`, a bare address (one host), `hooks.example.com` or
/// `*.example.com`.
fn parse_destination(entry: &str) -> Result<CallbackDestination, String> {
    let entry = entry.trim();
    if let Some((addr, prefix)) = entry.split_once('/') {
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{entry:?}: {addr:?} is not an IP address"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| *prefix <= width)
            .ok_or_else(|| format!("{entry:?}: the prefix must be 0..={width}"))?;
        return Ok(CallbackDestination::Network { addr, prefix });
    }
    if let Ok(addr) = entry.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(CallbackDestination::Network { addr, prefix });
    }
    let name = entry.to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(format!(
            "{entry:?} is neither a host name, `*.domain`, an IP address nor a network"
        ));
    }
    Ok(CallbackDestination::Host(match name.strip_prefix('*') {
        Some(suffix) => suffix.to_owned(),
        None => name,
    }))
}

pub(super) fn check_control_plane(
    c: &mut Collector<'_>,
    raw: RawControlPlane,
    data_dir: &Path,
    deployment_name: &str,
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
    let urls = raw
        .urls
        .into_iter()
        .enumerate()
        .filter_map(|(index, url)| {
            check_http_url(c, &format!("control_plane.urls[{index}]"), &url, false)
        })
        .collect();
    let store = check_store(c, raw.store, deployment_name);
    ControlPlaneSettings {
        tokens,
        urls,
        store,
    }
}

fn check_store(c: &mut Collector<'_>, raw: RawStore, deployment_name: &str) -> StoreSettings {
    match raw.backend.as_str() {
        "file" => {
            if !raw.endpoints.is_empty() || raw.prefix.is_some() {
                c.error(
                    "control_plane.store",
                    "`endpoints` and `prefix` are for backend = \"etcd\"",
                );
            }
            StoreSettings::File
        }
        "etcd" => {
            if raw.endpoints.is_empty() {
                c.error(
                    "control_plane.store.endpoints",
                    "backend = \"etcd\" needs at least one endpoint, e.g. [\"http://127.0.0.1:2379\"]",
                );
            }
            let endpoints = raw
                .endpoints
                .iter()
                .enumerate()
                .filter_map(|(index, url)| {
                    check_http_url(
                        c,
                        &format!("control_plane.store.endpoints[{index}]"),
                        url,
                        true,
                    )
                })
                .collect();
            let prefix = match raw.prefix {
                Some(prefix) if prefix.starts_with('/') && !prefix.contains('\0') => {
                    if prefix.ends_with('/') {
                        prefix
                    } else {
                        format!("{prefix}/")
                    }
                }
                Some(prefix) => {
                    c.error(
                        "control_plane.store.prefix",
                        format!("prefix {prefix:?} must start with '/'"),
                    );
                    String::new()
                }
                None => format!("/edgebox/{deployment_name}/"),
            };
            if raw.timeout.get().is_zero() {
                c.error("control_plane.store.timeout", "must be more than 0");
            }
            StoreSettings::Etcd(EtcdSettings {
                endpoints,
                prefix,
                timeout: raw.timeout.get(),
            })
        }
        other => {
            c.error(
                "control_plane.store.backend",
                format!("unknown backend {other:?}; expected \"file\" or \"etcd\""),
            );
            StoreSettings::File
        }
    }
}

/// `http://HOST:PORT` (or `https://` where `tls`), without a path; returned without
/// a trailing slash.
fn check_http_url(c: &mut Collector<'_>, path: &str, url: &str, tls: bool) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://").filter(|_| tls));
    let authority = rest.map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    let valid = authority.is_some_and(|authority| {
        !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@', ' '])
            && authority.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            })
    });
    if valid {
        let scheme = if url.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{}", authority.unwrap_or_default()))
    } else {
        let schemes = if tls {
            "http:// or https://"
        } else {
            "http://"
        };
        c.error(
            path,
            format!("{url:?} is not a URL of the form {schemes}HOST:PORT (no path)"),
        );
        None
    }
}
