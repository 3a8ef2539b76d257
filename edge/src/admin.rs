//! The admin listener: `/healthz`, `/stats`, `/metrics`, `POST /reload`, `POST /drain`,
//! `POST /purge` (by URL with all its variants, prefix, surrogate tag, or everything).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use edgebox_config::{ConfigLocation, Deployment};
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use crate::state::EdgeState;

/// Largest reload body accepted.
const MAX_BODY: usize = 4 << 20;

pub struct AdminApp {
    pub state: Arc<EdgeState>,
}

fn json_response(status: u16, body: Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Vec<u8>> {
    json_response(
        status,
        json!({"error": {"code": code, "message": message.into()}}),
    )
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(413, "body_too_large", "request body too large"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(error(400, "bad_request", format!("reading body: {e}"))),
        }
    }
}

impl AdminApp {
    fn healthz(&self) -> Response<Vec<u8>> {
        let draining = self.state.draining.load(Ordering::SeqCst);
        let snapshot = self.state.snapshot();
        json_response(
            if draining { 503 } else { 200 },
            json!({
                "status": if draining { "draining" } else { "ok" },
                "node": self.state.node,
                "region": snapshot.region,
                "config_version": snapshot.version,
            }),
        )
    }

    fn stats(&self) -> Value {
        let state = &self.state;
        let snapshot = state.snapshot();
        let s = &state.stats;
        let class = |i: usize| s.by_class(i);
        let origins: Vec<Value> = snapshot
            .upstream
            .pool()
            .origins
            .iter()
            .map(|o| {
                json!({
                    "address": o.addr.to_string(),
                    "region": o.region,
                    "healthy": o.healthy(),
                    "ewma_ms": o.ewma_ms(),
                    "active": o.active(),
                    "requests": o.requests(),
                    "failures": o.failures(),
                })
            })
            .collect();
        json!({
            "node": state.node,
            "region": snapshot.region,
            "uptime_ms": state.started.elapsed().as_millis() as u64,
            "config_version": snapshot.version,
            "policy": snapshot.upstream.policy,
            "upstream": snapshot.upstream.label,
            "draining": state.draining.load(Ordering::SeqCst),
            "in_flight": state.in_flight.load(Ordering::SeqCst),
            "requests": {
                "total": s.total(),
                "1xx": class(0), "2xx": class(1), "3xx": class(2), "4xx": class(3), "5xx": class(4),
            },
            "bytes_sent": s.bytes_sent(),
            "origins": origins,
            "cache": cache_json(state),
        })
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let state = &self.state;
        let snapshot = state.snapshot();
        let s = &state.stats;
        let node = &state.node;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_requests_total Requests answered, by status class."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_requests_total counter");
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "edgebox_edge_requests_total{{node=\"{node}\",class=\"{class}\"}} {}",
                s.by_class(i)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_bytes_sent_total Response body bytes sent to clients."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_bytes_sent_total counter");
        let _ = writeln!(
            out,
            "edgebox_edge_bytes_sent_total{{node=\"{node}\"}} {}",
            s.bytes_sent()
        );
        let _ = writeln!(out, "# HELP edgebox_edge_in_flight Requests in flight.");
        let _ = writeln!(out, "# TYPE edgebox_edge_in_flight gauge");
        let _ = writeln!(
            out,
            "edgebox_edge_in_flight{{node=\"{node}\"}} {}",
            state.in_flight.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_config_version Version of the applied configuration."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_config_version gauge");
        let _ = writeln!(
            out,
            "edgebox_edge_config_version{{node=\"{node}\"}} {}",
            snapshot.version
        );
        let origins = snapshot.upstream.pool().origins.clone();
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_origin_healthy 1 when the origin is in rotation."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_origin_healthy gauge");
        for o in &origins {
            let _ = writeln!(
                out,
                "edgebox_edge_origin_healthy{{node=\"{node}\",origin=\"{}\"}} {}",
                o.addr,
                u8::from(o.healthy())
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_origin_requests_total Requests sent to the origin."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_origin_requests_total counter");
        for o in &origins {
            let _ = writeln!(
                out,
                "edgebox_edge_origin_requests_total{{node=\"{node}\",origin=\"{}\"}} {}",
                o.addr,
                o.requests()
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_origin_failures_total Failed attempts on the origin."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_origin_failures_total counter");
        for o in &origins {
            let _ = writeln!(
                out,
                "edgebox_edge_origin_failures_total{{node=\"{node}\",origin=\"{}\"}} {}",
                o.addr,
                o.failures()
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_origin_latency_ewma_seconds EWMA of origin response-header latency."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_origin_latency_ewma_seconds gauge");
        for o in &origins {
            if let Some(ms) = o.ewma_ms() {
                let _ = writeln!(
                    out,
                    "edgebox_edge_origin_latency_ewma_seconds{{node=\"{node}\",origin=\"{}\"}} {}",
                    o.addr,
                    ms / 1000.0
                );
            }
        }
        out.push_str(&state.cache.snapshot().prometheus(node));
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_served_total Responses by how they were served (X-Cache-Tier)."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_served_total counter");
        for (i, tier) in crate::state::SERVED_TIERS.iter().enumerate() {
            let _ = writeln!(
                out,
                "edgebox_edge_served_total{{node=\"{node}\",tier=\"{tier}\"}} {}",
                s.tier_responses(i)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_served_bytes_total Response body bytes by how they were served."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_served_bytes_total counter");
        for (i, tier) in crate::state::SERVED_TIERS.iter().enumerate() {
            let _ = writeln!(
                out,
                "edgebox_edge_served_bytes_total{{node=\"{node}\",tier=\"{tier}\"}} {}",
                s.tier_bytes(i)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgebox_edge_cache_responses_total Responses by X-Cache status."
        );
        let _ = writeln!(out, "# TYPE edgebox_edge_cache_responses_total counter");
        for (i, status) in crate::state::CACHE_STATUSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "edgebox_edge_cache_responses_total{{node=\"{node}\",status=\"{status}\"}} {}",
                s.cache_status(i)
            );
        }
        let body = out.into_bytes();
        Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4")
            .header("content-length", body.len())
            .body(body)
            .expect("static response parts are valid")
    }

    async fn reload(&self, body: Vec<u8>) -> Response<Vec<u8>> {
        let loaded: Result<Deployment, edgebox_config::ConfigErrors> =
            if body.iter().all(u8::is_ascii_whitespace) {
                edgebox_config::load(&self.state.location)
            } else {
                let Ok(text) = String::from_utf8(body) else {
                    return error(400, "bad_request", "the body must be UTF-8 TOML");
                };
                let base = match &self.state.location {
                    ConfigLocation::File(path) => path
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default(),
                    ConfigLocation::Embedded => std::env::current_dir().unwrap_or_default(),
                };
                let base = std::path::absolute(&base).unwrap_or(base);
                edgebox_config::parse(&text, "<reload body>", &base)
            };
        let deployment = match loaded {
            Ok(d) => d,
            Err(errors) => return invalid_config(&errors.to_string(), diagnostics(&errors)),
        };
        match self.state.reload(deployment).await {
            Ok(version) => json_response(200, json!({"applied": true, "version": version})),
            Err(other) => invalid_config(
                &other.to_string(),
                vec![
                    json!({"path": "", "line": null, "column": null, "message": other.to_string()}),
                ],
            ),
        }
    }
}

