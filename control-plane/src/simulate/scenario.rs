//! The one place a scenario file is checked: syntax, types, ranges, and every reference
//! to the deployment (regions, origin nodes, variants that must still make a valid
//! deployment). Every problem is reported with its line and key, never just the first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgebox_config::decode::{decode, decode_list, decode_map};
use edgebox_config::{Collector, ConfigLocation, Deployment, Diagnostic, Role, join_key_path};
use serde::Serialize;
use toml::de::DeTable;

use super::raw::*;
use super::variant;

/// Highest total request rate accepted: beyond it one machine measures itself, not the CDN.
pub const MAX_TOTAL_RATE: f64 = 20_000.0;
/// Most requests one run may plan (every completed request is kept for percentiles).
pub const MAX_PLANNED: f64 = 2_000_000.0;
/// Most objects in a generated catalogue.
pub const MAX_OBJECTS: u64 = 1_000_000;
/// Largest generated catalogue on disk.
pub const MAX_CATALOGUE_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The origins' bundled sample site, requested from running deployments by default.
pub const SAMPLE_PATHS: &[&str] = &[
    "/index.html",
    "/assets/app.css",
    "/assets/app.js",
    "/assets/logo.svg",
    "/images/photo.png",
    "/about.html",
];

const SECTIONS: &[&str] = &[
    "name",
    "description",
    "seed",
    "deployment",
    "workload",
    "clients",
    "catalogue",
    "variants",
];

/// Every problem found in one scenario file. Displayed one per line, compiler style.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
pub struct ScenarioErrors {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        edgebox_config::write_diagnostics(f, &self.file, "scenario", &self.diagnostics)
    }
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file as the user named it (or `<example NAME>`).
    pub source: String,
    pub text: String,
    pub seed: u64,
    pub target: Target,
    pub workload: Workload,
    /// Client regions in name order.
    pub clients: Vec<ClientRegion>,
    pub catalogue: Catalogue,
    /// At least one; a scenario without `[[variants]]` has one called `baseline`.
    pub variants: Vec<Variant>,
    /// Changes applied to every variant.
    pub base_settings: Settings,
    pub ready_timeout: Duration,
}

/// What the load goes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// The simulator starts this deployment itself, once per variant.
    Start {
        location: ConfigLocation,
        deployment: Box<Deployment>,
    },
    /// A running deployment, driven through its control plane.
    Running {
        control_plane: String,
        token: TokenSource,
        /// Known once the control plane has been asked ([`Scenario::bind`]).
        deployment: Option<Box<Deployment>>,
    },
    /// Edges of a running deployment addressed directly, by region.
    Edges {
        edges: BTreeMap<String, Vec<String>>,
    },
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
    Env(String),
    /// `EDGEBOX_TOKEN`, else `.edgebox/tokens/operator` (what `edgebox up` of the
    /// embedded default writes), else no token.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    #[serde(rename = "duration_s")]
    Duration(#[serde(serialize_with = "secs")] Duration),
    Requests(u64),
}

fn secs<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    Poisson,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub limit: Limit,
    pub concurrency: usize,
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
    pub arrivals: Arrivals,
    pub uncacheable: f64,
    pub protocol: Protocol,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientRegion {
    pub name: String,
    /// Requests per second.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Popularity {
    Zipf { s: f64 },
    Uniform,
}

#[derive(Debug, Clone, Serialize)]
pub struct Catalogue {
    pub popularity: Popularity,
    pub objects: CatalogueObjects,
}

/// Where the requested objects come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CatalogueObjects {
    /// Files the simulator writes for the origins of a deployment it starts.
    Generated {
        count: u32,
        median_size: u64,
        size_sigma: f64,
        min_size: u64,
        max_size: u64,
    },
    /// Paths a running deployment already serves.
    Listed {
        paths: Vec<String>,
        uncacheable_paths: Vec<String>,
    },
}

/// Changes to a deployment. `None` leaves a setting as the deployment has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiering: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l1_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_scale: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub origin_delay: BTreeMap<String, u64>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `self` with `over`'s settings on top.
    pub fn merged(&self, over: &Settings) -> Settings {
        let mut merged = self.clone();
        macro_rules! take {
            ($($field:ident),*) => { $( if over.$field.is_some() { merged.$field = over.$field.clone(); } )* };
        }
        take!(
            tiering,
            cache,
            l1_capacity,
            l2_capacity,
            lb_policy,
            latency,
            latency_scale
        );
        merged.origin_delay.extend(over.origin_delay.clone());
        merged
    }
}

/// One configuration of the deployment the workload runs against.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub description: String,
    /// The deployment's settings plus the variant's own.
    pub settings: Settings,
    /// The deployment file this variant runs, once the deployment is known.
    #[serde(skip)]
    pub deployment_text: Option<String>,
    /// Where in the scenario its settings are written, for messages.
    #[serde(skip)]
    pub key_path: String,
}

impl Scenario {
    /// Total planned request rate over every client region.
    pub fn total_rate(&self) -> f64 {
        self.clients.iter().map(|client| client.rate).sum()
    }

