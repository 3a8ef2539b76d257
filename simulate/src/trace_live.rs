//! A trace replayed live: before any load is sent, the scenario's requests (the same
//! stream model mode replays: [`crate::model::Source`], limit and region split included)
//! are read through once to check every record and to write one file per distinct object,
//! of its traced size, where the started deployment's origins serve it
//! ([`crate::load::trace_path`]). The replay then sends the records at their trace times
//! scaled so that the whole trace runs at the clients' total rate.
//!
//! Live mode keeps one sample per request, so a live trace is bounded like a synthetic
//! plan ([`MAX_PLANNED`] requests); its objects are bounded like a generated catalogue.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::Source;
use crate::scenario::{MAX_CATALOGUE_BYTES, MAX_OBJECTS, MAX_PLANNED, Scenario, TraceSpec};
use crate::trace::TraceError;
use crate::variant::OBJECTS_PREFIX;
use crate::workload::Rng;

/// What the read-through found.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub records: u64,
    /// Trace time of the last record, from the first.
    pub span_ms: u64,
    pub objects: u64,
    pub bytes_on_disk: u64,
    /// A fingerprint of every record replayed (time, object, size, region).
    pub digest: String,
}

impl Checked {
    /// Real seconds per trace second, so that the records arrive at `rate` per second on
    /// average; 0 when the trace has no span (then records are spaced `1/rate` apart).
    pub fn scale(&self, rate: f64) -> f64 {
        if self.span_ms == 0 || rate <= 0.0 {
            return 0.0;
        }
        (self.records as f64 / rate) / (self.span_ms as f64 / 1000.0)
    }
}

/// The name a trace goes by in messages.
pub fn trace_name(scenario: &Scenario) -> String {
    match &scenario.trace {
        Some(TraceSpec::File { path, .. }) => path.display().to_string(),
        _ => "<generated trace>".to_owned(),
    }
}

/// Reads the scenario's trace once (checking every record), then writes its objects under
/// `root` (the origins' document root). Fails, before anything is sent, on a bad record
/// (file, record number and field) or a trace too large to replay live.
pub fn prepare(scenario: &Scenario, root: &Path) -> Result<Checked, TraceError> {
    let file = trace_name(scenario);
    let limit = |message: String| TraceError::Header {
        file: file.clone(),
        message,
    };
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut checked = Checked::default();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    for request in Source::open(scenario)? {
        let request = request?;
        checked.records += 1;
        if checked.records as f64 > MAX_PLANNED {
            return Err(limit(format!(
                "more than {MAX_PLANNED} requests: too many to replay live (each is kept for the report); replay part of it with `workload.requests`, or use model mode"
            )));
        }
        if request.ttl_s.is_some() {
            return Err(limit(format!(
                "record {}: the `ttl` column is replayed in model mode only (live origins serve every traced object with max-age=86400)",
                checked.records
            )));
        }
        checked.span_ms = checked.span_ms.max(request.time_ms);
        hasher.update(request.time_ms.to_le_bytes());
        hasher.update(request.object.to_le_bytes());
        hasher.update(request.size.to_le_bytes());
        hasher.update((request.region as u64).to_le_bytes());
        if let std::collections::btree_map::Entry::Vacant(slot) = sizes.entry(request.object) {
            // An object keeps its first size: the origin serves one file per object.
            slot.insert(request.size);
            bytes += request.size;
            if sizes.len() as u64 > MAX_OBJECTS {
                return Err(limit(format!(
                    "more than {MAX_OBJECTS} distinct objects: too many to write for live origins; use model mode"
                )));
            }
            if bytes > MAX_CATALOGUE_BYTES {
                return Err(limit(format!(
                    "its distinct objects need more than {MAX_CATALOGUE_BYTES} bytes on disk for live origins; use model mode"
                )));
            }
        }
    }
    if checked.records == 0 {
        return Err(limit("no requests to replay".to_owned()));
    }
    checked.objects = sizes.len() as u64;
    checked.bytes_on_disk = bytes;
    checked.digest = hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    write_objects(&sizes, scenario.seed, root).map_err(|source| TraceError::Io {
        file: format!("writing the traced objects under {}", root.display()),
        source,
    })?;
    Ok(checked)
}

/// One file per object, of its size, with pseudo-random contents (compression does not
/// shrink them), named as [`crate::load::trace_path`] requests it.
fn write_objects(sizes: &BTreeMap<u64, u64>, seed: u64, root: &Path) -> std::io::Result<()> {
    let dir = root.join(OBJECTS_PREFIX.trim_matches('/'));
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::stream(seed, "trace-contents");
    let mut buffer = vec![0u8; 64 * 1024];
    for (object, size) in sizes {
        let path = dir.join(format!("t{object:016x}.bin"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut left = *size as usize;
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
    }
    Ok(())
}
