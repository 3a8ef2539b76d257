//! The access log (`[edge.access_log]`): one line per request, as a JSON object (the
//! default) or in the NCSA common/combined formats, to stderr or a file.
//!
//! The request path only fills a [`Record`] and offers it to a bounded queue
//! (`try_send`): a full queue drops the line and counts it, so a slow disk never holds a
//! request. One thread of its own formats and writes the lines in batches (blocking file
//! writes stay off the async workers). The file is opened for appending and reopened on
//! SIGHUP, after a rotation has renamed it. A file that cannot be opened or written
//! costs the lines (counted as `write_errors`) and turns `ok` false in `/healthz` and
//! `/stats`; requests keep being served, and the writer tries to open it again at most
//! once per [`RETRY_OPEN`] and at every SIGHUP. A stopping edge waits (up to a second)
//! for the lines of its last requests.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgebox_config::AccessLogFormat;
use edgebox_node::metrics::MetricsText;
use edgebox_wire::edge::{CacheStatus, Tier};
use edgebox_wire::health::AccessLogState;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Lines the queue holds before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// How often a writer without a usable file tries to open it again on its own.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// What one request leaves in the log. Filled on the request path without formatting.
pub struct Record {
    /// When the response was finished.
    pub time: SystemTime,
    pub request_id: http::HeaderValue,
    pub client: Option<IpAddr>,
    pub method: http::Method,
    pub host: String,
    /// The request target's path and query, as received.
    pub target: String,
    pub version: http::Version,
    /// 0 when no response was sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// `X-Cache` and `X-Cache-Tier`, when the response carried them.
    pub cache: Option<(Tier, CacheStatus)>,
    /// The last upstream tried (origin or parent edge).
    pub upstream: Option<SocketAddr>,
    /// Total time from the request's first hook, simulated delays included.
    pub total: Duration,
    /// The simulated part of `total`.
    pub simulated: Duration,
    /// Waiting for the upstream's response header.
    pub upstream_time: Duration,
    pub referer: Option<http::HeaderValue>,
    pub user_agent: Option<http::HeaderValue>,
}

enum Message {
    Line(Box<Record>),
    /// A new configuration: `None` stops writing (the queue is still drained).
    Configure(Option<Destination>),
    /// SIGHUP: reopen the file.
    Reopen,
    /// Write everything queued before this, then answer (a stopping edge's last lines).
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    pub format: AccessLogFormat,
    /// `None` = stderr.
    pub file: Option<PathBuf>,
}

impl Destination {
    fn describe(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "stderr".to_owned(), |f| f.display().to_string())
    }
}

/// The counters and state `/stats`, `/metrics` and `/healthz` read.
#[derive(Default)]
struct Shared {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// What the writer was configured with last.
    current: Mutex<Option<Destination>>,
}

/// The request path's handle on the log writer; one per process.
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

