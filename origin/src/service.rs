//! Request handling: routing, static files with validators and ranges, and the
//! operational endpoints (`/healthz`, `/metrics`, `/_origin/stats`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use edgebox_config::OriginSettings;
use edgebox_wire::health::{HealthStatus, NodeHealth};
use edgebox_wire::{ErrorBody, ErrorDetail};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::body::{self, Body, Piece};
use crate::files::{OpenError, OpenFile, Root};
use crate::range::{self, Resolved};
use crate::request_path;
use crate::stats::Stats;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// Files up to this size are read whole in the same blocking call that opens them,
/// which saves a second trip to the blocking pool for the common small object.
const SMALL_FILE: u64 = 64 * 1024;

/// Longest `X-Request-Id` taken from a client; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    pub node: String,
    pub root: Root,
    /// What a config reload may change, swapped whole so a request sees one version.
    pub live: ArcSwap<Live>,
    pub stats: Stats,
    /// Set once shutdown starts: `/healthz` turns 503.
    pub draining: AtomicBool,
    pub started: Instant,
}

/// The hot-reloadable part of an origin's settings.
#[derive(Debug)]
pub struct Live {
    pub rules: OriginSettings,
    /// Simulated processing time before each content response.
    pub delay: Duration,
}

/// Serves one request. Never fails: every problem becomes an HTTP response.
pub async fn handle<B>(app: Arc<App>, request: Request<B>) -> Result<Response<Body>, Infallible> {
    let request_id = request_id(request.headers());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    );
    async move {
        let started = Instant::now();
        let mut response = {
            let _in_flight = app.stats.start_request();
            route(&app, &request).await
        };
        app.stats.record_status(response.status());
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID, value);
        }
        headers.insert(header::SERVER, HeaderValue::from_static("edgebox-origin"));
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "served"
        );
        let counting = app.clone();
        Ok(response.map(move |body| {
            body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counting.stats.record_bytes(data.len());
                }
                frame
            })
            .boxed_unsync()
        }))
    }
    .instrument(span)
    .await
}

/// The client's `X-Request-Id` when it is a sane token, otherwise a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

async fn route<B>(app: &Arc<App>, request: &Request<B>) -> Response<Body> {
    let path = request.uri().path();
    let operational = match path {
        "/healthz" => Some(healthz as fn(&App) -> Response<Body>),
        "/metrics" => Some(metrics as fn(&App) -> Response<Body>),
        "/_origin/stats" => Some(stats as fn(&App) -> Response<Body>),
        _ => None,
    };
    if let Some(endpoint) = operational {
        return match *request.method() {
            Method::GET | Method::HEAD => endpoint(app),
            _ => method_not_allowed(),
        };
    }
    app.stats.record_content_request(path);
    let delay = app.live.load().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    content(app, request).await
}

fn healthz(app: &App) -> Response<Body> {
    let draining = app.draining.load(Ordering::Relaxed);
    let body = NodeHealth {
        status: if draining {
            HealthStatus::Draining
        } else {
            HealthStatus::Ok
        },
        node: app.node.clone(),
        region: None,
        uptime_ms: Some(app.started.elapsed().as_millis() as u64),
        config_version: None,
        running: None,
        queued: None,
        control_plane: None,
        access_log: None,
    };
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &body)
}

fn metrics(app: &App) -> Response<Body> {
    let text = app.stats.to_prometheus(&app.node);
    let mut response = Response::new(body::full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(edgebox_node::metrics::CONTENT_TYPE),
    );
    response
}

fn stats(app: &App) -> Response<Body> {
    json(StatusCode::OK, &app.stats.snapshot(&app.node))
}

