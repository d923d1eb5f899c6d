//! The controller: watches `TencentCertificate`s, the Secrets they manage and the credentials Secrets they
//! use, and runs [`reconcile::reconcile`] for each change.

pub mod act;
pub mod bundles;
pub mod cached;
pub mod clock;
pub mod credentials;
pub mod echoes;
pub mod fetch;
pub mod parking;
pub mod passwords;
pub mod reconcile;
pub mod refresh;
pub mod report;
pub mod target;
pub mod watches;
pub mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

pub use credentials::{DefaultCredentials, NamespaceAllowList, SecretRef};

use crate::crd::TencentCertificate;
use crate::secret::{CERTIFICATE_NAME_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use cached::CachedCertificate;

/// The default safety net for content replaced behind an unchanged id and validity window.
pub const DEFAULT_FULL_DOWNLOAD_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub tencent: tencent_ssl::Client,
    pub defaults: DefaultCredentials,
    /// Who publishes the events (see [`Context::recorder`]).
    reporter: Reporter,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// How often a refresh downloads even when Tencent's listing shows nothing changed.
    pub full_download_every: std::time::Duration,
    /// Certificates downloaded during this wave, for the other resources naming them.
    pub bundles: bundles::BundleCache,
    /// Reconciles waiting off-slot for a background download, and the outcomes held for them.
    pub parking: parking::Parking,
    /// The controllers' caches of resources (one per watched scope), to find the certificate ids that
    /// share a credentials Secret.
    stores: std::sync::RwLock<Vec<Store<CachedCertificate>>>,
    /// `/readyz`: the watches report into it while they fail.
    pub readiness: Arc<crate::telemetry::Readiness>,
    /// Per resource UID: the credentials Secret's resourceVersion when its last attempt failed on
    /// credentials (`None`: the Secret was missing). A different version now means "try again at once".
    credentials_at_failure: Mutex<HashMap<String, Option<String>>>,
    /// Whether this replica may write (the leader's term); `client` refuses writes outside it, and
    /// reconciles stop when it ends.
    pub fence: crate::leader::Fence,
    /// Refresh requests deferred to the end of their minute, and already told in an event.
    pub(crate) refresh_deferrals: refresh::Deferrals,
    /// Applying for renewals of free certificates: the cluster switch and the poll of pending orders.
    pub renewal: crate::renew::RenewalConfig,
    /// One application at a time per (credentials, old certificate), across every resource and kind.
    pub apply_locks: tencent_ssl::apply::ApplyLocks,
    /// The versions this replica wrote, so that their watch events do not reconcile again (see `echoes`).
    pub own_writes: echoes::OwnWrites,
}

impl Context {
    pub fn new(client: Client, tencent: tencent_ssl::Client, defaults: DefaultCredentials) -> Self {
        let reporter = Reporter {
            controller: "tencent-cert-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            reporter,
            client,
            tencent,
            defaults,
            metrics: Arc::new(crate::telemetry::Metrics::new()),
            full_download_every: DEFAULT_FULL_DOWNLOAD_INTERVAL,
            stores: std::sync::RwLock::new(Vec::new()),
            bundles: bundles::BundleCache::default(),
            parking: parking::Parking::default(),
            readiness: Arc::new(crate::telemetry::Readiness::default()),
            credentials_at_failure: Mutex::new(HashMap::new()),
            fence: crate::leader::Fence::unbounded(),
            refresh_deferrals: refresh::Deferrals::default(),
            renewal: crate::renew::RenewalConfig::default(),
            apply_locks: tencent_ssl::apply::ApplyLocks::default(),
            own_writes: echoes::OwnWrites::default(),
        }
    }

    /// Who may apply for renewals (`--renewal-applications`) and how often a pending order is looked at
    /// (`--renewal-poll-interval`).
    pub fn with_renewal(mut self, renewal: crate::renew::RenewalConfig) -> Self {
        self.renewal = renewal;
        self
    }

