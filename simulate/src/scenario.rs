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

mod model_checks;
mod target_checks;
mod workload_checks;
pub use workload_checks::DEFAULT_CONNECTIONS_PER_EDGE;

use edgebox_cache_model::eviction::PolicyKind;
use model_checks::{check_cost, check_mode, check_sweep, check_trace};
use target_checks::{bind_deployment, check_target};
use workload_checks::{POLICIES, check_catalogue, check_clients, check_settings, check_workload};

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
    "mode",
    "trace",
    "sweep",
    "cost",
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
    pub mode: Mode,
    /// Requests from a trace rather than the synthetic workload.
    pub trace: Option<TraceSpec>,
    /// Prices for the cost table (model mode).
    pub cost: Option<CostModel>,
}

/// How a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Real processes and real HTTP, in real time.
    Live,
    /// The deployment's cache policy in-process, on a virtual clock.
    Model,
    /// Live, then the same requests in model mode, with the tiers' shares side by side.
    Compare,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Model => "model",
            Self::Compare => "compare",
        }
    }
}

/// Where a trace comes from.
#[derive(Debug, Clone)]
pub enum TraceSpec {
    File {
        path: PathBuf,
        format: Option<crate::trace::Format>,
    },
    Generate(crate::trace::generate::Options),
}

/// `[cost]`, checked: every price is finite and not negative.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CostModel {
    pub currency: String,
    pub egress_per_gib: BTreeMap<String, f64>,
    pub egress_default_per_gib: f64,
    pub origin_requests_per_million: f64,
    pub origin_egress_per_gib: f64,
    pub memory_per_gib_month: f64,
    pub disk_per_gib_month: f64,
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
    /// Plain HTTP: connections the generator keeps to each edge at most.
    pub connections_per_edge: usize,
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
    /// L1 eviction policy: written to the live edges' `[cache] l1_policy`, and the
    /// policy model mode simulates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l1_policy: Option<PolicyKind>,
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
            latency_scale,
            l1_policy
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

/// The seed as written, for checks that need it before the scenario is assembled.
fn scenario_seed(seed: Option<u64>) -> u64 {
    seed.unwrap_or(1)
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
    let mut raw_mode: Option<String> = None;
    let mut raw_trace: Option<RawTrace> = None;
    let mut raw_sweep: Option<RawSweep> = None;
    let mut raw_cost: Option<RawCost> = None;
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
            "mode" => raw_mode = decode(&mut c, key_name, value),
            "trace" => raw_trace = decode(&mut c, key_name, value),
            "sweep" => raw_sweep = decode(&mut c, key_name, value),
            "cost" => raw_cost = decode(&mut c, key_name, value),
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
    let mode = check_mode(&mut c, raw_mode.as_deref(), &target);
    let trace = raw_trace
        .and_then(|raw| check_trace(&mut c, raw, base_dir, scenario_seed(seed), mode, &target));
    let model = mode == Mode::Model;
    let workload = check_workload(
        &mut c,
        raw_workload.unwrap_or_default(),
        base_dir,
        model,
        trace.is_some(),
    );
    let clients = check_clients(&mut c, raw_clients, &workload, model);
    let cost = raw_cost.map(|raw| check_cost(&mut c, raw, &clients, mode));
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
    let declared = !variants.is_empty();
    if variants.is_empty() {
        variants.push(Variant {
            name: "baseline".to_owned(),
            description: String::new(),
            settings: base_settings.clone(),
            deployment_text: None,
            key_path: "deployment.settings".to_owned(),
        });
    }
    if let Some(raw) = raw_sweep {
        variants = check_sweep(&mut c, raw, variants, declared);
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
        mode,
        trace,
        cost,
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

pub(super) fn known_list<'a>(
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
