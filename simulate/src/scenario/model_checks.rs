//! Checks of what model mode adds to a scenario: `mode`, `[trace]`, `[sweep]` and `[cost]`.

use super::*;
use crate::trace::{Format, generate};

pub(super) fn check_mode(c: &mut Collector<'_>, raw: Option<&str>, target: &Target) -> Mode {
    let mode = match raw {
        None | Some("live") => Mode::Live,
        Some("model") => Mode::Model,
        Some("compare") => Mode::Compare,
        Some(other) => {
            c.error(
                "mode",
                format!("unknown mode {other:?}; expected \"live\", \"model\" or \"compare\""),
            );
            Mode::Live
        }
    };
    if mode != Mode::Live && !matches!(target, Target::Start { .. }) {
        c.error(
            "mode",
            format!(
                "{} mode simulates a deployment from its config: give `deployment.file`, or nothing for the embedded default",
                mode.as_str()
            ),
        );
    }
    mode
}

pub(super) fn check_trace(
    c: &mut Collector<'_>,
    raw: RawTrace,
    base_dir: &Path,
    seed: u64,
    mode: Mode,
    target: &Target,
) -> Option<TraceSpec> {
    if mode != Mode::Model && !matches!(target, Target::Start { .. }) {
        c.error(
            "trace",
            "a trace is replayed live against a deployment the simulator starts (its origins serve the traced objects): give `deployment.file`, or nothing for the embedded default; or use `mode = \"model\"`",
        );
    }
    let format = match raw.format.as_deref() {
        None => None,
        Some(text) => match Format::parse(text) {
            Some(format) => Some(format),
            None => {
                c.error(
                    "trace.format",
                    format!("unknown trace format {text:?}; expected \"csv\" or \"oracle\""),
                );
                None
            }
        },
    };
    match (raw.file, raw.generate) {
        (Some(_), Some(_)) => {
            c.error("trace", "give `file` or `generate`, not both");
            None
        }
        (None, None) => {
            c.error(
                "trace",
                "name a trace: `file = \"trace.oracleGeneral.zst\"` or a `[trace.generate]` table",
            );
            None
        }
        (Some(file), None) => {
            let path = base_dir.join(&file);
            if !path.is_file() {
                c.error("trace.file", format!("no trace file at {}", path.display()));
            }
            Some(TraceSpec::File { path, format })
        }
        (None, Some(raw)) => {
            let defaults = generate::Options::default();
            let options = generate::Options {
                requests: raw.requests.unwrap_or(defaults.requests),
                objects: raw.objects.unwrap_or(defaults.objects),
                zipf: raw.zipf.unwrap_or(defaults.zipf),
                one_hit_wonders: raw.one_hit_wonders.unwrap_or(defaults.one_hit_wonders),
                seed,
                median_size: raw.size.map_or(defaults.median_size, |s| s.bytes()),
                size_sigma: raw.size_sigma.unwrap_or(defaults.size_sigma),
                min_size: raw.min_size.map_or(defaults.min_size, |s| s.bytes()),
                max_size: raw.max_size.map_or(defaults.max_size, |s| s.bytes()),
                span_s: raw.span.map_or(defaults.span_s, |s| s.get().as_secs_f64()),
                regions: Vec::new(),
            };
            for message in generate::problems(&options) {
                c.error(format!("trace.generate.{}", message.0), message.1);
            }
            if mode != Mode::Model && options.requests as f64 > MAX_PLANNED {
                c.error(
                    "trace.generate.requests",
                    format!(
                        "at most {MAX_PLANNED} requests are replayed live (each is kept for the report); use `mode = \"model\"` for more"
                    ),
                );
            }
            Some(TraceSpec::Generate(options))
        }
    }
}

