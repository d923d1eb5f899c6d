//! `labelSelector` and `fieldSelector` query parameters, parsed and matched as apimachinery does.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::status::ApiError;
use crate::validation;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_outside_parens(input) {
            if part.trim().is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(bad_label(input, "empty requirement"));
            }
            reqs.push(parse_label_req(part.trim()).map_err(|why| bad_label(input, &why))?);
        }
        Ok(Self(reqs))
    }

    /// Matches the object's `metadata.labels`.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            LabelReq::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(v)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

fn bad_label(input: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (labelSelector {input:?})"
    ))
}

/// Splits on commas that are not inside `( … )` value sets.
fn split_outside_parens(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn parse_label_req(s: &str) -> Result<LabelReq, String> {
    let key_ok = |k: &str| -> Result<String, String> {
        validation::label_key(k).map_err(|e| format!("invalid label key {k:?}: {e}"))?;
        Ok(k.to_string())
    };
    let value_ok = |v: &str| -> Result<String, String> {
        validation::label_value(v).map_err(|e| format!("invalid label value {v:?}: {e}"))?;
        Ok(v.to_string())
    };
    if let Some(key) = s.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key_ok(key.trim())?));
    }
    if let Some(open) = s.find('(') {
        let values = s[open + 1..]
            .strip_suffix(')')
            .ok_or("missing closing parenthesis")?;
        let head: Vec<&str> = s[..open].split_whitespace().collect();
        let [key, op] = head.as_slice() else {
            return Err(format!("expected `key in (…)`, got {s:?}"));
        };
        let set = values
            .split(',')
            .map(|v| value_ok(v.trim()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match *op {
            "in" => Ok(LabelReq::In(key_ok(key)?, set)),
            "notin" => Ok(LabelReq::NotIn(key_ok(key)?, set)),
            other => Err(format!("unknown set operator {other:?}")),
        };
    }
    let Some(at) = s.find(['!', '=', '<', '>']) else {
        return Ok(LabelReq::Exists(key_ok(s)?));
    };
    let key = key_ok(s[..at].trim())?;
    let rest = &s[at..];
    let (op, value) = ["!=", "==", "=", ">", "<"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
        .ok_or_else(|| format!("unknown operator in {s:?}"))?;
    match op {
        "!=" => Ok(LabelReq::NotEq(key, value_ok(value)?)),
        "==" | "=" => Ok(LabelReq::Eq(key, value_ok(value)?)),
        _ => {
            let n = value
                .parse::<i64>()
                .map_err(|_| format!("{value:?} is not an integer"))?;
            Ok(if op == ">" {
                LabelReq::Gt(key, n)
            } else {
                LabelReq::Lt(key, n)
            })
        }
    }
}

/// A parsed field selector. The real server supports a fixed set of fields per resource and rejects the rest
/// with 400; the fake supports the common ones and rejects the rest the same way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(input: &str, group: &str, plural: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !field_supported(group, plural, field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field} (resource {plural})"
                )));
            }
            reqs.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = object
                .pointer(&pointer)
                .map(scalar_text)
                .unwrap_or_default();
            (actual == *value) == *equal
        })
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn field_supported(group: &str, plural: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match (group, plural) {
        ("", "secrets") => field == "type",
        ("", "events") => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "type" | "source" | "reportingComponent")
        }
        ("", "pods") => matches!(
            field,
            "spec.nodeName" | "status.phase" | "spec.serviceAccountName"
        ),
        ("", "namespaces") => field == "status.phase",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "type": "kubernetes.io/tls"})
    }

    #[test]
    fn equality_and_set_based() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("tier in (front, back)"));
        assert!(!m("tier notin (front,back)"));
        assert!(m("missing notin (a)"));
        assert!(!m("missing in (a)"));
        assert!(m("app"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("n>4,n<6"));
        assert!(m("app in (web),!missing,tier"));
    }

    #[test]
    fn malformed_label_selectors_are_400() {
        for bad in [
            "app in (a",
            "a=b=c!",
            "in (a)",
            "app=",
            "=x",
            "a b c",
            "-bad=1",
            "a=b,",
        ] {
            if bad == "app=" {
                // An empty value is valid (it matches an empty label).
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert_eq!(LabelSelector::parse(bad).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let f = |s: &str| FieldSelector::parse(s, "", "secrets").unwrap().matches(&o);
        assert!(f("metadata.name=a"));
        assert!(f("metadata.name==a,metadata.namespace=ns"));
        assert!(!f("metadata.name!=a"));
        assert!(f("type=kubernetes.io/tls"));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", "", "secrets")
                .unwrap_err()
                .code,
            400
        );
    }
}
