//! The HTTP surface: every documented route is added through [`Routes::add`], which
//! takes the path and methods from the handler's `#[utoipa::path]` and registers it
//! in the axum router and the OpenAPI document at once, so the two cannot drift.

mod config;
mod jobs;
mod meta;
mod nodes;
mod purge;
mod stats;

pub(crate) use nodes::describe;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use tracing::Instrument;
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Schema};

use crate::state::AppState;

/// Largest request body accepted (configs and job sources are far smaller).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Collects routes and their OpenAPI operations together.
pub struct Routes {
    router: Router<Arc<AppState>>,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
    /// `(METHOD, path)` of every documented route, in registration order.
    pub operations: Vec<(String, String)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
            operations: Vec::new(),
        }
    }

    /// Adds `handler` at the path and methods its `#[utoipa::path]` (type `P`) declares.
    // `SchemaReferences` is what utoipa's own derive uses to collect the schemas an
    // operation mentions; it is public but hidden.
    fn add<P, H, T>(mut self, handler: H) -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let path = P::path();
        let methods = P::methods();
        let mut method_router = MethodRouter::new();
        for method in &methods {
            method_router = method_router.on(filter(method), handler.clone());
            self.operations
                .push((method_name(method).to_owned(), path.clone()));
        }
        self.router = self.router.route(&path, method_router);
        self.paths
            .add_path_operation(&path, methods, P::operation());
        P::schemas(&mut self.schemas);
        self
    }
}

fn filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// Every documented route.
pub fn routes() -> Routes {
    Routes::new()
        .add::<meta::__path_healthz, _, _>(meta::healthz)
        .add::<meta::__path_metrics, _, _>(meta::metrics)
        .add::<meta::__path_openapi_json, _, _>(meta::openapi_json)
        .add::<config::__path_get_config, _, _>(config::get_config)
        .add::<config::__path_put_config, _, _>(config::put_config)
        .add::<config::__path_validate, _, _>(config::validate)
        .add::<config::__path_history, _, _>(config::history)
        .add::<config::__path_rollback, _, _>(config::rollback)
        .add::<config::__path_watch, _, _>(config::watch)
        .add::<config::__path_report_status, _, _>(config::report_status)
        .add::<config::__path_status, _, _>(config::status)
        .add::<nodes::__path_list, _, _>(nodes::list)
        .add::<nodes::__path_drain, _, _>(nodes::drain)
        .add::<purge::__path_purge, _, _>(purge::purge)
        .add::<stats::__path_stats, _, _>(stats::stats)
        .add::<jobs::__path_submit, _, _>(jobs::submit)
        .add::<jobs::__path_get_job, _, _>(jobs::get_job)
        .add::<jobs::__path_cancel_job, _, _>(jobs::cancel_job)
        .add::<jobs::__path_run, _, _>(jobs::run)
        .add::<jobs::__path_events, _, _>(jobs::events)
}

/// The OpenAPI 3.1 document for `routes`.
pub fn openapi(routes: &Routes) -> OpenApi {
    // What the events WebSocket carries each way (no HTTP body names them), with the
    // schemas they refer to.
    let mut socket_schemas = Vec::new();
    <edgebox_wire::sandbox::JobEvent as utoipa::ToSchema>::schemas(&mut socket_schemas);
    <edgebox_wire::sandbox::ClientMessage as utoipa::ToSchema>::schemas(&mut socket_schemas);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(routes.schemas.clone())
        .schemas_from_iter(socket_schemas)
        .schema_from::<edgebox_wire::sandbox::JobEvent>()
        .schema_from::<edgebox_wire::sandbox::ClientMessage>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("edgebox control plane")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Config lifecycle, nodes, purge, stats and the sandbox relay of an edgebox \
                     deployment. Bearer tokens: `operator` for everything, `submitter` for jobs.",
                ))
                .build(),
        )
        .paths(routes.paths.clone())
        .components(Some(components))
        .build()
}

/// The whole application: documented routes, the dashboard, JSON fallbacks.
pub fn app(state: Arc<AppState>) -> Router {
    let routes = routes();
    let document = Arc::new(openapi(&routes));
    routes
        .router
        .merge(crate::dashboard::router())
        .fallback(crate::error::no_route)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(axum::Extension(document))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A span per request (with its request id, taken from `X-Request-Id` or made
/// up, and echoed in the response), and its count and time in the metrics.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().to_string();
    let span = tracing::info_span!("request", %method, path = %request.uri().path(), %request_id);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.observe(&route, &method, status, elapsed);
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_millis() as u64, "answered"));
    response
}
