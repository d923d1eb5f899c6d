//! Ingress and Gateway API shims (cert-manager's ingress-shim and gateway-shim, for this operator): an
//! annotated Ingress or Gateway gets one generated TencentCertificate per TLS Secret it names, owned by it;
//! the main controller then serves those like any other. [`plan`] decides (pure); this module reads and
//! writes.
//!
//! Kubernetes work only, per route object: the Tencent side stays per (credentials, certificate id) in the
//! main controller, however many routes name one certificate.

pub mod gateway;
pub mod ingress;
pub mod plan;

use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::controller::watches;
use crate::crd::{DeletionPolicy, TencentCertificate};
use plan::Step;
pub use plan::{
    CERTIFICATE_ID_ANNOTATION, CREDENTIALS_ANNOTATION, DELETION_POLICY_ANNOTATION,
    REFRESH_INTERVAL_ANNOTATION, ROUTE_ANNOTATION, ROUTE_KIND_LABEL, Route, RouteKind,
    SELECT_BY_HOST_ANNOTATION,
};

/// The field manager of generated TencentCertificates (server-side apply).
pub const FIELD_MANAGER: &str = "tencent-cert-operator-shim";

/// How soon a route with a conflict or a bad annotation is looked at again without a change (a resource
/// written by hand is not watched, so its removal is noticed this way).
pub const RECHECK: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("Kubernetes API error while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// Leadership ended during the sync: it was cancelled, or a write was refused.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl ShimError {
    /// Stopped because this replica does not lead: not a failure to retry or warn about.
    fn not_leader(&self) -> bool {
        match self {
            Self::NotLeader(_) => true,
            Self::Kube { source, .. } => crate::leader::fence::refused(source),
        }
    }
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ShimError {
    let action = action.into();
    move |source| ShimError::Kube { action, source }
}

#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// Namespaces to watch; empty means all (as the main controller).
    pub namespaces: Vec<String>,
    pub ingress: bool,
    pub gateway: bool,
    /// How often to look for the Gateway API (discovery) until it is installed.
    pub gateway_check_interval: Duration,
    /// Writes stop, and syncs are cancelled, when the leader's term ends (the client must be built with
    /// the same fence).
    pub fence: crate::leader::Fence,
}

impl Default for ShimOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            ingress: true,
            gateway: true,
            gateway_check_interval: Duration::from_secs(60),
            fence: crate::leader::Fence::unbounded(),
        }
    }
}

/// Shared by the reconciles of one kind of route in one scope.
struct ShimContext<K> {
    client: Client,
    /// One recorder for the shim: repeated Warnings (a conflict looked at every [`RECHECK`]) fold into one
    /// event series instead of piling up.
    recorder: Recorder,
    /// The TencentCertificates generated from this kind of route (by label), without status.
    generated: Store<TencentCertificate>,
    route_of: fn(&K) -> Option<Route>,
    fence: crate::leader::Fence,
}

fn reference_of(route: &Route) -> ObjectReference {
    ObjectReference {
        api_version: Some(route.kind.api_version().to_string()),
        kind: Some(route.kind.kind().to_string()),
        name: Some(route.name.clone()),
        namespace: Some(route.namespace.clone()),
        uid: Some(route.uid.clone()),
        ..ObjectReference::default()
    }
}

fn certificate_reference(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/v1alpha1", crate::crd::GROUP)),
        kind: Some("TencentCertificate".to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    }
}

/// Publishes an event on the route; a failure to publish is logged, never fatal.
async fn publish(
    recorder: &Recorder,
    route: &Route,
    type_: EventType,
    reason: &str,
    action: String,
    note: String,
    certificate: Option<&str>,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action,
        secondary: certificate.map(|name| certificate_reference(&route.namespace, name)),
    };
    if let Err(err) = recorder
        .publish(&crate::message::fit_event(event), &reference_of(route))
        .await
    {
        if crate::leader::fence::refused(&err) {
            debug!(reason, "not publishing an event: not the leader");
            return;
        }
        warn!(error = %err, reason, "cannot publish event");
    }
}

