//! OpenAPI documents for the resources this server serves, enough for kubectl (v1.27+) to validate
//! `kubectl apply -f` without `--validate=false`, and for `kubectl explain` on custom resources.
//!
//! kubectl first reads the `/openapi/v3` index and the group-version document of the object's kind: when the
//! PATCH operation of that kind declares the `fieldValidation` query parameter, kubectl leaves validation to
//! the server (it sends `fieldValidation=Strict`; see `schema.rs` for the check) and never downloads
//! `/openapi/v2`, which it asks for in protobuf only. Custom resources carry their CRD's `openAPIV3Schema`;
//! built-in kinds get a permissive schema (the server does not know their fields). `/openapi/v2` is served
//! as JSON for clients that accept it, and `406` for protobuf-only requests.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};

use serde_json::{Map, Value, json};

use crate::store::{ResKey, ResourceInfo, State};

/// One served resource, as the documents describe it.
struct Served {
    group: String,
    version: String,
    plural: String,
    kind: String,
    namespaced: bool,
    /// The CRD's `openAPIV3Schema` for this version, if it is a custom resource.
    schema: Option<Value>,
}

fn served(state: &State) -> Vec<Served> {
    state
        .resources()
        .filter_map(|(res, info)| served_one(state, res, info))
        .collect()
}

fn served_one(state: &State, res: &ResKey, info: &ResourceInfo) -> Option<Served> {
    let kind = info.kind.clone()?;
    let version = info.api_version.rsplit('/').next()?.to_string();
    Some(Served {
        schema: crd_schema(state, &res.group, &res.plural, &version),
        group: res.group.clone(),
        version,
        plural: res.plural.clone(),
        kind,
        namespaced: info.namespaced.unwrap_or(true),
    })
}

/// The `openAPIV3Schema` of a stored CRD's version.
pub fn crd_schema(state: &State, group: &str, plural: &str, version: &str) -> Option<Value> {
    let crds = state.list(
        &ResKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
        None,
    );
    let crd = crds.into_iter().map(|s| &s.value).find(|crd| {
        crd.pointer("/spec/group").and_then(Value::as_str) == Some(group)
            && crd.pointer("/spec/names/plural").and_then(Value::as_str) == Some(plural)
    })?;
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
        .cloned()
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The definition name, as the real server names them (`io.k8s.api.core.v1.Secret`, and reversed group
/// domains for custom resources: `io.tencentcert.v1alpha1.TencentCertificate`).
fn definition_name(s: &Served) -> String {
    let group = if s.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if s.group.ends_with(".k8s.io") || !s.group.contains('.') {
        format!("io.k8s.api.{}", s.group.trim_end_matches(".k8s.io"))
    } else {
        s.group.rsplit('.').collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", s.version, s.kind)
}

fn gvk(s: &Served) -> Value {
    json!({ "group": s.group, "version": s.version, "kind": s.kind })
}

fn schema_of(s: &Served) -> Value {
    let mut schema = s.schema.clone().unwrap_or_else(|| {
        json!({
            "type": "object",
            "description": format!("{} (this test API server does not describe built-in kinds' fields)", s.kind),
            "x-kubernetes-preserve-unknown-fields": true,
        })
    });
    if let Some(map) = schema.as_object_mut() {
        map.insert("x-kubernetes-group-version-kind".into(), json!([gvk(s)]));
    }
    schema
}

fn parameter(name: &str, location: &str) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "schema": { "type": "string", "uniqueItems": true } })
}

/// An operation on `s` that answers its object; `writes` ones take `fieldValidation` (what kubectl looks for).
fn operation(s: &Served, id: &str, writes: bool, reference: &str) -> Value {
    let body = json!({ "application/json": { "schema": { "$ref": reference } } });
    let mut op = json!({
        "operationId": format!("{id}{}", s.kind),
        "x-kubernetes-group-version-kind": gvk(s),
        "responses": { "200": { "description": "OK", "content": body } },
    });
    if writes {
        op["parameters"] = json!([
            parameter("dryRun", "query"),
            parameter("fieldManager", "query"),
            parameter("fieldValidation", "query"),
        ]);
        op["requestBody"] = json!({ "content": body });
    }
    op
}

