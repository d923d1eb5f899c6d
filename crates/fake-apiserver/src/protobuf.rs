//! Request bodies in Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), for the kinds kubectl's
//! generators send that way: `kubectl create namespace`, `kubectl create secret generic`, `kubectl create
//! configmap` post protobuf bodies (and accept JSON back). Only those kinds' fields are decoded, into the
//! JSON the rest of the server works with; any other protobuf body is a `415 Unsupported Media Type`.
//!
//! The envelope is `k8s\0` then a `runtime.Unknown` message: `typeMeta` (1: apiVersion 1, kind 2) and `raw`
//! (2: the object's own message). Field numbers are those of `k8s.io/api/core/v1/generated.proto`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Whether a `Content-Type` is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// One wire-format field: its number and value (varints as numbers, length-delimited as bytes).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn malformed() -> ApiError {
    ApiError::bad_request("error decoding request body: malformed protobuf")
}

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos).ok_or_else(malformed)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed())
}

/// The fields of one message, in order.
fn fields(data: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Wire::Varint(varint(data, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(data, &mut pos)?).map_err(|_| malformed())?;
                let end = pos.checked_add(len).filter(|e| *e <= data.len());
                let end = end.ok_or_else(malformed)?;
                let bytes = &data[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|p| *p <= data.len())
                    .ok_or_else(malformed)?;
                continue;
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|p| *p <= data.len())
                    .ok_or_else(malformed)?;
                continue;
            }
            _ => return Err(malformed()),
        };
        out.push((number, value));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed())
}

/// A `map<string, string>` (or `map<string, bytes>` with `binary`, as base64 like JSON) entry.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), ApiError> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if binary => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (2, Wire::Bytes(b)) => value = Value::String(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(target: &mut Map<String, Value>, name: &str, entry: (String, Value)) {
    let map = target.entry(name).or_insert_with(|| json!({}));
    if let Some(map) = map.as_object_mut() {
        map.insert(entry.0, entry.1);
    }
}

fn push_string(target: &mut Map<String, Value>, name: &str, value: String) {
    let list = target.entry(name).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(Value::String(value));
    }
}

/// `ObjectMeta`: what a create may set (the server fills in the rest).
fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut meta = Map::new();
    for (number, field) in fields(bytes)? {
        let Wire::Bytes(b) = field else { continue };
        match number {
            1 => {
                meta.insert("name".into(), Value::String(text(b)?));
            }
            2 => {
                meta.insert("generateName".into(), Value::String(text(b)?));
            }
            3 => {
                meta.insert("namespace".into(), Value::String(text(b)?));
            }
            11 => insert_entry(&mut meta, "labels", map_entry(b, false)?),
            12 => insert_entry(&mut meta, "annotations", map_entry(b, false)?),
            14 => push_string(&mut meta, "finalizers", text(b)?),
            _ => {}
        }
    }
    meta.retain(|_, v| v.as_str() != Some(""));
    Ok(Value::Object(meta))
}

/// The object's own message, for the kinds decoded here.
fn object(kind: &str, raw: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (number, field) in fields(raw)? {
        match (kind, number, field) {
            (_, 1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            ("Namespace", 2, Wire::Bytes(b)) => {
                let mut spec = Map::new();
                for (n, f) in fields(b)? {
                    if let (1, Wire::Bytes(s)) = (n, f) {
                        push_string(&mut spec, "finalizers", text(s)?);
                    }
                }
                out.insert("spec".into(), Value::Object(spec));
            }
            ("Secret", 2, Wire::Bytes(b)) => insert_entry(&mut out, "data", map_entry(b, true)?),
            ("Secret", 3, Wire::Bytes(b)) => {
                out.insert("type".into(), Value::String(text(b)?));
            }
            ("Secret", 4, Wire::Bytes(b)) => {
                insert_entry(&mut out, "stringData", map_entry(b, false)?);
            }
            ("Secret", 5, Wire::Varint(v)) => {
                out.insert("immutable".into(), Value::Bool(v != 0));
            }
            ("ConfigMap", 2, Wire::Bytes(b)) => {
                insert_entry(&mut out, "data", map_entry(b, false)?)
            }
            ("ConfigMap", 3, Wire::Bytes(b)) => {
                insert_entry(&mut out, "binaryData", map_entry(b, true)?);
            }
            ("ConfigMap", 4, Wire::Varint(v)) => {
                out.insert("immutable".into(), Value::Bool(v != 0));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a protobuf request body into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    if !matches!(kind.as_str(), "Namespace" | "Secret" | "ConfigMap") || api_version != "v1" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "this test API server decodes protobuf only for v1 Namespace, Secret and ConfigMap, not {api_version} {kind}: send JSON"
            ),
        ));
    }
    let mut object = object(&kind, raw.unwrap_or_default())?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create namespace web` (v1.32) posts, byte for byte.
    const KUBECTL_CREATE_NAMESPACE: &[u8] = b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1b\n\x13\n\x03web\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00\"\x00";

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from((number << 3) | 2).unwrap()];
        out.push(u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn kubectl_create_namespace() {
        let object = decode(KUBECTL_CREATE_NAMESPACE).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}, "spec": {}})
        );
    }

    #[test]
    fn secret_with_string_data_labels_and_binary_data() {
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let label = [field(1, b"team"), field(2, b"web")].concat();
        let meta = [field(1, b"creds"), field(3, b"web"), field(11, &label)].concat();
        let data = [field(1, b"secretId"), field(2, &[0xff, 0x00])].concat();
        let string_data = [field(1, b"secretKey"), field(2, b"k")].concat();
        let raw = [
            field(1, &meta),
            field(2, &data),
            field(3, b"Opaque"),
            field(4, &string_data),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let object = decode(&body).unwrap();
        assert_eq!(
            object["metadata"],
            json!({"name": "creds", "namespace": "web", "labels": {"team": "web"}})
        );
        assert_eq!(object["data"], json!({"secretId": "/wA="}));
        assert_eq!(object["stringData"], json!({"secretKey": "k"}));
        assert_eq!(object["type"], "Opaque");
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta)].concat();
        assert_eq!(decode(&body).unwrap_err().code, 415);
        assert_eq!(decode(b"{\"kind\":\"Namespace\"}").unwrap_err().code, 400);
        assert_eq!(decode(b"k8s\x00\n\xff\xff\xff").unwrap_err().code, 400);
        // A length past the end, and a varint that never ends.
        assert_eq!(decode(b"k8s\x00\x12\x7f").unwrap_err().code, 400);
        assert_eq!(
            decode(b"k8s\x00\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
                .unwrap_err()
                .code,
            400
        );
    }
}
