//! `fieldValidation=Strict` for custom resources: fields their CRD's structural schema does not declare are
//! refused, as the real server refuses them (and as kubectl asks for by default). Types, formats, CEL rules
//! and defaults are not checked; built-in kinds are not checked (this server does not know their fields).

use serde_json::Value;

use crate::status::ApiError;

/// Object fields every resource has at its root (and embedded resources at theirs).
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn walk(schema: &Value, value: &Value, path: &str, root: bool, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
    {
        return;
    }
    let embedded = schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if (root || embedded) && ROOT_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(declared), _) => walk(declared, child, &child_path, false, out),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(schema @ Value::Object(_))) => {
                        walk(schema, child, &child_path, false, out);
                    }
                    (None, _) => out.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// The paths of `object`'s fields that `schema` does not declare (`spec.foo`, `spec.list[0].bar`).
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, object, "", true, &mut out);
    out
}

/// The real server's answer to a strict write with undeclared fields.
pub fn strict_error(kind: &str, version: &str, unknown: &[String]) -> ApiError {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn undeclared_fields_are_found_at_every_depth() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "id": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }});
        let object = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"id": "x", "typo": 1, "labels": {"any": "thing"}, "list": [{"a": "1", "b": 2}],
                     "free": {"anything": {"goes": true}}},
            "status": {"whatever": 1},
            "extra": true,
        });
        assert_eq!(
            unknown_fields(&schema, &object),
            ["extra", "spec.list[0].b", "spec.typo"]
        );
        let clean =
            json!({"apiVersion": "v", "kind": "Widget", "metadata": {}, "spec": {"id": "x"}});
        assert!(unknown_fields(&schema, &clean).is_empty());
    }

    #[test]
    fn the_error_reads_like_the_real_one() {
        let err = strict_error("Widget", "v1", &["spec.typo".to_string()]);
        assert_eq!(err.code, 400);
        assert!(err.message.contains(
            "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.typo\""
        ), "{}", err.message);
    }
}
