//! Parking (issue 23): a reconcile whose certificate is not in hand does not wait for Tencent's budget on
//! one of the controller's concurrency slots. It registers as a waiter of (credentials, certificate id),
//! makes sure one background download of that key runs, and returns at once; when the download ends, its
//! outcome (the bundle, or the error) is held for every waiter and each is woken through the controller's
//! trigger stream ([`Parking::subscribe`]). Resources whose bundle is in hand never park.
//!
//! Tencent work stays per (credentials, certificate id), never per resource (design.md §2): one download
//! per key however many resources wait for it, and a held outcome is pinned for its waiter (not subject
//! to the bundle cache's TTL or byte bound), so a woken resource never downloads its certificate again.
//! Held outcomes of waiters that never come back (deleted, or their spec changed) go after
//! [`HOLD_FOR`], or at once when the deletion is watched ([`Parking::forget`]). Keys carry the
//! credentials' fingerprint: nothing crosses tenants.
//!
//! A woken waiter also gets back the resolution it parked with ([`ParkedFor`]): resolving again would ask
//! Tencent's listing again once the lookup answers aged during the wait (issue 23 measured 22 extra
//! lookups at 20,000 resources), for an answer the held download already acts on.
//!
//! Parking is on only for the scopes a running controller subscribed to; a reconcile driven without one
//! (tests, tools) keeps the synchronous path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use super::target::Resolved;
use crate::error::SyncError;
use tencent_ssl::TencentError;
use tencent_ssl::bundle::{BundleError, CertBundle};

/// (credentials fingerprint, certificate id).
pub type Key = ([u8; 32], String);
/// A parked resource.
pub type Waiter = ObjectRef<super::cached::CachedCertificate>;

/// How long a held outcome waits for its resource to come back.
pub const HOLD_FOR: Duration = Duration::from_secs(30 * 60);
/// A parked reconcile's safety requeue, should its wake be lost (it parks again if still waiting).
pub const PARKED_REQUEUE: Duration = Duration::from_secs(10 * 60);
/// How often expired held outcomes are swept (on the next park or take).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Why a background download yielded no bundle: delivered to every waiter as its own error.
#[derive(Debug, Clone)]
pub enum Failure {
    Tencent(TencentError),
    Bundle(BundleError),
}

impl From<Failure> for SyncError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Tencent(err) => SyncError::Tencent { err },
            Failure::Bundle(err) => SyncError::Bundle(err),
        }
    }
}

/// What a download came back with.
pub type Outcome = Result<Arc<CertBundle>, Failure>;

/// What a waiter parked with: the spec's generation and the certificate it resolved to. A woken waiter of
/// the same generation and credentials takes its outcome with this resolution, without resolving again.
/// The waiters of a key usually park with equal ones: they share one (see [`Parking::park`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedFor {
    pub generation: Option<i64>,
    pub resolved: Resolved,
}

struct Held {
    key: Key,
    at: Instant,
    parked_for: Arc<ParkedFor>,
    outcome: Outcome,
}

#[derive(Default)]
struct Table {
    /// Downloads running in the background, with the resources waiting for each.
    pending: HashMap<Key, Vec<(Waiter, Arc<ParkedFor>)>>,
    /// Outcomes delivered and not yet taken by their resource.
    held: HashMap<Waiter, Held>,
    /// The bundle of each key's last successful download, for resources whose first reconcile comes
    /// after it: a convergence longer than the bundle cache's TTL (or beyond its byte bound) must not
    /// download an id again (20,000 resources on a busy API server take minutes to reach at all).
    done: HashMap<Key, (Instant, Arc<CertBundle>)>,
    last_prune: Option<Instant>,
}

impl Table {
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(now);
        self.held
            .retain(|_, held| now.saturating_duration_since(held.at) < HOLD_FOR);
        self.done
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < HOLD_FOR);
    }

    fn parked(&self) -> usize {
        self.pending.values().map(Vec::len).sum::<usize>() + self.held.len()
    }
}

/// Where wakes go: one trigger stream per controller scope (`None`: all namespaces).
type Wakers = Vec<(Option<String>, UnboundedSender<Waiter>)>;

/// The waiter and outcome table, and the wakers of the controllers. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Parking {
    table: Arc<Mutex<Table>>,
    wakers: Arc<Mutex<Wakers>>,
}

