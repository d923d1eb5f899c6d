//! The write pipeline: create, replace, patch, server-side apply and delete, all ending in one place that
//! applies server-owned metadata, validation, field ownership, generation, no-op detection and finalizers.

use serde_json::{Value, json};

use super::{
    DeleteOpts, Deleted, EventType, GcJob, Op, ResKey, SERVER_METADATA, State, Stored,
    finalizers_empty, meta_mut, meta_str, new_uid, now, owner_refs,
};
use crate::ssa::{self, Managed, Scope};
use crate::status::{self, ApiError};
use crate::validation;

/// An apply conflict: 409 `Conflict` with the real message and one cause per field.
fn apply_conflict(op: &Op, conflicts: &[ssa::Conflict]) -> ApiError {
    let mut e = ApiError::new(409, "Conflict", ssa::conflict_message(conflicts));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            let field: String = c.path.iter().map(|s| format!(".{s}")).collect();
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": field})
        })
        .collect();
    e.details = Some(
        json!({"name": op.name_str(), "group": op.group, "kind": op.plural, "causes": causes}),
    );
    e
}

/// The object without the fields that do not count for `metadata.generation`.
fn spec_part(obj: &Value, status_subresource: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        // Without a status subresource the real server bumps generation for status changes too (CRDs).
        if status_subresource {
            m.remove("status");
        }
    }
    v
}

/// A new namespace is `Active` and carries the `kubernetes` finalizer in its spec, as the real server's
/// strategy sets them (`kubectl get namespaces` prints the phase).
fn namespace_defaults(res: &ResKey, body: &mut Value) {
    if *res != ResKey::new("", "namespaces") {
        return;
    }
    if let Some(m) = body.as_object_mut() {
        m.insert("spec".into(), json!({ "finalizers": ["kubernetes"] }));
        m.insert("status".into(), json!({ "phase": "Active" }));
    }
}

impl State {
    // ---------------------------------------------------------------- create

    pub fn create(&mut self, op: &Op, mut body: Value) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let scope = self.scope_for(op)?;
        if scope == Scope::Status {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let kind = self.kind_for(op, Some(&body))?;
        let body_ns = meta_str(&body, "namespace")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let (Some(b), Some(u)) = (&body_ns, &op.namespace)
            && b != u
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let res = op.res();
        let ns = op.ns_key();
        let name = match meta_str(&body, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&body, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => self.generate_name(&res, &ns, prefix),
                None => {
                    return Err(ApiError::invalid(
                        &kind,
                        &op.group,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        if scope == Scope::Main
            && let Some(m) = body.as_object_mut()
        {
            // With a status subresource, creates drop `status` (CRD and built-in strategies alike).
            m.remove("status");
        }
        {
            let meta = meta_mut(&mut body);
            for f in SERVER_METADATA
                .iter()
                .chain(&["managedFields", "selfLink", "resourceVersion"])
            {
                meta.remove(*f);
            }
            meta.insert("name".into(), Value::String(name.clone()));
            if let Some(ns) = &op.namespace {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            }
            meta.insert("uid".into(), Value::String(new_uid()));
            meta.insert("creationTimestamp".into(), Value::String(now()));
            meta.insert("generation".into(), json!(1));
        }
        let api_version = self.api_version_for(op, &body);
        if let Some(m) = body.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(api_version.clone()));
            m.insert("kind".into(), Value::String(kind.clone()));
        }
        if res == ResKey::new("", "secrets") {
            validation::fold_string_data(&mut body);
        }
        validation::validate(&Self::vctx(op, &kind, &name), &body)?;
        self.check_fields(op, &kind, &body)?;
        namespace_defaults(&res, &mut body);
        if self.get(&res, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&op.group, &op.plural, &name));
        }
        let mut managed = Managed::default();
        let now = now();
        let write = ssa::Update {
            manager: &op.manager,
            subresource: "",
            scope,
            api_version: &api_version,
            now: &now,
        };
        managed.record_update(None, &body, &write);
        self.insert_new(op, &kind, name, body, managed)
    }

