//! The watch events of the operator's own writes ("echoes"), recognised so that they do not reconcile the
//! resource again. A reconcile that writes a Secret and a status already reports what it wrote; the
//! follow-up reconcile their echoes caused read the Secret and the credentials again only to find nothing
//! to do. Issue 23 counted about one such reconcile per resource in a first sync of 20,000 (a third of all
//! reconciles, with the API server as the bound).
//!
//! An echo is recognised by its exact resourceVersion, which only that write produced: any other change,
//! by anyone, has another version and is reconciled as before. The watch may deliver the echo before the
//! write's response is read; so while a write of an object is in flight ([`OwnWrites::begin`]), that
//! object's events are held back, and released when the write ends unless they carry the version it
//! wrote ([`Write::finish`]). The reflector still sees every event at once: only the trigger is held or
//! dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use tokio::time::Instant;

/// How long a write's record waits for its echo (a watch that was down re-lists instead).
const WAIT_FOR_ECHO: Duration = Duration::from_secs(120);
/// How often unanswered records are swept (on the next record).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// (kind, namespace, name) of an object.
type Object = (String, String, String);

/// Puts a held-back event back into its watch's trigger stream.
type Release = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Records {
    /// The versions written, waiting for their echo.
    written: HashMap<(Object, String), Instant>,
    /// Objects with a write in flight, and the events held back meanwhile (their version, the release).
    in_flight: HashMap<Object, Vec<(Option<String>, Release)>>,
    last_sweep: Option<Instant>,
}

/// The operator's recent writes and those in flight. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct OwnWrites {
    records: Arc<Mutex<Records>>,
}