/// Every variant once per combination of the swept values, named after them.
pub(super) fn check_sweep(
    c: &mut Collector<'_>,
    raw: RawSweep,
    variants: Vec<Variant>,
    declared: bool,
) -> Vec<Variant> {
    let capacities: Vec<Option<u64>> = match &raw.l1_capacity {
        Some(list) if list.is_empty() => {
            c.error("sweep.l1_capacity", "list at least one size");
            vec![None]
        }
        Some(list) => list.iter().map(|size| Some(size.bytes())).collect(),
        None => vec![None],
    };
    let mut policies: Vec<Option<PolicyKind>> = Vec::new();
    for (index, name) in raw.l1_policy.iter().flatten().enumerate() {
        match name.parse::<PolicyKind>() {
            Ok(policy) => policies.push(Some(policy)),
            Err(err) => c.error(format!("sweep.l1_policy[{index}]"), err.to_string()),
        }
    }
    if raw.l1_policy.as_ref().is_some_and(Vec::is_empty) {
        c.error("sweep.l1_policy", "list at least one policy");
    }
    if policies.is_empty() {
        policies.push(None);
    }
    let mut swept = Vec::new();
    for variant in variants {
        for policy in &policies {
            for capacity in &capacities {
                let mut parts = Vec::new();
                if declared {
                    parts.push(variant.name.clone());
                }
                if let Some(policy) = policy {
                    parts.push(policy.to_string());
                }
                if let Some(capacity) = capacity {
                    parts.push(edgebox_config::units::ByteSize(*capacity).to_string());
                }
                let mut settings = variant.settings.clone();
                settings.l1_policy = policy.or(settings.l1_policy);
                settings.l1_capacity = capacity.or(settings.l1_capacity);
                swept.push(Variant {
                    name: if parts.is_empty() {
                        variant.name.clone()
                    } else {
                        parts.join(" ")
                    },
                    description: variant.description.clone(),
                    settings,
                    deployment_text: None,
                    key_path: "sweep".to_owned(),
                });
            }
        }
    }
    swept
}

pub(super) fn check_cost(
    c: &mut Collector<'_>,
    raw: RawCost,
    clients: &[ClientRegion],
    mode: Mode,
) -> CostModel {
    if mode == Mode::Live {
        c.error(
            "cost",
            "the cost table is computed in model mode; add `mode = \"model\"`",
        );
    }
    let mut price = |key: &str, value: Option<f64>| {
        let value = value.unwrap_or(0.0);
        if !value.is_finite() || value < 0.0 {
            c.error(
                format!("cost.{key}"),
                format!("a price is a finite number of at least 0, got {value}"),
            );
        }
        value
    };
    let model = CostModel {
        currency: raw.currency.clone().unwrap_or_else(|| "USD".to_owned()),
        egress_default_per_gib: price("egress_default_per_gib", raw.egress_default_per_gib),
        origin_requests_per_million: price(
            "origin_requests_per_million",
            raw.origin_requests_per_million,
        ),
        origin_egress_per_gib: price("origin_egress_per_gib", raw.origin_egress_per_gib),
        memory_per_gib_month: price("memory_per_gib_month", raw.memory_per_gib_month),
        disk_per_gib_month: price("disk_per_gib_month", raw.disk_per_gib_month),
        egress_per_gib: BTreeMap::new(),
    };
    let mut egress = BTreeMap::new();
    for (region, value) in raw.egress_per_gib.unwrap_or_default() {
        let key = join_key_path("cost.egress_per_gib", &region);
        if !value.is_finite() || value < 0.0 {
            c.error(
                key.clone(),
                format!("a price is a finite number of at least 0, got {value}"),
            );
        }
        if !clients.iter().any(|client| client.name == region) {
            c.error(
                key,
                format!(
                    "no clients in region {region:?}; {}",
                    known_list("client regions", clients.iter().map(|c| c.name.as_str()))
                ),
            );
        }
        egress.insert(region, value);
    }
    CostModel {
        egress_per_gib: egress,
        ..model
    }
}