impl AccessLog {
    /// Starts the writer thread with `destination` (`None`: nothing written until a
    /// configuration names one).
    pub fn start(destination: Option<Destination>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        *shared.current.lock() = destination.clone();
        let writer = Writer {
            shared: shared.clone(),
            destination,
            sink: Sink::None,
            last_open: None,
        };
        std::thread::Builder::new()
            .name("edge-access-log".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the access-log thread");
        Self { tx, shared }
    }

    /// Queues a line; a full queue drops it (counted).
    pub fn record(&self, record: Record) {
        if self.tx.try_send(Message::Line(Box::new(record))).is_err() {
            self.shared.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Applies a (re)loaded configuration; unchanged ones cost nothing.
    pub async fn configure(&self, destination: Option<Destination>) {
        if *self.shared.current.lock() == destination {
            return;
        }
        *self.shared.current.lock() = destination.clone();
        let _ = self.tx.send(Message::Configure(destination)).await;
    }

    /// Reopens the file (after a log rotation renamed it).
    pub async fn reopen(&self) {
        let _ = self.tx.send(Message::Reopen).await;
    }

    /// Waits (up to `limit`) until every line queued so far is written or lost.
    pub async fn flush(&self, limit: Duration) {
        let (done, written) = tokio::sync::oneshot::channel();
        let flushed = async {
            if self.tx.send(Message::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        if tokio::time::timeout(limit, flushed).await.is_err() {
            tracing::warn!("the access log did not catch up before the edge stopped");
        }
    }

    /// `None` while no log is configured.
    pub fn state(&self) -> Option<AccessLogState> {
        let current = self.shared.current.lock().clone()?;
        let failing = self.shared.failing.load(Relaxed);
        Some(AccessLogState {
            ok: !failing,
            format: format_name(current.format).to_owned(),
            destination: current.describe(),
            written: self.shared.written.load(Relaxed),
            dropped: self.shared.dropped.load(Relaxed),
            write_errors: self.shared.write_errors.load(Relaxed),
            error: if failing {
                self.shared.last_error.lock().clone()
            } else {
                None
            },
        })
    }
}

fn format_name(format: AccessLogFormat) -> &'static str {
    match format {
        AccessLogFormat::Json => "json",
        AccessLogFormat::Common => "common",
        AccessLogFormat::Combined => "combined",
    }
}

enum Sink {
    None,
    Stderr,
    File(std::fs::File),
}

struct Writer {
    shared: Arc<Shared>,
    destination: Option<Destination>,
    sink: Sink,
    last_open: Option<Instant>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        self.open();
        let mut batch = Vec::with_capacity(64 * 1024);
        // Ends when every sender is gone (the edge is stopping).
        while let Some(first) = rx.blocking_recv() {
            let mut lines = 0u64;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Line(record) => {
                        if let Some(destination) = &self.destination {
                            format_line(&mut batch, destination.format, &record);
                            lines += 1;
                        }
                    }
                    Message::Configure(destination) => {
                        self.write(&mut batch, &mut lines);
                        self.destination = destination;
                        self.open();
                    }
                    Message::Reopen => {
                        self.write(&mut batch, &mut lines);
                        self.open();
                    }
                    Message::Flush(done) => {
                        self.write(&mut batch, &mut lines);
                        let _ = done.send(());
                    }
                }
                // Batches at most what is queued now, so lines reach the file promptly.
                if batch.len() < 256 * 1024 {
                    next = rx.try_recv().ok();
                }
            }
            self.write(&mut batch, &mut lines);
        }
    }

    /// (Re)opens the configured destination, recording whether it worked.
    fn open(&mut self) {
        self.last_open = Some(Instant::now());
        // The old file is closed first: a failed reopen must not keep writing to a file
        // that rotation renamed away.
        self.sink = Sink::None;
        self.sink = match &self.destination {
            None => Sink::None,
            Some(Destination { file: None, .. }) => Sink::Stderr,
            Some(Destination {
                file: Some(path), ..
            }) => {
                let opened = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                    });
                match opened {
                    Ok(file) => Sink::File(file),
                    Err(error) => {
                        self.failed(format!("opening {}: {error}", path.display()));
                        return;
                    }
                }
            }
        };
        self.shared.failing.store(false, Relaxed);
    }

    fn failed(&self, message: String) {
        if !self.shared.failing.swap(true, Relaxed) {
            tracing::warn!(error = %message, "access log cannot be written; requests keep being served");
        }
        *self.shared.last_error.lock() = Some(message);
    }

    /// Writes the batch of `lines` lines; on failure they are counted as lost.
    fn write(&mut self, batch: &mut Vec<u8>, lines: &mut u64) {
        if *lines == 0 {
            batch.clear();
            return;
        }
        if matches!(self.sink, Sink::None)
            && self.destination.is_some()
            && self.last_open.is_none_or(|at| at.elapsed() >= RETRY_OPEN)
        {
            self.open();
        }
        let result = match &mut self.sink {
            Sink::None => Err(None),
            Sink::Stderr => std::io::stderr().lock().write_all(batch).map_err(Some),
            Sink::File(file) => file.write_all(batch).map_err(Some),
        };
        match result {
            Ok(()) => {
                self.shared.written.fetch_add(*lines, Relaxed);
                self.shared.failing.store(false, Relaxed);
            }
            Err(error) => {
                self.shared.write_errors.fetch_add(*lines, Relaxed);
                if let Some(error) = error {
                    let what = self
                        .destination
                        .as_ref()
                        .map_or_else(String::new, Destination::describe);
                    self.failed(format!("writing {what}: {error}"));
                    // A broken file is reopened (at most once per RETRY_OPEN) before the
                    // next batch.
                    self.sink = Sink::None;
                }
            }
        }
        batch.clear();
        *lines = 0;
    }
}