/// Serves a file under the root.
async fn content<B>(app: &Arc<App>, request: &Request<B>) -> Response<Body> {
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return method_not_allowed(),
    };
    let path = match request_path::decode(request.uri().path()) {
        Ok(path) => path,
        Err(err) => {
            tracing::info!(reason = %err, "refused request path");
            return error(StatusCode::BAD_REQUEST, "bad_path", &err.to_string());
        }
    };
    let opened = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = app.root.open(&path)?;
            let contents = if file.len <= SMALL_FILE {
                Some(read_small(&mut file)?)
            } else {
                None
            };
            Ok::<_, OpenError>((file, contents))
        })
        .await
    };
    match opened {
        Ok(Ok((file, contents))) => serve_file(app, request.headers(), file, contents, head),
        Ok(Err(OpenError::NotFound)) => error(StatusCode::NOT_FOUND, "not_found", "no such file"),
        Ok(Err(OpenError::Forbidden)) => {
            tracing::info!("refused a path that is not accessible or leads outside the root");
            error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "access to this path is not allowed",
            )
        }
        Ok(Err(OpenError::Io(err))) => {
            tracing::error!(error = %err, "reading a file failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                "the file could not be read",
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "file task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the file could not be read",
            )
        }
    }
}

fn read_small(file: &mut OpenFile) -> Result<Bytes, OpenError> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0; file.len as usize];
    file.file
        .read_exact_at(&mut buffer, 0)
        .map_err(OpenError::Io)?;
    Ok(Bytes::from(buffer))
}

fn serve_file(
    app: &App,
    request: &HeaderMap,
    file: OpenFile,
    contents: Option<Bytes>,
    head: bool,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::ETAG, &file.etag);
    insert(
        &mut headers,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(file.modified),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let live = app.live.load();
    if let Some(rule) = live.rules.rule_for(&file.path.url_path()) {
        if let Some(cache_control) = &rule.cache_control {
            insert(&mut headers, header::CACHE_CONTROL, cache_control);
        }
        if !rule.surrogate_keys.is_empty() {
            insert(&mut headers, SURROGATE_KEY, &rule.surrogate_keys.join(" "));
        }
    }

    match preconditions(request, &file) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            return with_headers(StatusCode::NOT_MODIFIED, headers, body::empty());
        }
        Precondition::Failed => {
            let mut response = error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the file does not match the request's preconditions",
            );
            response.headers_mut().extend(headers);
            return response;
        }
    }

    let content_type = content_type(file.path.as_str());
    // Range only applies to GET (RFC 9110 §14.2); for HEAD it is ignored.
    let resolved = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if !head && if_range_allows(request, &file) => range::parse(value)
            .map(|specs| range::resolve(&specs, file.len))
            .unwrap_or(Resolved::Whole),
        _ => Resolved::Whole,
    };
    let len = file.len;
    let (status, pieces) = match resolved {
        Resolved::Whole => {
            insert(&mut headers, header::CONTENT_TYPE, &content_type);
            (StatusCode::OK, vec![Piece::File { offset: 0, len }])
        }
        Resolved::Unsatisfiable => {
            let mut response = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "none of the requested ranges overlaps the file",
            );
            insert(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            response.headers_mut().extend(headers);
            return response;
        }
        Resolved::Partial(ranges) if ranges.len() == 1 => {
            let range = &ranges[0];
            insert(&mut headers, header::CONTENT_TYPE, &content_type);
            insert(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{len}", range.start, range.end - 1),
            );
            let piece = Piece::File {
                offset: range.start,
                len: range.end - range.start,
            };
            (StatusCode::PARTIAL_CONTENT, vec![piece])
        }
        Resolved::Partial(ranges) => {
            let boundary = format!("edgebox-{}", uuid::Uuid::new_v4().simple());
            let part_head = |range: &std::ops::Range<u64>| {
                format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                    range.start,
                    range.end - 1
                )
            };
            let closing = format!("\r\n--{boundary}--\r\n");
            // The ranges are disjoint (coalesced), and a multipart answer at least as
            // large as the file is sent as the file: the answer never exceeds it.
            if range::multipart_worthwhile(
                &ranges,
                len,
                |range| part_head(range).len() as u64,
                closing.len() as u64,
            ) {
                insert(
                    &mut headers,
                    header::CONTENT_TYPE,
                    &format!("multipart/byteranges; boundary={boundary}"),
                );
                let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
                for range in &ranges {
                    pieces.push(Piece::Bytes(Bytes::from(part_head(range))));
                    pieces.push(Piece::File {
                        offset: range.start,
                        len: range.end - range.start,
                    });
                }
                pieces.push(Piece::Bytes(Bytes::from(closing)));
                (StatusCode::PARTIAL_CONTENT, pieces)
            } else {
                insert(&mut headers, header::CONTENT_TYPE, &content_type);
                (StatusCode::OK, vec![Piece::File { offset: 0, len }])
            }
        }
    };
    let body_len: u64 = pieces.iter().map(Piece::len).sum();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    let body = if head {
        body::empty()
    } else {
        match contents {
            Some(contents) => body::full(assemble(&contents, pieces)),
            None => body::file(Arc::new(file.file), pieces),
        }
    };
    with_headers(status, headers, body)
}

