//! A Lease elector over `coordination.k8s.io/v1` that feeds the [`Fence`]. Every Lease write is a merge
//! patch conditional on the resourceVersion just read (or a create): of two replicas racing, one wins and
//! the other gets a conflict. Terms are timed by [`Timing`] on the local monotonic clock.
//!
//! It replaces kube-lease-manager, which kept `leading` true through failed renewals (an error only
//! backed off and retried) and judged expiry from the holder's `renewTime`, another replica's wall clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::clock::{Sighting, Timing};
use super::fence::Fence;

/// What this replica last wrote to the Lease while it held it.
#[derive(Debug, Clone)]
struct Held {
    /// The resourceVersion our last write produced: the precondition of the next.
    version: String,
}

pub(crate) struct Elector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    fence: Fence,
    held: Option<Held>,
    sighting: Option<Sighting>,
}

/// A Lease write: the body, and whether it starts a new holder's term.
enum Claim {
    Create,
    /// Take over a Lease that is free or expired (on our clock).
    Acquire {
        version: String,
        transitions: i32,
    },
    /// Extend our own term.
    Renew {
        version: String,
    },
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub(crate) fn new(
        leases: Api<Lease>,
        name: &str,
        identity: &str,
        timing: Timing,
        fence: Fence,
    ) -> Self {
        Self {
            leases,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            fence,
            held: None,
            sighting: None,
        }
    }

    /// Elects until `stop`, then closes the fence and releases the Lease if this replica holds it.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.step().await;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        self.fence.close();
        self.release().await;
    }

    /// One look at the Lease (and a write when due); returns when to look again.
    async fn step(&mut self) -> Instant {
        let now = Instant::now();
        let retry = now + self.timing.retry_every();
        // Leading: renew with the version we wrote, without reading first.
        if let Some(held) = &self.held
            && self.fence.allows_writes()
        {
            let version = held.version.clone();
            return match self.claim(Claim::Renew { version }).await {
                Some(renew_at) => renew_at,
                None => retry,
            };
        }
        let lease = match tokio::time::timeout(
            self.timing.request_timeout(),
            self.leases.get_opt(&self.name),
        )
        .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(err)) => {
                warn!(error = %err, lease = %self.name, "cannot read the leader Lease");
                return retry;
            }
            Err(_) => {
                warn!(lease = %self.name, "timed out reading the leader Lease");
                return retry;
            }
        };
        let Some(lease) = lease else {
            return self.claim(Claim::Create).await.unwrap_or(retry);
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        match spec.holder_identity.filter(|h| !h.is_empty()) {
            // Ours (a term that ran out, or a restart under the same name): nobody else wrote since, so
            // taking it back is as safe as any conditional write.
            Some(holder) if holder == self.identity => {
                self.claim(Claim::Renew { version }).await.unwrap_or(retry)
            }
            None => self
                .claim(Claim::Acquire {
                    version,
                    transitions,
                })
                .await
                .unwrap_or(retry),
            Some(holder) => {
                self.lost_to(&holder);
                let lasts = spec
                    .lease_duration_seconds
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(s.unsigned_abs().into()))
                    .unwrap_or(self.timing.duration());
                let sighting = Sighting::after(self.sighting.take(), &version, lasts, now);
                if sighting.expired(now) {
                    info!(holder = %holder, "the leader Lease was not renewed for its duration; taking over");
                    return self
                        .claim(Claim::Acquire {
                            version,
                            transitions,
                        })
                        .await
                        .unwrap_or(retry);
                }
                let next = sighting.expires_at().min(retry);
                self.sighting = Some(sighting);
                next
            }
        }
    }

    /// Someone else holds the Lease: if we still thought we led, stop now.
    fn lost_to(&mut self, holder: &str) {
        if self.held.take().is_some() || self.fence.allows_writes() {
            warn!(holder, "another replica holds the leader Lease");
        }
        self.fence.close();
    }

    /// Writes `claim`; on success grants the term it won and returns when to renew it.
    async fn claim(&mut self, claim: Claim) -> Option<Instant> {
        let sent = Instant::now();
        // A leader's renewal may take until the end of its term (a slow API server is no reason to give
        // up early); past that the answer no longer matters. Others are bounded as reads are.
        let deadline = match self.fence.check() {
            Ok(Some(term_ends)) => term_ends,
            _ => sent + self.timing.request_timeout(),
        };
        let renewing = matches!(claim, Claim::Renew { .. });
        let written = tokio::time::timeout_at(deadline, self.write(claim)).await;
        match written {
            Ok(Ok(lease)) => {
                self.sighting = None;
                let was_leading = self.fence.allows_writes();
                self.held = Some(Held {
                    version: lease.metadata.resource_version.unwrap_or_default(),
                });
                self.fence.grant_until(self.timing.term_ends(sent));
                if !was_leading {
                    info!(identity = %self.identity, lease = %self.name, "acquired the leader Lease");
                } else {
                    debug!(identity = %self.identity, "renewed the leader Lease");
                }
                Some(self.timing.renew_at(sent))
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                // Someone else wrote the Lease since we read it (or created it first).
                if renewing || self.held.is_some() {
                    warn!(identity = %self.identity, "the leader Lease changed under us; stopping");
                }
                self.held = None;
                self.fence.close();
                None
            }
            Ok(Err(err)) => {
                warn!(error = %err, lease = %self.name, renewing, "cannot write the leader Lease");
                None
            }
            Err(_) => {
                warn!(lease = %self.name, renewing, "timed out writing the leader Lease");
                None
            }
        }
    }

    async fn write(&self, claim: Claim) -> Result<Lease, kube::Error> {
        let duration_secs = i32::try_from(self.timing.duration().as_secs()).unwrap_or(i32::MAX);
        let now = now_micro();
        match claim {
            Claim::Create => {
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name},
                    "spec": {
                        "holderIdentity": self.identity, "leaseDurationSeconds": duration_secs,
                        "acquireTime": now, "renewTime": now, "leaseTransitions": 0,
                    },
                }))
                .map_err(kube::Error::SerdeError)?;
                self.leases.create(&PostParams::default(), &lease).await
            }
            Claim::Acquire {
                version,
                transitions,
            } => {
                let patch = json!({
                    "metadata": {"resourceVersion": version},
                    "spec": {
                        "holderIdentity": self.identity, "leaseDurationSeconds": duration_secs,
                        "acquireTime": now, "renewTime": now,
                        "leaseTransitions": transitions.saturating_add(1),
                    },
                });
                self.patch(&patch).await
            }
            Claim::Renew { version } => {
                let patch = json!({
                    "metadata": {"resourceVersion": version},
                    "spec": {
                        "holderIdentity": self.identity, "leaseDurationSeconds": duration_secs,
                        "renewTime": now,
                    },
                });
                self.patch(&patch).await
            }
        }
    }

    async fn patch(&self, patch: &serde_json::Value) -> Result<Lease, kube::Error> {
        self.leases
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }

    /// Frees the Lease for a standby at once (instead of after its duration), if we hold it still.
    async fn release(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let patch = json!({
            "metadata": {"resourceVersion": held.version},
            "spec": {"holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": now_micro()},
        });
        match tokio::time::timeout(self.timing.request_timeout(), self.patch(&patch)).await {
            Ok(Ok(_)) => info!(lease = %self.name, "released the leader Lease"),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                debug!("the leader Lease changed since our last renewal; nothing to release");
            }
            Ok(Err(err)) => warn!(error = %err, "could not release the leader Lease"),
            Err(_) => warn!("timed out releasing the leader Lease"),
        }
    }
}
