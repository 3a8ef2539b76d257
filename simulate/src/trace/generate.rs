//! `edgebox simulate trace-gen`: a synthetic trace of a chosen size and popularity, so
//! that tests and examples need nothing downloaded. Requests follow a Zipf law over
//! `objects` objects (sampled by rejection-inversion, constant memory whatever the
//! catalogue size), a share of them are one-hit wonders (objects requested once, never
//! again), and their timestamps follow a daily pattern (the rate swings ±50% around its
//! mean over 24 hours). Object sizes are log-normal around a median, fixed per object.
//! The same options and seed give the same bytes.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::workload::Rng;

use super::Format;

/// Trace length in seconds: one day.
pub const DAY_S: f64 = 86_400.0;
/// Amplitude of the daily swing around the mean rate.
const DAILY_SWING: f64 = 0.5;
/// One-hit wonders get ids from here up, never colliding with catalogue objects.
pub const ONE_HIT_BASE: u64 = 1 << 48;

#[derive(Debug, Clone)]
pub struct Options {
    pub requests: u64,
    pub objects: u64,
    pub zipf: f64,
    /// Share of requests (0..1) for objects requested only once.
    pub one_hit_wonders: f64,
    pub seed: u64,
    pub median_size: u64,
    pub size_sigma: f64,
    pub min_size: u64,
    pub max_size: u64,
    /// Seconds the trace spans.
    pub span_s: f64,
    /// Written as a CSV `region` column, picked by the object's hash, when not empty.
    pub regions: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests: 1_000_000,
            objects: 100_000,
            zipf: 0.9,
            one_hit_wonders: 0.1,
            seed: 1,
            median_size: 16 * 1024,
            size_sigma: 1.0,
            min_size: 128,
            max_size: 4 * 1024 * 1024,
            span_s: DAY_S,
            regions: Vec::new(),
        }
    }
}

/// Zipf over `1..=n` by rejection-inversion (Hörmann & Derflinger), as Apache Commons RNG:
/// O(1) memory and time per draw for any `n`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    shortcut: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Self {
        let mut zipf = Self {
            n: n.max(1) as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            shortcut: 0.0,
        };
        zipf.h_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_n = zipf.h_integral(zipf.n + 0.5);
        zipf.shortcut = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        zipf
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }

    /// A rank in `1..=n` (1 the most popular).
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_n + rng.next_f64() * (self.h_x1 - self.h_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).clamp(1.0, self.n).floor();
            if k - x <= self.shortcut || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// The size of `object`, fixed by its id and the seed.
pub fn object_size(options: &Options, object: u64) -> u64 {
    let mut rng = Rng::new(options.seed ^ object.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.next_u64();
    let size = options.median_size as f64 * (options.size_sigma * rng.next_normal()).exp();
    (size as u64).clamp(options.min_size.max(1), options.max_size.max(1))
}

/// Time (seconds) of the request at fraction `u` of the trace, so that the request rate
/// follows `1 + swing·sin(2πt/day)`: the inverse of its cumulative integral, by Newton's
/// method (the integral is monotone, so a few steps converge).
fn daily_time(u: f64, span_s: f64) -> f64 {
    let w = std::f64::consts::TAU / DAY_S;
    let cumulative = |t: f64| t + DAILY_SWING / w * (1.0 - (w * t).cos());
    let total = cumulative(span_s);
    let target = u * total;
    let mut t = u * span_s;
    for _ in 0..8 {
        let rate = 1.0 + DAILY_SWING * (w * t).sin();
        t = (t - (cumulative(t) - target) / rate.max(0.1)).clamp(0.0, span_s);
    }
    t
}

/// One generated request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generated {
    pub time_s: f64,
    pub object: u64,
    pub size: u64,
    pub region: Option<usize>,
}

