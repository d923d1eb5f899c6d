//! `ClusterTencentCertificate`: one certificate in many namespaces (the model is ESO's
//! ClusterExternalSecret, but the Secrets are written directly: no per-namespace resource a namespace
//! owner could edit to reach the cluster's credentials).
//!
//! Watches: the cluster resources; namespaces (metadata only), so a namespace that is created or
//! relabelled gets the Secret at once; and the Secrets the cluster resources wrote (metadata only), so a
//! deleted or edited one is repaired.

pub mod act;
pub mod crd;
pub mod plan;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tracing::{debug, info, warn};

use crate::controller::{Context, watches};
pub use crd::ClusterTencentCertificate;
use plan::{CLUSTER_CERTIFICATE_NAME_LABEL, HeldCertificate, NamespaceInfo, Verified};

/// Shared by the cluster resources' reconciles.
pub struct ClusterContext {
    pub base: Arc<Context>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Per cluster resource name: what this process remembers of it.
    memory: Mutex<HashMap<String, Memory>>,
}

/// What this process remembers of one cluster resource: the certificate it last wrote (downloaded, or
/// checked against the status fingerprint) and, per namespace, the Secret version it last found right.
/// Lost on restart; then the Secrets are read again and only a matching fingerprint is trusted.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    uid: String,
    pub held: Option<HeldCertificate>,
    pub verified: HashMap<String, Verified>,
}

impl ClusterContext {
    /// What is remembered of `cr` (nothing for a new resource of a name seen before).
    pub fn remembered(&self, cr: &ClusterTencentCertificate) -> Memory {
        let uid = cr.uid().unwrap_or_default();
        self.memory()
            .get(&cr.name_any())
            .filter(|m| m.uid == uid)
            .cloned()
            .unwrap_or(Memory {
                uid,
                ..Memory::default()
            })
    }

    pub fn remember(&self, cr: &ClusterTencentCertificate, memory: Memory) {
        self.memory().insert(cr.name_any(), memory);
    }

    fn forget(&self, name: &str) {
        self.memory().remove(name);
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, Memory>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The namespaces `cr` targets now, sorted.
    pub fn targeted_namespaces(&self, cr: &ClusterTencentCertificate) -> Vec<String> {
        let mut names: Vec<String> = self
            .namespaces
            .state()
            .iter()
            .map(|ns| namespace_info(ns))
            .filter(|ns| plan::targets(cr, ns))
            .map(|ns| ns.name)
            .collect();
        names.sort();
        names
    }

    /// Whether the namespace is being deleted (or already gone).
    pub fn terminating(&self, name: &str) -> bool {
        self.namespaces
            .get(&ObjectRef::new(name))
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
    }
}

fn namespace_info(ns: &PartialObjectMeta<Namespace>) -> NamespaceInfo {
    NamespaceInfo {
        name: ns.name_any(),
        labels: ns.labels().clone(),
        terminating: ns.metadata.deletion_timestamp.is_some(),
    }
}

/// Whether the ClusterTencentCertificate CRD is served (a log line says why not).
async fn crd_installed(resources: &Api<ClusterTencentCertificate>) -> bool {
    match resources.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            info!(
                "the ClusterTencentCertificate CRD is not installed: cluster certificates are off"
            );
            false
        }
        Err(err) => {
            warn!(error = %err, "cannot list ClusterTencentCertificates: cluster certificates are off");
            false
        }
    }
}

/// The namespaces (metadata only, without annotations), cached, and their changes.
fn watch_namespaces(
    client: &kube::Client,
) -> (
    Store<PartialObjectMeta<Namespace>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let events = watches::backing_off(watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    ))
    .modify(|ns| {
        ns.metadata.managed_fields = None;
        ns.metadata.annotations = None;
    })
    .reflect(writer)
    .touched_objects();
    (store, events)
}

/// Runs the ClusterTencentCertificate controller until `shutdown` resolves. Returns at once (after a log
/// line) when its CRD is not installed.
pub async fn run(
    base: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = base.client.clone();
    let resources: Api<ClusterTencentCertificate> = Api::all(client.clone());
    if !crd_installed(&resources).await {
        return;
    }
    let (namespace_store, namespace_events) = watch_namespaces(&client);
    let ctx = Arc::new(ClusterContext {
        base: base.clone(),
        namespaces: namespace_store.clone(),
        memory: Mutex::new(HashMap::new()),
    });
    let forget = ctx.clone();

    let (cluster_store, cluster_events) =
        watches::main_watch(resources, watcher::Config::default());
    let controller = Controller::for_stream(cluster_events, cluster_store.clone())
        .with_config(kube_controller::Config::default().concurrency(concurrency))
        .trigger_backoff(watches::NoSharedBackoff);
    let labelled = watches::backing_off(watcher(
        Api::<PartialObjectMeta<Secret>>::all(client),
        watcher::Config::default().labels(CLUSTER_CERTIFICATE_NAME_LABEL),
    ))
    .touched_objects();
    // The namespace cache must be filled before the first reconcile counts targets.
    let ready = namespace_store.clone();
    let metrics = base.metrics.clone();
    controller
        .watches_stream(namespace_events, move |_| {
            // Any namespace change may change any resource's target: the selectors are checked in the
            // reconcile, which is cheap when nothing changed.
            cluster_store
                .state()
                .iter()
                .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(labelled, |secret: PartialObjectMeta<Secret>| {
            secret
                .labels()
                .get(CLUSTER_CERTIFICATE_NAME_LABEL)
                .map(|name| ObjectRef::<ClusterTencentCertificate>::new(name))
        })
        .graceful_shutdown_on(shutdown)
        .run(
            move |cr, ctx: Arc<ClusterContext>| {
                let ready = ready.clone();
                async move {
                    let _ = ready.wait_until_ready().await;
                    reconcile::reconcile(cr, ctx).await
                }
            },
            reconcile::error_policy,
            ctx,
        )
        .for_each(|result| {
            let metrics = metrics.clone();
            let forget = forget.clone();
            async move {
                match result {
                    Ok((object, _)) => debug!(object = %object, "reconciled cluster certificate"),
                    Err(kube_controller::Error::ObjectNotFound(object)) => {
                        metrics.forget_certificate("", &object.name);
                        forget.forget(&object.name);
                        debug!(object = %object, "cluster certificate deleted");
                    }
                    Err(err) => warn!(error = %err, "cluster certificate controller error"),
                }
            }
        })
        .await;
}