/// What [`Parking::park`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parked {
    /// No download of the key was running: the caller starts one ([`InFlight`]).
    Start,
    /// Joined the download already running.
    Joined,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Parking {
    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// A trigger stream of woken resources for a controller over `namespace` (`None`: all). Parking is
    /// on for the resources of a subscribed scope only.
    pub fn subscribe(&self, namespace: Option<String>) -> BoxStream<'static, Waiter> {
        let (sender, receiver) = unbounded_channel();
        lock(&self.wakers).push((namespace, sender));
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|waiter| (waiter, receiver))
        })
        .boxed()
    }

    /// Whether a controller would wake `waiter` (a scope covering its namespace is subscribed).
    pub fn enabled_for(&self, waiter: &Waiter) -> bool {
        let mut wakers = lock(&self.wakers);
        wakers.retain(|(_, sender)| !sender.is_closed());
        wakers
            .iter()
            .any(|(namespace, _)| covers(namespace.as_deref(), waiter))
    }

    /// Whether an outcome is held for `waiter` (it was woken and has not come back yet).
    pub fn holds(&self, waiter: &Waiter) -> bool {
        self.table().held.contains_key(waiter)
    }

    /// The outcome held for `waiter` and the resolution it parked with, when it parked under the same
    /// credentials (`fingerprint`) and spec `generation` (taken: a second call finds none). An outcome
    /// held for other credentials or another generation (changed meanwhile) is dropped.
    pub fn take(
        &self,
        waiter: &Waiter,
        fingerprint: &[u8; 32],
        generation: Option<i64>,
    ) -> Option<(Resolved, Outcome)> {
        let mut table = self.table();
        table.prune(Instant::now());
        let held = table.held.remove(waiter)?;
        (held.key.0 == *fingerprint && held.parked_for.generation == generation)
            .then(|| (held.parked_for.resolved.clone(), held.outcome))
    }

    /// The bundle of `key`'s last background download, if younger than `max_age` (and [`HOLD_FOR`]).
    pub fn downloaded(&self, key: &Key, max_age: Duration) -> Option<Arc<CertBundle>> {
        let mut table = self.table();
        let now = Instant::now();
        table.prune(now);
        table
            .done
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < max_age.min(HOLD_FOR))
            .map(|(_, bundle)| bundle.clone())
    }

    /// Registers `waiter` for `key`, with what it resolved (a second park of the same waiter updates it).
    pub fn park(&self, waiter: &Waiter, key: &Key, parked_for: ParkedFor) -> Parked {
        let mut table = self.table();
        table.prune(Instant::now());
        match table.pending.get_mut(key) {
            Some(waiters) => {
                // Thousands of resources may wait at once (issue 23): one copy per key, not per waiter.
                let parked_for = match waiters.first() {
                    Some((_, first)) if **first == parked_for => first.clone(),
                    _ => Arc::new(parked_for),
                };
                match waiters.iter_mut().find(|(w, _)| w == waiter) {
                    Some((_, theirs)) => *theirs = parked_for,
                    None => waiters.push((waiter.clone(), parked_for)),
                }
                Parked::Joined
            }
            None => {
                table
                    .pending
                    .insert(key.clone(), vec![(waiter.clone(), Arc::new(parked_for))]);
                Parked::Start
            }
        }
    }

    /// The download of `key` (after [`Parked::Start`]): complete it with [`InFlight::complete`]; dropped
    /// without (cancelled at the end of the term, or a panic), its waiters stay parked until their
    /// safety requeue and the next park starts a new download.
    pub fn in_flight(&self, key: Key) -> InFlight {
        InFlight {
            parking: self.clone(),
            key: Some(key),
        }
    }

    fn complete(&self, key: &Key, outcome: Outcome) {
        let now = Instant::now();
        let waiters = {
            let mut table = self.table();
            let waiters = table.pending.remove(key).unwrap_or_default();
            if let Ok(bundle) = &outcome {
                table.done.insert(key.clone(), (now, bundle.clone()));
            }
            for (waiter, parked_for) in &waiters {
                table.held.insert(
                    waiter.clone(),
                    Held {
                        key: key.clone(),
                        at: now,
                        parked_for: parked_for.clone(),
                        outcome: outcome.clone(),
                    },
                );
            }
            waiters
        };
        let wakers = lock(&self.wakers);
        for (waiter, _) in waiters {
            for (namespace, sender) in wakers.iter() {
                if covers(namespace.as_deref(), &waiter) {
                    // A closed stream: that controller stopped; the outcome times out.
                    let _ = sender.send(waiter.clone());
                }
            }
        }
    }

    fn abandon(&self, key: &Key) {
        self.table().pending.remove(key);
    }

    /// Drops what is held or pending for a deleted resource.
    pub fn forget(&self, waiter: &Waiter) {
        let mut table = self.table();
        table.held.remove(waiter);
        for waiters in table.pending.values_mut() {
            waiters.retain(|(w, _)| w != waiter);
        }
    }

    /// Resources parked: waiting for a download, or woken and not back yet.
    pub fn parked(&self) -> usize {
        self.table().parked()
    }
}