/// The `cache` object of `/stats`: the storage tiers' counters plus the responses (and
/// bytes) by the tier that served them, `parent` and `origin` included.
fn cache_json(state: &EdgeState) -> Value {
    let mut value = serde_json::to_value(state.cache.snapshot()).unwrap_or_default();
    if let (Value::Object(map), Value::Object(served)) = (&mut value, state.stats.served_json()) {
        map.extend(served);
    }
    value
}

/// The body of `POST /purge`; exactly one selector.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    all: Option<bool>,
}

impl AdminApp {
    async fn purge(&self, body: &[u8]) -> Response<Vec<u8>> {
        let parsed: PurgeBody = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(e) => {
                return error(
                    400,
                    "invalid_purge",
                    format!(
                        "the body must be a JSON object with one of url, prefix, tag, all: {e}"
                    ),
                );
            }
        };
        let request = match crate::cache::PurgeRequest::from_fields(
            parsed.url,
            parsed.prefix,
            parsed.tag,
            parsed.all,
        ) {
            Ok(request) => request,
            Err(message) => return error(400, "invalid_purge", message),
        };
        let purged = self.state.cache.purge_by(&request).await;
        tracing::info!(?request, purged, "purge");
        json_response(200, json!({"purged": purged}))
    }
}

fn diagnostics(errors: &edgebox_config::ConfigErrors) -> Vec<Value> {
    errors
        .diagnostics
        .iter()
        .map(|d| json!({"path": d.path, "line": d.line, "column": d.column, "message": d.message}))
        .collect()
}

fn invalid_config(message: &str, diagnostics: Vec<Value>) -> Response<Vec<u8>> {
    json_response(
        422,
        json!({"error": {"code": "invalid_config", "message": message.trim(), "diagnostics": diagnostics}}),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let response = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => self.healthz(),
            ("GET", "/stats") => json_response(200, self.stats()),
            ("GET", "/metrics") => self.metrics(),
            ("POST", "/reload") => match read_body(session).await {
                Ok(body) => self.reload(body).await,
                Err(response) => response,
            },
            ("POST", "/drain") => {
                self.state.draining.store(true, Ordering::SeqCst);
                tracing::info!("draining: health checks now fail, traffic keeps being served");
                json_response(200, json!({"draining": true}))
            }
            ("POST", "/purge") => match read_body(session).await {
                Ok(body) => self.purge(&body).await,
                Err(response) => response,
            },
            (_, "/healthz" | "/stats" | "/metrics" | "/reload" | "/drain" | "/purge") => error(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            ),
            _ => error(404, "not_found", format!("no admin endpoint at {path}")),
        };
        tracing::debug!(%method, %path, status = response.status().as_u16(), "admin request");
        response
    }
}
