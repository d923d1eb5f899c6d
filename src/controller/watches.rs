//! How the controller's watches behave when the API server goes away and comes back.
//!
//! Measured on a real API server (issue 11): with kube-runtime's defaults, a 25 s outage kept the watches
//! down for minutes after the server answered again. Two things compounded:
//! - every watch had its own backoff (0.8 s doubling to 30 s, plus up to 100 % jitter), and the controller put
//!   a second, shared backoff of the same shape over all of them: each error of any watch — including the
//!   `410 Gone` that routinely follows a server restart and only asks for a re-list — paused every watch,
//!   the main one included, and doubled the shared delay. One outage ended in pauses of 35–45 s, one after
//!   the other, with the server answering all along.
//! - a watch that re-lists reports only the objects that exist, so a managed Secret deleted while the watch
//!   was down triggered nothing: it came back only when a retry of its owner happened to run.
//!
//! Here each watch backs off on its own, briefly ([`backing_off`] with [`WatchBackoff`]: at most ~6 s, and
//! not at all before the re-list a `410 Gone` asks for), the controller adds no shared pause
//! ([`NoSharedBackoff`]), [`with_gap_deletions`] reports objects that vanished between two
//! lists, and [`reporting_health`] feeds `/readyz`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};

use crate::telemetry::Readiness;

