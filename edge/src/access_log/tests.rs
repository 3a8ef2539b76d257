use std::time::{Duration, Instant, UNIX_EPOCH};

use edgebox_config::AccessLogFormat;
use edgebox_wire::edge::{CacheStatus, Tier};

use super::*;

fn record() -> Record {
    Record {
        // 2000-10-10T13:55:36.250Z
        time: UNIX_EPOCH + Duration::from_millis(971_186_136_250),
        request_id: http::HeaderValue::from_static("edge-1-2"),
        client: Some("203.0.113.9".parse().unwrap()),
        method: http::Method::GET,
        host: "example.com".into(),
        target: "/a \"b\"?q=1".into(),
        version: http::Version::HTTP_11,
        status: 200,
        bytes: 2326,
        cache: Some((Tier::L1, CacheStatus::Hit)),
        upstream: None,
        total: Duration::from_micros(1_234),
        simulated: Duration::ZERO,
        upstream_time: Duration::ZERO,
        referer: None,
        user_agent: Some(http::HeaderValue::from_static("curl/8")),
    }
}

fn line(format: AccessLogFormat, record: &Record) -> String {
    let mut out = Vec::new();
    format_line(&mut out, format, record);
    String::from_utf8(out).unwrap()
}

#[test]
fn ncsa_formats() {
    assert_eq!(
        line(AccessLogFormat::Common, &record()),
        "203.0.113.9 - - [10/Oct/2000:13:55:36 +0000] \"GET /a \\x22b\\x22?q=1 HTTP/1.1\" 200 2326\n"
    );
    assert_eq!(
        line(AccessLogFormat::Combined, &record()),
        "203.0.113.9 - - [10/Oct/2000:13:55:36 +0000] \"GET /a \\x22b\\x22?q=1 HTTP/1.1\" 200 2326 \"-\" \"curl/8\"\n"
    );
}

#[test]
fn json_line() {
    let text = line(AccessLogFormat::Json, &record());
    assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["time"], "2000-10-10T13:55:36.250Z");
    assert_eq!(value["request_id"], "edge-1-2");
    assert_eq!(value["client"], "203.0.113.9");
    assert_eq!(value["path"], "/a \"b\"?q=1");
    assert_eq!(value["status"], 200);
    assert_eq!(value["cache"], "HIT");
    assert_eq!(value["tier"], "l1");
    assert_eq!(value["total_ms"], 1.2);
    assert_eq!(value["upstream"], serde_json::Value::Null);
}

#[test]
fn civil_dates() {
    let at = |secs: u64| {
        let c = civil(UNIX_EPOCH + Duration::from_secs(secs));
        (c.year, c.month, c.day)
    };
    assert_eq!(at(0), (1970, 1, 1));
    assert_eq!(at(951_782_400), (2000, 2, 29));
    assert_eq!(at(1_798_761_599), (2026, 12, 31));
    assert_eq!(at(4_107_542_400), (2100, 3, 1));
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn writes_reports_failures_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/access.log");
    let log = AccessLog::start(Some(Destination {
        format: AccessLogFormat::Json,
        file: Some(path.clone()),
    }));
    log.record(record());
    log.record(record());
    wait_until("two lines", || log.state().unwrap().written == 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);

    // Rotated away and replaced by a directory: the reopen fails, lines are lost and
    // counted, and the state says why.
    std::fs::rename(&path, dir.path().join("logs/access.log.1")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(log.reopen());
    log.record(record());
    wait_until("a write error", || log.state().unwrap().write_errors == 1);
    let state = log.state().unwrap();
    assert!(!state.ok);
    assert!(state.error.unwrap().contains("access.log"));

    std::fs::remove_dir(&path).unwrap();
    runtime.block_on(log.reopen());
    log.record(record());
    wait_until("a line after recovery", || {
        log.state().unwrap().written == 3
    });
    assert!(log.state().unwrap().ok);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

    for _ in 0..10 {
        log.record(record());
    }
    runtime.block_on(log.flush(Duration::from_secs(10)));
    assert_eq!(log.state().unwrap().written, 13);

    runtime.block_on(log.configure(None));
    assert!(log.state().is_none());
}

#[test]
fn a_stuck_writer_drops_and_counts_lines_without_blocking_requests() {
    // Opening a FIFO for writing blocks until someone reads it: the writer thread is stuck
    // in `open` from the start, as it would be on a hung network file system.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let log = AccessLog::start(Some(Destination {
        format: AccessLogFormat::Json,
        file: Some(fifo.clone()),
    }));
    let started = Instant::now();
    for _ in 0..QUEUE + 100 {
        log.record(record());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let state = log.state().unwrap();
    assert!(state.dropped >= 100, "{state:?}");
    assert_eq!(state.written, 0);
    // A reader lets the writer through; the queued lines arrive.
    let reader = std::thread::spawn(move || std::fs::read(&fifo).unwrap().len());
    wait_until("the queued lines", || log.state().unwrap().written > 0);
    drop(log);
    assert!(reader.join().unwrap() > 0);
}
