//! The deployment recipes under `deploy/`: the deployment file each ships passes the
//! real validation (`edgebox check-config`), every manifest parses, and every `edgebox`
//! command line in a unit or manifest runs a real role as a real node of that file, on
//! the ports that node listens on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edgebox_config::Deployment;
use serde::Deserialize;
use serde_json::Value;

const ROLES: &[&str] = &["edge", "origin", "sandbox", "control-plane"];
/// Where the units and pods find the deployment file.
const INSTALLED_CONFIG: &str = "/etc/edgebox/edgebox.toml";

fn deploy_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(sub)
}

/// Checks `file` with the real CLI (exit 0) and loads it.
fn checked(file: &Path) -> Deployment {
    let output = crate::support::edgebox(&["check-config", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    edgebox_config::load_file(file).unwrap_or_else(|errors| panic!("{errors}"))
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn roles_of(deployment: &Deployment) -> BTreeSet<&'static str> {
    deployment
        .nodes
        .iter()
        .map(|node| node.role_name())
        .collect()
}

#[test]
fn systemd_units_run_every_role_of_their_deployment_file_hardened() {
    let dir = deploy_dir("systemd");
    let deployment = checked(&dir.join("edgebox.toml"));
    assert_eq!(
        deployment.data_dir,
        Path::new("/var/lib/edgebox"),
        "the data dir is the units' StateDirectory"
    );
    let mut units = BTreeSet::new();
    for unit in files(&dir, "service") {
        let name = unit.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&unit).unwrap();
        let settings: BTreeMap<&str, Vec<&str>> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .fold(BTreeMap::new(), |mut map, (key, value)| {
                map.entry(key.trim()).or_default().push(value.trim());
                map
            });
        let exec: Vec<&str> = settings["ExecStart"][0].split_whitespace().collect();
        let [binary, role, "--config", config, "--node", node] = exec[..] else {
            panic!("{name}: ExecStart is not `edgebox ROLE --config F --node N`: {exec:?}");
        };
        assert!(binary.ends_with("/edgebox"), "{name}: {binary}");
        assert!(ROLES.contains(&role), "{name}: unknown role {role}");
        assert_eq!(
            name,
            format!("edgebox-{role}@.service"),
            "one template unit per role"
        );
        assert_eq!(config, INSTALLED_CONFIG, "{name}");
        // A template: instantiated once per node of that role (`edgebox-edge@edge-eu`).
        assert_eq!(node, "%i", "{name}");
        assert!(
            roles_of(&deployment).contains(role),
            "{name}: the deployment file has no {role} node"
        );
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("StateDirectory", "edgebox"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("KillSignal", "SIGTERM"),
        ] {
            assert_eq!(
                settings.get(key).map(|v| v[0]),
                Some(value),
                "{name}: {key}"
            );
        }
        units.insert(role.to_owned());
    }
    let roles: BTreeSet<String> = roles_of(&deployment)
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(units, roles, "a unit for every role");
}

/// Every YAML document of `file`, as JSON values.
fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: {error}", file.display()))
        })
        .collect()
}

