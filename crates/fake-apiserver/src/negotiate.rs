//! `Accept` negotiation: full objects, or `meta.k8s.io/v1` PartialObjectMetadata(List) as kube's
//! `metadata_watcher`, `Api::get_metadata` and `Api::list_metadata` ask for with
//! `application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.

use serde_json::{Value, json};

use crate::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Full,
    Metadata,
    /// `meta.k8s.io/v1` Table (see `table.rs`); offered only where the caller can build one.
    Table,
}

/// Picks the first media range of `accept` this server can produce. `list` says whether the response is a
/// list (the real server insists on `PartialObjectMetadataList` for lists and `PartialObjectMetadata` for
/// single objects and watch events); `as=Table` is taken when `table` says the resource has one, and is
/// skipped like non-JSON types otherwise.
pub fn shape(accept: Option<&str>, list: bool, table: bool) -> Result<Shape, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Shape::Full);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let (mut as_, mut g, mut v) = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => as_ = Some(x),
                Some(("g", x)) => g = Some(x),
                Some(("v", x)) => v = Some(x),
                _ => {}
            }
        }
        match as_ {
            None => return Ok(Shape::Full),
            Some("Table") if table && g == Some("meta.k8s.io") && v == Some("v1") => {
                return Ok(Shape::Table);
            }
            Some(kind) if g == Some("meta.k8s.io") && v == Some("v1") => {
                let wanted = if list {
                    "PartialObjectMetadataList"
                } else {
                    "PartialObjectMetadata"
                };
                if kind == wanted {
                    return Ok(Shape::Metadata);
                }
            }
            Some(_) => {}
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!(
            "only the following media types are accepted: application/json (requested {accept:?})"
        ),
    ))
}

/// `PartialObjectMetadata` of an object.
pub fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

pub fn shaped(object: Value, shape: Shape) -> Value {
    match shape {
        // Tables are built by the handlers that offer them; anything else gets the object.
        Shape::Full | Shape::Table => object,
        Shape::Metadata => partial(&object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_metadata_headers() {
        let one = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(shape(Some(one), false, false).unwrap(), Shape::Metadata);
        assert_eq!(shape(Some(list), true, false).unwrap(), Shape::Metadata);
        assert_eq!(shape(Some(one), true, false).unwrap_err().code, 406);
        assert_eq!(shape(None, true, true).unwrap(), Shape::Full);
        assert_eq!(
            shape(Some("application/json"), false, true).unwrap(),
            Shape::Full
        );
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(shape(Some(kubectl), true, false).unwrap(), Shape::Full);
        assert_eq!(shape(Some(kubectl), true, true).unwrap(), Shape::Table);
        assert_eq!(
            shape(Some("application/vnd.kubernetes.protobuf"), false, false)
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn partial_keeps_only_metadata() {
        let p = partial(&json!({"kind": "Secret", "metadata": {"name": "a"}, "data": {"k": "v"}}));
        assert_eq!(
            p,
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "a"}})
        );
    }
}