fn paths_of(s: &Served, paths: &mut Map<String, Value>) {
    let reference = format!("#/components/schemas/{}", definition_name(s));
    let prefix = format!("/{}", group_version_path(&s.group, &s.version));
    let collection = if s.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", s.plural)
    } else {
        format!("{prefix}/{}", s.plural)
    };
    let scope = if s.namespaced {
        vec![parameter("namespace", "path")]
    } else {
        Vec::new()
    };
    let mut item_parameters = vec![parameter("name", "path")];
    item_parameters.extend(scope.clone());
    item_parameters.push(parameter("fieldValidation", "query"));
    paths.insert(
        collection.clone(),
        json!({
            "get": operation(s, "list", false, &reference),
            "post": operation(s, "create", true, &reference),
            "parameters": scope,
        }),
    );
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": operation(s, "read", false, &reference),
            "put": operation(s, "replace", true, &reference),
            "patch": operation(s, "patch", true, &reference),
            "delete": operation(s, "delete", false, &reference),
            "parameters": item_parameters,
        }),
    );
}

/// `/openapi/v3/{api/v1 | apis/GROUP/VERSION}`, or `None` when nothing is served there.
pub fn v3_document(state: &State, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for s in served(state)
        .into_iter()
        .filter(|s| s.group == group && s.version == version)
    {
        paths_of(&s, &mut paths);
        schemas.insert(definition_name(&s), schema_of(&s));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (fake-apiserver)", "version": "v1.33.0-fake" },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

fn content_hash(document: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    document.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// `/openapi/v3`: one entry per served group version, with a hash that changes with its document (kubectl
/// caches documents by it).
pub fn v3_index(state: &State) -> Value {
    let group_versions: BTreeMap<(String, String), ()> = served(state)
        .into_iter()
        .map(|s| ((s.group, s.version), ()))
        .collect();
    let mut paths = Map::new();
    for (group, version) in group_versions.into_keys() {
        let Some(document) = v3_document(state, &group, &version) else {
            continue;
        };
        let path = group_version_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", content_hash(&document)) }),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v2` (JSON): every served kind's definition.
pub fn v2_document(state: &State) -> Value {
    let definitions: Map<String, Value> = served(state)
        .iter()
        .map(|s| (definition_name(s), schema_of(s)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes (fake-apiserver)", "version": "v1.33.0-fake" },
        "paths": {},
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_crd() -> State {
        let mut state = State::new(100, None);
        let op = crate::store::Op {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            plural: "customresourcedefinitions".into(),
            manager: "test".into(),
            ..Default::default()
        };
        state
            .create(
                &op,
                json!({
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": "widgets.example.com"},
                    "spec": {"group": "example.com", "scope": "Namespaced",
                        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}}}]},
                }),
            )
            .unwrap();
        state
    }

    #[test]
    fn index_lists_builtin_and_custom_group_versions() {
        let state = state_with_crd();
        let index = v3_index(&state);
        for path in ["api/v1", "apis/networking.k8s.io/v1", "apis/example.com/v1"] {
            let url = index["paths"][path]["serverRelativeURL"].as_str();
            assert!(
                url.is_some_and(|u| u.starts_with(&format!("/openapi/v3/{path}?hash="))),
                "{path}: {index}"
            );
        }
    }

    #[test]
    fn patch_declares_field_validation_and_custom_kinds_carry_their_schema() {
        let state = state_with_crd();
        let doc = v3_document(&state, "example.com", "v1").unwrap();
        let item = &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"];
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Widget"
        );
        let params = item["patch"]["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
        let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(schema["properties"]["spec"]["type"], "object");
        let core = v3_document(&state, "", "v1").unwrap();
        assert!(
            core["paths"]
                .get("/api/v1/namespaces/{namespace}/secrets/{name}")
                .is_some()
        );
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some());
        assert!(v3_document(&state, "nothing.example.com", "v1").is_none());
    }
}