/// One watch's retry delay: 0.5 s doubling to 5 s, each with up to 25 % added jitter so that replicas and
/// watches do not retry in step. The watch stream resets it on every event it receives.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay + delay.mul_f64(fastrand::f64() * 0.25))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A watch's events, paused after each error for the next [`WatchBackoff`] delay — except after
/// `410 Gone` (the resource version is too old, as after an API server restart): the watcher then re-lists,
/// and waiting would only delay that. The backoff restarts from its first delay after any event.
pub fn backing_off<T>(
    events: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
{
    let state = (events.boxed(), WatchBackoff::default(), None::<Duration>);
    futures::stream::unfold(state, |(mut events, mut backoff, pause)| async move {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let item = events.next().await?;
        let pause = match &item {
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(err) if asks_for_relist(err) => None,
            Err(_) => backoff.next(),
        };
        Some((item, (events, backoff, pause)))
    })
}

/// `410 Gone` / `Expired`: the watch's resource version is no longer served; a fresh list is the cure.
fn asks_for_relist(err: &watcher::Error) -> bool {
    matches!(err, watcher::Error::WatchError(status) if status.code == 410)
}

/// A controller's main watch, with its own [`backing_off`], reflected into the store the controller reads.
/// `Controller::new` would leave that watch without any pause under [`NoSharedBackoff`]: with the API
/// server down, every retry fails at once and the watch spins on a core.
pub fn main_watch<K>(
    api: kube::Api<K>,
    config: watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt as _;
    let (store, writer) = kube::runtime::reflector::store();
    let events = backing_off(watcher::watcher(api, config))
        .reflect(writer)
        .applied_objects();
    (store, events)
}

/// The controller's backoff over all its watches together: none. Each watch already waits by itself
/// ([`WatchBackoff`]); a shared pause would stop the healthy watches whenever one of them fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedBackoff;

impl Iterator for NoSharedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoSharedBackoff {
    fn reset(&mut self) {}
}

/// The touched objects of a watch, plus the objects that disappeared while it was down: on each re-list the
/// objects seen before but absent now are reported, as if their deletion had been watched, by namespace,
/// name and labels (what maps an object to the resources it concerns; nothing else is remembered).
pub fn with_gap_deletions<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Default + Send + 'static,
{
    let mut gaps = GapTracker::<K>::default();
    events.flat_map(move |event| futures::stream::iter(gaps.touched(event)))
}

/// What the gap tracker keeps of an object besides its namespace and name: its labels. Keeping whole objects
/// (even slimmed to metadata) cost some 1.6 KiB per managed Secret in a 2,000-resource heap profile (the map's
/// inline `ObjectMeta`s and a cloned label map each), the largest per-resource item after the resource cache;
/// this is a boxed slice of the label pairs.
type Labels = Box<[(String, String)]>;

fn labels_of<K: Resource>(object: &K) -> Labels {
    object
        .meta()
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The object a vanished entry stands for: its namespace, name and labels.
fn vanished<K: Resource + Default>((namespace, name): Key, labels: Labels) -> K {
    let mut object = K::default();
    let meta = object.meta_mut();
    meta.namespace = namespace.map(|namespace| namespace.to_string());
    meta.name = Some(name.into_string());
    if !labels.is_empty() {
        meta.labels = Some(labels.into_vec().into_iter().collect());
    }
    object
}

/// The state behind [`with_gap_deletions`].
struct GapTracker<K> {
    /// Every object the watch currently knows, by namespace and name.
    known: HashMap<Key, Labels>,
    /// While a (re-)list runs: the objects it has returned so far.
    listing: Option<HashMap<Key, Labels>>,
    namespaces: Namespaces,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Default for GapTracker<K> {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            listing: None,
            namespaces: Namespaces::default(),
            _kind: std::marker::PhantomData,
        }
    }
}

/// An object's namespace and name as the trackers remember them, one entry per object the watch knows:
/// the namespace shared by every object in it (one allocation per namespace, not per object) and the name
/// exact-sized; 32 bytes inline instead of 48 (issue 23).
type Key = (Option<Arc<str>>, Box<str>);

/// The namespaces of a tracker's keys, each allocated once.
#[derive(Default)]
struct Namespaces(std::collections::HashSet<Arc<str>>);

impl Namespaces {
    fn key<K: Resource>(&mut self, object: &K) -> Key {
        let meta = object.meta();
        let namespace = meta.namespace.as_deref().map(|namespace| {
            if let Some(shared) = self.0.get(namespace) {
                return shared.clone();
            }
            let shared: Arc<str> = Arc::from(namespace);
            self.0.insert(shared.clone());
            shared
        });
        (namespace, meta.name.as_deref().unwrap_or_default().into())
    }

    /// Forgets the namespaces no key holds any more (after a re-list).
    fn sweep(&mut self) {
        self.0.retain(|namespace| Arc::strong_count(namespace) > 1);
    }
}

impl<K: Resource + Clone + Default> GapTracker<K> {
    fn touched(
        &mut self,
        event: Result<Event<K>, watcher::Error>,
    ) -> Vec<Result<K, watcher::Error>> {
        match event {
            Err(err) => vec![Err(err)],
            Ok(Event::Init) => {
                self.listing = Some(HashMap::new());
                Vec::new()
            }
            Ok(Event::InitApply(object)) => {
                let key = self.namespaces.key(&object);
                self.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(key, labels_of(&object));
                vec![Ok(object)]
            }
            Ok(Event::InitDone) => {
                let listed = self.listing.take().unwrap_or_default();
                let previous = std::mem::replace(&mut self.known, listed);
                let gone = previous
                    .into_iter()
                    .filter(|(key, _)| !self.known.contains_key(key))
                    .map(|(key, labels)| Ok(vanished(key, labels)))
                    .collect();
                self.namespaces.sweep();
                gone
            }
            Ok(Event::Apply(object)) => {
                let key = self.namespaces.key(&object);
                self.known.insert(key, labels_of(&object));
                vec![Ok(object)]
            }
            Ok(Event::Delete(object)) => {
                let key = self.namespaces.key(&object);
                self.known.remove(&key);
                vec![Ok(object)]
            }
        }
    }
}

/// Passes a watch's events through and calls `gone(namespace, name)` for each object it saw deleted —
/// by a delete event, or by its absence from a re-list (deleted while the watch was down).
pub fn reporting_deletions<K, F>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    mut gone: F,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    F: FnMut(Option<&str>, &str) + Send + 'static,
{
    let mut known = KnownKeys::default();
    events.map(move |event| {
        if let Ok(event) = &event {
            for (namespace, name) in known.deleted(event) {
                gone(namespace.as_deref(), &name);
            }
        }
        event
    })
}

/// The names a watch currently knows, to tell which ones a re-list dropped.
#[derive(Default)]
struct KnownKeys {
    known: std::collections::HashSet<Key>,
    listing: Option<std::collections::HashSet<Key>>,
    namespaces: Namespaces,
}

impl KnownKeys {
    fn deleted<K: Resource>(&mut self, event: &Event<K>) -> Vec<Key> {
        match event {
            Event::Init => {
                self.listing = Some(Default::default());
                Vec::new()
            }
            Event::InitApply(object) => {
                let key = self.namespaces.key(object);
                self.listing
                    .get_or_insert_with(Default::default)
                    .insert(key);
                Vec::new()
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let previous = std::mem::replace(&mut self.known, listed);
                let gone = previous
                    .into_iter()
                    .filter(|key| !self.known.contains(key))
                    .collect();
                self.namespaces.sweep();
                gone
            }
            Event::Apply(object) => {
                let key = self.namespaces.key(object);
                self.known.insert(key);
                Vec::new()
            }
            Event::Delete(object) => {
                let key = self.namespaces.key(object);
                self.known.remove(&key);
                vec![key]
            }
        }
    }
}

/// Passes a watch stream through, counting it as failing in `readiness` from an error until its next
/// event (a watch that cannot reach the API server makes `/readyz` answer 503). A failing watch that is
/// dropped (the controller stopped) stops counting.
pub fn reporting_health<T>(
    stream: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    readiness: Arc<Readiness>,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
{
    let mut health = WatchHealth {
        readiness,
        failing: false,
    };
    stream.map(move |item| {
        health.set_failing(item.is_err());
        item
    })
}

struct WatchHealth {
    readiness: Arc<Readiness>,
    failing: bool,
}

impl WatchHealth {
    fn set_failing(&mut self, failing: bool) {
        if failing != self.failing {
            self.failing = failing;
            self.readiness.watch_failing(failing);
        }
    }
}

impl Drop for WatchHealth {
    fn drop(&mut self) {
        self.set_failing(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    fn secret(name: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some("web".into());
        secret
    }

    fn names(touched: Vec<Result<Secret, watcher::Error>>) -> Vec<String> {
        let mut names: Vec<String> = touched
            .into_iter()
            .map(|t| {
                t.map(|s| s.metadata.name.unwrap_or_default())
                    .unwrap_or_else(|e| format!("error: {e}"))
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = (&mut backoff).take(8).collect();
        let bases = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_secs_f64(base);
            assert!(
                *delay >= base && *delay <= base.mul_f64(1.25),
                "{delay:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(
            backoff
                .next()
                .is_some_and(|d| d < Duration::from_millis(626))
        );
        assert_eq!(NoSharedBackoff.next(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_pause_the_watch_but_gone_relists_at_once() {
        let gone = || {
            watcher::Error::WatchError(Box::new(kube::core::Status {
                code: 410,
                reason: "Expired".into(),
                ..Default::default()
            }))
        };
        let items: Vec<Result<u8, watcher::Error>> = vec![
            Err(watcher::Error::NoResourceVersion),
            Err(watcher::Error::NoResourceVersion),
            Err(gone()),
            Ok(1),
        ];
        let mut watched = Box::pin(backing_off(futures::stream::iter(items)));
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        while let Some(item) = watched.next().await {
            seen.push((item.is_ok(), start.elapsed()));
        }
        // Two errors: 0.5 s and 1 s (plus jitter) of pause; after `410 Gone`, none.
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].1, Duration::ZERO);
        assert!(seen[1].1 >= Duration::from_millis(500) && seen[1].1 <= Duration::from_millis(625));
        let after_second = seen[2].1 - seen[1].1;
        assert!(
            after_second >= Duration::from_secs(1) && after_second <= Duration::from_millis(1250)
        );
        assert_eq!(seen[3].1, seen[2].1, "no pause before the re-list");
        assert!(seen[3].0);
    }

    #[test]
    fn a_relist_reports_objects_deleted_while_the_watch_was_down() {
        let mut gaps = GapTracker::default();
        assert!(gaps.touched(Ok(Event::Init)).is_empty());
        for name in ["a", "b", "c"] {
            assert_eq!(
                names(gaps.touched(Ok(Event::InitApply(secret(name))))),
                [name]
            );
        }
        assert!(
            gaps.touched(Ok(Event::InitDone)).is_empty(),
            "the first list loses nothing"
        );
        assert_eq!(names(gaps.touched(Ok(Event::Delete(secret("c"))))), ["c"]);
        // The watch drops; "a" is deleted meanwhile; the re-list returns only "b" and a new "d".
        assert_eq!(gaps.touched(Ok(Event::Init)).len(), 0);
        gaps.touched(Ok(Event::InitApply(secret("b"))));
        gaps.touched(Ok(Event::InitApply(secret("d"))));
        assert_eq!(names(gaps.touched(Ok(Event::InitDone))), ["a"]);
        // "a" is reported once only.
        gaps.touched(Ok(Event::Init));
        gaps.touched(Ok(Event::InitApply(secret("b"))));
        gaps.touched(Ok(Event::InitApply(secret("d"))));
        assert!(gaps.touched(Ok(Event::InitDone)).is_empty());
    }

    #[test]
    fn a_vanished_object_keeps_what_maps_it_to_its_resource() {
        let mut gaps = GapTracker::<Secret>::default();
        let mut managed = secret("tls");
        managed.metadata.namespace = Some("web".into());
        managed.metadata.labels = Some(
            [(
                "tencentcert.io/certificate-name".to_string(),
                "shop".to_string(),
            )]
            .into(),
        );
        managed.metadata.annotations = Some([("big".to_string(), "x".repeat(4096))].into());
        gaps.touched(Ok(Event::Init));
        gaps.touched(Ok(Event::InitApply(managed.clone())));
        gaps.touched(Ok(Event::InitDone));
        gaps.touched(Ok(Event::Init));
        let gone = gaps.touched(Ok(Event::InitDone));
        let [Ok(gone)] = gone.as_slice() else {
            panic!("one vanished Secret expected");
        };
        assert_eq!(gone.metadata.namespace.as_deref(), Some("web"));
        assert_eq!(gone.metadata.name.as_deref(), Some("tls"));
        assert_eq!(gone.metadata.labels, managed.metadata.labels);
        assert_eq!(
            gone.metadata.annotations, None,
            "nothing else is remembered"
        );
    }

    #[test]
    fn deletions_are_reported_from_events_and_from_relists() {
        let mut known = KnownKeys::default();
        let names = |deleted: Vec<Key>| -> Vec<String> {
            deleted
                .into_iter()
                .map(|(_, name)| name.into_string())
                .collect()
        };
        known.deleted(&Event::Init::<Secret>);
        for name in ["a", "b", "c"] {
            known.deleted(&Event::InitApply(secret(name)));
        }
        assert!(known.deleted(&Event::<Secret>::InitDone).is_empty());
        assert_eq!(names(known.deleted(&Event::Delete(secret("a")))), ["a"]);
        known.deleted(&Event::Init::<Secret>);
        known.deleted(&Event::InitApply(secret("c")));
        assert_eq!(names(known.deleted(&Event::<Secret>::InitDone)), ["b"]);
    }

    #[tokio::test]
    async fn a_failing_watch_makes_readiness_false_until_its_next_event() {
        let readiness = Arc::new(Readiness::default());
        readiness.set(true);
        let (send, receive) = futures::channel::mpsc::unbounded::<Result<(), watcher::Error>>();
        let mut watched = Box::pin(reporting_health(receive, readiness.clone()));
        send.unbounded_send(Err(watcher::Error::NoResourceVersion))
            .unwrap();
        assert!(watched.next().await.unwrap().is_err());
        assert!(!readiness.is_ready());
        send.unbounded_send(Ok(())).unwrap();
        assert!(watched.next().await.unwrap().is_ok());
        assert!(readiness.is_ready());
        send.unbounded_send(Err(watcher::Error::NoResourceVersion))
            .unwrap();
        let _ = watched.next().await;
        assert!(!readiness.is_ready());
        drop(watched);
        assert!(readiness.is_ready(), "a stopped watch no longer counts");
    }
}