/// An API answer that says the object itself is refused (invalid, forbidden): reported on the route
/// rather than retried in a loop.
fn is_refusal(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422))
}

/// Brings the route's generated TencentCertificates in line with it: gather what exists, plan (pure,
/// [`plan::plan`]), carry out each step.
async fn sync<K>(route: &Route, ctx: &ShimContext<K>) -> Result<Action, ShimError> {
    let api: Api<TencentCertificate> = Api::namespaced(ctx.client.clone(), &route.namespace);
    let existing = gather(route, ctx, &api).await?;
    let plan = plan::plan(route, &existing);
    if !plan.problems.is_empty() {
        report_problems(route, ctx, &plan.problems.join("; ")).await;
    }
    for step in &plan.steps {
        match step {
            Step::Keep { .. } => {}
            Step::Create(desired) | Step::Update(desired) => {
                let created = matches!(step, Step::Create(_));
                apply(route, ctx, &api, desired, created).await?;
            }
            Step::Delete { name, uid } => {
                let policy = existing
                    .iter()
                    .find(|c| c.name_any() == *name)
                    .map_or(DeletionPolicy::Delete, |c| c.spec.deletion_policy);
                delete(route, ctx, &api, name, uid, policy).await?;
            }
            Step::Conflict { name, owner } => {
                publish(
                    &ctx.recorder,
                    route,
                    EventType::Warning,
                    "CertificateConflict",
                    "Check".to_string(),
                    plan::conflict_message(route, name, owner.as_deref()),
                    Some(name),
                )
                .await;
            }
        }
    }
    Ok(if plan.needs_attention() {
        Action::requeue(RECHECK)
    } else {
        Action::await_change()
    })
}

/// The TencentCertificates the route controls, and any at the names it wants (a resource written by hand
/// may carry one).
async fn gather<K>(
    route: &Route,
    ctx: &ShimContext<K>,
    api: &Api<TencentCertificate>,
) -> Result<Vec<TencentCertificate>, ShimError> {
    let mut existing: Vec<TencentCertificate> = ctx
        .generated
        .state()
        .iter()
        .filter(|c| {
            c.namespace().as_deref() == Some(route.namespace.as_str())
                && plan::controlled_by(c, route)
        })
        .map(|c| (**c).clone())
        .collect();
    for name in plan::wanted_names(route) {
        if existing.iter().any(|c| c.name_any() == name) {
            continue;
        }
        let cached = ctx
            .generated
            .get(&ObjectRef::new(&name).within(&route.namespace));
        let found = match cached {
            Some(c) => Some((*c).clone()),
            // Not generated (or not seen yet): a resource written by hand may carry the name.
            None => api
                .get_opt(&name)
                .await
                .map_err(kube_error(format!("reading TencentCertificate {name}")))?,
        };
        existing.extend(found);
    }
    Ok(existing)
}

/// The route asks for what cannot be served: a warning, one series per distinct note.
async fn report_problems<K>(route: &Route, ctx: &ShimContext<K>, note: &str) {
    // Same note, same series; a different one is an event of its own.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut hasher);
    let action = format!("Check{:08x}", hasher.finish() as u32);
    warn!(route = %route.kind, namespace = %route.namespace, name = %route.name, problem = %note, "route asks for what cannot be served");
    publish(
        &ctx.recorder,
        route,
        EventType::Warning,
        "BadConfig",
        action,
        note.to_string(),
        None,
    )
    .await;
}

