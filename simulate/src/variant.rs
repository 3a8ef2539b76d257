//! Variants as config changes: a deployment file rewritten with a variant's settings,
//! and (for deployments the simulator starts) with free ports, a private data directory
//! and origins that serve the generated catalogue.
//!
//! Rewriting goes through `toml::Table`, so comments of the original are not kept; the
//! result is always re-checked with `edgebox_config::parse` by the caller.

use std::path::Path;

use toml::{Table, Value};

use super::scenario::Settings;

/// Why a deployment file could not be rewritten for a variant.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error("cannot read the deployment file: {0}")]
    Read(#[from] toml::de::Error),
    #[error("cannot write the deployment file: {0}")]
    Write(#[from] toml::ser::Error),
    /// A latency link's `rtt`/`jitter` that is not a duration (the config check reports
    /// it with its line; this only stops the rewrite).
    #[error("latency link `{key}`: {reason}")]
    Duration { key: &'static str, reason: String },
    #[error("cannot find free ports: {0}")]
    Ports(#[source] std::io::Error),
}

/// URL prefix of cacheable generated objects.
pub const OBJECTS_PREFIX: &str = "/sim/objects/";
/// URL prefix of the same objects served `no-store`.
pub const NOCACHE_PREFIX: &str = "/sim/nocache/";

/// `text` with `settings` applied.
pub fn apply(text: &str, settings: &Settings) -> Result<String, VariantError> {
    let mut doc: Table = text.parse()?;
    if settings.is_empty() {
        return Ok(text.to_owned());
    }
    for node in nodes_mut(&mut doc) {
        let role = node
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if role == "edge" {
            if settings.tiering == Some(false) {
                node.remove("parent");
            }
            if let Some(bytes) = settings.l1_capacity {
                node.insert("l1_capacity".into(), Value::Integer(bytes as i64));
            }
            if let Some(bytes) = settings.l2_capacity {
                node.insert("l2_capacity".into(), Value::Integer(bytes as i64));
            }
        }
        if role == "origin"
            && let Some(name) = node.get("name").and_then(Value::as_str)
            && let Some(micros) = settings.origin_delay.get(name)
        {
            node.insert("delay".into(), Value::String(format!("{micros}us")));
        }
    }
    if let Some(enabled) = settings.cache {
        table_mut(&mut doc, "cache").insert("enabled".into(), Value::Boolean(enabled));
    }
    if let Some(policy) = settings.l1_policy {
        // The edge's `[cache] l1_policy` takes the simulator's names (and `moka`).
        table_mut(&mut doc, "cache").insert("l1_policy".into(), Value::String(policy.to_string()));
    }
    if let Some(enabled) = settings.latency {
        table_mut(&mut doc, "latency").insert("enabled".into(), Value::Boolean(enabled));
    }
    if let Some(scale) = settings.latency_scale {
        let latency = table_mut(&mut doc, "latency");
        if let Some(Value::Table(intra)) = latency.get_mut("intra_region") {
            scale_link(intra, scale)?;
        }
        if let Some(Value::Array(links)) = latency.get_mut("links") {
            for link in links {
                if let Value::Table(link) = link {
                    scale_link(link, scale)?;
                }
            }
        }
    }
    if let Some(policy) = &settings.lb_policy
        && let Some(Value::Table(groups)) = doc.get_mut("origin_groups")
    {
        for (_, group) in groups.iter_mut() {
            if let Value::Table(group) = group {
                group.insert("policy".into(), Value::String(policy.clone()));
                if policy != "consistent_hash" {
                    group.remove("hash_key");
                }
            }
        }
    }
    Ok(toml::to_string(&doc)?)
}

fn scale_link(link: &mut Table, scale: f64) -> Result<(), VariantError> {
    for key in ["rtt", "jitter"] {
        if let Some(Value::String(text)) = link.get(key) {
            let duration: edgebox_config::units::Duration = text
                .parse()
                .map_err(|reason| VariantError::Duration { key, reason })?;
            let micros = (duration.get().as_secs_f64() * 1e6 * scale).round() as u64;
            link.insert(key.into(), Value::String(format!("{micros}us")));
        }
    }
    Ok(())
}

fn nodes_mut(doc: &mut Table) -> impl Iterator<Item = &mut Table> {
    let nodes = match doc.get_mut("nodes") {
        Some(Value::Array(nodes)) => nodes.as_mut_slice(),
        _ => &mut [],
    };
    nodes.iter_mut().filter_map(|node| match node {
        Value::Table(table) => Some(table),
        _ => None,
    })
}

fn table_mut<'a>(doc: &'a mut Table, key: &str) -> &'a mut Table {
    let entry = doc
        .entry(key.to_owned())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    entry.as_table_mut().expect("just made a table")
}

/// Rewrites a deployment for the simulator to start on one machine beside anything
/// else: every listener on a free port of 127.0.0.1 (not port 0: edges find their parent
/// and origins by the addresses in the config, so those must be real; a port taken
/// between choosing and binding makes the node fail, and the caller retries), node
/// state under `data_dir`, no sandbox or control plane (the simulator applies variants by
/// restarting, and neither serves content), every origin serving `catalogue_root`, with
/// origin rules that make `/sim/objects/` cacheable and `/sim/nocache/` `no-store`, and
/// relative certificate paths made absolute against `base_dir`.
pub fn for_started(
    text: &str,
    base_dir: &Path,
    data_dir: &Path,
    catalogue_root: &Path,
) -> Result<String, VariantError> {
    let mut doc: Table = text.parse()?;
    table_mut(&mut doc, "deployment").insert(
        "data_dir".into(),
        Value::String(data_dir.display().to_string()),
    );
    if let Some(Value::Array(nodes)) = doc.get_mut("nodes") {
        nodes.retain(|node| {
            let role = node.get("role").and_then(Value::as_str).unwrap_or_default();
            role != "sandbox" && role != "control-plane"
        });
    }
    let listeners = nodes_mut(&mut doc)
        .map(|node| {
            ["listen", "https", "admin"]
                .iter()
                .filter(|key| node.contains_key(**key))
                .count()
        })
        .sum();
    let mut ports = free_ports(listeners)
        .map_err(VariantError::Ports)?
        .into_iter();
    for node in nodes_mut(&mut doc) {
        for key in ["listen", "https", "admin"] {
            if node.contains_key(key) {
                let port = ports.next().expect("one port per listener");
                node.insert(key.into(), Value::String(format!("127.0.0.1:{port}")));
            }
        }
        if node.get("role").and_then(Value::as_str) == Some("origin") {
            node.insert(
                "root".into(),
                Value::String(catalogue_root.display().to_string()),
            );
        }
    }
    let origin = table_mut(&mut doc, "origin");
    let mut rules = vec![
        rule(&format!("{NOCACHE_PREFIX}**"), "no-store"),
        rule(&format!("{OBJECTS_PREFIX}**"), "public, max-age=86400"),
    ];
    if let Some(Value::Array(existing)) = origin.remove("rules") {
        rules.extend(existing);
    }
    origin.insert("rules".into(), Value::Array(rules));
    if let Some(Value::Table(tls)) = doc.get_mut("tls")
        && let Some(Value::Array(certificates)) = tls.get_mut("certificates")
    {
        for certificate in certificates {
            if let Value::Table(certificate) = certificate {
                for key in ["cert", "key"] {
                    if let Some(Value::String(path)) = certificate.get(key) {
                        let absolute = base_dir.join(path).display().to_string();
                        certificate.insert(key.into(), Value::String(absolute));
                    }
                }
            }
        }
    }
    Ok(toml::to_string(&doc)?)
}

/// `count` distinct ports free on 127.0.0.1 right now: all are held open together so
/// that none is handed out twice, then released for the nodes to bind.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect()
}

fn rule(pattern: &str, cache_control: &str) -> Value {
    let mut rule = Table::new();
    rule.insert("pattern".into(), Value::String(pattern.into()));
    rule.insert("cache_control".into(), Value::String(cache_control.into()));
    Value::Table(rule)
}
