//! The workload as a pure function of the scenario and its seed: which request is sent
//! when, from which region, for which object. Nothing here reads a clock or the network,
//! so the same seed always gives the same sequence (the generator is our own SplitMix64,
//! whose output is fixed by its definition, not by a library version).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::scenario::{Arrivals, CatalogueObjects, Limit, Popularity, Scenario};
use super::variant::{NOCACHE_PREFIX, OBJECTS_PREFIX};

/// SplitMix64: a small, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one named stream of a seed, independent of the other streams.
    pub fn stream(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed, so that adding a region does not
        // change the requests of the others.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Self(seed ^ hash);
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Draws object ranks (0 = most popular) by popularity.
#[derive(Debug, Clone)]
pub enum Sampler {
    Uniform(u32),
    /// Cumulative probabilities of ranks 0..n.
    Zipf(Vec<f64>),
}

impl Sampler {
    pub fn new(popularity: Popularity, count: u32) -> Self {
        match popularity {
            Popularity::Uniform => Self::Uniform(count.max(1)),
            Popularity::Zipf { s } => {
                let mut cdf = Vec::with_capacity(count as usize);
                let mut total = 0.0;
                for rank in 1..=count.max(1) {
                    total += 1.0 / f64::from(rank).powf(s);
                    cdf.push(total);
                }
                for value in &mut cdf {
                    *value /= total;
                }
                Self::Zipf(cdf)
            }
        }
    }

    /// Probability of `rank` (0-based).
    pub fn probability(&self, rank: u32) -> f64 {
        match self {
            Self::Uniform(count) => 1.0 / f64::from(*count),
            Self::Zipf(cdf) => {
                let index = rank as usize;
                cdf[index] - if index == 0 { 0.0 } else { cdf[index - 1] }
            }
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let u = rng.next_f64();
        match self {
            Self::Uniform(count) => ((u * f64::from(*count)) as u32).min(count - 1),
            Self::Zipf(cdf) => {
                let index = cdf.partition_point(|&p| p <= u);
                index.min(cdf.len() - 1) as u32
            }
        }
    }
}

/// Number of objects the catalogue offers.
pub fn object_count(objects: &CatalogueObjects) -> u32 {
    match objects {
        CatalogueObjects::Generated { count, .. } => *count,
        CatalogueObjects::Listed { paths, .. } => paths.len().max(1) as u32,
    }
}

/// Sizes of the generated objects: log-normal around the median, clamped.
pub fn object_sizes(objects: &CatalogueObjects, seed: u64) -> Vec<u64> {
    let CatalogueObjects::Generated {
        count,
        median_size,
        size_sigma,
        min_size,
        max_size,
    } = objects
    else {
        return Vec::new();
    };
    let mut rng = Rng::stream(seed, "catalogue");
    (0..*count)
        .map(|_| {
            let size = *median_size as f64 * (size_sigma * rng.next_normal()).exp();
            (size.round() as u64).clamp(*min_size, *max_size)
        })
        .collect()
}

/// Bytes the generated catalogue occupies on disk.
pub fn catalogue_bytes(objects: &CatalogueObjects, seed: u64) -> u64 {
    object_sizes(objects, seed).iter().sum()
}

/// The URL path of an object.
pub fn object_path(objects: &CatalogueObjects, object: u32, cacheable: bool) -> String {
    match objects {
        CatalogueObjects::Generated { .. } => {
            let prefix = if cacheable {
                OBJECTS_PREFIX
            } else {
                NOCACHE_PREFIX
            };
            format!("{prefix}{object:06}.bin")
        }
        CatalogueObjects::Listed {
            paths,
            uncacheable_paths,
        } => {
            if cacheable || uncacheable_paths.is_empty() {
                paths[object as usize % paths.len()].clone()
            } else {
                uncacheable_paths[object as usize % uncacheable_paths.len()].clone()
            }
        }
    }
}

/// Writes the generated catalogue under the origins' `root`: `sim/objects/NNNNNN.bin` and
/// the same files hard-linked as `sim/nocache/NNNNNN.bin` (served `no-store` by the origin rules the
/// simulator adds). Contents are pseudo-random, so compression does not shrink them.
pub fn write_catalogue(objects: &CatalogueObjects, seed: u64, root: &Path) -> std::io::Result<u64> {
    use std::io::Write;
    let cached = root.join(OBJECTS_PREFIX.trim_matches('/'));
    let uncached = root.join(NOCACHE_PREFIX.trim_matches('/'));
    std::fs::create_dir_all(&cached)?;
    std::fs::create_dir_all(&uncached)?;
    let mut rng = Rng::stream(seed, "contents");
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0;
    for (index, size) in object_sizes(objects, seed).into_iter().enumerate() {
        let name = format!("{index:06}.bin");
        let path = cached.join(&name);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut left = size as usize;
        while left > 0 {
            let chunk = left.min(buffer.len());
            for word in buffer[..chunk].chunks_mut(8) {
                let bytes = rng.next_u64().to_le_bytes();
                word.copy_from_slice(&bytes[..word.len()]);
            }
            file.write_all(&buffer[..chunk])?;
            left -= chunk;
        }
        file.flush()?;
        let link = uncached.join(&name);
        if std::fs::hard_link(&path, &link).is_err() {
            std::fs::copy(&path, &link)?;
        }
        total += size;
    }
    Ok(total)
}

/// One request of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRequest {
    /// When to send it, from the start of the run.
    pub at: Duration,
    /// Index into the scenario's client regions.
    pub region: usize,
    /// Position in the whole plan.
    pub index: u64,
    pub object: u32,
    pub cacheable: bool,
}

struct RegionStream {
    rng: Rng,
    rate: f64,
    next_at: f64,
    /// Requests planned so far; constant arrivals are at `sent / rate` exactly, so
    /// that rounding never accumulates.
    sent: u64,
}

/// The planned requests in time order.
pub struct Plan {
    streams: Vec<RegionStream>,
    sampler: std::sync::Arc<Sampler>,
    arrivals: Arrivals,
    uncacheable: f64,
    limit: Limit,
    emitted: u64,
}

impl Plan {
    pub fn new(scenario: &Scenario, sampler: std::sync::Arc<Sampler>) -> Self {
        let mut plan = Self {
            streams: scenario
                .clients
                .iter()
                .map(|client| RegionStream {
                    rng: Rng::stream(scenario.seed, &client.name),
                    rate: client.rate,
                    next_at: 0.0,
                    sent: 0,
                })
                .collect(),
            sampler,
            arrivals: scenario.workload.arrivals,
            uncacheable: scenario.workload.uncacheable,
            limit: scenario.workload.limit,
            emitted: 0,
        };
        let arrivals = plan.arrivals;
        for stream in &mut plan.streams {
            stream.next_at = next_arrival(arrivals, stream, 0.0);
        }
        plan
    }

    /// How many requests the plan holds (walks a copy of it).
    pub fn len_hint(scenario: &Scenario) -> u64 {
        let limit = match scenario.workload.limit {
            Limit::Requests(count) => count,
            Limit::Duration(duration) => {
                (scenario.total_rate() * duration.as_secs_f64()).round() as u64
            }
        };
        match &scenario.trace {
            // A generated trace holds a known number of requests.
            Some(super::scenario::TraceSpec::Generate(options)) => limit.min(options.requests),
            _ => limit,
        }
    }
}

/// When the stream's next request is due: constant arrivals at 0, 1/rate, 2/rate...;
/// Poisson arrivals after an exponential gap from the previous one.
fn next_arrival(arrivals: Arrivals, stream: &mut RegionStream, previous: f64) -> f64 {
    match arrivals {
        Arrivals::Constant => stream.sent as f64 / stream.rate,
        Arrivals::Poisson => previous - (1.0 - stream.rng.next_f64()).ln() / stream.rate,
    }
}

impl Iterator for Plan {
    type Item = PlannedRequest;

    fn next(&mut self) -> Option<PlannedRequest> {
        if let Limit::Requests(count) = self.limit
            && self.emitted >= count
        {
            return None;
        }
        let (region, stream) = self
            .streams
            .iter_mut()
            .enumerate()
            .min_by(|a, b| a.1.next_at.total_cmp(&b.1.next_at))?;
        let at = stream.next_at;
        if let Limit::Duration(duration) = self.limit
            && at >= duration.as_secs_f64()
        {
            return None;
        }
        let cacheable = !(self.uncacheable > 0.0 && stream.rng.next_f64() < self.uncacheable);
        let object = self.sampler.sample(&mut stream.rng);
        stream.sent += 1;
        stream.next_at = next_arrival(self.arrivals, stream, at);
        let index = self.emitted;
        self.emitted += 1;
        Some(PlannedRequest {
            at: Duration::from_secs_f64(at),
            region,
            index,
            object,
            cacheable,
        })
    }
}

/// A short fingerprint of the whole plan: equal fingerprints, equal workloads.
pub fn digest(scenario: &Scenario, sampler: std::sync::Arc<Sampler>) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut count = 0;
    for request in Plan::new(scenario, sampler) {
        hasher.update(scenario.clients[request.region].name.as_bytes());
        hasher.update((request.at.as_micros() as u64).to_le_bytes());
        hasher.update(request.object.to_le_bytes());
        hasher.update([u8::from(request.cacheable)]);
        count += 1;
    }
    let hash = hasher.finalize();
    let hex: String = hash[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    (hex, count)
}
