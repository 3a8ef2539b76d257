//! Request traces: read streamed, record by record (never loaded whole), from CSV
//! (`timestamp,object_id,size[,region][,ttl]` with a header line) or libCacheSim's
//! `oracleGeneral` binary records, plain or zstd-compressed; and written by
//! [`generate`] (`edgebox simulate trace-gen`).
//!
//! Every problem names the file, the record (1-based; the CSV header is record 0) and the
//! field, so a bad line in a billion-line trace can be found.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde::Serialize;

pub mod generate;

/// Bytes of one `oracleGeneral` record: u32 timestamp, u64 object id, u32 size, i64 next
/// access (virtual time), little-endian.
pub const ORACLE_RECORD: usize = 24;
/// Largest object size a trace may name; beyond it the value is taken for corruption.
pub const MAX_OBJECT_SIZE: u64 = 1 << 40;
/// zstd frame magic number.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Oracle,
}

impl Format {
    /// The format a file name implies: `.csv` (also `.csv.zst`) is CSV, anything else
    /// `oracleGeneral`.
    pub fn of_path(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".csv") || name.contains(".csv.") {
            Self::Csv
        } else {
            Self::Oracle
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(Self::Csv),
            "oracle" | "oracleGeneral" => Some(Self::Oracle),
            _ => None,
        }
    }
}

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds from the trace's time origin.
    pub time_ms: u64,
    pub object: u64,
    pub size: u64,
    /// Index into the region list the reader was given, when the trace names one.
    pub region: Option<u16>,
    /// Freshness lifetime in seconds, when the trace gives one.
    pub ttl_s: Option<u32>,
}

/// What is wrong with a trace, and where.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: record {record}, field `{field}`: {message}")]
    Record {
        file: String,
        record: u64,
        field: &'static str,
        message: String,
    },
    #[error(
        "{file}: truncated: the file ends inside record {record} ({got} of {ORACLE_RECORD} bytes)"
    )]
    Truncated {
        file: String,
        record: u64,
        got: usize,
    },
    #[error("{file}: {message}")]
    Header { file: String, message: String },
}

impl TraceError {
    fn io(file: &str) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io {
            file: file.to_owned(),
            source,
        }
    }
}

/// Columns of a CSV trace, by position.
#[derive(Debug, Clone, Copy)]
struct Columns {
    region: Option<usize>,
    ttl: Option<usize>,
    count: usize,
}

enum Decoder {
    Csv { columns: Columns, line: String },
    Oracle,
}

/// Streams the records of one trace.
pub struct TraceReader {
    input: Box<dyn BufRead + Send>,
    decoder: Decoder,
    file: String,
    regions: Vec<String>,
    record: u64,
    /// First timestamp seen: times are reported relative to it.
    origin_ms: Option<u64>,
    done: bool,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("file", &self.file)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

const BUFFER: usize = 1 << 20;

/// Opens `path` (zstd-compressed or not, told by its first bytes). `format` defaults to
/// what the name implies; `regions` are the names a CSV `region` column may use.
pub fn open(
    path: &Path,
    format: Option<Format>,
    regions: &[String],
) -> Result<TraceReader, TraceError> {
    let file = path.display().to_string();
    let handle = File::open(path).map_err(TraceError::io(&file))?;
    from_reader(
        handle,
        &file,
        format.unwrap_or_else(|| Format::of_path(path)),
        regions,
    )
}

/// A reader over any byte stream (zstd told by its magic number). `file` names it in errors.
pub fn from_reader(
    input: impl Read + Send + 'static,
    file: &str,
    format: Format,
    regions: &[String],
) -> Result<TraceReader, TraceError> {
    let mut buffered = BufReader::with_capacity(BUFFER, input);
    let compressed = buffered
        .fill_buf()
        .map_err(TraceError::io(file))?
        .starts_with(&ZSTD_MAGIC);
    let mut input: Box<dyn BufRead + Send> = if compressed {
        let decoder =
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(TraceError::io(file))?;
        Box::new(BufReader::with_capacity(BUFFER, decoder))
    } else {
        Box::new(buffered)
    };
    let decoder = match format {
        Format::Oracle => Decoder::Oracle,
        Format::Csv => {
            let mut header = String::new();
            input.read_line(&mut header).map_err(TraceError::io(file))?;
            Decoder::Csv {
                columns: csv_header(file, header.trim_end())?,
                line: String::new(),
            }
        }
    };
    Ok(TraceReader {
        input,
        decoder,
        file: file.to_owned(),
        regions: regions.to_vec(),
        record: 0,
        origin_ms: None,
        done: false,
    })
}

fn csv_header(file: &str, header: &str) -> Result<Columns, TraceError> {
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let wrong = || TraceError::Header {
        file: file.to_owned(),
        message: format!(
            "the first line must be the header `timestamp,object_id,size[,region][,ttl]` (got {header:?})"
        ),
    };
    if names.len() < 3 || names[..3] != ["timestamp", "object_id", "size"] {
        return Err(wrong());
    }
    let mut columns = Columns {
        region: None,
        ttl: None,
        count: names.len(),
    };
    for (index, name) in names.iter().enumerate().skip(3) {
        match *name {
            "region" if columns.region.is_none() => columns.region = Some(index),
            "ttl" if columns.ttl.is_none() => columns.ttl = Some(index),
            _ => return Err(wrong()),
        }
    }
    Ok(columns)
}

impl TraceReader {
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.record
    }