/// Creates or updates a generated TencentCertificate (server-side apply); a refusal is told on the route.
async fn apply<K>(
    route: &Route,
    ctx: &ShimContext<K>,
    api: &Api<TencentCertificate>,
    desired: &plan::Desired,
    created: bool,
) -> Result<(), ShimError> {
    let name = desired.certificate.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch(&name, &params, &Patch::Apply(&desired.certificate))
        .await
    {
        Ok(_) => {
            info!(route = %route.kind, namespace = %route.namespace, name = %route.name, certificate = %name, created, "generated TencentCertificate written");
            let (reason, action) = if created {
                ("CreateCertificate", "Create")
            } else {
                ("UpdateCertificate", "Update")
            };
            publish(
                &ctx.recorder,
                route,
                EventType::Normal,
                reason,
                action.to_string(),
                plan::serving_message(route, desired, created),
                Some(&name),
            )
            .await;
        }
        Err(err) if is_refusal(&err) => {
            publish(
                &ctx.recorder,
                route,
                EventType::Warning,
                "CertificateRejected",
                "Apply".to_string(),
                format!(
                    "the API server refused TencentCertificate {name} for Secret {}: {err}",
                    desired.secret_name
                ),
                Some(&name),
            )
            .await;
        }
        Err(err) => {
            return Err(kube_error(format!("writing TencentCertificate {name}"))(
                err,
            ));
        }
    }
    Ok(())
}

/// Deletes a generated TencentCertificate the route no longer wants, exactly that object (by uid).
async fn delete<K>(
    route: &Route,
    ctx: &ShimContext<K>,
    api: &Api<TencentCertificate>,
    name: &str,
    uid: &Option<String>,
    policy: DeletionPolicy,
) -> Result<(), ShimError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        // Gone already, or replaced by another object of that name (not ours to delete).
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => return Ok(()),
        Err(err) => {
            return Err(kube_error(format!("deleting TencentCertificate {name}"))(
                err,
            ));
        }
    }
    info!(route = %route.kind, namespace = %route.namespace, name = %route.name, certificate = %name, "generated TencentCertificate deleted");
    publish(
        &ctx.recorder,
        route,
        EventType::Normal,
        "DeleteCertificate",
        "Delete".to_string(),
        plan::deleted_message(route, name, policy),
        Some(name),
    )
    .await;
    Ok(())
}

async fn reconcile<K>(object: Arc<K>, ctx: Arc<ShimContext<K>>) -> Result<Action, ShimError>
where
    K: Resource,
{
    let Some(route) = (ctx.route_of)(&object) else {
        return Ok(Action::await_change());
    };
    // Being deleted: the garbage collector removes what it owns.
    if object.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Cancelled the moment leadership ends.
    match ctx.fence.guard(sync(&route, &ctx)).await {
        Ok(result) => result,
        Err(not_leader) => Err(not_leader.into()),
    }
}

fn error_policy<K>(_object: Arc<K>, err: &ShimError, _ctx: Arc<ShimContext<K>>) -> Action {
    if err.not_leader() {
        debug!("not the leader: route sync stopped");
    } else {
        warn!(error = %err, "route sync failed; retrying");
    }
    Action::requeue(Duration::from_secs(15) + Duration::from_millis(fastrand::u64(..5000)))
}

/// What the cache keeps of a generated resource: what the plan compares (metadata and spec).
fn slim(certificate: &mut TencentCertificate) {
    certificate.metadata.managed_fields = None;
    certificate.status = None;
}

fn slim_route<K: Resource>(route: &mut K) {
    route.meta_mut().managed_fields = None;
}

/// A generated resource's change wakes its route, and every other route of its namespace naming its
/// Secret: one that lost a conflict to it takes over once it is gone.
fn routes_to_wake<K>(
    child: &TencentCertificate,
    kind: RouteKind,
    route_of: fn(&K) -> Option<Route>,
    routes: &Store<K>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let Some(namespace) = child.namespace() else {
        return Vec::new();
    };
    let name = child.name_any();
    let mut wake: Vec<ObjectRef<K>> = child
        .owner_references()
        .iter()
        .filter(|o| o.controller == Some(true) && o.kind == kind.kind())
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect();
    wake.extend(
        routes
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|r| {
                route_of(r).is_some_and(|route| route.tls.iter().any(|t| t.secret_name == name))
            })
            .map(|r| ObjectRef::from_obj(r.as_ref())),
    );
    wake
}

