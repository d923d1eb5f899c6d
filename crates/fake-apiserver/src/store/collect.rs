//! Garbage-collection decisions (what the background collector in `crate::gc` does at each step) and
//! orphaning: which objects lost their owners, and whether to delete them or drop dangling references.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    DeleteOpts, EventType, GcJob, Op, ResKey, State, Stored, meta_mut, meta_str, owner_refs,
};

impl State {
    /// `propagationPolicy: Orphan`: dependents lose their reference to the owner instead of being deleted.
    pub(super) fn orphan_dependents(&mut self, owner_uid: &str) {
        for (res, ns, name) in self.dependents_of(owner_uid) {
            self.drop_owner_refs(&res, &ns, &name, &BTreeSet::from([owner_uid.to_string()]));
        }
    }

    fn dependents_of(&self, owner_uid: &str) -> Vec<(ResKey, String, String)> {
        let mut out = Vec::new();
        for (res, objs) in &self.objects {
            for ((ns, name), s) in objs {
                if owner_refs(&s.value)
                    .iter()
                    .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
                {
                    out.push((res.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    fn drop_owner_refs(&mut self, res: &ResKey, ns: &str, name: &str, uids: &BTreeSet<String>) {
        let Some(old) = self.get(res, ns, name).cloned() else {
            return;
        };
        let mut new = old.value.clone();
        if let Some(refs) = new
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(|u| !uids.contains(u))
            });
            if refs.is_empty()
                && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.remove("ownerReferences");
            }
        }
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let stored = Stored {
            value: new,
            managed: old.managed.clone(),
        };
        let rendered = Self::render(&stored);
        self.objects
            .entry(res.clone())
            .or_default()
            .insert((ns.to_string(), name.to_string()), stored);
        self.emit(EventType::Modified, res, rendered, Some(Self::render(&old)));
    }

    // ---------------------------------------------------------------- garbage collection

    /// One GC step, as the real garbage collector does it with background propagation.
    pub fn collect(&mut self, job: GcJob) {
        match job {
            GcJob::OwnerGone { uid } => {
                for (res, ns, name) in self.dependents_of(&uid) {
                    self.check_owners(&res, &ns, &name);
                }
            }
            GcJob::CheckOwners {
                res,
                namespace,
                name,
            } => self.check_owners(&res, &namespace, &name),
            GcJob::NamespaceGone { namespace } => {
                let victims: Vec<(ResKey, String)> = self
                    .objects
                    .iter()
                    .flat_map(|(res, objs)| {
                        objs.keys()
                            .filter(|(ns, _)| *ns == namespace)
                            .map(|(_, n)| (res.clone(), n.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (res, name) in victims {
                    self.gc_delete(&res, &namespace, &name);
                }
            }
        }
    }

    /// Whether an owner reference resolves: the uid exists, with the referenced name, and (for a namespaced
    /// dependent) either cluster-scoped or in the dependent's namespace: the real GC looks owners up in the
    /// dependent's namespace, so a cross-namespace owner counts as absent.
    fn owner_exists(&self, reference: &Value, dependent_ns: &str) -> bool {
        let uid = reference
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = reference
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.objects
            .values()
            .flat_map(|o| o.iter())
            .any(|((ns, n), s)| {
                meta_str(&s.value, "uid") == Some(uid)
                    && n == name
                    && (ns.is_empty() || ns == dependent_ns)
            })
    }

    fn check_owners(&mut self, res: &ResKey, ns: &str, name: &str) {
        let Some(obj) = self.get(res, ns, name) else {
            return;
        };
        let refs = owner_refs(&obj.value);
        if refs.is_empty() {
            return;
        }
        let dangling: BTreeSet<String> = refs
            .iter()
            .filter(|r| !self.owner_exists(r, ns))
            .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
            .collect();
        if dangling.is_empty() {
            return;
        }
        if dangling.len() < refs.len() {
            self.drop_owner_refs(res, ns, name, &dangling);
        } else {
            self.gc_delete(res, ns, name);
        }
    }

    /// A delete issued by the GC: like an API DELETE, finalizers hold the object.
    fn gc_delete(&mut self, res: &ResKey, ns: &str, name: &str) {
        let op = Op {
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: Some(name.to_string()),
            manager: "generic-garbage-collector".into(),
            ..Op::default()
        };
        // Errors cannot happen without preconditions on an object just looked up; nothing to report them to.
        let _ = self.delete(&op, &DeleteOpts::default());
    }
}
