//! The admin listener: `/healthz`, `/stats`, `/metrics`, `POST /reload`, `POST /drain`,
//! `POST /purge` (by URL with all its variants, prefix, surrogate tag, or everything).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use edgebox_config::Deployment;
use edgebox_node::metrics::MetricsText;
use edgebox_wire::control_plane::PurgeRequest;
use edgebox_wire::edge::{
    CacheStatus, Draining, EdgeStats, PurgeCount, ReloadApplied, Tier, UpstreamOrigin,
};
use edgebox_wire::health::{HealthStatus, NodeHealth};
use edgebox_wire::{ConfigDiagnostic, ErrorBody};
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::state::EdgeState;

/// Largest reload body accepted.
const MAX_BODY: usize = 4 << 20;

/// A per-origin Prometheus family: name, help and how to read the value.
type OriginGauge = (
    &'static str,
    &'static str,
    fn(&UpstreamOrigin) -> Option<f64>,
);

pub struct AdminApp {
    pub state: Arc<EdgeState>,
}

fn json_response(status: u16, body: &impl serde::Serialize) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(body).expect("wire types serialise");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Vec<u8>> {
    json_response(status, &ErrorBody::new(code, message))
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
            &NodeHealth {
                status: if draining {
                    HealthStatus::Draining
                } else {
                    HealthStatus::Ok
                },
                node: self.state.node.clone(),
                region: Some(snapshot.region.clone()),
                uptime_ms: Some(self.state.started.elapsed().as_millis() as u64),
                config_version: Some(snapshot.version),
                running: None,
                queued: None,
                control_plane: self.state.agent_link.get().map(|link| link.snapshot()),
                access_log: self.state.access_log.state(),
            },
        )
    }

    fn stats(&self) -> EdgeStats {
        let state = &self.state;
        let snapshot = state.snapshot();
        let origins = snapshot
            .upstream
            .pool()
            .origins
            .iter()
            .map(|o| UpstreamOrigin {
                address: o.addr.to_string(),
                region: o.region.clone(),
                healthy: o.healthy(),
                ewma_ms: o.ewma_ms(),
                active: o.active(),
                requests: o.requests(),
                failures: o.failures(),
            })
            .collect();
        let mut cache = state.cache.snapshot();
        state.stats.add_served(&mut cache);
        EdgeStats {
            node: state.node.clone(),
            region: snapshot.region.clone(),
            uptime_ms: state.started.elapsed().as_millis() as u64,
            config_version: snapshot.version,
            policy: snapshot.upstream.policy.clone(),
            upstream: snapshot.upstream.label.clone(),
            draining: state.draining.load(Ordering::SeqCst),
            in_flight: state.in_flight.load(Ordering::SeqCst),
            requests: state.stats.requests(),
            bytes_sent: state.stats.bytes_sent(),
            origins,
            cache,
            rate_limit: snapshot.rate_limit.stats(&state.buckets),
            access_log: state.access_log.state(),
            latency: state.stats.latency(),
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let stats = self.stats();
        let node = stats.node.as_str();
        let mut out = MetricsText::new();
        for (class, count) in stats.requests.entries().into_iter().skip(1) {
            out.counter(
                "edgebox_edge_requests_total",
                "Requests answered, by status class.",
                &[("node", node), ("class", class)],
                count,
            );
        }
        out.counter(
            "edgebox_edge_bytes_sent_total",
            "Response body bytes sent to clients.",
            &[("node", node)],
            stats.bytes_sent,
        )
        .gauge(
            "edgebox_edge_in_flight",
            "Requests in flight.",
            &[("node", node)],
            stats.in_flight,
        )
        .gauge(
            "edgebox_edge_config_version",
            "Version of the applied configuration.",
            &[("node", node)],
            stats.config_version,
        );
        let per_origin: [OriginGauge; 4] = [
            (
                "edgebox_edge_origin_healthy",
                "1 when the origin is in rotation.",
                |o| Some(f64::from(u8::from(o.healthy))),
            ),
            (
                "edgebox_edge_origin_requests_total",
                "Requests sent to the origin.",
                |o| Some(o.requests as f64),
            ),
            (
                "edgebox_edge_origin_failures_total",
                "Failed attempts on the origin.",
                |o| Some(o.failures as f64),
            ),
            (
                "edgebox_edge_origin_latency_ewma_seconds",
                "EWMA of origin response-header latency.",
                |o| o.ewma_ms.map(|ms| ms / 1000.0),
            ),
        ];
        for (name, help, value) in per_origin {
            let kind = if name.ends_with("_total") {
                edgebox_node::metrics::Kind::Counter
            } else {
                edgebox_node::metrics::Kind::Gauge
            };
            for origin in &stats.origins {
                if let Some(value) = value(origin) {
                    out.sample(
                        name,
                        kind,
                        help,
                        &[("node", node), ("origin", &origin.address)],
                        value,
                    );
                }
            }
        }
        crate::cache::metrics::prometheus(&stats.cache, node, &mut out);
        crate::ratelimit::prometheus(&stats.rate_limit, node, &mut out);
        crate::access_log::prometheus(stats.access_log.as_ref(), node, &mut out);
        for tier in Tier::ALL {
            let served = stats.cache.by_tier.get(&tier).copied().unwrap_or_default();
            out.counter(
                "edgebox_edge_served_total",
                "Responses by how they were served (X-Cache-Tier).",
                &[("node", node), ("tier", tier.as_str())],
                served.responses,
            );
        }
        for tier in Tier::ALL {
            let served = stats.cache.by_tier.get(&tier).copied().unwrap_or_default();
            out.counter(
                "edgebox_edge_served_bytes_total",
                "Response body bytes by how they were served.",
                &[("node", node), ("tier", tier.as_str())],
                served.bytes,
            );
        }
        for status in CacheStatus::ALL {
            out.counter(
                "edgebox_edge_cache_responses_total",
                "Responses by X-Cache status.",
                &[("node", node), ("status", status.as_str())],
                stats.cache.by_status.get(&status).copied().unwrap_or(0),
            );
        }
        let body = out.finish().into_bytes();
        Response::builder()
            .status(200)
            .header("content-type", edgebox_node::metrics::CONTENT_TYPE)
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
                // Relative paths in the body resolve like those of the running
                // deployment: against its own base directory, never the process's.
                let base = self.state.snapshot().deployment.base_dir.clone();
                edgebox_config::parse(&text, "<reload body>", &base)
            };
        let deployment = match loaded {
            Ok(d) => d,
            Err(errors) => return invalid_config(&errors.to_string(), diagnostics(&errors)),
        };
        match self.state.reload(deployment).await {
            Ok(version) => json_response(
                200,
                &ReloadApplied {
                    applied: true,
                    version,
                },
            ),
            Err(other) => invalid_config(
                &other.to_string(),
                vec![ConfigDiagnostic {
                    path: String::new(),
                    line: None,
                    column: None,
                    message: other.to_string(),
                }],
            ),
        }
    }
}

