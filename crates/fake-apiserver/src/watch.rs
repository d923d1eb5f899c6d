//! Watch streams: newline-delimited `{"type":…,"object":…}` events, as the real watch cache serves them.
//!
//! - `resourceVersion` unset or `"0"`: synthetic ADDED events for the current objects, then changes;
//! - `resourceVersion=N`: the retained history after N, then changes; N older than the history → a single
//!   ERROR event carrying a 410 `Expired` Status (HTTP 200, like the real server; kube's watcher relists);
//! - `sendInitialEvents=true`: the current objects, then a BOOKMARK annotated `k8s.io/initial-events-end`;
//! - `allowWatchBookmarks=true`: periodic BOOKMARKs carrying the latest resourceVersion;
//! - label/field selectors apply to both the old and new state, so an object leaving the selection is
//!   DELETED and one entering it ADDED;
//! - the stream ends after `timeoutSeconds`, or when the server is dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::negotiate::{self, Shape};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::status::ApiError;
use crate::store::{Event, EventType, ResKey};

pub struct WatchSpec {
    pub res: ResKey,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub shape: Shape,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    /// `None` for `resourceVersion` unset or `"0"`.
    pub since: Option<u64>,
    pub timeout: Duration,
    /// For bookmarks: the resource's kind and apiVersion.
    pub kind: String,
    pub api_version: String,
    /// Table columns and row contents when the watcher asked for `as=Table`.
    pub table: Option<(crate::table::Columns, crate::table::RowObject)>,
}

impl WatchSpec {
    fn selects(&self, object: &Value) -> bool {
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        self.namespace
            .as_deref()
            .is_none_or(|want| ns == Some(want))
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// What this watcher sees of a change, if anything.
    fn view(&self, event: &Event) -> Option<(EventType, Value)> {
        let now = self.selects(&event.object);
        let before = event.previous.as_ref().is_some_and(|p| self.selects(p));
        match (event.kind, before, now) {
            (EventType::Added, _, true) => Some((EventType::Added, event.object.clone())),
            (EventType::Modified, true, true) => Some((EventType::Modified, event.object.clone())),
            (EventType::Modified, false, true) => Some((EventType::Added, event.object.clone())),
            (EventType::Modified, true, false) => {
                // Left the selection: the watcher last saw the old state; announce its deletion at this version.
                let mut gone = event.previous.clone().unwrap_or_default();
                if let Some(meta) = gone.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert(
                        "resourceVersion".into(),
                        Value::String(event.rv.to_string()),
                    );
                }
                Some((EventType::Deleted, gone))
            }
            (EventType::Deleted, _, true) => Some((EventType::Deleted, event.object.clone())),
            _ => None,
        }
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        let object = match &self.table {
            Some((columns, include)) => {
                let row = crate::table::row(columns, &object, *include);
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                // Every event carries the column definitions: kubectl takes them from whichever it sees.
                crate::table::table(columns, vec![row], json!({ "resourceVersion": rv }), true)
            }
            None => negotiate::shaped(object, self.shape),
        };
        let event = json!({ "type": kind, "object": object });
        let mut text = event.to_string();
        text.push('\n');
        Bytes::from(text)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = match self.shape {
            Shape::Full => (self.kind.as_str(), self.api_version.as_str()),
            Shape::Metadata => ("PartialObjectMetadata", "meta.k8s.io/v1"),
            Shape::Table => ("Table", "meta.k8s.io/v1"),
        };
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        // Already in the requested shape: not passed through `line`'s conversion.
        let event = json!({ "type": "BOOKMARK", "object": { "kind": kind, "apiVersion": api_version, "metadata": metadata } });
        Bytes::from(format!("{event}\n"))
    }
}

struct Running {
    shared: Arc<Shared>,
    spec: WatchSpec,
    queue: VecDeque<Bytes>,
    rx: mpsc::UnboundedReceiver<Arc<Event>>,
    deadline: Instant,
    ticker: Option<tokio::time::Interval>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    outages: tokio::sync::watch::Receiver<u64>,
    finished: bool,
}

/// Starts a watch: the initial events are computed and the watcher subscribed under one lock, so nothing
/// falls between them.
pub fn start(
    shared: Arc<Shared>,
    spec: WatchSpec,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut queue = VecDeque::new();
    let mut finished = false;
    {
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        match spec.since {
            Some(rv) if rv < state.compacted_rv() => {
                let err = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    state.compacted_rv() + 1
                ));
                queue.push_back(Bytes::from(format!(
                    "{}\n",
                    json!({ "type": "ERROR", "object": err.to_json() })
                )));
                finished = true;
            }
            _ => {
                if spec.since.is_none() || spec.send_initial_events {
                    let ns = spec.namespace.as_deref();
                    for stored in state.list(&spec.res, ns) {
                        let object = crate::store::State::render(stored);
                        if spec.selects(&object) {
                            queue.push_back(spec.line("ADDED", object));
                        }
                    }
                    if spec.send_initial_events {
                        queue.push_back(spec.bookmark(state.resource_version(), true));
                    }
                } else if let Some(rv) = spec.since {
                    for event in state.events_since(&spec.res, rv) {
                        if let Some((kind, object)) = spec.view(&event) {
                            queue.push_back(spec.line(kind.as_str(), object));
                        }
                    }
                }
                state.subscribe(spec.res.clone(), tx);
            }
        }
    }
    let ticker = spec.bookmarks.then(|| {
        let every = shared.bookmark_interval;
        let mut t = tokio::time::interval_at(Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let running = Running {
        shutdown: shared.shutdown.clone(),
        outages: shared.outages.subscribe(),
        // A huge timeoutSeconds must not overflow the clock: cap it at a week, far beyond any test.
        deadline: Instant::now() + spec.timeout.min(Duration::from_secs(7 * 24 * 3600)),
        shared,
        spec,
        queue,
        rx,
        ticker,
        finished,
    };
    futures::stream::unfold(running, |mut r| async move {
        loop {
            if let Some(line) = r.queue.pop_front() {
                return Some((Ok(line), r));
            }
            if r.finished || *r.shutdown.borrow() {
                return None;
            }
            let tick = async {
                match r.ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = r.shutdown.changed() => return None,
                _ = r.outages.changed() => return None,
                _ = tokio::time::sleep_until(r.deadline) => return None,
                event = r.rx.recv() => match event {
                    Some(event) => {
                        if let Some((kind, object)) = r.spec.view(&event) {
                            let line = r.spec.line(kind.as_str(), object);
                            r.queue.push_back(line);
                        }
                    }
                    None => return None,
                },
                _ = tick => {
                    // Under the lock every event up to the current resourceVersion is already queued to us:
                    // drain them first so the bookmark never runs ahead of an undelivered event.
                    let state = r.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    while let Ok(event) = r.rx.try_recv() {
                        if let Some((kind, object)) = r.spec.view(&event) {
                            let line = r.spec.line(kind.as_str(), object);
                            r.queue.push_back(line);
                        }
                    }
                    let rv = state.resource_version();
                    drop(state);
                    let bookmark = r.spec.bookmark(rv, false);
                    r.queue.push_back(bookmark);
                }
            }
        }
    })
}
