//! Leader election over a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the leader reconciles;
//! a leader that loses the Lease stops at once and stands by; shutdown releases the Lease so a standby
//! takes over without waiting for it to expire.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::telemetry::{Metrics, Readiness};

#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    /// This instance's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal: the longest a dead leader blocks a standby.
    pub lease_duration: Duration,
    /// The leader renews this long before its Lease would expire.
    pub renew_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot set up leader election on Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("the leader election task stopped unexpectedly")]
    Stopped,
}

/// Resolves when `shutdown` becomes true (or its sender is gone).
pub async fn shutdown_requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs `work` whenever this instance leads, until `shutdown`. `work` receives a future that resolves when
/// it must stop (leadership lost or shutdown) and should return once it has.
pub async fn run_while_leading<W>(
    client: kube::Client,
    election: LeaderElection,
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    work: W,
) -> Result<(), LeaderError>
where
    W: Fn(BoxFuture<'static, ()>) -> BoxFuture<'static, ()>,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration.as_secs().max(2))
        .with_grace(election.renew_grace.as_secs().max(1))
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: election.namespace.clone(),
            name: election.lease_name.clone(),
            source,
        })?;
    let (mut leading, task) = manager.watch().await;
    // Standing by healthily: the Lease API answers and the election runs.
    readiness.set(true);
    info!(lease = %election.lease_name, identity = %election.identity, "leader election started; standing by");
    let outcome = loop {
        tokio::select! {
            biased;
            _ = shutdown_requested(shutdown.clone()) => break Ok(()),
            became = leading.wait_for(|l| *l) => {
                if became.is_err() {
                    break Err(LeaderError::Stopped);
                }
            }
        }
        info!(identity = %election.identity, "became the leader; reconciling");
        metrics.set_leader(true);
        let mut lost = leading.clone();
        let stop_shutdown = shutdown.clone();
        let stop = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = shutdown_requested(stop_shutdown) => {}
            }
        }
        .boxed();
        work(stop).await;
        metrics.set_leader(false);
        if *shutdown.borrow() {
            break Ok(());
        }
        warn!(identity = %election.identity, "lost the leader Lease; stopped reconciling and standing by");
    };
    readiness.set(false);
    // Closing the channel makes the manager release the Lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => info!("released the leader Lease"),
        Ok(Ok(Err(err))) => warn!(error = %err, "could not release the leader Lease"),
        Ok(Err(err)) => warn!(error = %err, "leader election task failed"),
        Err(_) => warn!("timed out releasing the leader Lease"),
    }
    outcome
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