    fn error(&self, field: &'static str, message: impl Into<String>) -> TraceError {
        TraceError::Record {
            file: self.file.clone(),
            record: self.record,
            field,
            message: message.into(),
        }
    }

    fn check_size(&self, size: u64) -> Result<u64, TraceError> {
        if size == 0 {
            return Err(self.error("size", "an object of 0 bytes"));
        }
        if size > MAX_OBJECT_SIZE {
            return Err(self.error(
                "size",
                format!("{size} bytes is beyond the largest object accepted ({MAX_OBJECT_SIZE})"),
            ));
        }
        Ok(size)
    }

    fn relative(&mut self, time_ms: u64) -> u64 {
        let origin = *self.origin_ms.get_or_insert(time_ms);
        // Traces are mostly ordered; a record slightly out of order is served "now".
        time_ms.saturating_sub(origin)
    }

    fn next_oracle(&mut self) -> Result<Option<Record>, TraceError> {
        let mut bytes = [0u8; ORACLE_RECORD];
        let mut got = 0;
        // Fast path: the record is whole in the buffer (all but one in 43,690).
        if let Ok(buffered) = self.input.fill_buf()
            && buffered.len() >= ORACLE_RECORD
        {
            bytes.copy_from_slice(&buffered[..ORACLE_RECORD]);
            self.input.consume(ORACLE_RECORD);
            got = ORACLE_RECORD;
        }
        while got < ORACLE_RECORD {
            match self.input.read(&mut bytes[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(TraceError::io(&self.file)(err)),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        self.record += 1;
        if got < ORACLE_RECORD {
            return Err(TraceError::Truncated {
                file: self.file.clone(),
                record: self.record,
                got,
            });
        }
        let timestamp = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let object = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let size = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let size = self.check_size(u64::from(size))?;
        let time_ms = self.relative(u64::from(timestamp) * 1000);
        Ok(Some(Record {
            time_ms,
            object,
            size,
            region: None,
            ttl_s: None,
        }))
    }

    fn next_csv(&mut self) -> Result<Option<Record>, TraceError> {
        let Decoder::Csv { columns, line } = &mut self.decoder else {
            unreachable!("csv decoder")
        };
        let columns = *columns;
        let mut line = std::mem::take(line);
        let record = loop {
            line.clear();
            let read = self
                .input
                .read_line(&mut line)
                .map_err(TraceError::io(&self.file))?;
            if read == 0 {
                break None;
            }
            self.record += 1;
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                // A blank line (often the last one) is not a request.
                self.record -= 1;
                continue;
            }
            break Some(self.parse_csv(text, columns));
        };
        if let Decoder::Csv { line: slot, .. } = &mut self.decoder {
            *slot = line;
        }
        record.transpose()
    }

    fn parse_csv(&mut self, text: &str, columns: Columns) -> Result<Record, TraceError> {
        let mut fields: [&str; 5] = [""; 5];
        let mut count = 0;
        for field in text.split(',') {
            if count == columns.count {
                count += 1;
                break;
            }
            fields[count] = field.trim();
            count += 1;
        }
        if count != columns.count {
            return Err(self.error(
                "record",
                format!("{count} fields where the header names {}", columns.count),
            ));
        }
        let timestamp: f64 = fields[0]
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| {
                self.error(
                    "timestamp",
                    format!("{:?} is not a non-negative number of seconds", fields[0]),
                )
            })?;
        let object: u64 = fields[1].parse().map_err(|_| {
            self.error(
                "object_id",
                format!("{:?} is not an unsigned 64-bit integer", fields[1]),
            )
        })?;
        let size: u64 = fields[2]
            .parse()
            .map_err(|_| self.error("size", format!("{:?} is not a number of bytes", fields[2])))?;
        let size = self.check_size(size)?;
        let region = match columns.region {
            None => None,
            Some(index) => {
                let name = fields[index];
                let position = self.regions.iter().position(|r| r == name);
                match position {
                    Some(position) => Some(position as u16),
                    None => {
                        return Err(self.error(
                            "region",
                            format!(
                                "unknown region {name:?}; the scenario's client regions are {}",
                                self.regions.join(", ")
                            ),
                        ));
                    }
                }
            }
        };
        let ttl_s = match columns.ttl {
            None => None,
            Some(index) => Some(fields[index].parse().map_err(|_| {
                self.error(
                    "ttl",
                    format!("{:?} is not a whole number of seconds", fields[index]),
                )
            })?),
        };
        let time_ms = self.relative((timestamp * 1000.0) as u64);
        Ok(Record {
            time_ms,
            object,
            size,
            region,
            ttl_s,
        })
    }
}

impl Iterator for TraceReader {
    type Item = Result<Record, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match self.decoder {
            Decoder::Oracle => self.next_oracle(),
            Decoder::Csv { .. } => self.next_csv(),
        };
        match next {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                // One error ends the stream: what follows a bad record cannot be trusted.
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

/// Reads a whole trace once to check it and count its records and distinct time span,
/// before any load is sent (nothing is kept but counters).
pub fn check(
    path: &Path,
    format: Option<Format>,
    regions: &[String],
) -> Result<Summary, TraceError> {
    let mut summary = Summary::default();
    for record in open(path, format, regions)? {
        let record = record?;
        summary.records += 1;
        summary.bytes += record.size;
        summary.last_ms = summary.last_ms.max(record.time_ms);
    }
    Ok(summary)
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub last_ms: u64,
}

#[cfg(test)]
mod tests;