    /// The deployment behind the target, when known.
    pub fn deployment(&self) -> Option<&Deployment> {
        match &self.target {
            Target::Start { deployment, .. } => Some(deployment),
            Target::Running { deployment, .. } => deployment.as_deref(),
            Target::Edges { .. } => None,
        }
    }

    /// Checks the scenario against the deployment a running control plane holds, and
    /// builds each variant's deployment file. Problems are placed in the scenario file.
    pub fn bind(&mut self, deployment: Deployment) -> Result<(), ScenarioErrors> {
        let text = self.text.clone();
        let (root, _) = DeTable::parse_recoverable(&text);
        let root = root.into_inner();
        let mut c = Collector::new(&text, &root);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        bind_deployment(&mut c, self, &deployment, &cwd);
        if let Target::Running {
            deployment: slot, ..
        } = &mut self.target
        {
            *slot = Some(Box::new(deployment));
        }
        finish(c.diagnostics, &self.source)
    }
}

/// The directory relative paths of a deployment resolve against (as `edgebox_config::load`).
pub fn deployment_base_dir(location: &ConfigLocation) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match location {
        ConfigLocation::Embedded => cwd,
        ConfigLocation::File(path) => {
            let parent = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            std::path::absolute(&parent).unwrap_or(parent)
        }
    }
}

fn finish(mut diagnostics: Vec<Diagnostic>, source: &str) -> Result<(), ScenarioErrors> {
    if diagnostics.is_empty() {
        return Ok(());
    }
    diagnostics.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column));
    diagnostics.dedup();
    Err(ScenarioErrors {
        file: source.to_owned(),
        diagnostics,
    })
}

/// Reads and checks a scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| ScenarioErrors {
        file: path.display().to_string(),
        diagnostics: vec![Diagnostic {
            path: String::new(),
            line: None,
            column: None,
            message: format!("cannot read: {err}"),
        }],
    })?;
    let base_dir = edgebox_config::base_dir_of_file(path);
    let default_name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".to_owned());
    parse(&text, &path.display().to_string(), &base_dir, &default_name)
}