impl AdminApp {
    /// `POST /purge`: the control plane's [`PurgeRequest`] as it fans it out.
    async fn purge(&self, body: &[u8]) -> Response<Vec<u8>> {
        let parsed: PurgeRequest = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(e) => {
                return error(
                    400,
                    "invalid_purge",
                    format!(
                        "the body must be a JSON object with one of url, prefix, tag, all (and optionally soft): {e}"
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
        let kind = if parsed.soft {
            crate::cache::PurgeKind::MarkStale
        } else {
            crate::cache::PurgeKind::Remove
        };
        let purged = self.state.cache.purge_by(&request, kind).await;
        tracing::info!(?request, ?kind, purged, "purge");
        json_response(
            200,
            &PurgeCount {
                purged: purged as u64,
            },
        )
    }
}

fn diagnostics(errors: &edgebox_config::ConfigErrors) -> Vec<ConfigDiagnostic> {
    errors
        .diagnostics
        .iter()
        .map(ConfigDiagnostic::from)
        .collect()
}

fn invalid_config(message: &str, diagnostics: Vec<ConfigDiagnostic>) -> Response<Vec<u8>> {
    json_response(422, &ErrorBody::invalid_config(message.trim(), diagnostics))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let response = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => self.healthz(),
            ("GET", "/stats") => json_response(200, &self.stats()),
            ("GET", "/metrics") => self.metrics(),
            ("POST", "/reload") => match read_body(session).await {
                Ok(body) => self.reload(body).await,
                Err(response) => response,
            },
            ("POST", "/drain") => {
                self.state.draining.store(true, Ordering::SeqCst);
                tracing::info!("draining: health checks now fail, traffic keeps being served");
                json_response(200, &Draining { draining: true })
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