fn object_of<K: Resource<DynamicType = ()>>(object: &K) -> Option<Object> {
    let meta = object.meta();
    Some((
        K::kind(&()).into_owned(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

impl OwnWrites {
    fn records(&self) -> MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A write of `target` (namespace and name set) is about to be sent: end it with [`Write::finish`].
    pub fn begin<K: Resource<DynamicType = ()>>(&self, target: &K) -> Write {
        let object = object_of(target);
        if let Some(object) = &object {
            self.records().in_flight.entry(object.clone()).or_default();
        }
        Write {
            own: self.clone(),
            object,
        }
    }

    /// The write of `object` ended, having stored `version` (`None`: it failed): held-back events other
    /// than its echo are released; the version is remembered until its echo comes.
    fn end(&self, object: Object, version: Option<String>) {
        let now = Instant::now();
        let mut releases = Vec::new();
        {
            let mut records = self.records();
            let held = records.in_flight.remove(&object).unwrap_or_default();
            let mut echo_seen = false;
            for (seen, release) in held {
                if version.is_some() && seen == version {
                    echo_seen = true;
                } else {
                    releases.push(release);
                }
            }
            if let Some(version) = version.filter(|_| !echo_seen) {
                sweep(&mut records, now);
                records.written.insert((object, version), now);
            }
        }
        for release in releases {
            release();
        }
    }

    /// `watched`, unless it is the echo of a recorded write (the record goes: a version is watched once)
    /// or an event of an object being written (then held back as `release(watched)`).
    fn pass<K: Resource<DynamicType = ()>>(
        &self,
        watched: K,
        release: impl FnOnce(K) -> Release,
    ) -> Option<K> {
        let Some(object) = object_of(&watched) else {
            return Some(watched);
        };
        let version = watched.meta().resource_version.clone();
        let mut records = self.records();
        if let Some(version) = &version
            && records
                .written
                .remove(&(object.clone(), version.clone()))
                .is_some()
        {
            return None;
        }
        match records.in_flight.get_mut(&object) {
            Some(held) => {
                held.push((version, release(watched)));
                None
            }
            None => Some(watched),
        }
    }

    /// Writes waiting for their echo, and writes in flight.
    pub fn waiting(&self) -> usize {
        let records = self.records();
        records.written.len() + records.in_flight.len()
    }
}

fn sweep(records: &mut Records, now: Instant) {
    if records
        .last_sweep
        .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
    {
        return;
    }
    records.last_sweep = Some(now);
    records
        .written
        .retain(|_, at| now.saturating_duration_since(*at) < WAIT_FOR_ECHO);
}

/// A write in flight (see [`OwnWrites::begin`]). Dropped without [`Write::finish`] (the reconcile was
/// cancelled), it counts as failed: what it held back is released.
pub struct Write {
    own: OwnWrites,
    object: Option<Object>,
}

impl Write {
    /// The write ended with `stored` (the object as the API server returned it), or failed (`None`).
    pub fn finish<K: Resource<DynamicType = ()>>(mut self, stored: Option<&K>) {
        if let Some(object) = self.object.take() {
            let version = stored.and_then(|k| k.meta().resource_version.clone());
            self.own.end(object, version);
        }
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            self.own.end(object, None);
        }
    }
}

/// A watch's objects without the echoes of this replica's own writes; the events of an object being
/// written come after its write ended. Ends when `objects` ends.
pub fn not_echoes<K>(
    objects: impl Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
    own: &OwnWrites,
) -> impl Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + 'static,
{
    let own = own.clone();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<K>();
    let released = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|object| (Some(Ok(object)), receiver))
    });
    let watched = objects
        .filter_map(move |item| {
            let passed = match item {
                Ok(object) => {
                    let sender = sender.clone();
                    own.pass(object, move |held| {
                        Box::new(move || {
                            let _ = sender.send(held);
                        })
                    })
                    .map(Ok)
                }
                Err(err) => Some(Err(err)),
            };
            futures::future::ready(passed.map(Some))
        })
        .chain(futures::stream::once(futures::future::ready(None)));
    futures::stream::select(watched, released)
        .take_while(|item| futures::future::ready(item.is_some()))
        .filter_map(futures::future::ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn watched(namespace: &str, name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.namespace = Some(namespace.into());
        secret.metadata.name = Some(name.into());
        secret.metadata.resource_version = Some(version.into());
        secret
    }

    fn stored(namespace: &str, name: &str, version: &str) -> Secret {
        Secret {
            metadata: watched(namespace, name, version).metadata,
            ..Secret::default()
        }
    }

    fn written(own: &OwnWrites, namespace: &str, name: &str, version: &str) {
        let secret = stored(namespace, name, version);
        own.begin(&secret).finish(Some(&secret));
    }

    /// Passes `object` through `own`, counting releases of held-back events in `released`.
    fn passes(
        own: &OwnWrites,
        object: PartialObjectMeta<Secret>,
        released: &Arc<AtomicUsize>,
    ) -> bool {
        let released = released.clone();
        own.pass(object, move |_| {
            Box::new(move || {
                released.fetch_add(1, Ordering::SeqCst);
            })
        })
        .is_some()
    }

    #[test]
    fn only_the_exact_version_written_is_an_echo_and_only_once() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        written(&own, "web", "shop-tls", "100");
        assert!(
            passes(&own, watched("web", "shop-tls", "101"), &released),
            "someone else's write"
        );
        assert!(
            passes(&own, watched("shop", "shop-tls", "100"), &released),
            "another namespace"
        );
        assert!(!passes(&own, watched("web", "shop-tls", "100"), &released));
        assert!(
            passes(&own, watched("web", "shop-tls", "100"), &released),
            "watched once"
        );
        assert_eq!(own.waiting(), 0);
    }

    #[test]
    fn kinds_do_not_mix() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        let mut cr = crate::crd::TencentCertificate::new(
            "shop-tls",
            serde_json::from_value(serde_json::json!({"certificateId": "a1"})).unwrap(),
        );
        cr.metadata.namespace = Some("web".into());
        cr.metadata.resource_version = Some("100".into());
        own.begin(&cr).finish(Some(&cr));
        assert!(passes(&own, watched("web", "shop-tls", "100"), &released));
        assert!(
            own.pass(cr, |_| unreachable!()).is_none(),
            "the status patch's echo"
        );
    }

    #[test]
    fn events_during_a_write_wait_for_it_and_only_its_echo_is_dropped() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        // The watch delivers the echo before the write's response is read.
        let write = own.begin(&stored("web", "a", ""));
        assert!(
            !passes(&own, watched("web", "a", "7"), &released),
            "held back"
        );
        assert!(
            passes(&own, watched("web", "b", "8"), &released),
            "another object"
        );
        write.finish(Some(&stored("web", "a", "7")));
        assert_eq!(released.load(Ordering::SeqCst), 0, "it was the echo");
        assert_eq!(own.waiting(), 0, "nothing left to wait for");
        // Someone else's write watched during ours is reconciled after it.
        let write = own.begin(&stored("web", "a", ""));
        assert!(!passes(&own, watched("web", "a", "9"), &released));
        write.finish(Some(&stored("web", "a", "10")));
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert!(
            !passes(&own, watched("web", "a", "10"), &released),
            "the echo, later"
        );
    }

    #[test]
    fn a_failed_or_cancelled_write_releases_what_it_held_back() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        let write = own.begin(&stored("web", "a", ""));
        assert!(!passes(&own, watched("web", "a", "3"), &released));
        write.finish::<Secret>(None);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        let write = own.begin(&stored("web", "a", ""));
        assert!(!passes(&own, watched("web", "a", "4"), &released));
        drop(write);
        assert_eq!(released.load(Ordering::SeqCst), 2);
        assert_eq!(own.waiting(), 0);
    }

    #[test]
    fn an_object_without_a_version_is_never_an_echo() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        let mut unversioned = stored("web", "a", "1");
        unversioned.metadata.resource_version = None;
        own.begin(&unversioned).finish(Some(&unversioned));
        assert_eq!(own.waiting(), 0);
        let mut vanished = watched("web", "a", "1");
        vanished.metadata.resource_version = None;
        assert!(passes(&own, vanished, &released));
    }

    #[tokio::test(start_paused = true)]
    async fn records_whose_echo_never_came_are_swept() {
        let own = OwnWrites::default();
        let released = Arc::new(AtomicUsize::new(0));
        written(&own, "web", "a", "1");
        tokio::time::advance(WAIT_FOR_ECHO + SWEEP_EVERY).await;
        written(&own, "web", "b", "2");
        assert_eq!(own.waiting(), 1, "a's record went");
        assert!(passes(&own, watched("web", "a", "1"), &released));
    }

    #[tokio::test]
    async fn the_stream_drops_echoes_releases_held_events_and_ends_with_its_watch() {
        let own = OwnWrites::default();
        written(&own, "web", "a", "1");
        let write = own.begin(&stored("web", "b", ""));
        let (watch, events) = tokio::sync::mpsc::unbounded_channel();
        let events = futures::stream::unfold(events, |mut events| async move {
            events.recv().await.map(|event| (Ok(event), events))
        });
        let mut passed = Box::pin(not_echoes(events, &own));
        let name = |item: Option<Result<PartialObjectMeta<Secret>, _>>| {
            item.and_then(Result::ok)
                .and_then(|s| s.metadata.name)
                .unwrap_or_default()
        };
        for event in [
            watched("web", "a", "1"),
            watched("web", "b", "5"),
            watched("web", "c", "6"),
        ] {
            watch.send(event).unwrap();
        }
        assert_eq!(
            name(passed.next().await),
            "c",
            "a is an echo, b is held back"
        );
        // b's write stored another version than the one watched: someone else wrote too.
        write.finish(Some(&stored("web", "b", "6")));
        assert_eq!(name(passed.next().await), "b", "released");
        drop(watch);
        assert!(passed.next().await.is_none(), "ends with the watch");
    }
}