    fn api_version_for(&self, op: &Op, body: &Value) -> String {
        body.get("apiVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if op.group.is_empty() {
                    op.version.clone()
                } else {
                    format!("{}/{}", op.group, op.version)
                }
            })
    }

    fn generate_name(&self, res: &ResKey, ns: &str, prefix: &str) -> String {
        // The real suffix alphabet: no vowels (no words), no look-alike characters.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        loop {
            let suffix: String = (0..5)
                .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
                .collect();
            let name = format!("{prefix}{suffix}");
            if self.get(res, ns, &name).is_none() {
                return name;
            }
        }
    }

    /// Stores a new object (create, or apply that creates) and announces it.
    fn insert_new(
        &mut self,
        op: &Op,
        kind: &str,
        name: String,
        mut body: Value,
        managed: Managed,
    ) -> Result<Value, ApiError> {
        let res = op.res();
        if res == ResKey::new("apiextensions.k8s.io", "customresourcedefinitions") {
            self.accept_crd(&mut body);
        }
        if op.dry_run {
            return Ok(Self::render(&Stored {
                value: body,
                managed,
            }));
        }
        {
            let api_version = body
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let info = self.info(&op.group, &op.version, &op.plural);
            if info.kind.is_none() {
                info.kind = Some(kind.to_string());
            }
            if !api_version.is_empty() {
                info.api_version = api_version;
            }
        }
        self.rv += 1;
        meta_mut(&mut body).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let stored = Stored {
            value: body,
            managed,
        };
        let rendered = Self::render(&stored);
        if !owner_refs(&stored.value).is_empty() {
            self.enqueue_gc(GcJob::CheckOwners {
                res: res.clone(),
                namespace: op.ns_key(),
                name: name.clone(),
            });
        }
        self.objects
            .entry(res.clone())
            .or_default()
            .insert((op.ns_key(), name), stored);
        self.emit(EventType::Added, &res, rendered.clone(), None);
        Ok(rendered)
    }

    /// A CRD registers its resource, and is accepted at once (the real CRD controller sets these conditions
    /// within moments; operators wait for `Established`).
    fn accept_crd(&mut self, crd: &mut Value) {
        let spec = crd.get("spec").cloned().unwrap_or_default();
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let names = spec.get("names").cloned().unwrap_or_default();
        let Some(plural) = names
            .get("plural")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let established = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let storage = versions
            .iter()
            .find(|v| v.get("storage") == Some(&Value::Bool(true)))
            .or_else(|| versions.first())
            .cloned()
            .unwrap_or_default();
        let version = storage
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("v1")
            .to_string();
        let info = self.info(&group, &version, &plural);
        info.kind = names
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string);
        info.api_version = format!("{group}/{version}");
        info.namespaced = Some(spec.get("scope").and_then(Value::as_str) != Some("Cluster"));
        info.status_subresource = storage.pointer("/subresources/status").is_some();
        info.custom = true;
        let strings = |key: &str| -> Vec<String> {
            names
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        info.singular = names
            .get("singular")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        info.short_names = strings("shortNames");
        info.categories = strings("categories");
        if established {
            // Keep the conditions (and their timestamps) so re-applying a CRD stays a no-op.
            return;
        }
        let now = now();
        let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now});
        if let Some(m) = crd.as_object_mut() {
            m.insert(
                "status".into(),
                json!({
                    "acceptedNames": names,
                    "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
                    "storedVersions": [version],
                }),
            );
        }
    }

    // ---------------------------------------------------------------- update paths

    fn existing(&self, op: &Op) -> Result<&Stored, ApiError> {
        self.get(&op.res(), &op.ns_key(), op.name_str())
            .ok_or_else(|| ApiError::not_found(&op.group, &op.plural, op.name_str()))
    }

    fn check_identity(&self, op: &Op, body: &Value, old: &Stored) -> Result<(), ApiError> {
        let name = op.name_str();
        if let Some(body_name) = meta_str(body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(body_ns) = meta_str(body, "namespace").filter(|n| !n.is_empty())
            && Some(body_ns) != op.namespace.as_deref()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old_uid = meta_str(&old.value, "uid").unwrap_or_default();
        if let Some(uid) = meta_str(body, "uid").filter(|u| !u.is_empty())
            && uid != old_uid
        {
            return Err(ApiError::conflict(
                &op.group,
                &op.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        if let Some(rv) = meta_str(body, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta_str(&old.value, "resourceVersion")
        {
            return Err(ApiError::stale(&op.group, &op.plural, name));
        }
        Ok(())
    }

    /// The new object for a write within `scope`: outside it the stored object wins.
    fn scoped(old: &Value, new: Value, scope: Scope) -> Value {
        match scope {
            Scope::Whole => new,
            Scope::Main => {
                let mut out = new;
                if let Some(m) = out.as_object_mut() {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                out
            }
            Scope::Status => {
                // `/status` writes change only status; metadata (labels, annotations too) stays as stored.
                let mut out = old.clone();
                if let Some(m) = out.as_object_mut() {
                    match new.get("status") {
                        Some(s) if !s.is_null() => m.insert("status".into(), s.clone()),
                        _ => m.remove("status"),
                    };
                }
                out
            }
        }
    }

    pub fn replace(&mut self, op: &Op, body: Value) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let scope = self.scope_for(op)?;
        let old = self.existing(op)?.clone();
        self.check_identity(op, &body, &old)?;
        let custom = self.resources.get(&op.res()).is_some_and(|i| i.custom);
        if custom && meta_str(&body, "resourceVersion").is_none_or(str::is_empty) {
            let kind = self.kind_for(op, Some(&old.value))?;
            return Err(ApiError::invalid(
                &kind,
                &op.group,
                op.name_str(),
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        let new = Self::scoped(&old.value, body, scope);
        self.update(op, old, new, None, scope)
    }

    pub fn patch(
        &mut self,
        op: &Op,
        kind: crate::patch::PatchKind,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        use crate::patch::PatchKind;
        let scope = self.scope_for(op)?;
        if kind == PatchKind::Apply {
            return self.apply(op, body, scope);
        }
        if op.force {
            return Err(ApiError::unprocessable(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        let custom = self.resources.get(&op.res()).is_some_and(|i| i.custom);
        if kind == PatchKind::Strategic && custom {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
            ));
        }
        let old = self.existing(op)?.clone();
        let patched = match kind {
            PatchKind::Json => crate::patch::json(&old.value, body)?,
            _ => crate::patch::merge(&old.value, body)?,
        };
        self.check_identity(op, &patched, &old)?;
        let new = Self::scoped(&old.value, patched, scope);
        self.update(op, old, new, None, scope)
    }

    fn apply(&mut self, op: &Op, body: &[u8], scope: Scope) -> Result<Value, ApiError> {
        if op.manager.is_empty() {
            return Err(ApiError::unprocessable(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let applied = crate::patch::apply_body(body)?;
        let (Some(api_version), Some(kind)) = (
            applied
                .get("apiVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty()),
            applied
                .get("kind")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty()),
        ) else {
            return Err(ApiError::bad_request(
                "invalid object type: apply patches must set apiVersion and kind",
            ));
        };
        let (api_version, kind) = (api_version.to_string(), kind.to_string());
        // The config as owned fields: no server-maintained metadata, and only this scope's part.
        let mut config = applied.clone();
        {
            let meta = meta_mut(&mut config);
            for f in SERVER_METADATA.iter().chain(&[
                "managedFields",
                "selfLink",
                "resourceVersion",
                "name",
            ]) {
                meta.remove(*f);
            }
        }
        let config = match scope {
            Scope::Whole => config,
            Scope::Main => {
                let mut c = config;
                if let Some(m) = c.as_object_mut() {
                    m.remove("status");
                }
                c
            }
            Scope::Status => {
                json!({ "status": config.get("status").cloned().unwrap_or(Value::Null) })
            }
        };
        let now = now();
        let subresource = op.subresource.clone().unwrap_or_default();
        let req = ssa::Apply {
            manager: &op.manager,
            subresource: &subresource,
            scope,
            force: op.force,
            api_version: &api_version,
            now: &now,
        };

        let Some(old) = self.get(&op.res(), &op.ns_key(), op.name_str()).cloned() else {
            if scope == Scope::Status {
                return Err(ApiError::not_found(&op.group, &op.plural, op.name_str()));
            }
            // Apply creates: identity checks as for POST, then the config becomes the object.
            let ns_mismatch = meta_str(&applied, "namespace")
                .filter(|n| !n.is_empty())
                .is_some_and(|n| Some(n) != op.namespace.as_deref());
            let name_mismatch = meta_str(&applied, "name").is_some_and(|n| n != op.name_str());
            if ns_mismatch || name_mismatch {
                return Err(ApiError::bad_request(
                    "the name or namespace of the applied object does not match the URL",
                ));
            }
            let mut managed = Managed::default();
            let mut obj = managed
                .apply(&json!({}), &config, &req)
                .map_err(|c| apply_conflict(op, &c))?;
            if let Some(m) = obj.as_object_mut() {
                m.insert("apiVersion".into(), Value::String(api_version.clone()));
                m.insert("kind".into(), Value::String(kind.clone()));
            }
            let name = op.name_str().to_string();
            let meta = meta_mut(&mut obj);
            meta.insert("name".into(), Value::String(name.clone()));
            if let Some(ns) = &op.namespace {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            }
            meta.insert("uid".into(), Value::String(new_uid()));
            meta.insert("creationTimestamp".into(), Value::String(now.clone()));
            meta.insert("generation".into(), json!(1));
            if op.res() == ResKey::new("", "secrets") {
                validation::fold_string_data(&mut obj);
            }
            validation::validate(&Self::vctx(op, &kind, &name), &obj)?;
            self.check_fields(op, &kind, &obj)?;
            namespace_defaults(&op.res(), &mut obj);
            return self.insert_new(op, &kind, name, obj, managed);
        };
        self.check_identity(op, &applied, &old)?;
        let mut managed = old.managed.clone();
        let new = managed
            .apply(&old.value, &config, &req)
            .map_err(|c| apply_conflict(op, &c))?;
        self.update(op, old, new, Some(managed), scope)
    }

    /// The shared tail of every update: server metadata, validation, ownership, generation, no-op detection,
    /// finalizer-driven deletion, and the write itself.
    fn update(
        &mut self,
        op: &Op,
        old: Stored,
        mut new: Value,
        applied: Option<Managed>,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        let res = op.res();
        let name = op.name_str().to_string();
        let kind = self.kind_for(op, Some(&old.value))?;
        for f in ["apiVersion", "kind"] {
            if let (Some(m), Some(v)) = (new.as_object_mut(), old.value.get(f)) {
                m.insert(f.into(), v.clone());
            }
        }
        {
            let old_meta = old
                .value
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let meta = meta_mut(&mut new);
            for f in ["managedFields", "selfLink", "resourceVersion"] {
                meta.remove(f);
            }
            meta.insert("name".into(), Value::String(name.clone()));
            for f in SERVER_METADATA {
                match old_meta.get(f) {
                    Some(v) => meta.insert(f.into(), v.clone()),
                    None => meta.remove(f),
                };
            }
        }
        if res == ResKey::new("", "secrets") {
            validation::fold_string_data(&mut new);
        }
        let ctx = Self::vctx(op, &kind, &name);
        validation::validate(&ctx, &new)?;
        self.check_fields(op, &kind, &new)?;
        let mut old_cmp = old.value.clone();
        meta_mut(&mut old_cmp).remove("resourceVersion");
        validation::validate_update(&ctx, &old_cmp, &new)?;

        let managed = match applied {
            Some(m) => m,
            None => {
                let mut m = old.managed.clone();
                let api_version = old
                    .value
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let sub = op.subresource.clone().unwrap_or_default();
                let now = now();
                let write = ssa::Update {
                    manager: &op.manager,
                    subresource: &sub,
                    scope,
                    api_version: &api_version,
                    now: &now,
                };
                m.record_update(Some(&old_cmp), &new, &write);
                m
            }
        };
        if res == ResKey::new("apiextensions.k8s.io", "customresourcedefinitions") {
            self.accept_crd(&mut new);
        }
        // The real server skips writes that change nothing: no new resourceVersion, no watch event.
        if new == old_cmp && managed.same_fields(&old.managed) {
            return Ok(Self::render(&old));
        }
        let status_sub = self
            .resources
            .get(&res)
            .is_some_and(|i| i.status_subresource);
        if spec_part(&new, status_sub) != spec_part(&old_cmp, status_sub) {
            let generation = old
                .value
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if op.dry_run {
            return Ok(Self::render(&Stored {
                value: new,
                managed,
            }));
        }
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let stored = Stored {
            value: new,
            managed,
        };
        let rendered = Self::render(&stored);
        let previous = Self::render(&old);
        let key = (op.ns_key(), name.clone());
        if stored
            .value
            .pointer("/metadata/deletionTimestamp")
            .is_some()
            && finalizers_empty(&stored.value)
        {
            // The last finalizer is gone: the object goes now.
            if let Some(objs) = self.objects.get_mut(&res) {
                objs.remove(&key);
            }
            self.emit(EventType::Deleted, &res, rendered.clone(), Some(previous));
            self.after_removal(&res, &stored.value, false);
            return Ok(rendered);
        }
        if owner_refs(&stored.value) != owner_refs(&old.value)
            && !owner_refs(&stored.value).is_empty()
        {
            self.enqueue_gc(GcJob::CheckOwners {
                res: res.clone(),
                namespace: op.ns_key(),
                name: name.clone(),
            });
        }
        self.objects
            .entry(res.clone())
            .or_default()
            .insert(key, stored);
        self.emit(EventType::Modified, &res, rendered.clone(), Some(previous));
        Ok(rendered)
    }

    // ---------------------------------------------------------------- delete

    pub fn delete(&mut self, op: &Op, opts: &DeleteOpts) -> Result<Deleted, ApiError> {
        let res = op.res();
        let name = op.name_str().to_string();
        let old = self.existing(op)?.clone();
        let uid = meta_str(&old.value, "uid").unwrap_or_default().to_string();
        if let Some(p) = &opts.precondition_uid
            && *p != uid
        {
            return Err(ApiError::conflict(
                &op.group,
                &op.plural,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(p) = &opts.precondition_rv
            && Some(p.as_str()) != meta_str(&old.value, "resourceVersion")
        {
            let current = meta_str(&old.value, "resourceVersion").unwrap_or_default();
            return Err(ApiError::conflict(
                &op.group,
                &op.plural,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {current}"
                ),
            ));
        }
        if !finalizers_empty(&old.value) {
            if old.value.pointer("/metadata/deletionTimestamp").is_some() || opts.dry_run {
                return Ok(Deleted::Object(Self::render(&old)));
            }
            // Finalizers hold the object: it gets a deletionTimestamp (and, as on the real server, a new
            // generation) and stays until they are removed.
            let mut new = old.value.clone();
            let generation = new
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.insert("generation".into(), json!(generation + 1));
            self.rv += 1;
            meta.insert("resourceVersion".into(), Value::String(self.rv.to_string()));
            let stored = Stored {
                value: new,
                managed: old.managed.clone(),
            };
            let rendered = Self::render(&stored);
            self.objects
                .entry(res.clone())
                .or_default()
                .insert((op.ns_key(), name), stored);
            self.emit(
                EventType::Modified,
                &res,
                rendered.clone(),
                Some(Self::render(&old)),
            );
            if opts.orphan {
                self.orphan_dependents(&uid);
            }
            return Ok(Deleted::Object(rendered));
        }
        if opts.dry_run {
            return Ok(Deleted::Object(Self::render(&old)));
        }
        if opts.orphan {
            self.orphan_dependents(&uid);
        }
        let rendered = self.remove(&res, &op.ns_key(), &name, !opts.orphan);
        let custom = self.resources.get(&res).is_some_and(|i| i.custom);
        Ok(if custom {
            Deleted::Object(rendered)
        } else {
            Deleted::Status(status::success(&op.group, &op.plural, &name, &uid))
        })
    }

    /// Removes an object for good and announces it.
    fn remove(&mut self, res: &ResKey, ns: &str, name: &str, cascade: bool) -> Value {
        let Some(old) = self
            .objects
            .get_mut(res)
            .and_then(|o| o.remove(&(ns.to_string(), name.to_string())))
        else {
            return Value::Null;
        };
        self.rv += 1;
        let mut last = Self::render(&old);
        meta_mut(&mut last).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        self.emit(
            EventType::Deleted,
            res,
            last.clone(),
            Some(Self::render(&old)),
        );
        self.after_removal(res, &old.value, !cascade);
        last
    }

    fn after_removal(&mut self, res: &ResKey, obj: &Value, orphaned: bool) {
        if !orphaned && let Some(uid) = meta_str(obj, "uid") {
            self.enqueue_gc(GcJob::OwnerGone {
                uid: uid.to_string(),
            });
        }
        if *res == ResKey::new("", "namespaces")
            && let Some(ns) = meta_str(obj, "name")
        {
            self.enqueue_gc(GcJob::NamespaceGone {
                namespace: ns.to_string(),
            });
        }
    }
}
