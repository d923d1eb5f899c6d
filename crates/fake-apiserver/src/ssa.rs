//! Server-side apply and field ownership, simplified from structured-merge-diff.
//!
//! Every object carries, per field manager, the set of field paths it owns. Maps are recursed to their
//! leaves, so `metadata.labels.x`, `metadata.annotations.x` and `data.x` are separate fields; lists and
//! scalars are atomic leaves (the real server also merges lists marked `listType=map|set`; that is not
//! emulated). The rules that matter to an operator are the real ones:
//! - an apply sets what it sends and *removes* what the same manager applied before but omits now, unless
//!   another manager owns it too;
//! - changing a field another manager owns with a different value is a conflict unless forced, and forcing
//!   takes ownership;
//! - non-apply writes ("Update" operations) take ownership of exactly the fields they change, without
//!   conflicts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

pub type FieldPath = Vec<String>;

/// One `managedFields` entry's identity: the real server keeps apply and update entries of the same
/// manager, and main-resource and `/status` entries, apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerKey {
    pub manager: String,
    pub apply: bool,
    /// `""` or `"status"`.
    pub subresource: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    fields: BTreeSet<FieldPath>,
    api_version: String,
    time: String,
}

/// The field ownership of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed {
    entries: BTreeMap<ManagerKey, Entry>,
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (no status subresource).
    Whole,
    /// The main resource of a kind with a status subresource: everything but `status`.
    Main,
    /// `/status`: only `status`.
    Status,
}

impl Scope {
    pub fn covers(self, path: &[String]) -> bool {
        let is_status = path.first().is_some_and(|p| p == "status");
        match self {
            Scope::Whole => true,
            Scope::Main => !is_status,
            Scope::Status => is_status,
        }
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: FieldPath,
}

/// System-maintained metadata: never owned, never applied.
const SYSTEM_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The owned-field leaves of `value` within `scope`.
pub fn leaves(value: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let Some(top) = value.as_object() else {
        return out;
    };
    for (k, v) in top {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let mut path = vec![k.clone()];
        if k == "metadata" {
            let Some(meta) = v.as_object() else { continue };
            for (mk, mv) in meta {
                if SYSTEM_METADATA.contains(&mk.as_str()) || mk == "generateName" {
                    continue;
                }
                path.push(mk.clone());
                walk(mv, &mut path, &mut out);
                path.pop();
            }
        } else {
            walk(v, &mut path, &mut out);
        }
    }
    out.retain(|p| scope.covers(p));
    out
}

pub fn get<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |v, k| v.as_object()?.get(k))
        .filter(|v| !v.is_null())
}

