//! The refresh clock: brings a resource back when the `nextSyncTime` of its stored status comes, instead of
//! one requeue per resource in kube-runtime's scheduler. A scheduled requeue costs ~760 B per resource for
//! as long as it waits (the request twice, in the delay queue's slab and in its map, each with name,
//! namespace, uid and resourceVersion strings: issue 23's heap profile), and after a first sync every
//! resource waits for its next refresh. The clock reads the instants from the reflector's store, which
//! holds the statuses anyway, so a waiting resource costs nothing more.
//!
//! Short waits stay in the scheduler ([`action`]): retries, parked reconciles, deferred refresh requests,
//! renewal polls, refresh intervals up to [`HORIZON`], and an expiry that comes before the next sync. Only
//! a wait that is exactly "until `nextSyncTime`" and longer than [`HORIZON`] is left to the clock, which
//! triggers the resource within [`GRACE`] + [`TICK`] after that instant (15 s at most against a wait of
//! at least 5 minutes).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::debug;

use super::cached::CachedCertificate;

/// Requeues longer than this (and due at `nextSyncTime`) are the clock's.
pub const HORIZON: Duration = Duration::from_secs(300);
/// How often the clock reads the store.
pub const TICK: Duration = Duration::from_secs(5);
/// How long past `nextSyncTime` the clock waits before it triggers: a resource on a short requeue (a
/// retry at its `nextSyncTime`) is the scheduler's, and has a new `nextSyncTime` by then.
pub const GRACE: Duration = Duration::from_secs(10);
/// A resource triggered for an instant and still due this long after is triggered again (its reconcile
/// was lost, e.g. cancelled when leadership moved, or it parked and its wake was lost).
pub const RETRIGGER: Duration = Duration::from_secs(300);

/// How a reconcile that wants to come back after `requeue` is brought back (pure): nothing (the clock)
/// when the wait is longer than [`HORIZON`] and ends at the status's `next_sync` (the instant the clock
/// reads); else kube-runtime's scheduler.
pub fn action(requeue: Duration, next_sync: Option<&str>, now: jiff::Timestamp) -> Action {
    if requeue > HORIZON && ends_at(requeue, next_sync, now) {
        Action::await_change()
    } else {
        Action::requeue(requeue)
    }
}

/// Whether a wait of `requeue` from `now` ends at `next_sync` (to the second: statuses hold whole seconds).
fn ends_at(requeue: Duration, next_sync: Option<&str>, now: jiff::Timestamp) -> bool {
    let Some(next) = next_sync.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return false;
    };
    let Ok(wait) = Duration::try_from(next.duration_since(now)) else {
        return false;
    };
    wait.abs_diff(requeue) < Duration::from_secs(1)
}

/// The instant a stored resource's refresh is due, by its status.
pub fn due_at(cr: &CachedCertificate) -> Option<jiff::Timestamp> {
    cr.next_sync_time()
}

/// Which resources to trigger at each tick. Remembers the resources it triggered while they stay due, so
/// that a resource whose reconcile is still under way (queued behind a wave, parked for Tencent budget) is
/// not triggered on every tick. The memory is held for due resources only, and is a 64-bit hash of the
/// namespace and name per resource (a collision can only delay a trigger until [`RETRIGGER`]).
#[derive(Debug, Default)]
pub struct Clock {
    triggered: HashMap<u64, Triggered>,
    hasher: std::hash::RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Triggered {
    due: jiff::Timestamp,
    at: jiff::Timestamp,
}

impl Clock {
    /// The key under which a resource is remembered.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    /// Of `resources` (each a [`Clock::key`], its due instant if any, and what to return for it), those to
    /// trigger at `now` (pure): due more than [`GRACE`] ago, and not triggered for that instant within
    /// [`RETRIGGER`].
    pub fn tick<T>(
        &mut self,
        resources: impl IntoIterator<Item = (u64, Option<jiff::Timestamp>, T)>,
        now: jiff::Timestamp,
    ) -> Vec<T> {
        let mut still_due = HashMap::with_capacity(self.triggered.len());
        let mut fire = Vec::new();
        for (key, due, resource) in resources {
            let Some(due) = due.filter(|due| *due + GRACE <= now) else {
                continue;
            };
            match self.triggered.get(&key) {
                Some(earlier) if earlier.due == due && earlier.at + RETRIGGER > now => {
                    still_due.insert(key, *earlier);
                }
                _ => {
                    still_due.insert(key, Triggered { due, at: now });
                    fire.push(resource);
                }
            }
        }
        // Resources no longer due (synced, deleted) are forgotten.
        self.triggered = still_due;
        fire
    }

