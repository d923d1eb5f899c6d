//! PATCH bodies: which kind a request is, and applying merge and JSON patches.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// Strategic merge patch. Applied as a merge patch: the list merge keys of built-in types are not
    /// emulated, so a strategic patch of a list replaces it.
    Strategic,
    /// RFC 6902 JSON patch.
    Json,
    /// Server-side apply.
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Applies a merge (or strategic, see [`PatchKind::Strategic`]) patch.
pub fn merge(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: a merge patch must be a JSON object",
        ));
    }
    let mut out = target.clone();
    json_patch::merge(&mut out, &patch);
    Ok(out)
}

/// Applies an RFC 6902 JSON patch. A malformed patch is a 400; a failing `test` or a bad path a 422, as the
/// real server answers.
///
/// One deviation from the RFC is kept on purpose because the real server (evanphx/json-patch) has it and
/// kube relies on it: `test` with value `null` passes when the member is absent but its parent exists.
/// kube-runtime's `finalizer()` adds the first finalizer with `test /metadata/finalizers == null`.
pub fn json(target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let ops: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = target.clone();
    for op in &ops.0 {
        if let json_patch::PatchOperation::Test(test) = op
            && test.value.is_null()
            && absent_with_parent(&out, test.path.as_str())
        {
            continue;
        }
        // `patch_unsafe` leaves the document half-patched on error, which is fine on a copy we then discard;
        // the undo-on-error variant can panic, which a test server must not.
        json_patch::patch_unsafe(&mut out, std::slice::from_ref(op)).map_err(|e| {
            ApiError::unprocessable(format!(
                "the server rejected our request due to an error in our request: {e}"
            ))
        })?;
    }
    Ok(out)
}

fn absent_with_parent(doc: &Value, pointer: &str) -> bool {
    let Some((parent, _)) = pointer.rsplit_once('/') else {
        return false;
    };
    doc.pointer(pointer).is_none()
        && doc
            .pointer(parent)
            .is_some_and(|p| p.is_object() || p.is_array())
}

/// An apply body: YAML by media type, JSON (a YAML subset) in practice.
pub fn apply_body(body: &[u8]) -> Result<Value, ApiError> {
    let value = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("apply body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("apply body must be an object"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_is_rfc7386() {
        let t = json!({"a": 1, "m": {"x": 1, "y": 2}, "l": [1, 2]});
        let out = merge(&t, br#"{"a": null, "m": {"x": 3}, "l": [3]}"#).unwrap();
        assert_eq!(out, json!({"m": {"x": 3, "y": 2}, "l": [3]}));
        assert_eq!(merge(&t, b"[1]").unwrap_err().code, 400);
        assert_eq!(merge(&t, b"{").unwrap_err().code, 400);
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"a": 1, "l": [1]});
        let body = br#"[{"op":"test","path":"/a","value":1},{"op":"replace","path":"/a","value":2},
            {"op":"add","path":"/l/-","value":2},{"op":"remove","path":"/l/0"}]"#;
        assert_eq!(json(&t, body).unwrap(), json!({"a": 2, "l": [2]}));
        assert_eq!(
            json(&t, br#"[{"op":"test","path":"/a","value":9}]"#)
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(
            json(&t, br#"[{"op":"remove","path":"/nope"}]"#)
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(json(&t, br#"{"op":"add"}"#).unwrap_err().code, 400);
        // kube-runtime's finalizer(): test-for-null on an absent member, then add.
        let obj = json!({"metadata": {"name": "x"}});
        let add = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
            {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        assert_eq!(
            json(&obj, add).unwrap(),
            json!({"metadata": {"name": "x", "finalizers": ["f"]}})
        );
        assert_eq!(
            json(
                &obj,
                br#"[{"op":"test","path":"/nope/deeper","value":null}]"#
            )
            .unwrap_err()
            .code,
            422
        );
        assert_eq!(
            json(&t, br#"[{"op":"test","path":"/a","value":null}]"#)
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn apply_body_accepts_yaml() {
        assert_eq!(
            apply_body(b"a: 1\nb: [x]\n").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert_eq!(apply_body(b"- 1").unwrap_err().code, 400);
        assert_eq!(
            PatchKind::from_content_type("application/json")
                .unwrap_err()
                .code,
            415
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml; charset=utf-8").unwrap(),
            PatchKind::Apply
        );
    }
}
