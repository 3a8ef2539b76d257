//! Where model mode's requests come from: a trace file (streamed), a generated trace
//! (streamed from its generator, nothing written), or the scenario's synthetic workload
//! (the same plan live mode sends). Each worker opens its own stream and replays it through
//! all of its variants.

use std::sync::Arc;

use edgebox_cache_model::hash::mix64;

use crate::scenario::{CatalogueObjects, Limit, Scenario, TraceSpec};
use crate::trace::{self, TraceError, TraceReader, generate};
use crate::workload::{self, Plan, Sampler};

/// One request as the model serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRequest {
    pub time_ms: u64,
    pub object: u64,
    pub size: u64,
    /// Index into the scenario's client regions.
    pub region: usize,
    pub ttl_s: Option<u32>,
    pub cacheable: bool,
}

/// Spreads a trace's requests over client regions in proportion to their `rate`, by a hash
/// of the record number (so every variant, and every run, sees the same split).
#[derive(Debug, Clone)]
struct Split {
    cumulative: Vec<f64>,
    seed: u64,
}

impl Split {
    fn new(scenario: &Scenario) -> Self {
        let total = scenario.total_rate().max(f64::MIN_POSITIVE);
        let mut sum = 0.0;
        let cumulative = scenario
            .clients
            .iter()
            .map(|client| {
                sum += client.rate / total;
                sum
            })
            .collect();
        Self {
            cumulative,
            seed: scenario.seed,
        }
    }

    #[inline]
    fn region(&self, record: u64) -> usize {
        if self.cumulative.len() < 2 {
            return 0;
        }
        let u = (mix64(self.seed ^ record.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 11) as f64
            / (1u64 << 53) as f64;
        self.cumulative
            .iter()
            .position(|edge| u < *edge)
            .unwrap_or(self.cumulative.len().saturating_sub(1))
    }
}

enum Inner {
    File(TraceReader),
    Generated(Box<dyn Iterator<Item = generate::Generated> + Send>),
    Plan { plan: Plan, sizes: Arc<Vec<u64>> },
}

pub struct Source {
    inner: Inner,
    split: Split,
    limit: Limit,
    emitted: u64,
}

impl Source {
    /// Opens the scenario's requests from the start.
    pub fn open(scenario: &Scenario) -> Result<Self, TraceError> {
        let regions: Vec<String> = scenario.clients.iter().map(|c| c.name.clone()).collect();
        let inner = match &scenario.trace {
            Some(TraceSpec::File { path, format }) => {
                Inner::File(trace::open(path, *format, &regions)?)
            }
            Some(TraceSpec::Generate(options)) => {
                Inner::Generated(Box::new(generate::requests(options.clone())))
            }
            None => {
                let count = workload::object_count(&scenario.catalogue.objects);
                let sampler = Arc::new(Sampler::new(scenario.catalogue.popularity, count));
                let sizes = match &scenario.catalogue.objects {
                    CatalogueObjects::Generated { .. } => {
                        workload::object_sizes(&scenario.catalogue.objects, scenario.seed)
                    }
                    CatalogueObjects::Listed { .. } => Vec::new(),
                };
                Inner::Plan {
                    plan: Plan::new(scenario, sampler),
                    sizes: Arc::new(sizes),
                }
            }
        };
        Ok(Self {
            inner,
            split: Split::new(scenario),
            limit: scenario.workload.limit,
            emitted: 0,
        })
    }
}

impl Source {
    /// Appends requests to `batch` until it holds `max`. `Ok(false)`: the stream ended
    /// (what it had is in `batch`); an error comes after the requests before it.
    pub fn fill(&mut self, batch: &mut Vec<ModelRequest>, max: usize) -> Result<bool, TraceError> {
        while batch.len() < max {
            match self.next() {
                Some(Ok(request)) => batch.push(request),
                Some(Err(err)) => return Err(err),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl Iterator for Source {
    type Item = Result<ModelRequest, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Limit::Requests(count) = self.limit
            && self.emitted >= count
        {
            return None;
        }
        let record = self.emitted;
        let request = match &mut self.inner {
            Inner::File(reader) => match reader.next()? {
                Ok(record_read) => ModelRequest {
                    time_ms: record_read.time_ms,
                    object: record_read.object,
                    size: record_read.size,
                    region: record_read
                        .region
                        .map_or_else(|| self.split.region(record), usize::from),
                    ttl_s: record_read.ttl_s,
                    cacheable: true,
                },
                Err(err) => return Some(Err(err)),
            },
            Inner::Generated(requests) => {
                let generated = requests.next()?;
                ModelRequest {
                    time_ms: (generated.time_s * 1000.0) as u64,
                    object: generated.object,
                    size: generated.size,
                    region: self.split.region(record),
                    ttl_s: None,
                    cacheable: true,
                }
            }
            Inner::Plan { plan, sizes } => {
                let planned = plan.next()?;
                ModelRequest {
                    time_ms: planned.at.as_millis() as u64,
                    object: u64::from(planned.object),
                    size: sizes.get(planned.object as usize).copied().unwrap_or(1),
                    region: planned.region,
                    ttl_s: None,
                    cacheable: planned.cacheable,
                }
            }
        };
        if let Limit::Duration(duration) = self.limit
            && u128::from(request.time_ms) >= duration.as_millis()
        {
            return None;
        }
        self.emitted += 1;
        Some(Ok(request))
    }
}
