//! The object store: objects, the global resourceVersion, the watch history and resource registry. The
//! write pipeline every verb goes through is in `write`, garbage-collection decisions in `collect`.
//!
//! One mutex guards all of it, so every write is linearizable and its watch event is queued to watchers
//! while the lock is held: watchers see events in resourceVersion order with no gaps, as from etcd.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::paths;
use crate::ssa::{Managed, Scope};
use crate::status::ApiError;
use crate::validation;

mod collect;
mod write;

/// A resource: `(group, plural)`. Versions are not distinguished (no conversion is emulated).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

impl ResKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// What the server knows about a resource: learnt from the first objects written, from a CRD, or from
/// the builder.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub kind: Option<String>,
    /// `apiVersion` of the objects (`v1`, `group/v1`).
    pub api_version: String,
    /// `None` until a request shows it (or a CRD or the built-in table says).
    pub namespaced: Option<bool>,
    pub status_subresource: bool,
    /// Served from a CRD rather than built in (changes DELETE answers, PUT and strategic merge rules).
    pub custom: bool,
    /// A CRD's `names.singular`, `shortNames` and `categories`, for discovery (`kubectl get tcert`).
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

/// A stored object: its JSON (with `metadata.resourceVersion`) and field ownership.
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Value,
    pub managed: Managed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub res: ResKey,
    /// The object after the change (for DELETED: its last state, with the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change, so a selector-filtered watch can turn a change into ADDED/DELETED the
    /// way the real watch cache does.
    pub previous: Option<Value>,
}

/// Work for the garbage collector.
#[derive(Debug, Clone, PartialEq)]
pub enum GcJob {
    /// An object with this uid is gone: look at its dependents.
    OwnerGone { uid: String },
    /// A namespace is gone: delete what is in it.
    NamespaceGone { namespace: String },
    /// This object names owners: delete it or drop the dangling references if they do not exist.
    CheckOwners {
        res: ResKey,
        namespace: String,
        name: String,
    },
}

/// The GC work queue. `pending` counts queued and in-progress jobs so tests can wait for GC to settle.
#[derive(Clone)]
pub struct GcQueue {
    pub tx: UnboundedSender<GcJob>,
    pub pending: Arc<AtomicUsize>,
}

/// A request's write parameters.
#[derive(Debug, Clone, Default)]
pub struct Op {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// `fieldManager`, or the user-agent derived default the real server uses.
    pub manager: String,
    pub force: bool,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: undeclared fields of a custom resource are refused.
    pub strict: bool,
}

impl Op {
    fn res(&self) -> ResKey {
        ResKey::new(&self.group, &self.plural)
    }
    fn ns_key(&self) -> String {
        self.namespace.clone().unwrap_or_default()
    }
    fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// DELETE options the fake honours.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub orphan: bool,
    pub dry_run: bool,
}

/// What a DELETE answers: the object (kept while finalizers run, or for custom resources) or a Status.
pub enum Deleted {
    Object(Value),
    Status(Value),
}

pub struct State {
    rv: u64,
    resources: BTreeMap<ResKey, ResourceInfo>,
    objects: BTreeMap<ResKey, BTreeMap<(String, String), Stored>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Events at or below this resourceVersion have been dropped from the history.
    compacted_rv: u64,
    watchers: Vec<(ResKey, UnboundedSender<Arc<Event>>)>,
    gc: Option<GcQueue>,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `metadata` of an object, created if missing or not a map.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

fn meta_str<'v>(obj: &'v Value, field: &str) -> Option<&'v str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn owner_refs(obj: &Value) -> Vec<&Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn finalizers_empty(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

/// Metadata only the server sets; copied from the stored object over whatever a write sent.
const SERVER_METADATA: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "namespace",
];