/// Parses and checks a scenario. `source` names it in messages; relative paths resolve
/// against `base_dir`.
pub fn parse(
    text: &str,
    source: &str,
    base_dir: &Path,
    default_name: &str,
) -> Result<Scenario, ScenarioErrors> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let mut c = Collector::without_index(text);
        for error in syntax_errors {
            c.error_at("", error.span(), error.message().to_owned());
        }
        return Err(ScenarioErrors {
            file: source.to_owned(),
            diagnostics: c.diagnostics,
        });
    }
    let root = root.into_inner();
    let mut c = Collector::new(text, &root);

    let mut name: Option<String> = None;
    let mut description: Option<String> = None;
    let mut seed: Option<u64> = None;
    let mut raw_deployment: Option<RawDeployment> = None;
    let mut raw_workload: Option<RawWorkload> = None;
    let mut raw_clients: Option<Vec<(String, RawClients)>> = None;
    let mut raw_catalogue: Option<RawCatalogue> = None;
    let mut raw_variants: Option<Vec<Option<RawSettings>>> = None;
    for (key, value) in &root {
        let key_name = key.get_ref().as_ref();
        match key_name {
            "name" => name = decode(&mut c, key_name, value),
            "description" => description = decode(&mut c, key_name, value),
            "seed" => seed = decode(&mut c, key_name, value),
            "deployment" => raw_deployment = decode(&mut c, key_name, value),
            "workload" => raw_workload = decode(&mut c, key_name, value),
            "clients" => raw_clients = decode_map(&mut c, key_name, value),
            "catalogue" => raw_catalogue = decode(&mut c, key_name, value),
            "variants" => raw_variants = decode_list(&mut c, key_name, value),
            other => c.error_at(
                join_key_path("", other),
                Some(key.span()),
                format!(
                    "unknown key `{other}`, expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }

    let raw_deployment = raw_deployment.unwrap_or_default();
    let ready_timeout = raw_deployment
        .ready_timeout
        .map_or(Duration::from_secs(120), |timeout| timeout.get());
    let base_settings = raw_deployment
        .settings
        .clone()
        .map(|raw| check_settings(&mut c, "deployment.settings", raw, false))
        .unwrap_or_default();
    let (target, target_known) = check_target(&mut c, raw_deployment, base_dir);
    let workload = check_workload(&mut c, raw_workload.unwrap_or_default(), base_dir);
    let clients = check_clients(&mut c, raw_clients, &workload);
    let catalogue = check_catalogue(
        &mut c,
        raw_catalogue.unwrap_or_default(),
        &target,
        &workload,
    );

    let mut variants = Vec::new();
    let mut names = BTreeSet::new();
    for (index, raw) in raw_variants.unwrap_or_default().into_iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("variants[{index}]");
        let variant_name = raw.name.clone().unwrap_or_default();
        if variant_name.is_empty()
            || !variant_name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_. ".contains(ch))
        {
            c.error(
                format!("{path}.name"),
                format!(
                    "a variant needs a name of letters, digits, '-', '_', '.' or spaces (got {variant_name:?})"
                ),
            );
        } else if !names.insert(variant_name.clone()) {
            c.error(
                format!("{path}.name"),
                format!("variant name {variant_name:?} is used twice"),
            );
        }
        let description = raw.description.clone().unwrap_or_default();
        let own = check_settings(&mut c, &path, raw, true);
        variants.push(Variant {
            name: variant_name,
            description,
            settings: base_settings.merged(&own),
            deployment_text: None,
            key_path: path,
        });
    }
    if variants.is_empty() {
        variants.push(Variant {
            name: "baseline".to_owned(),
            description: String::new(),
            settings: base_settings.clone(),
            deployment_text: None,
            key_path: "deployment.settings".to_owned(),
        });
    }
    if let Target::Edges { .. } = &target {
        for (index, variant) in variants.iter().enumerate() {
            if !variant.settings.is_empty() {
                let path = if base_settings.is_empty() {
                    format!("variants[{index}]")
                } else {
                    "deployment.settings".to_owned()
                };
                c.error(
                    path,
                    "a deployment addressed by its edges cannot be reconfigured; use `running = CONTROL_PLANE_URL` or `file = DEPLOYMENT` to compare variants",
                );
            }
        }
    }

    let mut scenario = Scenario {
        name: name.unwrap_or_else(|| default_name.to_owned()),
        description: description.unwrap_or_default(),
        source: source.to_owned(),
        text: text.to_owned(),
        seed: seed.unwrap_or(1),
        target,
        workload,
        clients,
        catalogue,
        variants,
        base_settings,
        ready_timeout,
    };
    if scenario.name.trim().is_empty() {
        c.error("name", "the scenario name must not be empty");
    }
    // References to the deployment are checked only when it could be read; sections
    // that failed to decode are left out above, so they cause no follow-up errors.
    if target_known {
        match &scenario.target {
            Target::Start {
                deployment,
                location,
            } => {
                let deployment = (**deployment).clone();
                let base_dir = deployment_base_dir(location);
                bind_deployment(&mut c, &mut scenario, &deployment, &base_dir);
            }
            Target::Edges { edges } => {
                let scheme = match scenario.workload.protocol {
                    Protocol::Http => "http://",
                    Protocol::Https => "https://",
                };
                for (region, urls) in edges {
                    if urls.iter().any(|url| !url.starts_with(scheme)) {
                        c.error(
                            join_key_path("deployment.edges", region),
                            format!(
                                "workload.protocol is {scheme:?} but this edge's URL is not; give the same scheme to both"
                            ),
                        );
                    }
                }
                for client in &scenario.clients {
                    if !edges.contains_key(&client.name) {
                        c.error(
                            join_key_path("clients", &client.name),
                            format!(
                                "no edge is given for region {:?}; {}",
                                client.name,
                                known_list("regions in deployment.edges", edges.keys())
                            ),
                        );
                    }
                }
            }
            Target::Running { .. } => {}
        }
    }
    finish(c.diagnostics, source)?;
    Ok(scenario)
}

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
fn check_target(c: &mut Collector<'_>, raw: RawDeployment, base_dir: &Path) -> (Target, bool) {
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

fn check_workload(c: &mut Collector<'_>, raw: RawWorkload, base_dir: &Path) -> Workload {
    let limit = match (raw.duration, raw.requests) {
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
            if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
                c.error(
                    "workload.duration",
                    "duration must be positive and at most 24h",
                );
            }
            Limit::Duration(duration)
        }
        (None, Some(requests)) => {
            if requests == 0 || requests as f64 > MAX_PLANNED {
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
        timeout,
        arrivals,
        uncacheable: uncacheable.clamp(0.0, 1.0),
        protocol,
        ca_file,
    }
}

fn check_clients(
    c: &mut Collector<'_>,
    raw: Option<Vec<(String, RawClients)>>,
    workload: &Workload,
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
        if client.rate > MAX_TOTAL_RATE {
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
    if total > MAX_TOTAL_RATE {
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
        if planned > MAX_PLANNED {
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

fn check_catalogue(
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
        let total = super::workload::catalogue_bytes(&objects, 0);
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

const POLICIES: &[&str] = &[
    "round_robin",
    "weighted",
    "consistent_hash",
    "least_connections",
    "latency_aware",
];

fn check_settings(c: &mut Collector<'_>, path: &str, raw: RawSettings, variant: bool) -> Settings {
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
    Settings {
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

/// Checks everything that refers to the deployment and builds each variant's file.
fn bind_deployment(
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
            if edge.https.is_none() && super::target::is_client_facing(deployment, &node.name) {
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
            Err(message) => c.error(path.clone(), message),
        }
    }
}

fn known_list<'a>(
    what: &str,
    names: impl Iterator<Item = &'a (impl AsRef<str> + ?Sized + 'a)>,
) -> String {
    let quoted: Vec<String> = names.map(|name| format!("{:?}", name.as_ref())).collect();
    if quoted.is_empty() {
        format!("no {what} are defined")
    } else {
        format!("known {what}: {}", quoted.join(", "))
    }
}
