//! Logs, Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` server.
//!
//! Every metric family is registered at start-up, so it is exposed (as `# HELP`/`# TYPE`) before the first
//! resource exists and `absent()` alerts work. Per-resource series are removed when the resource goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics_auth::{Decision, MetricsAccess};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr with a `RUST_LOG`-style filter (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// [`init_logging`] with another default filter for when `RUST_LOG` is unset.
pub fn init_logging_at(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log redirected to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Start-up: a second initialisation (tests) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    action: String,
    priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    resource_type: String,
    result: String,
}

/// A label value of the per-resource series, shared: a resource's name is one allocation for its series
/// and the map that remembers them, and a namespace, certificate id or reason is one for every resource
/// that has it (from [`crate::intern`]'s pool, which the controller's cache shares).
type Shared = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    namespace: Shared,
    name: Shared,
    certificate_id: Shared,
}

/// The Ready gauge also carries the Ready condition's reason, so a dashboard can count resources by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    namespace: Shared,
    name: Shared,
    certificate_id: Shared,
    reason: Shared,
}

/// (namespace, name) → the certificate id and Ready reason its series carry, to remove them when any of
/// them changes.
#[derive(Default)]
struct SeriesIndex {
    by_resource: HashMap<(Shared, Shared), (Shared, Shared)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

fn seconds_histogram() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics. Cheap to share; every method is infallible.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    tencent_requests: Family<RequestLabels, Counter>,
    tencent_request_duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
    limiter_wait: Family<ActionLabels, Histogram, fn() -> Histogram>,
    limiter_rate: Family<ActionLabels, Gauge<f64, AtomicU64>>,
    queue_depth: Family<QueueLabels, Gauge>,
    coalesced_downloads: Family<SourceLabels, Counter>,
    secret_writes: Family<OperationLabels, Counter>,
    certificate_expiration: Family<CertificateLabels, Gauge<f64, AtomicU64>>,
    certificate_ready: Family<ReadyLabels, Gauge>,
    push_uploads: Family<ResultLabels, Counter>,
    push_deploys: Family<DeployLabels, Counter>,
    leader: Gauge,
    parked: Gauge,
    renewal_applications: Family<ResultLabels, Counter>,
    renewal_waiting_since: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    renewal_due_without_order: Family<ResourceLabels, Gauge>,
    /// (exposed name, type, help) of every family, to describe families that have no series yet.
    descriptors: Vec<(String, &'static str, &'static str)>,
    /// The per-resource series: the labels each resource's series carry, and their shared values.
    series: Mutex<SeriesIndex>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every family as exposed: (name, type, help). Kept beside the registrations below; a test checks both agree.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "tencentcert_reconciles_total",
        "counter",
        "Reconciles by result (synced, unchanged, repaired, failed, error) and condition reason.",
    ),
    (
        "tencentcert_reconcile_duration_seconds",
        "histogram",
        "Time taken by one reconcile.",
    ),
    (
        "tencentcert_tencent_requests_total",
        "counter",
        "Tencent Cloud API requests by action and response code (Success, an API error code, or a transport failure).",
    ),
    (
        "tencentcert_tencent_request_duration_seconds",
        "histogram",
        "Tencent Cloud API request latency by action.",
    ),
    (
        "tencentcert_rate_limiter_wait_seconds",
        "histogram",
        "Time requests waited for the client-side rate limiter, by action.",
    ),
    (
        "tencentcert_rate_limiter_rate",
        "gauge",
        "Current client-side request rate per second by action (lowered after Tencent throttles).",
    ),
    (
        "tencentcert_tencent_queue_depth",
        "gauge",
        "Tencent requests waiting for a rate-limiter slot, by action and priority (urgent: first syncs, spec changes, drift; routine: refreshes).",
    ),
    (
        "tencentcert_coalesced_downloads_total",
        "counter",
        "Downloads served without a request of their own: from a request in flight, the client's short cache, or a certificate downloaded for another resource in this wave (source wave).",
    ),
    (
        "tencentcert_secret_writes_total",
        "counter",
        "Writes to TLS Secrets by operation (create, update, recreate, repair, delete).",
    ),
    (
        "tencentcert_certificate_expiration_timestamp_seconds",
        "gauge",
        "notAfter of the certificate in each TencentCertificate's Secret, as a Unix timestamp.",
    ),
    (
        "tencentcert_certificate_ready",
        "gauge",
        "1 when the TencentCertificate is Ready, else 0; reason is the Ready condition's reason.",
    ),
    (
        "tencentcert_push_uploads_total",
        "counter",
        "TencentCertificatePush uploads to Tencent Cloud SSL by result (uploaded, repeat: Tencent already held the certificate, adopted: found by its tags after a crash, failed).",
    ),
    (
        "tencentcert_push_deploys_total",
        "counter",
        "Cloud resources moved onto a pushed certificate, by resource type and final result (succeeded, failed).",
    ),
    (
        "tencentcert_leader",
        "gauge",
        "1 while this instance reconciles (leads, or runs without leader election).",
    ),
    (
        "tencentcert_parked_reconciles",
        "gauge",
        "Reconciles parked off-slot: waiting for a background download of their certificate, or woken and not run again yet.",
    ),
    (
        "tencentcert_build_info",
        "gauge",
        "Version and git commit of the running operator.",
    ),
    (
        "tencentcert_renewal_applications_total",
        "counter",
        "Applications for the renewal of free certificates by result (applied, found: an order already existed, refused, uncertain).",
    ),
    (
        "tencentcert_renewal_order_waiting_since_timestamp_seconds",
        "gauge",
        "Per resource whose renewal order waits for validation or issue: since when, as a Unix timestamp.",
    ),
    (
        "tencentcert_renewal_due_without_order",
        "gauge",
        "1 per resource whose certificate is in its renewal window with no order (due, refused, failed or unconfirmed).",
    ),
];

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("tencentcert"),
            reconciles: Family::default(),
            reconcile_duration: seconds_histogram(),
            tencent_requests: Family::default(),
            tencent_request_duration: Family::new_with_constructor(seconds_histogram),
            limiter_wait: Family::new_with_constructor(seconds_histogram),
            limiter_rate: Family::default(),
            queue_depth: Family::default(),
            coalesced_downloads: Family::default(),
            secret_writes: Family::default(),
            certificate_expiration: Family::default(),
            certificate_ready: Family::default(),
            push_uploads: Family::default(),
            push_deploys: Family::default(),
            leader: Gauge::default(),
            parked: Gauge::default(),
            renewal_applications: Family::default(),
            renewal_waiting_since: Family::default(),
            renewal_due_without_order: Family::default(),
            descriptors: FAMILIES
                .iter()
                .map(|(name, kind, help)| (name.to_string(), *kind, *help))
                .collect(),
            series: Mutex::new(SeriesIndex::default()),
        };
        metrics.register();
        metrics.start_known_series();
        metrics
    }

    // long: one registration per family, in the order of FAMILIES; nothing to factor.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "reconciles",
            "Reconciles by result (synced, unchanged, repaired, failed, error) and condition reason",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time taken by one reconcile",
            self.reconcile_duration.clone(),
        );
        r.register(
            "tencent_requests",
            "Tencent Cloud API requests by action and response code (Success, an API error code, or a transport failure)",
            self.tencent_requests.clone(),
        );
        r.register(
            "tencent_request_duration_seconds",
            "Tencent Cloud API request latency by action",
            self.tencent_request_duration.clone(),
        );
        r.register(
            "rate_limiter_wait_seconds",
            "Time requests waited for the client-side rate limiter, by action",
            self.limiter_wait.clone(),
        );
        r.register(
            "rate_limiter_rate",
            "Current client-side request rate per second by action (lowered after Tencent throttles)",
            self.limiter_rate.clone(),
        );
        r.register(
            "tencent_queue_depth",
            "Tencent requests waiting for a rate-limiter slot, by action and priority (urgent: first syncs, spec changes, drift; routine: refreshes)",
            self.queue_depth.clone(),
        );
        r.register(
            "coalesced_downloads",
            "Downloads served without a request of their own: from a request in flight, the client's short cache, or a certificate downloaded for another resource in this wave (source wave)",
            self.coalesced_downloads.clone(),
        );
        r.register(
            "secret_writes",
            "Writes to TLS Secrets by operation (create, update, recreate, repair, delete)",
            self.secret_writes.clone(),
        );
        r.register(
            "certificate_expiration_timestamp_seconds",
            "notAfter of the certificate in each TencentCertificate's Secret, as a Unix timestamp",
            self.certificate_expiration.clone(),
        );
        r.register(
            "certificate_ready",
            "1 when the TencentCertificate is Ready, else 0; reason is the Ready condition's reason",
            self.certificate_ready.clone(),
        );
        r.register(
            "push_uploads",
            "TencentCertificatePush uploads to Tencent Cloud SSL by result (uploaded, repeat: Tencent already held the certificate, adopted: found by its tags after a crash, failed)",
            self.push_uploads.clone(),
        );
        r.register(
            "push_deploys",
            "Cloud resources moved onto a pushed certificate, by resource type and final result (succeeded, failed)",
            self.push_deploys.clone(),
        );
        r.register(
            "leader",
            "1 while this instance reconciles (leads, or runs without leader election)",
            self.leader.clone(),
        );
        r.register(
            "parked_reconciles",
            "Reconciles parked off-slot: waiting for a background download of their certificate, or woken and not run again yet",
            self.parked.clone(),
        );
        self.register_renewal();
        let r = &mut self.registry;
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: crate::GIT_COMMIT.to_string(),
            })
            .set(1);
        r.register(
            "build_info",
            "Version and git commit of the running operator",
            build_info,
        );
    }

    /// The renewal applications' families (issue 27).
    fn register_renewal(&mut self) {
        let r = &mut self.registry;
        r.register(
            "renewal_applications",
            "Applications for the renewal of free certificates by result (applied, found: an order already existed, refused, uncertain)",
            self.renewal_applications.clone(),
        );
        r.register(
            "renewal_order_waiting_since_timestamp_seconds",
            "Per resource whose renewal order waits for validation or issue: since when, as a Unix timestamp",
            self.renewal_waiting_since.clone(),
        );
        r.register(
            "renewal_due_without_order",
            "1 per resource whose certificate is in its renewal window with no order (due, refused, failed or unconfirmed)",
            self.renewal_due_without_order.clone(),
        );
    }

    /// Label sets known in advance start at 0, so their series exist (and `absent()` means "down").
    fn start_known_series(&self) {
        for result in ["synced", "unchanged", "repaired"] {
            self.reconciles
                .get_or_create(&ReconcileLabels {
                    result: result.to_string(),
                    reason: String::new(),
                })
                .inc_by(0);
        }
        for operation in ["create", "update", "recreate", "repair", "delete"] {
            self.secret_writes
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                })
                .inc_by(0);
        }
        for result in ["applied", "found", "refused", "uncertain"] {
            self.renewal_applications
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(0);
        }
        for result in ["uploaded", "repeat", "adopted", "failed"] {
            self.push_uploads
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(0);
        }
        for source in ["in_flight", "cache"] {
            self.coalesced_downloads
                .get_or_create(&SourceLabels {
                    source: source.to_string(),
                })
                .inc_by(0);
        }
        self.tencent_requests
            .get_or_create(&RequestLabels {
                action: tencent_ssl::client::ACTION_DOWNLOAD.to_string(),
                code: "Success".to_string(),
            })
            .inc_by(0);
    }

    /// The Prometheus text exposition. Families without series yet (per-resource gauges before the first
    /// resource) are still described, which the encoder alone would skip.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        for (name, kind, help) in &self.descriptors {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }

    pub fn reconciled(&self, result: &str, reason: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                result: result.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn secret_written(&self, operation: &str) {
        self.secret_writes
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .inc();
    }

    /// One `TencentCertificatePush` upload (or its failure).
    pub fn push_uploaded(&self, result: &str) {
        self.push_uploads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// `count` resources of `resource_type` reached a final deploy `result`.
    pub fn push_deployed(&self, resource_type: &str, result: &str, count: u64) {
        if count == 0 {
            return;
        }
        self.push_deploys
            .get_or_create(&DeployLabels {
                resource_type: resource_type.to_string(),
                result: result.to_string(),
            })
            .inc_by(count);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Reconciles parked for a background download (see `controller::parking`).
    pub fn set_parked(&self, parked: usize) {
        self.parked.set(i64::try_from(parked).unwrap_or(i64::MAX));
    }

    fn series_lock(&self) -> std::sync::MutexGuard<'_, SeriesIndex> {
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets a resource's per-certificate gauges; series under an older certificate id or Ready reason are
    /// removed.
    pub fn set_certificate(
        &self,
        namespace: &str,
        name: &str,
        certificate_id: &str,
        not_after: Option<jiff::Timestamp>,
        ready: bool,
        reason: &str,
    ) {
        let [namespace, name, certificate_id, reason]: [Shared; 4] =
            [namespace, name, certificate_id, reason]
                .map(|value| crate::intern::Shared::new(value).into());
        let mut series = self.series_lock();
        let labels = CertificateLabels {
            namespace: namespace.clone(),
            name: name.clone(),
            certificate_id: certificate_id.clone(),
        };
        let current = (certificate_id.clone(), reason.clone());
        let previous = series
            .by_resource
            .insert((namespace.clone(), name.clone()), current.clone());
        drop(series);
        if let Some((previous_id, previous_reason)) = previous.filter(|p| *p != current) {
            if previous_id != certificate_id {
                self.certificate_expiration.remove(&CertificateLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    certificate_id: previous_id.clone(),
                });
            }
            self.certificate_ready.remove(&ReadyLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                certificate_id: previous_id,
                reason: previous_reason,
            });
        }
        match not_after {
            Some(t) => {
                self.certificate_expiration
                    .get_or_create(&labels)
                    .set(t.as_second() as f64);
            }
            None => {
                self.certificate_expiration.remove(&labels);
            }
        }
        self.certificate_ready
            .get_or_create(&ReadyLabels {
                namespace,
                name,
                certificate_id,
                reason,
            })
            .set(i64::from(ready));
    }

    /// One application for a renewal, by `result` (`renewal::order::metric_result`).
    pub fn renewal_applied(&self, result: &str) {
        self.renewal_applications
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// A resource's renewal alert gauges: a series only while there is something to alert on.
    pub fn set_renewal(
        &self,
        namespace: &str,
        name: &str,
        signals: &tencent_ssl::renewal::order::AlertSignals,
    ) {
        let labels = ResourceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        match signals.waiting_since {
            Some(since) => {
                self.renewal_waiting_since
                    .get_or_create(&labels)
                    .set(since.as_second() as f64);
            }
            None => {
                self.renewal_waiting_since.remove(&labels);
            }
        }
        if signals.in_window_without_order {
            self.renewal_due_without_order.get_or_create(&labels).set(1);
        } else {
            self.renewal_due_without_order.remove(&labels);
        }
    }

    /// The resource is gone: drop its series (no stale alerts).
    pub fn forget_certificate(&self, namespace: &str, name: &str) {
        let resource = ResourceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.renewal_waiting_since.remove(&resource);
        self.renewal_due_without_order.remove(&resource);
        let mut series = self.series_lock();
        let key: (Shared, Shared) = (
            crate::intern::Shared::new(namespace).into(),
            crate::intern::Shared::new(name).into(),
        );
        let previous = series.by_resource.remove(&key);
        drop(series);
        if let Some((certificate_id, reason)) = previous {
            let (namespace, name) = key;
            self.certificate_expiration.remove(&CertificateLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                certificate_id: certificate_id.clone(),
            });
            self.certificate_ready.remove(&ReadyLabels {
                namespace,
                name,
                certificate_id,
                reason,
            });
        }
    }
}