/// The generated requests, in time order.
pub fn requests(options: Options) -> impl Iterator<Item = Generated> + Send + 'static {
    let zipf = Zipf::new(options.objects, options.zipf);
    let mut rng = Rng::stream(options.seed, "trace-gen");
    let mut one_hit = ONE_HIT_BASE;
    (0..options.requests).map(move |index| {
        let u = index as f64 / options.requests.max(1) as f64;
        let time_s = daily_time(u, options.span_s);
        let object = if rng.next_f64() < options.one_hit_wonders {
            one_hit += 1;
            one_hit
        } else {
            zipf.sample(&mut rng)
        };
        let region = (!options.regions.is_empty()).then(|| {
            (edgebox_cache_model::hash::mix64(object ^ index) % options.regions.len() as u64)
                as usize
        });
        Generated {
            time_s,
            object,
            size: object_size(&options, object),
            region,
        }
    })
}

/// Writes the trace to `out` (zstd-compressed at level 3 when `zstd`). Returns the records
/// written.
pub fn write(options: &Options, format: Format, zstd: bool, out: &Path) -> io::Result<u64> {
    let file = std::fs::File::create(out)?;
    let sink: Box<dyn Write> = if zstd {
        Box::new(zstd::stream::write::Encoder::new(file, 3)?.auto_finish())
    } else {
        Box::new(file)
    };
    let mut sink = BufWriter::with_capacity(1 << 20, sink);
    let mut written = 0;
    if format == Format::Csv {
        if options.regions.is_empty() {
            writeln!(sink, "timestamp,object_id,size")?;
        } else {
            writeln!(sink, "timestamp,object_id,size,region")?;
        }
    }
    for request in requests(options.clone()) {
        match format {
            Format::Csv => {
                write!(
                    sink,
                    "{:.3},{},{}",
                    request.time_s, request.object, request.size
                )?;
                match request.region {
                    Some(region) => writeln!(sink, ",{}", options.regions[region])?,
                    None => writeln!(sink)?,
                }
            }
            Format::Oracle => {
                let mut record = [0u8; super::ORACLE_RECORD];
                record[0..4].copy_from_slice(&(request.time_s as u32).to_le_bytes());
                record[4..12].copy_from_slice(&request.object.to_le_bytes());
                let size = u32::try_from(request.size).unwrap_or(u32::MAX);
                record[12..16].copy_from_slice(&size.to_le_bytes());
                // Next access time is unknown to a streaming generator: -1, as libCacheSim
                // writes for "not requested again"; only offline-optimal policies read it.
                record[16..24].copy_from_slice(&(-1i64).to_le_bytes());
                sink.write_all(&record)?;
            }
        }
        written += 1;
    }
    sink.flush()?;
    drop(sink);
    Ok(written)
}

/// What is wrong with generator options, as `(key, message)` pairs.
pub fn problems(options: &Options) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if options.requests == 0 {
        problems.push(("requests", "generate at least one request".to_owned()));
    }
    if options.objects == 0 || options.objects >= ONE_HIT_BASE {
        problems.push((
            "objects",
            format!("objects must be between 1 and {}", ONE_HIT_BASE - 1),
        ));
    }
    if !options.zipf.is_finite() || options.zipf < 0.0 || options.zipf > 10.0 {
        problems.push((
            "zipf",
            format!("zipf must be in [0, 10], got {}", options.zipf),
        ));
    }
    if !(0.0..=1.0).contains(&options.one_hit_wonders) {
        problems.push((
            "one_hit_wonders",
            format!("a share in [0, 1], got {}", options.one_hit_wonders),
        ));
    }
    if !options.size_sigma.is_finite() || options.size_sigma < 0.0 {
        problems.push(("size_sigma", "size_sigma must be 0 or more".to_owned()));
    }
    if options.min_size == 0 || options.min_size > options.max_size {
        problems.push((
            "min_size",
            "sizes must satisfy 0 < min_size <= max_size".to_owned(),
        ));
    }
    if options.max_size > u64::from(u32::MAX) {
        problems.push((
            "max_size",
            "oracleGeneral records hold sizes below 4 GiB".to_owned(),
        ));
    }
    if options.span_s.is_nan() || options.span_s < 1.0 {
        problems.push(("span", "the trace must span at least 1s".to_owned()));
    }
    problems
}
