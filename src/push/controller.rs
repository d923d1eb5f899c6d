//! The `TencentCertificatePush` controller: the pushes of a scope (a namespace, or the cluster) and the
//! **metadata** of that scope's Secrets — a Secret cert-manager writes carries no label of ours, so the
//! watch cannot be narrowed by label; only metadata enters memory, never a key. A Secret maps to the
//! pushes of its namespace naming it (`secretName`, `tkeSecretName` or `credentialsRef`).
//!
//! Where the CRD is not installed the controller turns itself off with one log line, so an install that
//! predates the kind keeps working.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tracing::{debug, info, warn};

use super::TencentCertificatePush;
use super::reconcile;
use crate::controller::{Context, watches};

/// Pushes reconciled at once per scope (each makes at most a few Tencent calls per pass).
pub const PUSH_CONCURRENCY: u16 = 4;

/// Whether the TencentCertificatePush CRD is served in this scope (a log line says why not).
async fn crd_installed(resources: &Api<TencentCertificatePush>) -> bool {
    match resources.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            info!(
                "the TencentCertificatePush CRD is not installed: publishing Secrets to Tencent Cloud is off \
                 (kubectl apply -f crds/tencentcertificatepush.yaml turns it on after a restart)"
            );
            false
        }
        Err(err) => {
            warn!(error = %err, "cannot list TencentCertificatePushes: publishing Secrets to Tencent Cloud is off");
            false
        }
    }
}

/// The pushes of `secret`'s namespace that read or write it.
pub fn pushes_naming(
    store: &Store<TencentCertificatePush>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<TencentCertificatePush>> {
    let (Some(namespace), Some(name)) = (secret.namespace(), secret.metadata.name.as_deref())
    else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|push| push.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|push| {
            push.spec.secret_name == name
                || push.spec.tke_secret_name.as_deref() == Some(name)
                || push
                    .spec
                    .credentials_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        })
        .map(|push| ObjectRef::from_obj(push.as_ref()))
        .collect()
}

/// What the Secret watch keeps: the namespace and name that map a Secret to its pushes.
fn slim_secret(secret: &mut PartialObjectMeta<Secret>) {
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = None;
    secret.metadata.owner_references = None;
    secret.metadata.labels = None;
}

/// Runs the push controller over one scope until `shutdown` resolves; returns at once (after a log line)
/// when the CRD is not installed.
pub async fn run_scope(
    ctx: Arc<Context>,
    pushes: Api<TencentCertificatePush>,
    secrets: Api<PartialObjectMeta<Secret>>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    if !crd_installed(&pushes).await {
        return;
    }
    let (store, push_events) = watches::main_watch(pushes, watcher::Config::default());
    let controller = Controller::for_stream(push_events, store.clone())
        .with_config(kube_controller::Config::default().concurrency(concurrency.max(1)))
        .trigger_backoff(watches::NoSharedBackoff);
    let secret_events =
        watches::backing_off(watcher(secrets, watcher::Config::default()).modify(slim_secret))
            .touched_objects();
    controller
        .watches_stream(secret_events, move |secret| pushes_naming(&store, &secret))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled push"),
                Err(kube_controller::Error::ObjectNotFound(object)) => {
                    debug!(object = %object, "push deleted")
                }
                Err(kube_controller::Error::QueueError(watcher::Error::WatchError(status)))
                    if status.code == 410 =>
                {
                    debug!(error = %status, "push watch expired; re-listing");
                }
                Err(err) => warn!(error = %err, "push controller error"),
            }
            futures::future::ready(())
        })
        .await;
}

/// Runs the push controller over `namespaces` (all when empty) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    concurrency: u16,
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
    let client = ctx.client.clone();
    if namespaces.is_empty() {
        run_scope(
            ctx,
            Api::all(client.clone()),
            Api::all(client),
            concurrency,
            wait_for_stop(),
        )
        .await;
    } else {
        let scopes = namespaces.iter().map(|namespace| {
            run_scope(
                ctx.clone(),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                concurrency,
                wait_for_stop(),
            )
        });
        futures::future::join_all(scopes).await;
    }
    signal.abort();
}
