use std::io::{Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::generate::{self, Options, Zipf};
use super::*;

fn regions() -> Vec<String> {
    vec!["eu-west".to_owned(), "us-east".to_owned()]
}

fn csv(text: &str) -> Vec<Result<Record, TraceError>> {
    from_reader(
        Cursor::new(text.to_owned().into_bytes()),
        "t.csv",
        Format::Csv,
        &regions(),
    )
    .unwrap()
    .collect()
}

fn oracle_bytes(records: &[(u32, u64, u32)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (t, id, size) in records {
        bytes.extend_from_slice(&t.to_le_bytes());
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&(-1i64).to_le_bytes());
    }
    bytes
}

#[test]
fn csv_records_are_read_with_optional_region_and_ttl_relative_to_the_first_time() {
    let records = csv(
        "timestamp,object_id,size,region,ttl\n100.5,7,1024,us-east,60\n101,8,2048,eu-west,0\n\n",
    );
    let records: Vec<Record> = records.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        records,
        vec![
            Record {
                time_ms: 0,
                object: 7,
                size: 1024,
                region: Some(1),
                ttl_s: Some(60)
            },
            Record {
                time_ms: 500,
                object: 8,
                size: 2048,
                region: Some(0),
                ttl_s: Some(0)
            },
        ]
    );
}

#[test]
fn csv_errors_name_the_file_record_and_field() {
    let cases = [
        (
            "timestamp,object_id,size\n1,2,3\n1,x,3\n",
            "t.csv: record 2, field `object_id`",
        ),
        (
            "timestamp,object_id,size\n1,2,0\n",
            "t.csv: record 1, field `size`: an object of 0 bytes",
        ),
        (
            "timestamp,object_id,size\n1,2,99999999999999999\n",
            "record 1, field `size`: 99999999999999999 bytes is beyond",
        ),
        (
            "timestamp,object_id,size\n-1,2,3\n",
            "record 1, field `timestamp`",
        ),
        (
            "timestamp,object_id,size\n1,2\n",
            "record 1, field `record`: 2 fields where the header names 3",
        ),
        (
            "timestamp,object_id,size,region\n1,2,3,mars\n",
            "record 1, field `region`: unknown region \"mars\"",
        ),
        (
            "timestamp,object_id,size,ttl\n1,2,3,soon\n",
            "record 1, field `ttl`",
        ),
    ];
    for (text, expected) in cases {
        let records = csv(text);
        let error = records
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("{text:?} has an error"));
        assert!(error.to_string().contains(expected), "{error} ∌ {expected}");
    }
    let header = from_reader(
        Cursor::new(b"time,id,size\n".to_vec()),
        "t.csv",
        Format::Csv,
        &[],
    );
    assert!(
        header
            .unwrap_err()
            .to_string()
            .contains("t.csv: the first line must be the header")
    );
}

#[test]
fn oracle_records_are_read_plain_and_zstd_and_truncation_is_an_error() {
    let bytes = oracle_bytes(&[(10, 1, 100), (12, 2, 200)]);
    let plain: Vec<Record> = from_reader(Cursor::new(bytes.clone()), "t.bin", Format::Oracle, &[])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(plain.len(), 2);
    assert_eq!(
        plain[1],
        Record {
            time_ms: 2000,
            object: 2,
            size: 200,
            region: None,
            ttl_s: None
        }
    );
    let compressed = zstd::encode_all(Cursor::new(bytes.clone()), 3).unwrap();
    let unpacked: Vec<Record> =
        from_reader(Cursor::new(compressed), "t.bin.zst", Format::Oracle, &[])
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert_eq!(unpacked, plain);

    let mut truncated = bytes.clone();
    truncated.truncate(24 + 10);
    let error = from_reader(Cursor::new(truncated), "t.bin", Format::Oracle, &[])
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert_eq!(
        error.to_string(),
        "t.bin: truncated: the file ends inside record 2 (10 of 24 bytes)"
    );
    let zero = oracle_bytes(&[(1, 1, 5), (1, 2, 0)]);
    let error = from_reader(Cursor::new(zero), "t.bin", Format::Oracle, &[])
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        error
            .to_string()
            .starts_with("t.bin: record 2, field `size`"),
        "{error}"
    );
}

/// Counts bytes handed out: the reader must pull the file through, not slurp it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn traces_are_streamed_not_loaded_whole() {
    let options = Options {
        requests: 200_000,
        objects: 1000,
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.bin");
    generate::write(&options, Format::Oracle, false, &path).unwrap();
    let total = std::fs::metadata(&path).unwrap().len();
    assert_eq!(total, 200_000 * ORACLE_RECORD as u64);
    let read = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: std::fs::File::open(&path).unwrap(),
        read: read.clone(),
    };
    let mut reader = from_reader(counting, "trace.bin", Format::Oracle, &[]).unwrap();
    reader.next().unwrap().unwrap();
    // One buffer's worth has been read, not the 4.8 MB file.
    assert!(read.load(Ordering::Relaxed) <= super::BUFFER as u64);
    assert_eq!(reader.count(), 199_999);
    assert_eq!(read.load(Ordering::Relaxed), total);
}

#[test]
fn generated_traces_are_reproducible_skewed_and_follow_the_day() {
    let options = Options {
        requests: 50_000,
        objects: 10_000,
        zipf: 1.0,
        one_hit_wonders: 0.2,
        seed: 3,
        ..Options::default()
    };
    let a: Vec<_> = generate::requests(options.clone()).collect();
    let b: Vec<_> = generate::requests(options.clone()).collect();
    assert_eq!(a, b);
    let one_hits = a
        .iter()
        .filter(|r| r.object > generate::ONE_HIT_BASE)
        .count();
    assert!((9_000..11_000).contains(&one_hits), "{one_hits}");
    let top = a.iter().filter(|r| r.object == 1).count() as f64 / 40_000.0;
    // Zipf(1.0) over 10,000 objects: rank 1 has 1/H(10000) ≈ 10.2% of the catalogue share.
    assert!((0.09..0.115).contains(&top), "{top}");
    assert!(a.windows(2).all(|w| w[0].time_s <= w[1].time_s));
    // The daily pattern: the busiest quarter (around 6 h) has more than the quietest.
    let quarter = |q: f64| {
        a.iter()
            .filter(|r| r.time_s >= q * 21_600.0 && r.time_s < (q + 1.0) * 21_600.0)
            .count()
    };
    assert!(
        quarter(0.0) as f64 > quarter(2.0) as f64 * 1.5,
        "{} vs {}",
        quarter(0.0),
        quarter(2.0)
    );
    let zipf = Zipf::new(5, 1.2);
    let mut rng = crate::workload::Rng::new(1);
    assert!((0..1000).all(|_| (1..=5).contains(&zipf.sample(&mut rng))));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv.zst");
    let with_regions = Options {
        requests: 100,
        regions: regions(),
        ..options
    };
    generate::write(&with_regions, Format::Csv, true, &path).unwrap();
    let summary = check(&path, None, &regions()).unwrap();
    assert_eq!(summary.records, 100);
}