/// Builds a body from pieces of a file already in memory.
fn assemble(contents: &Bytes, pieces: Vec<Piece>) -> Bytes {
    if let [Piece::File { offset, len }] = pieces[..] {
        return contents.slice(offset as usize..(offset + len) as usize);
    }
    let mut out = BytesMut::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => out.extend_from_slice(&bytes),
            Piece::File { offset, len } => {
                out.extend_from_slice(&contents[offset as usize..(offset + len) as usize]);
            }
        }
    }
    out.freeze()
}

#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates conditional headers in the order of RFC 9110 §13.2.2. `If-None-Match`
/// takes precedence over `If-Modified-Since`, which is ignored when both are present.
fn preconditions(request: &HeaderMap, file: &OpenFile) -> Precondition {
    if let Some(value) = header_str(request, header::IF_MATCH) {
        if !etag_list_matches(value, &file.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(request, header::IF_UNMODIFIED_SINCE)
        && whole_seconds(file.modified) > whole_seconds(since)
    {
        return Precondition::Failed;
    }
    if let Some(value) = header_str(request, header::IF_NONE_MATCH) {
        if etag_list_matches(value, &file.etag, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = header_date(request, header::IF_MODIFIED_SINCE)
        && whole_seconds(file.modified) <= whole_seconds(since)
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether a `Range` header should be honoured given `If-Range` (RFC 9110 §13.1.5):
/// an entity tag must match strongly, a date must equal `Last-Modified` exactly.
fn if_range_allows(request: &HeaderMap, file: &OpenFile) -> bool {
    let Some(value) = header_str(request, header::IF_RANGE) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        strong_eq(value, &file.etag)
    } else {
        httpdate::parse_http_date(value)
            .is_ok_and(|date| whole_seconds(date) == whole_seconds(file.modified))
    }
}

#[derive(Clone, Copy)]
enum Comparison {
    Strong,
    Weak,
}

/// Matches `*` or a comma-separated list of entity tags against ours.
fn etag_list_matches(list: &str, ours: &str, comparison: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    entity_tags(list).any(|tag| match comparison {
        Comparison::Strong => strong_eq(tag, ours),
        Comparison::Weak => opaque(tag) == opaque(ours),
    })
}

/// Splits a list of entity tags, respecting quotes (a tag may contain a comma).
pub(crate) fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let start = if rest.starts_with("W/") { 2 } else { 0 };
        let end = if rest[start..].starts_with('"') {
            rest[start + 1..]
                .find('"')
                .map_or(rest.len(), |close| start + close + 2)
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let (tag, tail) = rest.split_at(end);
        rest = tail;
        Some(tag.trim())
    })
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn strong_eq(tag: &str, ours: &str) -> bool {
    !tag.starts_with("W/") && tag == ours
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A date header; an invalid date is ignored, as RFC 9110 requires.
fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    header_str(headers, name).and_then(|value| httpdate::parse_http_date(value.trim()).ok())
}

/// HTTP dates have one-second resolution; compare at that resolution.
fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_raw();
    match mime {
        Some(mime)
            if mime.starts_with("text/")
                || matches!(
                    mime,
                    "application/javascript" | "application/json" | "image/svg+xml"
                ) =>
        {
            format!("{mime}; charset=utf-8")
        }
        Some(mime) => mime.to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

/// Inserts a header, skipping (and logging) a value that is not valid in HTTP.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::warn!(header = %name, "skipping a header value that is not valid HTTP"),
    }
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_string(value).expect("wire types serialise");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    with_headers(status, headers, body::full(text))
}

/// An error response with the contract's JSON body.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.to_owned(),
                diagnostics: None,
            },
        },
    )
}

fn method_not_allowed() -> Response<Body> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "only GET and HEAD are supported",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}