/// Appends one line for `record` in `format`.
fn format_line(out: &mut Vec<u8>, format: AccessLogFormat, record: &Record) {
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine::from(record);
            if serde_json::to_writer(&mut *out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        AccessLogFormat::Common | AccessLogFormat::Combined => {
            ncsa(out, record, format == AccessLogFormat::Combined);
        }
    }
}

/// The JSON line's fields.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    client: Option<String>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    bytes: u64,
    cache: Option<&'static str>,
    tier: Option<&'static str>,
    upstream: Option<String>,
    total_ms: f64,
    simulated_ms: f64,
    upstream_ms: f64,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl<'a> From<&'a Record> for JsonLine<'a> {
    fn from(r: &'a Record) -> Self {
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        Self {
            time: rfc3339(r.time),
            request_id: r.request_id.to_str().unwrap_or(""),
            client: r.client.map(|c| c.to_string()),
            method: r.method.as_str(),
            host: &r.host,
            path: &r.target,
            protocol: protocol(r.version),
            status: r.status,
            bytes: r.bytes,
            cache: r.cache.map(|(_, status)| status.as_str()),
            tier: r.cache.map(|(tier, _)| tier.as_str()),
            upstream: r.upstream.map(|u| u.to_string()),
            total_ms: ms(r.total),
            simulated_ms: ms(r.simulated),
            upstream_ms: ms(r.upstream_time),
            referer: r.referer.as_ref().and_then(|v| v.to_str().ok()),
            user_agent: r.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        }
    }
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `client - - [10/Oct/2000:13:55:36 +0000] "GET /path HTTP/1.1" 200 2326`, plus
/// ` "referer" "user-agent"` when `combined`. Quotes, backslashes and control bytes
/// inside quoted fields are written `\xHH`, as nginx does, so a line stays one line.
fn ncsa(out: &mut Vec<u8>, r: &Record, combined: bool) {
    let client = r.client.map_or_else(|| "-".to_owned(), |c| c.to_string());
    let Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        ..
    } = civil(r.time);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let _ = write!(
        out,
        "{client} - - [{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000] \"",
        MONTHS[(month - 1) as usize]
    );
    escaped(out, r.method.as_str().as_bytes());
    out.push(b' ');
    escaped(out, r.target.as_bytes());
    let _ = write!(out, " {}\" {} {}", protocol(r.version), r.status, r.bytes);
    if combined {
        for value in [&r.referer, &r.user_agent] {
            out.extend_from_slice(b" \"");
            match value {
                Some(v) => escaped(out, v.as_bytes()),
                None => out.push(b'-'),
            }
            out.push(b'"');
        }
    }
    out.push(b'\n');
}

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// `2026-12-06T03:22:09.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let c = civil(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// A UTC date and time of day.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u32,
}

/// The UTC date and time of day of `time`.
fn civil(time: SystemTime) -> Civil {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rest / 3600,
        minute: rest % 3600 / 60,
        second: rest % 60,
        millis: since.subsec_millis(),
    }
}

/// The access-log families of `/metrics`.
pub fn prometheus(state: Option<&AccessLogState>, node: &str, out: &mut MetricsText) {
    let Some(state) = state else {
        return;
    };
    out.counter(
        "edgebox_edge_access_log_lines_total",
        "Access-log lines written.",
        &[("node", node)],
        state.written,
    )
    .counter(
        "edgebox_edge_access_log_dropped_total",
        "Access-log lines dropped because the writer's queue was full.",
        &[("node", node)],
        state.dropped,
    )
    .counter(
        "edgebox_edge_access_log_write_errors_total",
        "Access-log lines lost to failed opens or writes.",
        &[("node", node)],
        state.write_errors,
    )
    .gauge(
        "edgebox_edge_access_log_ok",
        "1 while the access log's last open or write worked.",
        &[("node", node)],
        u64::from(state.ok),
    );
}

#[cfg(test)]
mod tests;