    /// How many resources it remembers as triggered and still due.
    pub fn remembered(&self) -> usize {
        self.triggered.len()
    }
}

/// The trigger stream of a controller over `store`: every [`TICK`], the resources whose refresh is due.
pub fn triggers(
    store: Store<CachedCertificate>,
) -> BoxStream<'static, ObjectRef<CachedCertificate>> {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (interval, store, Clock::default()),
        |(mut interval, store, mut clock)| async move {
            interval.tick().await;
            let now = jiff::Timestamp::now();
            let due = store.state().into_iter().filter_map(|cr| {
                let due = due_at(&cr).filter(|due| *due + GRACE <= now)?;
                let key = clock.key(
                    cr.metadata.namespace.as_deref(),
                    cr.metadata.name.as_deref()?,
                );
                Some((key, Some(due), cr))
            });
            let due: Vec<_> = due.collect();
            // References (four strings each) are made for the resources triggered now only.
            let fire: Vec<_> = clock
                .tick(due, now)
                .iter()
                .map(|cr| ObjectRef::from_obj(&**cr))
                .collect();
            if !fire.is_empty() {
                debug!(
                    triggered = fire.len(),
                    remembered = clock.remembered(),
                    "refresh clock"
                );
            }
            Some((futures::stream::iter(fire), (interval, store, clock)))
        },
    )
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> jiff::Timestamp {
        t.parse().unwrap()
    }

    fn object(name: &str) -> ObjectRef<CachedCertificate> {
        ObjectRef::new(name).within("team-a")
    }

    /// `(key, due, name)` as the stream passes them.
    fn due(
        clock: &Clock,
        name: &'static str,
        due: Option<jiff::Timestamp>,
    ) -> (u64, Option<jiff::Timestamp>, &'static str) {
        (clock.key(Some("team-a"), name), due, name)
    }

    #[test]
    fn a_long_wait_until_the_next_sync_is_the_clocks_and_every_other_wait_the_schedulers() {
        let now = at("2030-01-01T00:00:00Z");
        let hour = Duration::from_secs(3600);
        let next = Some("2030-01-01T01:00:00Z");
        assert_eq!(action(hour, next, now), Action::await_change());
        // A sub-second `now` against a status of whole seconds.
        let later = at("2030-01-01T00:00:00.4Z");
        assert_eq!(
            action(Duration::from_millis(3_599_600), next, later),
            Action::await_change()
        );
        // Up to the horizon: the scheduler (exact, and short-lived).
        let minute = Some("2030-01-01T00:01:00Z");
        let one_minute = Duration::from_secs(60);
        assert_eq!(action(one_minute, minute, now), Action::requeue(one_minute));
        assert_eq!(
            action(HORIZON, Some("2030-01-01T00:05:00Z"), now),
            Action::requeue(HORIZON)
        );
        // A wait that ends before the next sync (an expiry, a renewal poll, a parked safety requeue): the
        // clock would not see it.
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(action(ten_minutes, next, now), Action::requeue(ten_minutes));
        // No next sync in the status: nothing for the clock to read.
        assert_eq!(action(hour, None, now), Action::requeue(hour));
        assert_eq!(action(hour, Some("soon"), now), Action::requeue(hour));
    }

    #[test]
    fn the_clock_triggers_each_due_instant_once_after_the_grace() {
        let mut clock = Clock::default();
        let at_due = at("2030-01-01T01:00:00Z");
        let resources =
            |clock: &Clock| vec![due(clock, "shop", Some(at_due)), due(clock, "blog", None)];
        // Not yet due, then due but within the grace (the scheduler's retry would be under way).
        let early = resources(&clock);
        assert!(clock.tick(early, at("2030-01-01T00:59:59Z")).is_empty());
        let within_grace = resources(&clock);
        assert!(
            clock
                .tick(within_grace, at_due + Duration::from_secs(5))
                .is_empty()
        );
        let after_grace = resources(&clock);
        assert_eq!(clock.tick(after_grace, at_due + GRACE), vec!["shop"]);
        // Still due while its reconcile runs (queued, parked): not triggered on every tick.
        let still = resources(&clock);
        assert!(clock.tick(still, at_due + GRACE + TICK).is_empty());
        assert_eq!(clock.remembered(), 1);
        // Synced: a new instant, and the old one is forgotten.
        let next = at("2030-01-01T02:00:00Z");
        let synced = vec![due(&clock, "shop", Some(next))];
        assert!(
            clock
                .tick(synced.clone(), at_due + GRACE + TICK * 2)
                .is_empty()
        );
        assert_eq!(clock.remembered(), 0);
        assert_eq!(clock.tick(synced, next + GRACE), vec!["shop"]);
    }

    #[test]
    fn resources_are_told_apart_by_namespace_and_name() {
        let clock = Clock::default();
        assert_eq!(
            clock.key(Some("team-a"), "shop"),
            clock.key(Some("team-a"), "shop")
        );
        assert_ne!(
            clock.key(Some("team-a"), "shop"),
            clock.key(Some("team-b"), "shop")
        );
        assert_ne!(
            clock.key(Some("team-a"), "shop"),
            clock.key(Some("team-a"), "blog")
        );
        assert_ne!(clock.key(Some("a"), "bshop"), clock.key(Some("ab"), "shop"));
    }

    #[test]
    fn a_trigger_that_was_lost_is_repeated_after_a_while() {
        let mut clock = Clock::default();
        let at_due = at("2030-01-01T01:00:00Z");
        let resources = vec![due(&clock, "shop", Some(at_due))];
        assert_eq!(clock.tick(resources.clone(), at_due + GRACE).len(), 1);
        assert!(
            clock
                .tick(resources.clone(), at_due + GRACE + TICK)
                .is_empty()
        );
        assert_eq!(
            clock.tick(resources, at_due + GRACE + RETRIGGER),
            vec!["shop"]
        );
    }

    #[test]
    fn a_status_rewritten_with_an_earlier_instant_is_triggered_again() {
        // e.g. a tenant (or the scale benchmark) setting nextSyncTime to now while an earlier trigger is
        // remembered: the new instant is news.
        let mut clock = Clock::default();
        let at_due = at("2030-01-01T01:00:00Z");
        let first = vec![due(&clock, "shop", Some(at_due))];
        assert_eq!(clock.tick(first, at_due + GRACE).len(), 1);
        let rewritten = at_due + Duration::from_secs(20);
        let again = vec![due(&clock, "shop", Some(rewritten))];
        assert_eq!(clock.tick(again, rewritten + GRACE).len(), 1);
    }

    fn stored(name: &str, next_sync: &str) -> CachedCertificate {
        let mut cr: crate::crd::TencentCertificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "tencentcert.io/v1alpha1",
            "kind": "TencentCertificate",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"certificateId": "aBcD1234"},
        }))
        .unwrap();
        cr.status = Some(crate::crd::TencentCertificateStatus {
            next_sync_time: Some(next_sync.into()),
            ..Default::default()
        });
        CachedCertificate::from(&cr)
    }

    #[tokio::test(start_paused = true)]
    async fn the_trigger_stream_reads_the_store_on_every_tick() {
        let (store, mut writer) = kube::runtime::reflector::store::<CachedCertificate>();
        let mut triggers = triggers(store);
        // An empty store (before the first list): nothing.
        assert!(
            tokio::time::timeout(TICK * 2, triggers.next())
                .await
                .is_err()
        );
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(stored(
            "shop",
            "2020-01-01T00:00:00Z",
        )));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(stored(
            "blog",
            "2999-01-01T00:00:00Z",
        )));
        assert_eq!(
            tokio::time::timeout(TICK * 2, triggers.next())
                .await
                .unwrap(),
            Some(object("shop"))
        );
        // Remembered while it stays due: the next ticks trigger nothing, and "blog" is not due.
        assert!(
            tokio::time::timeout(TICK * 4, triggers.next())
                .await
                .is_err()
        );
    }

    #[test]
    fn the_due_instant_is_the_status_next_sync_time() {
        let mut cr = stored("shop", "2030-01-01T01:00:00Z");
        assert_eq!(due_at(&cr), Some(at("2030-01-01T01:00:00Z")));
        cr.status = None;
        assert_eq!(due_at(&cr), None);
    }
}
