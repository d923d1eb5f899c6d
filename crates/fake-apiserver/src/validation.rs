//! The server-side validation an operator actually trips over: object names, label and annotation syntax,
//! Secret/ConfigMap data rules and the fields the real server refuses to change.
//!
//! Schema validation (OpenAPI/CRD structural schemas) is deliberately not emulated.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::status::ApiError;

/// Secret and ConfigMap data together may not exceed this (`MaxSecretSize`).
const MAX_DATA_BYTES: usize = 1024 * 1024;
/// Annotations of one object may not exceed this (`TotalAnnotationSizeLimitB`).
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 subdomain: what most object names must be.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(is_alnum)
                && label.ends_with(is_alnum)
                && label.chars().all(|c| is_alnum(c) || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into())
    }
}

/// RFC 1123 label: namespace names.
pub fn dns_label(s: &str) -> Result<(), String> {
    if !s.contains('.') && s.len() <= 63 && dns_subdomain(s).is_ok() {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into())
    }
}

/// The name part of a qualified name (label key without prefix, label value when non-empty).
fn qualified_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// `[prefix/]name` as label and annotation keys must be.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if qualified_name_part(name) {
        Ok(())
    } else {
        Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)".into())
    }
}

pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_name_part(s) {
        Ok(())
    } else {
        Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)".into())
    }
}

/// Keys of Secret/ConfigMap data.
fn config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.starts_with("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What validation needs to know about the object being written.
pub struct Ctx<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, field: &str, detail: &str) -> ApiError {
        ApiError::invalid(self.kind, self.group, self.name, field, detail)
    }
}

/// Validation of a new object state, for creates and updates alike.
pub fn validate(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let name_check = if (ctx.group, ctx.plural) == ("", "namespaces") {
        dns_label
    } else {
        dns_subdomain
    };
    // Events are named `<object>.<hex>`, which is a subdomain too; everything the operator writes is covered.
    name_check(ctx.name).map_err(|e| {
        ctx.invalid(
            "metadata.name",
            &format!("Invalid value: {:?}: {e}", ctx.name),
        )
    })?;

    if let Some(labels) = obj.pointer("/metadata/labels") {
        let labels = labels
            .as_object()
            .ok_or_else(|| ctx.invalid("metadata.labels", "must be a map of strings"))?;
        for (k, v) in labels {
            label_key(k).map_err(|e| {
                ctx.invalid("metadata.labels", &format!("Invalid value: {k:?}: {e}"))
            })?;
            let v = v
                .as_str()
                .ok_or_else(|| ctx.invalid(&format!("metadata.labels[{k}]"), "must be a string"))?;
            label_value(v).map_err(|e| {
                ctx.invalid("metadata.labels", &format!("Invalid value: {v:?}: {e}"))
            })?;
        }
    }
    if let Some(annotations) = obj.pointer("/metadata/annotations") {
        let annotations = annotations
            .as_object()
            .ok_or_else(|| ctx.invalid("metadata.annotations", "must be a map of strings"))?;
        let mut total = 0;
        for (k, v) in annotations {
            label_key(k).map_err(|e| {
                ctx.invalid(
                    "metadata.annotations",
                    &format!("Invalid value: {k:?}: {e}"),
                )
            })?;
            let v = v.as_str().ok_or_else(|| {
                ctx.invalid(&format!("metadata.annotations[{k}]"), "must be a string")
            })?;
            total += k.len() + v.len();
        }
        if total > MAX_ANNOTATION_BYTES {
            return Err(ctx.invalid(
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    match (ctx.group, ctx.plural) {
        ("", "secrets") => validate_secret(ctx, obj),
        ("", "configmaps") => validate_configmap(ctx, obj),
        ("events.k8s.io", "events") => validate_event(ctx, obj),
        _ => Ok(()),
    }
}

/// The lengths kube-apiserver checks on an events.k8s.io/v1 Event (`pkg/apis/core/validation/events.go`:
/// `NoteLengthLimit` 1024, `ReasonLengthLimit` and `ActionLengthLimit` 128; Go's `len`, so bytes).
fn validate_event(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    for (field, limit) in [("note", 1024), ("reason", 128), ("action", 128)] {
        if obj.get(field).and_then(Value::as_str).map_or(0, str::len) > limit {
            // As the real server words it (it names the Go field `message` for the note).
            let path = if field == "note" { "message" } else { field };
            return Err(ctx.invalid(
                path,
                &format!("Invalid value: \"\": can have at most {limit} characters"),
            ));
        }
    }
    Ok(())
}

fn data_map<'v>(
    ctx: &Ctx,
    obj: &'v Value,
    field: &str,
) -> Result<Option<&'v Map<String, Value>>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {field} must be an object",
            ctx.kind, ctx.kind
        ))),
    }
}

