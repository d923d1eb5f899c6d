//! Leader election and write fencing. Only the leader writes: an elector of our own over a
//! `coordination.k8s.io/v1` Lease ([`elector`]) grants terms timed on the local monotonic clock
//! ([`clock`]) to a shared [`Fence`]; the operator's Kubernetes client refuses every mutating request
//! outside a valid term ([`layer`]), and the controllers stop, dropping queued reconciles, the moment the
//! term ends ([`Fence::lost`], [`Fence::guard`]). Shutdown releases the Lease so that a standby takes over
//! without waiting for it to expire.

pub mod clock;
mod elector;
pub mod fence;
pub mod layer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;
use tracing::{info, warn};

pub use clock::{Timing, TimingError};
pub use fence::{Fence, NotLeader};
pub use layer::{FenceLayer, fenced_client};

use crate::telemetry::{Metrics, Readiness};

#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    /// This instance's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal: the longest a dead leader blocks a standby.
    pub lease_duration: Duration,
    /// The leader renews this long before its Lease would expire (and stops writing half of it before).
    pub renew_grace: Duration,
}

impl LeaderElection {
    /// The timing, refused at start-up when it cannot work (grace not shorter than the duration).
    pub fn timing(&self) -> Result<Timing, TimingError> {
        Timing::new(self.lease_duration, self.renew_grace)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error("cannot set up leader election on Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the leader election task stopped unexpectedly")]
    Stopped,
}

/// Resolves when `shutdown` becomes true (or its sender is gone).
pub async fn shutdown_requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs `work` whenever this instance leads, until `shutdown`. `work` receives a future that resolves when
/// it must stop (leadership lost, the term ran out, or shutdown) and should return once it has.
///
/// `client` is the elector's own, unfenced client; `fence` is the one the operator's client was built
/// with ([`fenced_client`]), so that its writes stop when the term does.
pub async fn run_while_leading<W>(
    client: kube::Client,
    election: LeaderElection,
    fence: Fence,
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    work: W,
) -> Result<(), LeaderError>
where
    W: Fn(BoxFuture<'static, ()>) -> BoxFuture<'static, ()>,
{
    let timing = election.timing()?;
    let leases: Api<Lease> = Api::namespaced(client, &election.namespace);
    // The Lease API must answer (and RBAC allow it) before this replica calls itself ready.
    leases
        .get_opt(&election.lease_name)
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: election.namespace.clone(),
            name: election.lease_name.clone(),
            source,
        })?;
    let elector = elector::Elector::new(
        leases,
        &election.lease_name,
        &election.identity,
        timing,
        fence.clone(),
    );
    let (stop_elector, elector_stopped) = watch::channel(false);
    // Its own task, so that busy reconciles do not delay renewals; it goes when this future does.
    let mut elector = AbortOnDrop(tokio::spawn(elector.run(elector_stopped)));
    readiness.set(true);
    info!(lease = %election.lease_name, identity = %election.identity, "leader election started; standing by");
    let outcome = loop {
        tokio::select! {
            biased;
            () = shutdown_requested(shutdown.clone()) => break Ok(()),
            _ = &mut elector.0 => break Err(LeaderError::Stopped),
            () = fence.leading() => {}
        }
        info!(identity = %election.identity, "became the leader; reconciling");
        metrics.set_leader(true);
        let stop_fence = fence.clone();
        let stop_shutdown = shutdown.clone();
        let stop = async move {
            tokio::select! {
                () = stop_fence.lost() => {}
                () = shutdown_requested(stop_shutdown) => {}
            }
        }
        .boxed();
        work(stop).await;
        metrics.set_leader(false);
        if *shutdown.borrow() {
            break Ok(());
        }
        warn!(identity = %election.identity, "lost the leader Lease or could not renew it in time; stopped reconciling and standing by");
    };
    readiness.set(false);
    // The work has stopped: the elector closes the fence and releases the Lease.
    let _ = stop_elector.send(true);
    if !elector.0.is_finished()
        && tokio::time::timeout(Duration::from_secs(15), &mut elector.0)
            .await
            .is_err()
    {
        warn!("timed out releasing the leader Lease");
    }
    fence.close();
    outcome
}

/// A task that does not outlive its handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` until shutdown, without leader election.
pub async fn run_unelected<F>(
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    work: impl FnOnce(BoxFuture<'static, ()>) -> F,
) where
    F: Future<Output = ()>,
{
    readiness.set(true);
    metrics.set_leader(true);
    work(shutdown_requested(shutdown).boxed()).await;
    metrics.set_leader(false);
    readiness.set(false);
}