/// One controller: routes of kind `kind` in `routes`, and the TencentCertificates generated from them.
async fn run_kind<K>(
    client: Client,
    routes: Api<K>,
    generated: Api<TencentCertificate>,
    kind: RouteKind,
    route_of: fn(&K) -> Option<Route>,
    fence: crate::leader::Fence,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let children = watches::backing_off(
        watcher(
            generated,
            watcher::Config::default().labels(&format!("{ROUTE_KIND_LABEL}={kind}")),
        )
        .modify(slim),
    )
    .reflect(writer)
    .touched_objects();
    let (route_store, route_writer) = reflector::store();
    let route_events =
        watches::backing_off(watcher(routes, watcher::Config::default()).modify(slim_route::<K>))
            .reflect(route_writer)
            .applied_objects();
    let ctx = Arc::new(ShimContext {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "tencent-cert-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client,
        generated: store,
        route_of,
        fence,
    });
    let mapper = {
        let routes = route_store.clone();
        move |child: TencentCertificate| routes_to_wake(&child, kind, route_of, &routes)
    };
    Controller::for_stream(route_events, route_store)
        .watches_stream(children, mapper)
        .trigger_backoff(watches::NoSharedBackoff)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(%object, "route synced"),
                Err(err) => debug!(error = %err, "route controller"),
            }
        })
        .await;
}

/// Whether the API server serves `gateways` in `gateway.networking.k8s.io/v1` (discovery, which every
/// authenticated client may read).
pub async fn gateway_api_installed(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources(&format!("{}/{}", gateway::GROUP, gateway::VERSION))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == gateway::PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Waits until the Gateway API is served, looking every `every`; `false` if `stopped` first.
async fn wait_for_gateway_api(
    client: &Client,
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut announced = false;
    loop {
        match gateway_api_installed(client).await {
            Ok(true) => {
                info!(
                    "Gateway API (gateway.networking.k8s.io/v1 gateways) found: watching Gateways"
                );
                return true;
            }
            Ok(false) if !announced => {
                info!(
                    every = ?every,
                    "Gateway API not installed: not watching Gateways; looking again periodically"
                );
                announced = true;
            }
            Ok(false) => debug!("Gateway API still not installed"),
            Err(err) => warn!(error = %err, "cannot look up the Gateway API; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return false,
        }
    }
}

fn scopes<K>(client: &Client, namespaces: &[String]) -> Vec<(Api<K>, Api<TencentCertificate>)>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    if namespaces.is_empty() {
        vec![(Api::all(client.clone()), Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    }
}

/// Runs the enabled shims until `shutdown` resolves. The Gateway shim starts once the Gateway API is
/// installed (at start-up or later).
pub async fn run(
    client: Client,
    options: ShimOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if !options.ingress && !options.gateway {
        shutdown.await;
        return;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait_for_stop = {
        let stopped = stopped.clone();
        move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        }
    };
    let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    if options.ingress {
        info!(namespaces = ?options.namespaces, "watching Ingresses for tencentcert.io annotations");
        for (routes, generated) in scopes::<Ingress>(&client, &options.namespaces) {
            tasks.push(Box::pin(run_kind(
                client.clone(),
                routes,
                generated,
                RouteKind::Ingress,
                ingress::route_of,
                options.fence.clone(),
                wait_for_stop(),
            )));
        }
    }
    if options.gateway {
        let client = client.clone();
        let namespaces = options.namespaces.clone();
        let every = options.gateway_check_interval;
        let stopped = stopped.clone();
        let wait_for_stop = wait_for_stop.clone();
        let fence = options.fence.clone();
        tasks.push(Box::pin(async move {
            if !wait_for_gateway_api(&client, every, stopped).await {
                return;
            }
            let runs = scopes::<gateway::Gateway>(&client, &namespaces)
                .into_iter()
                .map(|(routes, generated)| {
                    run_kind(
                        client.clone(),
                        routes,
                        generated,
                        RouteKind::Gateway,
                        gateway::route_of,
                        fence.clone(),
                        wait_for_stop(),
                    )
                });
            futures::future::join_all(runs).await;
        }));
    }
    futures::future::join_all(tasks).await;
    signal.abort();
}