/// Removes the field at `path`, and the maps that removal leaves empty (but never `metadata` or the root).
pub fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = &mut *value;
    for k in parents {
        match cursor.as_object_mut().and_then(|m| m.get_mut(k)) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
        if map.is_empty() && parents.len() > 1 {
            remove(value, parents);
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// An applied empty map over an existing map only asserts the map exists; it neither replaces nor
/// conflicts with the entries other managers own inside it.
fn map_presence(applied: &Value, live: &Value, path: &[String]) -> bool {
    get(applied, path)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
        && get(live, path).is_none_or(Value::is_object)
}

/// Merges `applied` into `target`: maps recursively, everything else replaced; nulls mean "not set".
pub fn deep_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        let mut fresh = Value::Object(Map::new());
                        if v.is_object() {
                            deep_merge(&mut fresh, v);
                        } else {
                            fresh = v.clone();
                        }
                        t.insert(k.clone(), fresh);
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Who makes a non-apply write, for [`Managed::record_update`].
#[derive(Clone, Copy)]
pub struct Update<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub scope: Scope,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// One apply request.
pub struct Apply<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub scope: Scope,
    pub force: bool,
    pub api_version: &'a str,
    pub now: &'a str,
}

impl Managed {
    /// Server-side apply of `applied` (the request body, already cut to `scope`) onto `live`. Returns the
    /// new object, or the conflicts that block it.
    pub fn apply(
        &mut self,
        live: &Value,
        applied: &Value,
        req: &Apply,
    ) -> Result<Value, Vec<Conflict>> {
        let key = ManagerKey {
            manager: req.manager.to_string(),
            apply: true,
            subresource: req.subresource.to_string(),
        };
        let new_set = leaves(applied, req.scope);

        let mut conflicts = Vec::new();
        for (other, entry) in &self.entries {
            if other.manager == req.manager {
                continue;
            }
            for owned in &entry.fields {
                let Some(p) = new_set
                    .iter()
                    .find(|p| overlaps(p, owned) && !map_presence(applied, live, p))
                else {
                    continue;
                };
                // Compare at the deeper of the two paths: that is where the values can differ.
                let at = if p.len() >= owned.len() { p } else { owned };
                if get(live, at) != get(applied, at) {
                    conflicts.push(Conflict {
                        manager: other.manager.clone(),
                        api_version: entry.api_version.clone(),
                        path: owned.clone(),
                    });
                }
            }
        }
        if !conflicts.is_empty() {
            if !req.force {
                return Err(conflicts);
            }
            for c in &conflicts {
                for entry in self.entries.values_mut() {
                    entry.fields.remove(&c.path);
                }
            }
        }

        let mut out = live.clone();
        let previous = self
            .entries
            .get(&key)
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        for dropped in previous.difference(&new_set) {
            // Owning a map (an applied `{}`) is owning its presence: children others set stay.
            if get(&out, dropped)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                continue;
            }
            let shared = self
                .entries
                .iter()
                .any(|(k, e)| *k != key && e.fields.iter().any(|f| overlaps(f, dropped)));
            if !shared {
                remove(&mut out, dropped);
            }
        }
        deep_merge(&mut out, applied);
        self.set(key, new_set, req.api_version, req.now);
        Ok(out)
    }

    /// Ownership after a non-apply write by `manager` turned `old` (None on create) into `new`.
    pub fn record_update(&mut self, old: Option<&Value>, new: &Value, write: &Update) {
        let Update {
            manager,
            subresource,
            scope,
            api_version,
            now,
        } = *write;
        let new_leaves = leaves(new, scope);
        let old_leaves = old.map(|o| leaves(o, scope)).unwrap_or_default();
        let changed: BTreeSet<FieldPath> = new_leaves
            .iter()
            .filter(|p| old.is_none_or(|o| get(o, p) != get(new, p)))
            .cloned()
            .collect();
        let removed: Vec<FieldPath> = old_leaves
            .iter()
            .filter(|p| get(new, p).is_none())
            .cloned()
            .collect();
        let key = ManagerKey {
            manager: manager.to_string(),
            apply: false,
            subresource: subresource.to_string(),
        };
        let touched = |f: &FieldPath| changed.iter().chain(removed.iter()).any(|c| overlaps(c, f));
        let keys: Vec<ManagerKey> = self.entries.keys().cloned().collect();
        for k in keys {
            if k == key {
                continue;
            }
            let fields: BTreeSet<FieldPath> = self.entries[&k]
                .fields
                .iter()
                .filter(|f| !touched(f))
                .cloned()
                .collect();
            let (api_version, time) = (
                self.entries[&k].api_version.clone(),
                self.entries[&k].time.clone(),
            );
            self.set(k, fields, &api_version, &time);
        }
        let mut mine = self
            .entries
            .get(&key)
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        mine.retain(|f| !removed.iter().any(|r| overlaps(r, f)));
        mine.extend(changed.iter().cloned());
        if !changed.is_empty() || self.entries.contains_key(&key) {
            self.set(key, mine, api_version, now);
        }
    }

    /// Stores an entry, keeping its timestamp when nothing about it changed (so a no-op write stays a no-op)
    /// and dropping entries that own nothing, as the real server does.
    fn set(&mut self, key: ManagerKey, fields: BTreeSet<FieldPath>, api_version: &str, now: &str) {
        if fields.is_empty() {
            self.entries.remove(&key);
            return;
        }
        if let Some(e) = self.entries.get(&key)
            && e.fields == fields
        {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                fields,
                api_version: api_version.to_string(),
                time: now.to_string(),
            },
        );
    }

    /// Whether two ownership states differ in anything but timestamps.
    pub fn same_fields(&self, other: &Managed) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, a), (kb, b))| ka == kb && a.fields == b.fields)
    }

    /// Managers owning exactly `path`.
    #[cfg(test)]
    pub fn owners(&self, path: &[String]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.fields.iter().any(|f| f == path))
            .map(|(k, _)| k.manager.clone())
            .collect()
    }

    /// `metadata.managedFields` in the real wire format (FieldsV1, `f:` keys).
    pub fn render(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|(key, entry)| {
                let mut fields = Map::new();
                for path in &entry.fields {
                    let mut cursor = &mut fields;
                    for seg in path {
                        let next = cursor
                            .entry(format!("f:{seg}"))
                            .or_insert_with(|| Value::Object(Map::new()));
                        // A path that is a leaf here and a prefix elsewhere cannot happen within one set.
                        let Value::Object(next) = next else { break };
                        cursor = next;
                    }
                }
                let mut e = json!({
                    "manager": key.manager,
                    "operation": if key.apply { "Apply" } else { "Update" },
                    "apiVersion": entry.api_version,
                    "time": entry.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                });
                if !key.subresource.is_empty() {
                    e["subresource"] = Value::String(key.subresource.clone());
                }
                e
            })
            .collect();
        Value::Array(entries)
    }
}

