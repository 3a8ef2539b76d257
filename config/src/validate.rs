//! The one place a deployment file is checked: syntax, types, ranges and every
//! cross-reference. It reports all problems, never just the first.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use toml::de::DeTable;

mod latency;
mod nodes;
mod sections;
mod topology;
mod traffic;

use latency::check_latency;
use nodes::check_nodes;
use sections::*;
use topology::check_topology;

use crate::decode::{decode, decode_list, decode_map};
use crate::diagnostics::{Collector, ConfigErrors, join};
use crate::model::*;
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
    let edge = check_edge(c, raw.edge.unwrap_or_default(), &data_dir);
    let tls = check_tls(c, raw.tls.unwrap_or_default(), base_dir);
    let sandbox = check_sandbox(c, raw.sandbox.unwrap_or_default(), &data_dir, base_dir);
    let control_plane = check_control_plane(
        c,
        raw.control_plane.unwrap_or_default(),
        &data_dir,
        &raw_deployment.name,
    );

    let deployment = Deployment {
        source: source.to_owned(),
        text: text.to_owned(),
        base_dir: base_dir.to_path_buf(),
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

/// A node's listener: `IP:PORT`, or `HOST:PORT` with a host name resolved now, through
/// the system resolver (`/etc/hosts`, then DNS). On separate hosts every node loads the
/// same file and resolves the same name: the node that owns it binds the address, the
/// others reach it there. An IP literal is never looked up; a name costs one lookup per
/// load (a hosts-file read, or a DNS query bounded by the resolver's own timeout).
pub(super) fn node_addr(
    c: &mut Collector<'_>,
    path: &str,
    node: &str,
    text: &str,
) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let not_an_address = |c: &mut Collector<'_>| {
        c.error(
            path,
            format!(
                "{text:?} is not a listen address; write IP:PORT or HOST:PORT, e.g. \"127.0.0.1:8080\" \
                 or \"edge-eu.example:8080\" (port 0 picks a free port)"
            ),
        );
        None
    };
    let Some((host, port)) = text.rsplit_once(':') else {
        return not_an_address(c);
    };
    // DNS name syntax; a last label of digits only is a mistyped IPv4 address, never
    // sent to a resolver.
    let host_syntax = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        })
        && !host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().all(|ch| ch.is_ascii_digit()));
    let Ok(port) = port.parse::<u16>() else {
        return not_an_address(c);
    };
    if !host_syntax {
        return not_an_address(c);
    }
    use std::net::ToSocketAddrs;
    let resolved = (host, port).to_socket_addrs().map(|addrs| {
        let addrs: Vec<SocketAddr> = addrs.collect();
        // One address per listener: IPv4 first, as the hosts file usually lists it.
        addrs
            .iter()
            .find(|addr| addr.is_ipv4())
            .or(addrs.first())
            .copied()
    });
    match resolved {
        Ok(Some(addr)) => Some(addr),
        Ok(None) => {
            c.error(
                path,
                format!("node {node:?}: host {host:?} resolves to no address"),
            );
            None
        }
        Err(error) => {
            c.error(
                path,
                format!(
                    "node {node:?}: host {host:?} does not resolve ({error}); list it in \
                     /etc/hosts or DNS on every machine of the deployment, or write IP:PORT"
                ),
            );
            None
        }
    }
}

pub(super) fn known_list(what: &str, names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        format!("no {what} are defined")
    } else {
        let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
        format!("known {what}: {}", quoted.join(", "))
    }
}