impl tencent_ssl::Observer for Metrics {
    fn request(&self, action: &str, code: &str, took: Duration) {
        self.tencent_requests
            .get_or_create(&RequestLabels {
                action: action.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.tencent_request_duration
            .get_or_create(&ActionLabels {
                action: action.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    fn rate_limited_wait(&self, action: &str, waited: Duration, current_rate: f64) {
        let labels = ActionLabels {
            action: action.to_string(),
        };
        self.limiter_wait
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
        self.limiter_rate.get_or_create(&labels).set(current_rate);
    }

    fn queue_depth(&self, action: &str, priority: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabels {
                action: action.to_string(),
                priority: priority.to_string(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn coalesced(&self, source: &str) {
        self.coalesced_downloads
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc();
    }
}

/// What `/readyz` reports: watches started, and with leader election, leading or standing by healthily —
/// and no watch currently failing to reach the API server.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    /// Watches whose latest result was an error (see `controller::watches::reporting_health`).
    watches_failing: AtomicUsize,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// One watch starts (`true`) or stops (`false`) failing.
    pub fn watch_failing(&self, failing: bool) {
        if failing {
            self.watches_failing.fetch_add(1, Ordering::AcqRel);
        } else {
            // Never below zero, whatever the order of calls.
            let _ = self
                .watches_failing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.watches_failing.load(Ordering::Acquire) == 0
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    router_with_access(metrics, readiness, None)
}

/// [`router`], with `/metrics` behind `access` when given (`--metrics-secure`); the probes stay open.
pub fn router_with_access(
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    access: Option<Arc<MetricsAccess>>,
) -> Router {
    let mut metrics_route = Router::new().route("/metrics", get(render_metrics));
    if let Some(access) = access {
        metrics_route = metrics_route.route_layer(axum::middleware::from_fn_with_state(
            access,
            require_metrics_access,
        ));
    }
    metrics_route
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(ServerState { metrics, readiness })
}

/// 401 without an accepted bearer token, 403 when its user may not `get /metrics`, 503 when the API
/// server cannot say (see [`crate::metrics_auth`]).
async fn require_metrics_access(
    State(access): State<Arc<MetricsAccess>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match access.decide(authorization).await {
        Ok(Decision::Allowed) => next.run(request).await,
        Ok(Decision::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized: /metrics needs a bearer token the Kubernetes API server accepts\n",
        )
            .into_response(),
        Ok(Decision::Forbidden) => (
            StatusCode::FORBIDDEN,
            "Forbidden: the token's user may not get the non-resource URL /metrics\n",
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot review a /metrics request");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot review the token with the Kubernetes API server\n",
            )
                .into_response()
        }
    }
}

async fn render_metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready(State(state): State<ServerState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the telemetry endpoints until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over HTTPS with `tls`, `/metrics` behind `access` (`--metrics-secure`).
pub async fn serve_secure(
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    access: Arc<MetricsAccess>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = crate::metrics_auth::tls::TlsListener::new(listener, tls)?;
    axum::serve(
        listener,
        router_with_access(metrics, readiness, Some(access)),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Binds the telemetry address, with the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for metrics and health: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tencent_ssl::Observer;

    /// The golden list: every family, with its type, as a scraper sees it.
    const GOLDEN: &[(&str, &str)] = &[
        ("tencentcert_reconciles_total", "counter"),
        ("tencentcert_reconcile_duration_seconds", "histogram"),
        ("tencentcert_tencent_requests_total", "counter"),
        ("tencentcert_tencent_request_duration_seconds", "histogram"),
        ("tencentcert_rate_limiter_wait_seconds", "histogram"),
        ("tencentcert_rate_limiter_rate", "gauge"),
        ("tencentcert_tencent_queue_depth", "gauge"),
        ("tencentcert_coalesced_downloads_total", "counter"),
        ("tencentcert_secret_writes_total", "counter"),
        (
            "tencentcert_certificate_expiration_timestamp_seconds",
            "gauge",
        ),
        ("tencentcert_certificate_ready", "gauge"),
        ("tencentcert_push_uploads_total", "counter"),
        ("tencentcert_push_deploys_total", "counter"),
        ("tencentcert_leader", "gauge"),
        ("tencentcert_parked_reconciles", "gauge"),
        ("tencentcert_build_info", "gauge"),
        ("tencentcert_renewal_applications_total", "counter"),
        (
            "tencentcert_renewal_order_waiting_since_timestamp_seconds",
            "gauge",
        ),
        ("tencentcert_renewal_due_without_order", "gauge"),
    ];

    fn exposed_families(text: &str) -> Vec<(String, String)> {
        let mut families: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect();
        families.sort();
        families
    }

    fn golden() -> Vec<(String, String)> {
        let mut golden: Vec<(String, String)> = GOLDEN
            .iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect();
        golden.sort();
        golden
    }

    #[test]
    fn renewal_gauges_are_per_resource() {
        use tencent_ssl::renewal::order::AlertSignals;
        let m = Metrics::new();
        let since: jiff::Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        m.set_renewal(
            "web",
            "shop",
            &AlertSignals {
                waiting_since: Some(since),
                in_window_without_order: false,
            },
        );
        m.set_renewal(
            "",
            "cluster-shop",
            &AlertSignals {
                waiting_since: None,
                in_window_without_order: true,
            },
        );
        m.renewal_applied("applied");
        let text = m.render();
        assert!(text.contains("tencentcert_renewal_order_waiting_since_timestamp_seconds{namespace=\"web\",name=\"shop\"} 1796169600"), "{text}");
        assert!(
            text.contains(
                "tencentcert_renewal_due_without_order{namespace=\"\",name=\"cluster-shop\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tencentcert_renewal_applications_total{result=\"applied\"} 1"),
            "{text}"
        );
        // Nothing left to alert on: the series go; a deleted resource's too.
        m.set_renewal(
            "web",
            "shop",
            &AlertSignals {
                waiting_since: None,
                in_window_without_order: false,
            },
        );
        m.forget_certificate("", "cluster-shop");
        let text = m.render();
        assert!(!text.contains("name=\"shop\"}"), "{text}");
        assert!(!text.contains("cluster-shop"), "{text}");
    }

    #[test]
    fn every_family_is_exposed_before_anything_happened() {
        let text = Metrics::new().render();
        assert_eq!(exposed_families(&text), golden(), "{text}");
        assert!(text.contains("tencentcert_build_info{version=\""), "{text}");
        // Known label sets start at zero.
        assert!(
            text.contains("tencentcert_secret_writes_total{operation=\"create\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tencentcert_reconciles_total{result=\"synced\",reason=\"\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn every_family_is_exposed_once_after_a_simulated_sync() {
        let m = Metrics::new();
        m.reconciled("synced", "", Duration::from_millis(20));
        m.set_certificate(
            "web",
            "shop",
            "aBcD1234",
            Some("2027-01-01T00:00:00Z".parse().unwrap()),
            true,
            "Ready",
        );
        m.rate_limited_wait("DownloadCertificate", Duration::ZERO, 10.0);
        assert_eq!(exposed_families(&m.render()), golden());
    }

    #[test]
    fn observations_appear_with_their_labels() {
        let m = Metrics::new();
        m.reconciled("synced", "", Duration::from_millis(20));
        m.request("DownloadCertificate", "Success", Duration::from_millis(30));
        m.request(
            "DownloadCertificate",
            "FailedOperation.NetworkError",
            Duration::from_millis(30),
        );
        m.rate_limited_wait("DownloadCertificate", Duration::from_millis(100), 5.0);
        m.coalesced("in_flight");
        m.secret_written("create");
        m.set_certificate(
            "web",
            "shop",
            "aBcD1234",
            Some("2027-01-01T00:00:00Z".parse().unwrap()),
            true,
            "Ready",
        );
        let text = m.render();
        for line in [
            "tencentcert_reconciles_total{result=\"synced\",reason=\"\"} 1",
            "tencentcert_tencent_requests_total{action=\"DownloadCertificate\",code=\"Success\"} 1",
            "tencentcert_tencent_requests_total{action=\"DownloadCertificate\",code=\"FailedOperation.NetworkError\"} 1",
            "tencentcert_rate_limiter_rate{action=\"DownloadCertificate\"} 5.0",
            "tencentcert_coalesced_downloads_total{source=\"in_flight\"} 1",
            "tencentcert_secret_writes_total{operation=\"create\"} 1",
            "tencentcert_certificate_expiration_timestamp_seconds{namespace=\"web\",name=\"shop\",certificate_id=\"aBcD1234\"} 1798761600.0",
            "tencentcert_certificate_ready{namespace=\"web\",name=\"shop\",certificate_id=\"aBcD1234\",reason=\"Ready\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn per_certificate_series_follow_the_resource() {
        let m = Metrics::new();
        let expiry = Some("2027-01-01T00:00:00Z".parse().unwrap());
        m.set_certificate("web", "shop", "OlD00001", expiry, true, "Ready");
        // A new certificate id replaces the old series instead of leaving it behind.
        m.set_certificate("web", "shop", "NeW00001", expiry, false, "Pending");
        let text = m.render();
        assert!(!text.contains("OlD00001"), "{text}");
        assert!(text.contains(
            "certificate_ready{namespace=\"web\",name=\"shop\",certificate_id=\"NeW00001\",reason=\"Pending\"} 0"
        ));
        // A new reason under the same id replaces the series too: one Ready series per resource.
        m.set_certificate("web", "shop", "NeW00001", expiry, true, "Ready");
        let text = m.render();
        assert!(!text.contains("reason=\"Pending\""), "{text}");
        assert_eq!(
            text.matches("certificate_ready{namespace=\"web\",name=\"shop\"")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("expiration_timestamp_seconds{namespace=\"web\",name=\"shop\",certificate_id=\"NeW00001\"}"), "{text}");
        // Deleting the resource removes its series; the families stay.
        m.forget_certificate("web", "shop");
        let text = m.render();
        assert!(!text.contains("NeW00001"), "{text}");
        assert!(text.contains("# TYPE tencentcert_certificate_ready gauge"));
        // No expiry (no usable Secret): no expiration series, still a ready series.
        m.set_certificate("web", "csr", "noKey001", None, false, "KeyMissing");
        let text = m.render();
        assert!(!text.contains("expiration_timestamp_seconds{namespace=\"web\",name=\"csr\""));
        assert!(text.contains(
            "certificate_ready{namespace=\"web\",name=\"csr\",certificate_id=\"noKey001\",reason=\"KeyMissing\"} 0"
        ));
    }

    #[tokio::test]
    async fn health_and_readiness_endpoints_answer() {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, readiness.clone(), async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        readiness.set(true);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap();
        assert!(
            metrics.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(metrics.text().await.unwrap().contains("tencentcert_leader"));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