fn validate_secret(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let mut total = 0;
    let mut keys = Vec::new();
    if let Some(data) = data_map(ctx, obj, "data")? {
        for (k, v) in data {
            if !config_key(k) {
                return Err(ctx.invalid(&format!("data[{k}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
            }
            // The real server decodes `[]byte` fields while reading the request: bad base64 is a 400.
            let text = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| {
                ApiError::bad_request(format!("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k}]: {e}"))
            })?;
            total += bytes.len();
            keys.push(k.as_str());
        }
    }
    if total > MAX_DATA_BYTES {
        return Err(ctx.invalid("data", "Too long: must have at most 1048576 bytes"));
    }
    let secret_type = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    let required: &[&str] = match secret_type {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !keys.contains(key) {
            return Err(ctx.invalid(&format!("data[{key}]"), "Required value"));
        }
    }
    Ok(())
}

fn validate_configmap(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let mut total = 0;
    for field in ["data", "binaryData"] {
        if let Some(data) = data_map(ctx, obj, field)? {
            for (k, v) in data {
                if !config_key(k) {
                    return Err(ctx.invalid(&format!("{field}[{k}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
                }
                total += k.len() + v.as_str().map_or(0, str::len);
            }
        }
    }
    if total > MAX_DATA_BYTES {
        return Err(ctx.invalid("data", "Too long: must have at most 1048576 bytes"));
    }
    Ok(())
}

/// Field changes the real server refuses on update.
pub fn validate_update(ctx: &Ctx, old: &Value, new: &Value) -> Result<(), ApiError> {
    if (ctx.group, ctx.plural) == ("", "secrets") && old.get("type") != new.get("type") {
        let v = new.get("type").cloned().unwrap_or(Value::Null);
        return Err(ctx.invalid("type", &format!("Invalid value: {v}: field is immutable")));
    }
    if matches!((ctx.group, ctx.plural), ("", "secrets" | "configmaps"))
        && old.get("immutable") == Some(&Value::Bool(true))
    {
        if new.get("immutable") != Some(&Value::Bool(true)) {
            return Err(ctx.invalid(
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        for field in ["data", "binaryData"] {
            if old.get(field) != new.get(field) {
                return Err(ctx.invalid(
                    field,
                    "Forbidden: field is immutable when `immutable` is set",
                ));
            }
        }
    }
    let finalizers = |v: &Value| -> Vec<String> {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let before = finalizers(old);
        if let Some(added) = finalizers(new).into_iter().find(|f| !before.contains(f)) {
            return Err(ctx.invalid(
                "metadata.finalizers",
                &format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{added:?}]"),
            ));
        }
    }
    Ok(())
}

/// Secrets: the real server folds the write-only `stringData` into `data` (base64) and never stores it.
pub fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: Ctx = Ctx {
        group: "",
        plural: "secrets",
        kind: "Secret",
        name: "s",
    };

    #[test]
    fn names_and_labels() {
        assert!(dns_subdomain("a.b-c").is_ok());
        assert!(dns_subdomain("Upper").is_err());
        assert!(dns_subdomain("-a").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(label_key("example.com/app").is_ok());
        assert!(label_key("app_Name.x").is_ok());
        assert!(label_key("bad/key/x").is_err());
        assert!(label_value(&"x".repeat(64)).is_err());
        assert!(label_value("").is_ok());
    }

    #[test]
    fn secret_rules() {
        let tls = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}});
        assert_eq!(validate(&CTX, &tls).unwrap_err().code, 422);
        let bad64 = json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}});
        assert_eq!(validate(&CTX, &bad64).unwrap_err().code, 400);
        let old = json!({"type": "Opaque"});
        let err = validate_update(&CTX, &old, &json!({"type": "kubernetes.io/tls"})).unwrap_err();
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
    }

    #[test]
    fn string_data_folds_into_data() {
        let mut s = json!({"data": {"a": "YQ=="}, "stringData": {"b": "b"}});
        fold_string_data(&mut s);
        assert_eq!(s, json!({"data": {"a": "YQ==", "b": "Yg=="}}));
    }
}