impl State {
    pub fn new(history_limit: usize, gc: Option<GcQueue>) -> Self {
        let mut state = Self {
            rv: 1,
            resources: BTreeMap::new(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            watchers: Vec::new(),
            gc,
        };
        for b in crate::builtin::BUILTINS {
            let info = state.info(b.group, b.version, b.plural);
            info.kind = Some(b.kind.to_string());
            info.namespaced = Some(b.namespaced);
            info.singular = b.singular.to_string();
            info.short_names = b.short_names.iter().map(|s| s.to_string()).collect();
        }
        state
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// Forgets the whole watch history, as a restarted API server's new watch cache does: a watch from
    /// any earlier resourceVersion then gets `410 Expired` and must re-list.
    pub fn compact_all(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// The resource's info, registered on first use.
    pub fn info(&mut self, group: &str, version: &str, plural: &str) -> &mut ResourceInfo {
        self.resources
            .entry(ResKey::new(group, plural))
            .or_insert_with(|| ResourceInfo {
                kind: paths::builtin_kind(group, plural).map(str::to_string),
                api_version: if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                },
                namespaced: if paths::builtin_cluster_scoped(group, plural) {
                    Some(false)
                } else {
                    paths::builtin_kind(group, plural).map(|_| true)
                },
                status_subresource: paths::builtin_status_subresource(group, plural),
                custom: !paths::builtin_group(group),
                singular: String::new(),
                short_names: Vec::new(),
                categories: Vec::new(),
            })
    }

    pub fn resources(&self) -> impl Iterator<Item = (&ResKey, &ResourceInfo)> {
        self.resources.iter()
    }

    pub fn set_status_subresource(&mut self, group: &str, plural: &str) {
        let version = "v1";
        self.info(group, version, plural).status_subresource = true;
    }

    /// Checks a request's namespace against the resource's scope, learning the scope on first sight.
    /// Addressing a namespaced resource without a namespace (or the reverse) is a 404, as on the real server.
    /// `all_namespaces_ok`: a collection read, where no namespace means "in all namespaces".
    pub fn check_scope(&mut self, op: &Op, all_namespaces_ok: bool) -> Result<(), ApiError> {
        let info = self.info(&op.group, &op.version, &op.plural);
        let ok = match (info.namespaced, op.namespace.is_some()) {
            (Some(namespaced), true) => namespaced,
            (Some(namespaced), false) => !namespaced || all_namespaces_ok,
            (None, true) => {
                info.namespaced = Some(true);
                true
            }
            (None, false) => {
                if !all_namespaces_ok {
                    info.namespaced = Some(false);
                }
                true
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    }

    fn scope_for(&self, op: &Op) -> Result<Scope, ApiError> {
        let sub = self
            .resources
            .get(&op.res())
            .is_some_and(|i| i.status_subresource);
        match (op.subresource.as_deref(), sub) {
            (None, true) => Ok(Scope::Main),
            (None, false) => Ok(Scope::Whole),
            (Some("status"), true) => Ok(Scope::Status),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    }

    pub fn get(&self, res: &ResKey, namespace: &str, name: &str) -> Option<&Stored> {
        self.objects
            .get(res)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of a resource in one namespace (or all), ordered by namespace and name.
    pub fn list(&self, res: &ResKey, namespace: Option<&str>) -> Vec<&Stored> {
        let Some(objs) = self.objects.get(res) else {
            return Vec::new();
        };
        objs.iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, s)| s)
            .collect()
    }

    /// The object as the API returns it (with `metadata.managedFields`).
    pub fn render(stored: &Stored) -> Value {
        let mut v = stored.value.clone();
        let managed = stored.managed.render();
        if managed.as_array().is_some_and(|a| !a.is_empty()) {
            meta_mut(&mut v).insert("managedFields".into(), managed);
        }
        v
    }

    /// `kind` for lists and bookmarks of a resource.
    pub fn kind_of(&self, res: &ResKey) -> Option<String> {
        self.resources.get(res).and_then(|i| i.kind.clone())
    }

    pub fn api_version_of(&self, res: &ResKey, fallback: &str) -> String {
        self.resources
            .get(res)
            .map_or_else(|| fallback.to_string(), |i| i.api_version.clone())
    }

    pub fn subscribe(&mut self, res: ResKey, tx: UnboundedSender<Arc<Event>>) {
        self.watchers.retain(|(_, w)| !w.is_closed());
        self.watchers.push((res, tx));
    }

    /// History events of a resource after `rv`.
    pub fn events_since(&self, res: &ResKey, rv: u64) -> Vec<Arc<Event>> {
        self.history
            .iter()
            .filter(|e| e.rv > rv && e.res == *res)
            .cloned()
            .collect()
    }

    fn emit(&mut self, kind: EventType, res: &ResKey, object: Value, previous: Option<Value>) {
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            res: res.clone(),
            object,
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        self.watchers.retain(|(r, tx)| {
            if r == res {
                tx.send(event.clone()).is_ok()
            } else {
                !tx.is_closed()
            }
        });
    }

    fn enqueue_gc(&self, job: GcJob) {
        if let Some(gc) = &self.gc {
            gc.pending.fetch_add(1, Ordering::SeqCst);
            if gc.tx.send(job).is_err() {
                gc.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn kind_for(&self, op: &Op, body: Option<&Value>) -> Result<String, ApiError> {
        body.and_then(|b| b.get("kind"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .or_else(|| self.kind_of(&op.res()))
            .or_else(|| paths::builtin_kind(&op.group, &op.plural).map(str::to_string))
            .ok_or_else(|| ApiError::bad_request("Object 'Kind' is missing in the request body"))
    }

    /// With `fieldValidation=Strict`, refuses fields the custom resource's CRD schema does not declare.
    fn check_fields(&self, op: &Op, kind: &str, object: &Value) -> Result<(), ApiError> {
        if !op.strict {
            return Ok(());
        }
        let version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.rsplit('/').next())
            .unwrap_or(&op.version);
        let Some(schema) = crate::openapi::crd_schema(self, &op.group, &op.plural, version) else {
            return Ok(());
        };
        let unknown = crate::schema::unknown_fields(&schema, object);
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(crate::schema::strict_error(kind, version, &unknown))
        }
    }

    fn vctx<'a>(op: &'a Op, kind: &'a str, name: &'a str) -> validation::Ctx<'a> {
        validation::Ctx {
            group: &op.group,
            plural: &op.plural,
            kind,
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(plural: &str, name: &str) -> Op {
        Op {
            version: "v1".into(),
            plural: plural.into(),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            manager: "test".into(),
            ..Op::default()
        }
    }

    #[test]
    fn writes_bump_the_global_resource_version_and_noops_do_not() {
        let mut s = State::new(100, None);
        let created = s
            .create(
                &op("configmaps", ""),
                json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
            )
            .unwrap();
        assert_eq!(created["metadata"]["resourceVersion"], "2");
        assert_eq!(created["kind"], "ConfigMap");
        let same = s
            .patch(
                &op("configmaps", "a"),
                crate::patch::PatchKind::Merge,
                br#"{"data":{"k":"v"}}"#,
            )
            .unwrap();
        assert_eq!(same["metadata"]["resourceVersion"], "2");
        let changed = s
            .patch(
                &op("configmaps", "a"),
                crate::patch::PatchKind::Merge,
                br#"{"data":{"k":"w"}}"#,
            )
            .unwrap();
        assert_eq!(changed["metadata"]["resourceVersion"], "3");
        assert_eq!(changed["metadata"]["generation"], 2);
        assert_eq!(s.events_since(&ResKey::new("", "configmaps"), 0).len(), 2);
    }

    #[test]
    fn history_compaction_is_tracked() {
        let mut s = State::new(2, None);
        for n in ["a", "b", "c"] {
            s.create(&op("configmaps", ""), json!({"metadata": {"name": n}}))
                .unwrap();
        }
        assert_eq!(s.compacted_rv(), 2);
        assert_eq!(s.events_since(&ResKey::new("", "configmaps"), 2).len(), 2);
    }
}