/// The real server's conflict message: `Apply failed with 1 conflict: conflict with "m" using v1: .data.x`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let dotted = |p: &FieldPath| p.iter().map(|s| format!(".{s}")).collect::<String>();
    let n = conflicts.len();
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            dotted(&c.path)
        );
    }
    let mut by_manager: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((&c.manager, &c.api_version))
            .or_default()
            .push(dotted(&c.path));
    }
    let parts: Vec<String> = by_manager
        .into_iter()
        .map(|((m, v), paths)| {
            let list: String = paths.iter().map(|p| format!("\n- {p}")).collect();
            format!("conflicts with \"{m}\" using {v}:{list}")
        })
        .collect();
    format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('.').map(str::to_string).collect()
    }

    fn upd(manager: &str) -> Update<'_> {
        Update {
            manager,
            subresource: "",
            scope: Scope::Whole,
            api_version: "v1",
            now: "t",
        }
    }

    fn req(manager: &str, force: bool) -> Apply<'_> {
        Apply {
            manager,
            subresource: "",
            scope: Scope::Whole,
            force,
            api_version: "v1",
            now: "t",
        }
    }

    #[test]
    fn leaves_skip_system_metadata_and_recurse_maps() {
        let obj = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "x", "uid": "u", "labels": {"a": "1"}, "finalizers": ["f"]},
            "data": {"k": "dg=="}, "list": [1, 2], "empty": {}});
        let got = leaves(&obj, Scope::Whole);
        let want: BTreeSet<FieldPath> = [
            "metadata.labels.a",
            "metadata.finalizers",
            "data.k",
            "list",
            "empty",
        ]
        .iter()
        .map(|s| p(s))
        .collect();
        assert_eq!(got, want);
        assert!(
            leaves(&json!({"status": {"a": 1}, "spec": {"b": 1}}), Scope::Main)
                .iter()
                .all(|f| f[0] == "spec")
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_but_keeps_shared_ones() {
        let mut m = Managed::default();
        let live = m
            .apply(
                &json!({}),
                &json!({"data": {"a": "1", "b": "2"}}),
                &req("x", false),
            )
            .unwrap();
        m.record_update(Some(&live), &live, &upd("y"));
        let live = m
            .apply(&live, &json!({"data": {"a": "1"}}), &req("x", false))
            .unwrap();
        assert_eq!(live, json!({"data": {"a": "1"}}));
        // "z" applies the same value for data.a: shared ownership, so x dropping it keeps it.
        let live = m
            .apply(&live, &json!({"data": {"a": "1"}}), &req("z", false))
            .unwrap();
        let live = m
            .apply(&live, &json!({"data": {"c": "3"}}), &req("x", false))
            .unwrap();
        assert_eq!(live, json!({"data": {"a": "1", "c": "3"}}));
        assert_eq!(m.owners(&p("data.a")), vec!["z".to_string()]);
    }

    #[test]
    fn conflicts_and_force() {
        let mut m = Managed::default();
        let live = m
            .apply(&json!({}), &json!({"spec": {"n": 1}}), &req("x", false))
            .unwrap();
        let err = m
            .apply(&live, &json!({"spec": {"n": 2}}), &req("y", false))
            .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "x".into(),
                api_version: "v1".into(),
                path: p("spec.n")
            }]
        );
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"x\" using v1: .spec.n"
        );
        let live = m
            .apply(&live, &json!({"spec": {"n": 2}}), &req("y", true))
            .unwrap();
        assert_eq!(live, json!({"spec": {"n": 2}}));
        assert_eq!(m.owners(&p("spec.n")), vec!["y".to_string()]);
    }

    #[test]
    fn an_applied_empty_map_neither_conflicts_nor_wipes() {
        let mut m = Managed::default();
        let live = m
            .apply(
                &json!({}),
                &json!({"metadata": {"labels": {"a": "1"}}}),
                &req("x", false),
            )
            .unwrap();
        let edited = json!({"metadata": {"labels": {"a": "1", "user": "u"}}});
        m.record_update(Some(&live), &edited, &upd("editor"));
        let out = m
            .apply(
                &edited,
                &json!({"metadata": {"labels": {}}}),
                &req("x", false),
            )
            .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"user": "u"}}}));
    }

    #[test]
    fn updates_take_changed_fields_only() {
        let mut m = Managed::default();
        let live = m
            .apply(
                &json!({}),
                &json!({"spec": {"a": 1, "b": 1}}),
                &req("x", false),
            )
            .unwrap();
        let edited = json!({"spec": {"a": 2, "b": 1}});
        m.record_update(Some(&live), &edited, &upd("editor"));
        assert_eq!(m.owners(&p("spec.a")), vec!["editor".to_string()]);
        assert_eq!(m.owners(&p("spec.b")), vec!["x".to_string()]);
        let rendered = m.render();
        assert_eq!(rendered[0]["fieldsV1"], json!({"f:spec": {"f:a": {}}}));
    }

    #[test]
    fn remove_prunes_emptied_maps() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": {"y": 1}}});
        remove(&mut v, &p("metadata.labels.a"));
        remove(&mut v, &p("spec.x.y"));
        assert_eq!(v, json!({"metadata": {}, "spec": {}}));
    }
}