    /// Stops reconciles when `fence` closes; `client` should be built with the same fence
    /// ([`crate::leader::fenced_client`]).
    pub fn with_fence(mut self, fence: crate::leader::Fence) -> Self {
        self.fence = fence;
        self
    }

    /// A recorder for one reconcile's events. kube's `Recorder` keeps every event it published for six
    /// minutes (to count repeats as a series); one shared recorder held some 3 KiB per resource after a
    /// first-sync wave (17 MiB for 5,000, the largest single item of the operator's heap). Events here are
    /// published on transitions only, so the repeat counting is not needed.
    pub(crate) fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// Downloads in full at least this often, whatever the listings say (see `policy::download_needed`).
    pub fn with_full_download_interval(mut self, every: std::time::Duration) -> Self {
        self.full_download_every = every;
        self
    }

    /// Keeps downloaded certificates for other resources this long, within `max_bytes` (tests: `ZERO`).
    pub fn with_bundle_cache(mut self, ttl: std::time::Duration, max_bytes: usize) -> Self {
        self.bundles = bundles::BundleCache::new(ttl, max_bytes);
        self
    }

    /// Reports into `metrics` (shared with the telemetry server) instead of a private registry.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn register_store(&self, store: Store<CachedCertificate>) {
        self.stores
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(store);
    }

    /// The certificate ids named by the resources that take their credentials from the same Secret as
    /// `cr` (its own included): what its credentials will be asked about next.
    pub(crate) fn ids_sharing_credentials(&self, cr: &TencentCertificate) -> Vec<String> {
        let Ok(source) = credentials::source_for(cr, &self.defaults) else {
            return Vec::new();
        };
        let stores = self
            .stores
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|peer| {
                match (
                    &source,
                    credentials::cached_source_for(peer, &self.defaults),
                ) {
                    (_, Err(_)) => false,
                    (credentials::CredentialsSource::PodIdentity, Ok(theirs)) => {
                        theirs == credentials::CredentialsSource::PodIdentity
                    }
                    (mine, Ok(theirs)) => {
                        mine.secret().is_some() && mine.secret() == theirs.secret()
                    }
                }
            })
            .filter_map(|peer| peer.expected_certificate_id())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Reports watch failures into `readiness` (shared with the telemetry server).
    pub fn with_readiness(mut self, readiness: Arc<crate::telemetry::Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    fn credentials_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.credentials_at_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn remember_credentials_failure(&self, uid: &str, version: Option<String>) {
        self.credentials_failures().insert(uid.to_string(), version);
    }

    pub(crate) fn forget_credentials_failure(&self, uid: &str) {
        self.credentials_failures().remove(uid);
    }

    /// The credentials Secret's version at the last credentials failure, if one is remembered.
    pub(crate) fn credentials_failure(&self, uid: &str) -> Option<Option<String>> {
        self.credentials_failures().get(uid).cloned()
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// The owning resource of a managed Secret, from its `tencentcert.io/certificate-name` label (set for both
/// deletion policies; owner references exist only with `Delete`).
fn owner_of(secret: &PartialObjectMeta<Secret>) -> Option<ObjectRef<CachedCertificate>> {
    let name = secret.labels().get(CERTIFICATE_NAME_LABEL)?;
    let namespace = secret.namespace()?;
    Some(ObjectRef::new(name).within(&namespace))
}

/// The resources that take their credentials, or a keystore password, from `secret`.
fn users_of(
    store: &Store<CachedCertificate>,
    defaults: &DefaultCredentials,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<CachedCertificate>> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    let reference = SecretRef {
        namespace,
        name: secret.name_any(),
    };
    store
        .state()
        .iter()
        .filter(|cr| {
            credentials::uses_secret(cr, defaults, &reference)
                || (cr.namespace().as_deref() == Some(reference.namespace.as_str())
                    && cr.spec.outputs.reads_secret(&reference.name))
        })
        .map(|cr| ObjectRef::from_obj(cr.as_ref()))
        .collect()
}

/// What the controller's cache keeps of each resource's metadata (the status is held shared, see
/// [`cached`]): only what reconciles read — namespace, name, uid,
/// generation, resourceVersion, deletionTimestamp and the operator's own `tencentcert.io/` annotations.
/// `managedFields`, other annotations (kubectl's last-applied configuration among them), labels, owner
/// references, finalizers and the creation time are never read and are often the larger part of an object.
fn slim(cr: &mut CachedCertificate) {
    let meta = &mut cr.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.creation_timestamp = None;
    meta.generate_name = None;
    meta.self_link = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with("tencentcert.io/"));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What the Secret watches keep and pass on: the namespace, name and the one label that map a Secret to the
/// resources it concerns ([`owner_of`] reads `tencentcert.io/certificate-name`; [`users_of`] the name
/// only). The gap tracker remembers every managed Secret (to report deletions missed while a watch was
/// down); with managedFields, annotations and owner references that was some 3 KiB per Secret, the largest
/// per-resource item after a first sync of 5,000 (scale benchmark: 87 → see BENCHMARKS.md); the other
/// labels (`app.kubernetes.io/managed-by`, the spec's `secretTemplate` labels) were two or more strings
/// per Secret more (issue 23).
fn slim_secret(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|key, _| key == CERTIFICATE_NAME_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
}

/// Metadata-only watch: Secrets' data never enters the operator's memory through watches. Secrets deleted
/// while the watch was down are reported when it re-lists.
fn secret_metadata(
    api: Api<PartialObjectMeta<Secret>>,
    config: watcher::Config,
    readiness: &Arc<crate::telemetry::Readiness>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let events = watches::backing_off(watcher(api, config).modify(slim_secret));
    watches::with_gap_deletions(watches::reporting_health(events, readiness.clone()))
}

/// Objects per page of the per-resource watches' (re-)lists. A page is held whole, as JSON and decoded
/// into full objects, before `slim` trims them; kube's default is 500. Issue 23 measured 100 only together
/// with the shared metric labels (BENCHMARKS.md), not on its own. A 20,000-resource list takes 200
/// requests instead of 40.
const LIST_PAGE_SIZE: u32 = 100;

fn list_pages(config: watcher::Config) -> watcher::Config {
    config.page_size(LIST_PAGE_SIZE)
}

/// The main watch's events (before the reflector), slimmed; a deletion drops the resource's metric series
/// and what parking holds for it.
fn resource_events(
    ctx: &Context,
    crs: Api<CachedCertificate>,
) -> impl Stream<Item = Result<watcher::Event<CachedCertificate>, watcher::Error>> + Send + 'static
{
    // A deleted resource's metric series go when its deletion is watched (or found by a re-list).
    let forget = {
        let metrics = ctx.metrics.clone();
        let parking = ctx.parking.clone();
        move |namespace: Option<&str>, name: &str| {
            metrics.forget_certificate(namespace.unwrap_or_default(), name);
            let mut object = ObjectRef::new(name);
            object.namespace = namespace.map(str::to_string);
            parking.forget(&object);
            debug!(namespace, name, "resource deleted");
        }
    };
    watches::reporting_deletions(
        watches::reporting_health(
            // Paginated initial lists: an unpaginated one (`any_semantic`, served whole from the API
            // server's cache) holds every object twice, as JSON and decoded, at the peak.
            watches::backing_off(watcher(crs, list_pages(watcher::Config::default())).modify(slim)),
            ctx.readiness.clone(),
        ),
        forget,
    )
}

/// Runs one controller over one scope (`namespace`, or the whole cluster) until `shutdown` resolves.
async fn run_scope(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (crs, secrets) = match &namespace {
        Some(namespace) => (
            Api::<CachedCertificate>::namespaced(ctx.client.clone(), namespace),
            Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), namespace),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let config = kube_controller::Config::default().concurrency(concurrency);
    // The main watch, built here rather than by `Controller::new` so that it gets its own short backoff
    // and reports its health (see `watches`).
    let (store, writer) = reflector::store();
    // The store takes every event; the echoes of this replica's status patches trigger nothing.
    let resources = echoes::not_echoes(
        resource_events(&ctx, crs).reflect(writer).applied_objects(),
        &ctx.own_writes,
    );
    ctx.register_store(store.clone());
    let known = store.clone();
    // Parked reconciles come back through this stream when their download ends (see `parking`).
    let woken = ctx.parking.subscribe(namespace);
    let controller = Controller::for_stream(resources, store.clone())
        .with_config(config)
        .trigger_backoff(watches::NoSharedBackoff)
        .reconcile_on(woken)
        // Resources whose next refresh is far off wait in the store, not in the scheduler (see `clock`).
        .reconcile_on(clock::triggers(store.clone()));
    let managed = echoes::not_echoes(
        secret_metadata(
            secrets.clone(),
            list_pages(
                watcher::Config::default()
                    .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
            ),
            &ctx.readiness,
        ),
        &ctx.own_writes,
    );
    let labelled_credentials = secret_metadata(
        secrets,
        watcher::Config::default().labels(credentials::CREDENTIALS_LABEL),
        &ctx.readiness,
    );
    let mut controller = controller
        .watches_stream(managed, |secret| owner_of(&secret))
        .watches_stream(labelled_credentials, {
            let store = store.clone();
            let defaults = ctx.defaults.clone();
            move |secret| users_of(&store, &defaults, &secret)
        });
    if let Some(default_secret) = ctx.defaults.secret.clone() {
        // The default credentials Secret is watched by name, label or not.
        let api = Api::<PartialObjectMeta<Secret>>::namespaced(
            ctx.client.clone(),
            &default_secret.namespace,
        );
        let by_name = secret_metadata(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", default_secret.name)),
            &ctx.readiness,
        );
        let defaults = ctx.defaults.clone();
        controller =
            controller.watches_stream(by_name, move |secret| users_of(&store, &defaults, &secret));
    }
    let metrics = ctx.metrics.clone();
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile_cached, reconcile::error_policy, ctx)
        .for_each(|result| {
            after_reconcile(result, &metrics, &known);
            futures::future::ready(())
        })
        .await;
}

type ReconcileResult = Result<
    (ObjectRef<CachedCertificate>, kube_controller::Action),
    kube_controller::Error<reconcile::ReconcileError, watcher::Error>,
>;

/// What the controller reports after each reconcile: a log line, and the metric series of a resource
/// that was deleted (no reconcile runs for it any more).
fn after_reconcile(
    result: ReconcileResult,
    metrics: &crate::telemetry::Metrics,
    known: &Store<CachedCertificate>,
) {
    match result {
        // Deleted while its reconcile ran: the reconcile may have written its series again.
        Ok((object, _)) if known.get(&object).is_none() => {
            let namespace = object.namespace.clone().unwrap_or_default();
            metrics.forget_certificate(&namespace, &object.name);
            debug!(object = %object, "reconciled a resource deleted meanwhile");
        }
        Ok((object, _)) => debug!(object = %object, "reconciled"),
        // A deleted resource: no reconcile runs any more, so its series go here.
        Err(kube_controller::Error::ObjectNotFound(object)) => {
            let namespace = object.namespace.clone().unwrap_or_default();
            metrics.forget_certificate(&namespace, &object.name);
            debug!(object = %object, "resource deleted");
        }
        // Routine after an API server restart: the watch re-lists at once.
        Err(kube_controller::Error::QueueError(watcher::Error::WatchError(status)))
            if status.code == 410 =>
        {
            debug!(error = %status, "watch expired; re-listing");
        }
        Err(err) => warn!(error = %err, "controller error"),
    }
}

/// ClusterTencentCertificate reconciles at once (each reads and writes up to 16 namespaces at a time).
const CLUSTER_CONCURRENCY: u16 = 4;

/// Runs the operator until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait_for_stop = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if options.namespaces.is_empty() {
        // ClusterTencentCertificates write into any namespace: only with cluster-wide access.
        futures::join!(
            run_scope(ctx.clone(), None, options.concurrency, wait_for_stop()),
            crate::cluster::run(ctx, CLUSTER_CONCURRENCY, wait_for_stop()),
        );
    } else {
        debug!("watching chosen namespaces only: ClusterTencentCertificates are not served");
        let scopes = options.namespaces.iter().map(|namespace| {
            run_scope(
                ctx.clone(),
                Some(namespace.clone()),
                options.concurrency,
                wait_for_stop(),
            )
        });
        futures::future::join_all(scopes).await;
    }
    signal.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cr(name: &str, namespace: &str, spec: serde_json::Value) -> CachedCertificate {
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(namespace.into());
        CachedCertificate::from(&cr)
    }

    fn secret(namespace: &str, name: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.namespace = Some(namespace.into());
        secret.metadata.name = Some(name.into());
        secret
    }

    #[test]
    fn the_cache_keeps_what_reconciles_read_only() {
        let mut object = cr("shop", "web", serde_json::json!({"certificateId": "a1"}));
        object.metadata.uid = Some("uid-1".into());
        object.metadata.generation = Some(3);
        object.metadata.labels = Some([("team".to_string(), "web".to_string())].into());
        object.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".repeat(500),
                ),
                (
                    crate::policy::REFRESH_REQUESTED_ANNOTATION.to_string(),
                    "2030-01-01T00:00:00Z".to_string(),
                ),
            ]
            .into(),
        );
        let spec = object.spec.clone();
        slim(&mut object);
        assert_eq!(object.metadata.labels, None);
        let annotations = object.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [crate::policy::REFRESH_REQUESTED_ANNOTATION]
        );
        assert_eq!(object.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(object.metadata.generation, Some(3));
        assert_eq!(object.spec, spec);
    }

    #[test]
    fn the_secret_watches_keep_the_label_that_maps_a_secret_to_its_owner_only() {
        let mut managed = secret("web", "shop-tls");
        managed.metadata.labels = Some(
            [
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (CERTIFICATE_NAME_LABEL.to_string(), "shop".to_string()),
                ("team".to_string(), "web".to_string()),
            ]
            .into(),
        );
        slim_secret(&mut managed);
        let labels = managed.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.keys().collect::<Vec<_>>(), [CERTIFICATE_NAME_LABEL]);
        assert_eq!(
            owner_of(&managed),
            Some(ObjectRef::new("shop").within("web"))
        );
        let mut credentials = secret("web", "tencent");
        credentials.metadata.labels = Some(
            [(
                credentials::CREDENTIALS_LABEL.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        slim_secret(&mut credentials);
        assert_eq!(credentials.metadata.labels, None);
    }

    #[test]
    fn a_keystore_password_secret_maps_to_the_resources_of_its_namespace_that_use_it() {
        let (store, mut writer) = reflector::store();
        let password = |name: &str| serde_json::json!({"name": name, "key": "password"});
        for object in [
            cr(
                "p12",
                "web",
                serde_json::json!({"certificateId": "a1", "keystores": {"pkcs12": {"create": true, "passwordSecretRef": password("ks")}}}),
            ),
            cr(
                "jks",
                "web",
                serde_json::json!({"certificateId": "a1", "credentialsRef": {"name": "tencent"}, "keystores": {"jks": {"create": true, "passwordSecretRef": password("ks")}}}),
            ),
            cr(
                "off",
                "web",
                serde_json::json!({"certificateId": "a1", "keystores": {"jks": {"create": false, "passwordSecretRef": password("ks")}}}),
            ),
            cr(
                "elsewhere",
                "shop",
                serde_json::json!({"certificateId": "a1", "keystores": {"jks": {"create": true, "passwordSecretRef": password("ks")}}}),
            ),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let defaults = DefaultCredentials::default();
        let mut names: Vec<String> = users_of(&store, &defaults, &secret("web", "ks"))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["jks", "p12"]);
        let tencent: Vec<String> = users_of(&store, &defaults, &secret("web", "tencent"))
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(tencent, ["jks"]);
        assert!(users_of(&store, &defaults, &secret("web", "other")).is_empty());
    }
}
