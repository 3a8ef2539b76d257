//! Checks of a scenario's target: the deployment it starts, the running one it drives,
//! or the edges it names; then the binding of the workload to that deployment.

use super::*;

fn check_url(c: &mut Collector<'_>, path: &str, url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let authority = rest.map(|rest| rest.split('/').next().unwrap_or_default());
    let valid = authority.is_some_and(|authority| {
        authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        })
    });
    if !valid {
        c.error(
            path,
            format!("{url:?} is not an address; write e.g. \"http://127.0.0.1:8080\""),
        );
    }
    valid
}

/// The target, and whether its deployment could be read (a placeholder stands in when not).
pub(super) fn check_target(
    c: &mut Collector<'_>,
    raw: RawDeployment,
    base_dir: &Path,
) -> (Target, bool) {
    let given = [
        raw.file.is_some(),
        raw.running.is_some(),
        raw.edges.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given > 1 {
        c.error(
            "deployment",
            "give at most one of `file` (start a deployment), `running` (a control plane) and `edges` (edges addressed directly)",
        );
    }
    let tokens = [
        raw.token.is_some(),
        raw.token_file.is_some(),
        raw.token_env.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if tokens > 0 && raw.running.is_none() {
        c.error(
            "deployment.token",
            "a token is only used with `running = CONTROL_PLANE_URL`",
        );
    }
    if tokens > 1 {
        c.error(
            "deployment.token",
            "give at most one of `token`, `token_file` and `token_env`",
        );
    }
    if let Some(running) = raw.running {
        check_url(c, "deployment.running", &running);
        let token = match (raw.token, raw.token_file, raw.token_env) {
            (Some(token), _, _) => TokenSource::Inline(token),
            (_, Some(file), _) => TokenSource::File(base_dir.join(file)),
            (_, _, Some(var)) => TokenSource::Env(var),
            _ => TokenSource::Default,
        };
        let target = Target::Running {
            control_plane: running.trim_end_matches('/').to_owned(),
            token,
            deployment: None,
        };
        return (target, true);
    }
    if let Some(edges) = raw.edges {
        let mut checked = BTreeMap::new();
        if edges.is_empty() {
            c.error("deployment.edges", "name at least one edge");
        }
        for (region, urls) in edges {
            let path = join_key_path("deployment.edges", &region);
            let urls = urls.into_vec();
            if urls.is_empty() {
                c.error(path.clone(), "name at least one edge URL");
            }
            for url in &urls {
                check_url(c, &path, url);
            }
            checked.insert(
                region,
                urls.into_iter()
                    .map(|url| url.trim_end_matches('/').to_owned())
                    .collect(),
            );
        }
        return (Target::Edges { edges: checked }, true);
    }
    let location = match raw.file {
        Some(file) => ConfigLocation::File(base_dir.join(file)),
        None => ConfigLocation::Embedded,
    };
    let mut known = true;
    let deployment = match edgebox_config::load(&location) {
        Ok(deployment) => deployment,
        Err(errors) => {
            known = false;
            for diagnostic in errors.diagnostics {
                let place = match (diagnostic.line, diagnostic.column) {
                    (Some(line), Some(column)) => format!("{}:{line}:{column}: ", errors.file),
                    _ => format!("{}: ", errors.file),
                };
                let key = if diagnostic.path.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", diagnostic.path)
                };
                c.error(
                    "deployment.file",
                    format!("{place}{key}{}", diagnostic.message),
                );
            }
            // A placeholder so that the rest of the scenario is still checked.
            edgebox_config::parse(
                edgebox_config::EMBEDDED_DEFAULT,
                edgebox_config::EMBEDDED_NAME,
                base_dir,
            )
            .expect("the embedded default is valid")
        }
    };
    let target = Target::Start {
        location,
        deployment: Box::new(deployment),
    };
    (target, known)
}

/// Checks everything that refers to the deployment and builds each variant's file.
pub(super) fn bind_deployment(
    c: &mut Collector<'_>,
    scenario: &mut Scenario,
    deployment: &Deployment,
    base_dir: &Path,
) {
    let regions: BTreeSet<&str> = deployment.regions.iter().map(|r| r.name.as_str()).collect();
    for client in &scenario.clients {
        if !regions.contains(client.name.as_str()) {
            c.error(
                join_key_path("clients", &client.name),
                format!(
                    "unknown region {:?}; {}",
                    client.name,
                    known_list(&format!("regions of {}", deployment.source), regions.iter())
                ),
            );
        }
    }
    if deployment.edges().next().is_none() {
        c.error(
            "deployment",
            format!("{} has no edge to send requests to", deployment.source),
        );
    }
    if scenario.workload.protocol == Protocol::Https {
        for (node, edge) in deployment.edges() {
            if edge.https.is_none() && crate::target::is_client_facing(deployment, &node.name) {
                c.error(
                    "workload.protocol",
                    format!("edge {:?} has no https listener", node.name),
                );
            }
        }
    }
    for variant in &mut scenario.variants {
        let path = variant.key_path.clone();
        let settings = &variant.settings;
        for node in settings.origin_delay.keys() {
            let key = join_key_path(&format!("{path}.origin_delay"), node);
            match deployment.node(node) {
                Some(found) if matches!(found.role, Role::Origin(_)) => {}
                Some(_) => c.error(key, format!("node {node:?} is not an origin")),
                None => {
                    let origins = deployment
                        .nodes
                        .iter()
                        .filter(|node| matches!(node.role, Role::Origin(_)))
                        .map(|node| node.name.as_str());
                    c.error(
                        key,
                        format!("unknown node {node:?}; {}", known_list("origins", origins)),
                    );
                }
            }
        }
        if settings.tiering == Some(true)
            && !deployment.edges().any(|(_, edge)| edge.parent.is_some())
        {
            c.error(
                format!("{path}.tiering"),
                format!(
                    "{} has no parent tier to turn on (no edge names a `parent`)",
                    deployment.source
                ),
            );
        }
        if settings
            .lb_policy
            .as_deref()
            .is_some_and(|policy| !POLICIES.contains(&policy))
        {
            continue; // reported where the policy is written
        }
        match variant::apply(&deployment.text, settings) {
            Ok(text) => match edgebox_config::parse(&text, &deployment.source, base_dir) {
                Ok(_) => variant.deployment_text = Some(text),
                Err(errors) => {
                    for diagnostic in errors.diagnostics {
                        c.error(
                            path.clone(),
                            format!(
                                "this makes the deployment invalid: {}: {}",
                                diagnostic.path, diagnostic.message
                            ),
                        );
                    }
                }
            },
            Err(error) => c.error(path.clone(), error.to_string()),
        }
    }
}
