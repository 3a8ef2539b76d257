//! `[[nodes]]`: what every node needs (a unique name, a known region, a listener), then
//! one check per role, each taking only the keys its role has.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use super::{known_list, node_addr};
use crate::diagnostics::Collector;
use crate::model::*;
use crate::raw::*;

/// Names a node check may refer to.
struct Known<'a> {
    regions: &'a BTreeSet<&'a str>,
    groups: &'a BTreeSet<&'a str>,
    names: BTreeSet<&'a str>,
    edges: BTreeSet<&'a str>,
}

/// Where a node sits in the file, and its parsed `listen`.
struct NodeAt<'a> {
    path: String,
    raw: &'a RawNode,
    role_name: &'static str,
    listen: Option<SocketAddr>,
}

/// Stands in for an address that failed to parse (already reported), so checking goes on.
const PLACEHOLDER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

pub(super) fn check_nodes(
    c: &mut Collector<'_>,
    raw_nodes: &[(usize, RawNode)],
    regions: &BTreeSet<&str>,
    groups: &BTreeSet<&str>,
    cache: &CacheSettings,
    base_dir: &Path,
) -> Vec<Node> {
    let known = Known {
        regions,
        groups,
        names: raw_nodes
            .iter()
            .map(|(_, node)| node.name.as_str())
            .collect(),
        edges: raw_nodes
            .iter()
            .filter(|(_, node)| node.role == RawRole::Edge)
            .map(|(_, node)| node.name.as_str())
            .collect(),
    };
    let mut nodes = Vec::new();
    let mut seen_names = HashMap::new();

    for (index, raw) in raw_nodes {
        let path = format!("nodes[{index}]");
        check_common(c, raw, &path, *index, &mut seen_names, &known);
        let role_name = match raw.role {
            RawRole::Edge => "edge",
            RawRole::Origin => "origin",
            RawRole::Sandbox => "sandbox",
            RawRole::ControlPlane => "control-plane",
        };
        check_keys_of_other_roles(c, raw, &path, role_name);
        let listen = raw
            .listen
            .as_deref()
            .and_then(|text| node_addr(c, &format!("{path}.listen"), &raw.name, text));
        let at = NodeAt {
            path,
            raw,
            role_name,
            listen,
        };
        let role = match raw.role {
            RawRole::Edge => check_edge_node(c, &at, &known, cache),
            RawRole::Origin => check_origin_node(c, &at, base_dir),
            RawRole::Sandbox => Role::Sandbox(SandboxNode {
                listen: require_listen(c, &at),
            }),
            // More than one control-plane node needs a shared store: checked with
            // `[control_plane.store]` in `topology`.
            RawRole::ControlPlane => Role::ControlPlane(ControlPlaneNode {
                listen: require_listen(c, &at),
            }),
        };
        nodes.push(Node {
            name: raw.name.clone(),
            region: raw.region.clone(),
            role,
        });
    }
    nodes
}

/// Name syntax, name uniqueness, region.
fn check_common(
    c: &mut Collector<'_>,
    raw: &RawNode,
    path: &str,
    index: usize,
    seen_names: &mut HashMap<String, usize>,
    known: &Known<'_>,
) {
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
    if let Some(first) = seen_names.insert(raw.name.clone(), index) {
        c.error(
            format!("{path}.name"),
            format!("node name {:?} is already used by nodes[{first}]", raw.name),
        );
    }
    if !known.regions.contains(raw.region.as_str()) {
        c.error(
            format!("{path}.region"),
            format!(
                "unknown region {:?}; {}",
                raw.region,
                known_list("regions", known.regions)
            ),
        );
    }
}

/// Keys that belong to another role are mistakes, not silently ignored.
fn check_keys_of_other_roles(c: &mut Collector<'_>, raw: &RawNode, path: &str, role_name: &str) {
    let mut not_for_role = |key: &str, present: bool| {
        if present {
            c.error(
                format!("{path}.{key}"),
                format!("`{key}` does not apply to a node with role {role_name:?}"),
            );
        }
    };
    let is_edge = raw.role == RawRole::Edge;
    let is_origin = raw.role == RawRole::Origin;
    not_for_role("https", !is_edge && raw.https.is_some());
    not_for_role("admin", !is_edge && raw.admin.is_some());
    not_for_role("admin_public", !is_edge && raw.admin_public.is_some());
    not_for_role("origin_group", !is_edge && raw.origin_group.is_some());
    not_for_role("parent", !is_edge && raw.parent.is_some());
    not_for_role("l1_capacity", !is_edge && raw.l1_capacity.is_some());
    not_for_role("l2_capacity", !is_edge && raw.l2_capacity.is_some());
    not_for_role("root", !is_origin && raw.root.is_some());
    not_for_role("delay", !is_origin && raw.delay.is_some());
}

fn require_listen(c: &mut Collector<'_>, at: &NodeAt<'_>) -> SocketAddr {
    if at.raw.listen.is_none() {
        c.error(
            format!("{}.listen", at.path),
            format!("a {} node needs `listen = \"IP:PORT\"`", at.role_name),
        );
    }
    at.listen.unwrap_or(PLACEHOLDER)
}

fn check_edge_node(
    c: &mut Collector<'_>,
    at: &NodeAt<'_>,
    known: &Known<'_>,
    cache: &CacheSettings,
) -> Role {
    let (path, raw) = (&at.path, at.raw);
    let https = raw
        .https
        .as_deref()
        .and_then(|text| node_addr(c, &format!("{path}.https"), &raw.name, text));
    if raw.listen.is_none() && raw.https.is_none() {
        c.error(
            format!("{path}.listen"),
            "an edge needs `listen` (HTTP), `https`, or both",
        );
    }
    let admin = match raw.admin.as_deref() {
        Some(text) => node_addr(c, &format!("{path}.admin"), &raw.name, text),
        None => {
            c.error(
                format!("{path}.admin"),
                "an edge needs `admin = \"IP:PORT\"` for the control plane",
            );
            None
        }
    };
    let admin_public = raw.admin_public.unwrap_or(false);
    if let Some(admin) = admin
        && !admin.ip().is_loopback()
        && !admin_public
    {
        c.error(
            format!("{path}.admin"),
            format!(
                "the admin listener {admin} is not a loopback address; bind it to 127.0.0.1 \
                 (or [::1]), or set `admin_public = true` to expose it"
            ),
        );
    }
    let origin_group = match &raw.origin_group {
        Some(group) if !known.groups.contains(group.as_str()) => {
            c.error(
                format!("{path}.origin_group"),
                format!(
                    "unknown origin group {group:?}; {}",
                    known_list("origin groups", known.groups)
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
        } else if !known.edges.contains(parent.as_str()) {
            let what = if known.names.contains(parent.as_str()) {
                "is not an edge"
            } else {
                "does not exist"
            };
            c.error(
                format!("{path}.parent"),
                format!(
                    "parent {parent:?} {what}; {}",
                    known_list("edges", &known.edges)
                ),
            );
        }
    }
    Role::Edge(EdgeNode {
        http: at.listen,
        https,
        admin: admin.unwrap_or(PLACEHOLDER),
        admin_public,
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

fn check_origin_node(c: &mut Collector<'_>, at: &NodeAt<'_>, base_dir: &Path) -> Role {
    Role::Origin(OriginNode {
        listen: require_listen(c, at),
        root: at.raw.root.as_ref().map(|root| base_dir.join(root)),
        delay: at.raw.delay.map(|delay| delay.get()).unwrap_or_default(),
    })
}