#[test]
fn kubernetes_manifests_parse_and_run_real_nodes_of_their_deployment_file() {
    let dir = deploy_dir("kubernetes");
    let deployment = checked(&dir.join("edgebox.toml"));

    // kustomization.yaml lists every manifest and makes the ConfigMap from the file.
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let manifests: BTreeSet<String> = files(&dir, "yaml")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, manifests, "kustomization.yaml lists every manifest");
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], "edgebox-config");
    assert_eq!(generator["files"][0], "edgebox.toml");

    let mut objects = Vec::new();
    for manifest in &manifests {
        for document in documents(&dir.join(manifest)) {
            for key in ["apiVersion", "kind"] {
                assert!(
                    document[key].is_string(),
                    "{manifest}: no {key}: {document}"
                );
            }
            assert!(
                document["metadata"]["name"].is_string(),
                "{manifest}: {document}"
            );
            objects.push(document);
        }
    }
    let kinds = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);

    // Every edgebox container: a real role, a real node of that role (or, for the
    // DaemonSet, the machine's name from the downward API), the config mounted from the
    // ConfigMap, container ports that are the node's listeners.
    let mut roles_run = BTreeSet::new();
    let mut literal_nodes = BTreeSet::new();
    for workload in objects.iter().filter(|o| {
        ["Deployment", "DaemonSet", "StatefulSet"].contains(&o["kind"].as_str().unwrap())
    }) {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        let selector = &workload["spec"]["selector"]["matchLabels"];
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(
                &workload["spec"]["template"]["metadata"]["labels"][key], value,
                "{name}"
            );
        }
        for container in pod["containers"].as_array().unwrap() {
            if container["command"][0] != "edgebox" {
                continue;
            }
            let args: Vec<&str> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let [role, "--config", config, "--node", node] = args[..] else {
                panic!("{name}: args are not `ROLE --config F --node N`: {args:?}");
            };
            assert!(ROLES.contains(&role), "{name}: unknown role {role}");
            assert_eq!(config, INSTALLED_CONFIG, "{name}");
            let mounted = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| {
                    m["mountPath"] == "/etc/edgebox"
                        && pod["volumes"].as_array().unwrap().iter().any(|v| {
                            v["name"] == m["name"] && v["configMap"]["name"] == "edgebox-config"
                        })
                });
            assert!(
                mounted,
                "{name}: /etc/edgebox is not the edgebox-config ConfigMap"
            );
            let nodes: Vec<&edgebox_config::Node> = match node.strip_prefix("$(") {
                Some(variable) => {
                    let variable = variable.trim_end_matches(')');
                    let from = container["env"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["name"] == variable)
                        .unwrap_or_else(|| panic!("{name}: ${variable} is not set"));
                    assert_eq!(
                        from["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
                        "{name}: the node is the machine's name"
                    );
                    assert_eq!(workload["kind"], "DaemonSet", "{name}");
                    assert_eq!(
                        pod["hostNetwork"], true,
                        "{name}: one node per machine address"
                    );
                    deployment
                        .nodes
                        .iter()
                        .filter(|n| n.role_name() == role)
                        .collect()
                }
                None => {
                    literal_nodes.insert(node);
                    vec![
                        deployment
                            .node(node)
                            .unwrap_or_else(|| panic!("{name}: no node {node:?} in edgebox.toml")),
                    ]
                }
            };
            assert!(!nodes.is_empty(), "{name}: no {role} node in edgebox.toml");
            let ports: BTreeSet<u64> = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["containerPort"].as_u64().unwrap())
                .collect();
            for node in nodes {
                assert_eq!(
                    node.role_name(),
                    role,
                    "{name}: {} is not a {role}",
                    node.name
                );
                let listening: BTreeSet<u64> = node
                    .listeners()
                    .iter()
                    .map(|(_, addr)| u64::from(addr.port()))
                    .collect();
                assert_eq!(
                    ports, listening,
                    "{name}: container ports of node {}",
                    node.name
                );
            }
            roles_run.insert(role);
        }
    }
    assert_eq!(
        roles_run,
        roles_of(&deployment),
        "every role runs somewhere"
    );
    // Nodes a Deployment names are not also edge machines of the DaemonSet.
    assert!(
        literal_nodes
            .iter()
            .all(|n| deployment.node(n).unwrap().role_name() != "edge")
    );

    // Services select pods that exist; the origins' headless Service is the origin
    // group's DNS name and the control plane's Service is the agents' URL.
    let service_host = |name: &str| format!("{name}.edgebox.svc.cluster.local");
    for service in kinds("Service") {
        let selector = service["spec"]["selector"].as_object().unwrap();
        let selected = objects.iter().any(|o| {
            let labels = &o["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(key, value)| &labels[key] == value)
        });
        assert!(
            selected,
            "Service {} selects no pod",
            service["metadata"]["name"]
        );
    }
    let origins = kinds("Service")
        .find(|s| s["metadata"]["name"] == "edgebox-origins")
        .expect("the origins' Service");
    assert_eq!(
        origins["spec"]["clusterIP"], "None",
        "headless: one A record per pod"
    );
    let members: Vec<String> = deployment
        .origin_groups
        .values()
        .flat_map(|group| &group.members)
        .filter_map(|member| match &member.target {
            edgebox_config::model::OriginTarget::Host { host, port } => {
                Some(format!("{host}:{port}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        members,
        [format!("{}:8080", service_host("edgebox-origins"))]
    );
    let urls = deployment.control_plane_urls();
    assert_eq!(
        urls,
        [format!("http://{}:9090", service_host("edgebox-control"))]
    );
    assert!(kinds("Service").any(
        |s| s["metadata"]["name"] == "edgebox-control" && s["spec"]["ports"][0]["port"] == 9090
    ));
    let etcd = kinds("StatefulSet").find(|s| s["metadata"]["name"] == "etcd");
    assert!(etcd.is_some(), "the control plane's etcd");
    assert!(kinds("DaemonSet").any(|d| d["metadata"]["name"] == "edgebox-edge"));
}
