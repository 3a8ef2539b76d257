//! `[regions.*]` and `[latency]`: the simulated network between regions.

use std::collections::{BTreeMap, BTreeSet};

use super::known_list;
use crate::diagnostics::Collector;
use crate::model::*;
use crate::raw::*;

pub(super) fn check_latency(
    c: &mut Collector<'_>,
    raw: RawLatency,
    regions: &BTreeSet<&str>,
) -> LatencyModel {
    let intra_region = check_link(
        c,
        "latency.intra_region",
        raw.intra_region.rtt,
        raw.intra_region.jitter,
        raw.intra_region.loss,
    );
    let mut links = BTreeMap::new();
    for (index, link) in raw.links.into_iter().enumerate() {
        let path = format!("latency.links[{index}]");
        let [a, b] = link.between;
        let mut known = true;
        for region in [&a, &b] {
            if !regions.contains(region.as_str()) {
                c.error(
                    format!("{path}.between"),
                    format!(
                        "unknown region {region:?}; {}",
                        known_list("regions", regions)
                    ),
                );
                known = false;
            }
        }
        if a == b {
            c.error(
                format!("{path}.between"),
                "a link joins two different regions; use latency.intra_region for one region",
            );
            continue;
        }
        let checked = check_link(c, &path, link.rtt, link.jitter, link.loss);
        let key = if a <= b { (a, b) } else { (b, a) };
        if known && links.insert(key.clone(), checked).is_some() {
            c.error(
                format!("{path}.between"),
                format!("link between {:?} and {:?} is listed twice", key.0, key.1),
            );
        }
    }
    if raw.enabled {
        let names: Vec<&str> = regions.iter().copied().collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                if !links.contains_key(&(a.to_string(), b.to_string())) {
                    c.error("latency.links", format!("no link between regions {a:?} and {b:?}; add [[latency.links]] between = [{a:?}, {b:?}]"));
                }
            }
        }
    }
    LatencyModel {
        enabled: raw.enabled,
        intra_region,
        links,
    }
}

fn check_link(
    c: &mut Collector<'_>,
    path: &str,
    rtt: crate::units::Duration,
    jitter: crate::units::Duration,
    loss: f64,
) -> Link {
    if jitter.get() > rtt.get() {
        c.error(
            format!("{path}.jitter"),
            format!("jitter {jitter} is larger than the round trip {rtt}"),
        );
    }
    if !(0.0..1.0).contains(&loss) {
        c.error(
            format!("{path}.loss"),
            format!("loss must be a probability in [0, 1), got {loss}"),
        );
    }
    Link {
        rtt: rtt.get(),
        jitter: jitter.get(),
        loss,
    }
}
