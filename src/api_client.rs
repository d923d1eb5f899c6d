//! The operator's Kubernetes client stack: kube's own layers (base URI, authentication, extra headers) over
//! a connection pool that speaks HTTP/2 when the API server offers it (ALPN), as client-go does.
//!
//! kube-client 5 builds an HTTP/1.1-only pool (kube-rs issue 1923), so each reconcile in flight and each
//! watch holds a TLS connection of its own: the 5,000-resource scale benchmark kept 86 of them, some 3.5 MiB
//! of buffers (heap profile, BENCHMARKS.md). Over HTTP/2 they are streams of one connection. The operator
//! needs no protocol upgrade (no exec, attach or port-forward), which is what HTTP/2 breaks in kube.
//! A configured proxy keeps kube's own stack.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{ClientBuilder, ConfigExt};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// kube's own boxed client service (`ClientBuilder::try_from` builds the same type).
pub type Stack = tower::util::BoxService<
    Request<kube::client::Body>,
    Response<Box<kube::client::DynBody>>,
    BoxError,
>;

/// How often an HTTP/2 connection is pinged, also while idle: a dead peer (or a middlebox that dropped the
/// connection) is noticed within this plus the timeout, and every watch on it re-connects.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client stack for `config`, HTTP/2 where negotiated. Layers added to the builder (the write fence)
/// sit above kube's.
pub fn builder(config: kube::Config) -> Result<ClientBuilder<Stack>, kube::Error> {
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config);
    }
    let connector = connector(&config)?;
    let pool = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build::<_, kube::client::Body>(connector);
    // kube-client's request tracing, field for field: an `HTTP` debug span per request (method, URL,
    // status) with "requesting" and errors in it. Operators read these at debug level; the fencing e2e
    // counts a deposed leader's writes by them.
    let request_spans = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<kube::client::Body>| {
            tracing::debug_span!(
                "HTTP",
                http.method = %request.method(),
                http.url = %request.uri(),
                http.status_code = tracing::field::Empty,
                otel.name = request.extensions().get::<&'static str>().unwrap_or(&"HTTP"),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
            )
        })
        .on_request(|_: &Request<kube::client::Body>, _: &Span| {
            tracing::debug!("requesting");
        })
        .on_response(|response: &Response<Incoming>, _: Duration, span: &Span| {
            let status = response.status();
            span.record("http.status_code", status.as_u16());
            if status.is_client_error() || status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        })
        .on_body_chunk(())
        .on_eos(|_: Option<&http::HeaderMap>, _: Duration, _: &Span| {
            tracing::debug!("stream closed");
        })
        .on_failure(
            |class: ServerErrorsFailureClass, _: Duration, span: &Span| {
                span.record("otel.status_code", "ERROR");
                match class {
                    ServerErrorsFailureClass::StatusCode(status) => {
                        span.record("http.status_code", status.as_u16());
                        tracing::error!("failed with status {}", status)
                    }
                    ServerErrorsFailureClass::Error(err) => {
                        tracing::error!("failed with error {}", err)
                    }
                }
            },
        );
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(request_spans)
        .map_err(BoxError::from)
        .service(pool)
        .map_response(|response| {
            response.map(|body| {
                Box::new(http_body_util::BodyExt::map_err(body, BoxError::from))
                    as Box<kube::client::DynBody>
            })
        })
        .boxed();
    Ok(ClientBuilder::new(service, config.default_namespace))
}

/// TLS (ALPN h2, then http/1.1) with kube's server-name override and timeouts, over TCP.
fn connector(
    config: &kube::Config,
) -> Result<hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>, kube::Error>
{
    let tls = config.rustls_client_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match config.tls_server_name.as_deref() {
        Some(name) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|err| {
                kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(err))
            })?,
        )),
        None => https,
    };
    let https = https.enable_all_versions().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    Ok(connector)
}