fn covers(namespace: Option<&str>, waiter: &Waiter) -> bool {
    namespace.is_none_or(|namespace| waiter.namespace.as_deref() == Some(namespace))
}

/// One background download's completion handle (see [`Parking::in_flight`]).
pub struct InFlight {
    parking: Parking,
    key: Option<Key>,
}

impl InFlight {
    /// Holds `outcome` for every waiter of the key and wakes them.
    pub fn complete(mut self, outcome: Outcome) {
        if let Some(key) = self.key.take() {
            self.parking.complete(&key, outcome);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.parking.abandon(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(namespace: &str, name: &str) -> Waiter {
        ObjectRef::new(name).within(namespace)
    }

    fn key(tenant: u8, id: &str) -> Key {
        ([tenant; 32], id.to_string())
    }

    fn bundle() -> Arc<CertBundle> {
        crate::controller::bundles::tests::bundle(5)
    }

    /// What a waiter of `key` parks with: generation 1, resolved to the key's id.
    fn parked_for(key: &Key) -> ParkedFor {
        ParkedFor {
            generation: Some(1),
            resolved: Resolved {
                id: key.1.clone(),
                chain: vec![key.1.clone()],
                note: None,
                listed: None,
            },
        }
    }

    /// Parks `waiter` for `key` with [`parked_for`] it.
    fn park(parking: &Parking, waiter: &Waiter, key: &Key) -> Parked {
        parking.park(waiter, key, parked_for(key))
    }

    /// The outcome held for `waiter` at generation 1 under `key`'s credentials.
    fn take(parking: &Parking, waiter: &Waiter, key: &Key) -> Option<Outcome> {
        parking
            .take(waiter, &key.0, Some(1))
            .map(|(resolved, outcome)| {
                assert_eq!(resolved.id, key.1, "the resolution it parked with");
                outcome
            })
    }

    #[tokio::test(start_paused = true)]
    async fn one_download_per_key_and_every_waiter_is_woken_with_its_outcome() {
        let parking = Parking::default();
        let mut woken = parking.subscribe(None);
        let (a, b) = (waiter("web", "a"), waiter("shop", "b"));
        assert!(parking.enabled_for(&a));
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Start);
        assert_eq!(park(&parking, &b, &key(1, "id1")), Parked::Joined);
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Joined, "again");
        assert_eq!(parking.parked(), 2);
        assert!(
            take(&parking, &a, &key(1, "id1")).is_none(),
            "still running"
        );
        parking.in_flight(key(1, "id1")).complete(Ok(bundle()));
        assert_eq!(woken.next().await, Some(a.clone()));
        assert_eq!(woken.next().await, Some(b.clone()));
        // Pinned: long after the bundle cache's TTL, and whatever its byte bound.
        tokio::time::advance(Duration::from_secs(20 * 60)).await;
        assert!(matches!(take(&parking, &a, &key(1, "id1")), Some(Ok(_))));
        assert!(take(&parking, &a, &key(1, "id1")).is_none(), "taken once");
        assert!(matches!(take(&parking, &b, &key(1, "id1")), Some(Ok(_))));
        assert_eq!(parking.parked(), 0);
        // The next park of the key starts a new download.
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_resource_takes_the_last_download_of_its_key_until_the_hold_times_out() {
        let parking = Parking::default();
        let a = waiter("web", "a");
        park(&parking, &a, &key(1, "id1"));
        parking.in_flight(key(1, "id1")).complete(Ok(bundle()));
        // Past the bundle cache's TTL: a resource reconciled for the first time now does not download.
        tokio::time::advance(Duration::from_secs(10 * 60)).await;
        assert!(parking.downloaded(&key(1, "id1"), Duration::MAX).is_some());
        assert!(
            parking.downloaded(&key(2, "id1"), Duration::MAX).is_none(),
            "tenant"
        );
        assert!(
            parking
                .downloaded(&key(1, "id1"), Duration::from_secs(60))
                .is_none(),
            "older than asked"
        );
        assert!(parking.downloaded(&key(1, "id1"), Duration::ZERO).is_none());
        tokio::time::advance(HOLD_FOR).await;
        assert!(parking.downloaded(&key(1, "id1"), Duration::MAX).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn tenants_do_not_share_downloads_or_outcomes() {
        let parking = Parking::default();
        let (a, b) = (waiter("web", "a"), waiter("web", "b"));
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Start);
        assert_eq!(
            park(&parking, &b, &key(2, "id1")),
            Parked::Start,
            "other credentials"
        );
        parking.in_flight(key(1, "id1")).complete(Ok(bundle()));
        assert!(take(&parking, &b, &key(2, "id1")).is_none());
        assert!(
            take(&parking, &a, &key(2, "id1")).is_none(),
            "held for other credentials: dropped"
        );
        assert!(take(&parking, &a, &key(1, "id1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_waiter_gets_its_resolution_back_unless_its_spec_changed() {
        let parking = Parking::default();
        let (a, b) = (waiter("web", "a"), waiter("web", "b"));
        let mut followed = parked_for(&key(1, "renewed"));
        followed.resolved.chain = vec!["spec-id".into(), "renewed".into()];
        assert!(!parking.holds(&a));
        parking.park(&a, &key(1, "renewed"), followed.clone());
        parking.park(&b, &key(1, "renewed"), followed);
        {
            let table = parking.table();
            let waiters = &table.pending[&key(1, "renewed")];
            assert!(
                Arc::ptr_eq(&waiters[0].1, &waiters[1].1),
                "one copy per key"
            );
        }
        parking.in_flight(key(1, "renewed")).complete(Ok(bundle()));
        assert!(parking.holds(&a));
        let (resolved, outcome) = parking.take(&a, &[1; 32], Some(1)).expect("held");
        assert_eq!(resolved.chain, ["spec-id", "renewed"]);
        assert!(outcome.is_ok());
        assert!(!parking.holds(&a), "taken");
        // b's spec changed while it waited (generation 2): what it parked for no longer applies.
        assert!(parking.take(&b, &[1; 32], Some(2)).is_none());
        assert!(!parking.holds(&b), "dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_delivered_to_every_waiter() {
        let parking = Parking::default();
        let waiters: Vec<Waiter> = (0..3).map(|i| waiter("web", &format!("r{i}"))).collect();
        for w in &waiters {
            park(&parking, w, &key(1, "gone"));
        }
        let failure = Failure::Tencent(TencentError::Api {
            action: "DownloadCertificate".into(),
            code: "FailedOperation.CertificateNotFound".into(),
            message: "no such certificate".into(),
            request_id: "req-1".into(),
        });
        parking.in_flight(key(1, "gone")).complete(Err(failure));
        for w in &waiters {
            let Some(Err(failure)) = take(&parking, w, &key(1, "gone")) else {
                panic!("{w} got no failure");
            };
            assert!(matches!(
                SyncError::from(failure),
                SyncError::Tencent { .. }
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_outcomes_time_out_and_deleted_waiters_are_forgotten() {
        let parking = Parking::default();
        let (a, b, c) = (waiter("web", "a"), waiter("web", "b"), waiter("web", "c"));
        for w in [&a, &b, &c] {
            park(&parking, w, &key(1, "id1"));
        }
        parking.forget(&c);
        parking.in_flight(key(1, "id1")).complete(Ok(bundle()));
        assert_eq!(parking.parked(), 2, "c was deleted while it waited");
        parking.forget(&b);
        assert_eq!(parking.parked(), 1);
        tokio::time::advance(HOLD_FOR + PRUNE_EVERY).await;
        assert!(take(&parking, &a, &key(1, "id1")).is_none(), "timed out");
        assert_eq!(parking.parked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_download_lets_the_next_park_start_another() {
        let parking = Parking::default();
        let a = waiter("web", "a");
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Start);
        drop(parking.in_flight(key(1, "id1")));
        assert_eq!(park(&parking, &a, &key(1, "id1")), Parked::Start);
    }

    #[tokio::test]
    async fn wakes_go_to_the_scope_of_the_resource_only() {
        let parking = Parking::default();
        let mut web = parking.subscribe(Some("web".into()));
        let shop_waiter = waiter("shop", "b");
        assert!(!parking.enabled_for(&shop_waiter), "no controller for shop");
        let mut shop = parking.subscribe(Some("shop".into()));
        let a = waiter("web", "a");
        park(&parking, &a, &key(1, "id1"));
        park(&parking, &shop_waiter, &key(1, "id1"));
        parking.in_flight(key(1, "id1")).complete(Ok(bundle()));
        assert_eq!(web.next().await, Some(a));
        assert_eq!(shop.next().await, Some(shop_waiter));
    }
}
