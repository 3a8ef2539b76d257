//! Checks across the whole deployment once every section is decoded: parent chains,
//! listener clashes and what each role needs from the rest.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::diagnostics::Collector;
use crate::model::*;
use crate::raw::*;

/// Checks that span nodes: parent chains end, edges share their parent's origin group,
/// and no two listeners share an address.
pub(super) fn check_topology(
    c: &mut Collector<'_>,
    deployment: &Deployment,
    raw_nodes: &[(usize, RawNode)],
) {
    let index_of: HashMap<&str, usize> = raw_nodes
        .iter()
        .map(|(index, node)| (node.name.as_str(), *index))
        .collect();
    let path_of = |name: &str, key: &str| {
        format!("nodes[{}].{key}", index_of.get(name).copied().unwrap_or(0))
    };

    // Replicas of the control plane must share one store, or each would number its
    // own versions.
    let control_planes: Vec<&Node> = deployment
        .nodes
        .iter()
        .filter(|node| matches!(node.role, Role::ControlPlane(_)))
        .collect();
    if control_planes.len() > 1 && deployment.control_plane.store == StoreSettings::File {
        c.error(
            path_of(&control_planes[1].name, "role"),
            format!(
                "{} control-plane nodes need a shared store: set [control_plane.store] backend = \"etcd\" \
                 (the file store serves one control-plane node)",
                control_planes.len()
            ),
        );
    }

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
