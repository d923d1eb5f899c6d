//! `meta.k8s.io/v1` Table output for custom resources, from the CRD's `additionalPrinterColumns`, so that
//! `kubectl get` against this server prints the columns a real cluster prints.
//!
//! Resources whose CRD was created through this server get tables, and the built-in kinds of `printers.rs`;
//! for other resources kubectl's Table request falls back to plain JSON, which it prints as NAME and AGE. The JSONPath subset covers
//! what printer columns use: `.a.b`, `.a[0]`, `.a[*].b` and `.a[?(@.k=="v")].b`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::negotiate;
use crate::store::{ResKey, State};

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// `None`: the object's name (unless `computed`).
    pub json_path: Option<String>,
    /// A built-in kind's cell that is not one JSONPath (`printers.rs`).
    pub computed: Option<crate::printers::Printer>,
}

/// A resource's columns, shared by the rows of a list or a watch.
pub type Columns = Arc<Vec<Column>>;

/// The columns of a custom resource in this version, if its CRD is stored: Name, then the printer columns
/// (or "Created At" when the CRD declares none), as the real server's CRD table convertor does.
pub fn columns(state: &State, group: &str, plural: &str, version: &str) -> Option<Columns> {
    if let Some(builtin) = crate::printers::builtin_columns(group, plural) {
        return Some(builtin);
    }
    let crds = state.list(
        &ResKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
        None,
    );
    let crd = crds.into_iter().map(|s| &s.value).find(|crd| {
        crd.pointer("/spec/group").and_then(Value::as_str) == Some(group)
            && crd.pointer("/spec/names/plural").and_then(Value::as_str) == Some(plural)
    })?;
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array)?;
    let served = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        .or_else(|| versions.first())?;
    let mut out = vec![Column {
        name: "Name".into(),
        kind: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
        json_path: None,
        computed: None,
    }];
    let declared = served
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if declared.is_empty() {
        out.push(Column {
            name: "Created At".into(),
            kind: "date".into(),
            format: String::new(),
            description: "Creation timestamp.".into(),
            priority: 0,
            json_path: Some(".metadata.creationTimestamp".into()),
            computed: None,
        });
    }
    for c in declared {
        let text = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        out.push(Column {
            name: text("name"),
            kind: text("type"),
            format: text("format"),
            description: text("description"),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: Some(text("jsonPath")),
            computed: None,
        });
    }
    Some(Arc::new(out))
}

/// What each row carries besides its cells (`includeObject`; the default is the object's metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowObject {
    None,
    Metadata,
    Object,
}

impl RowObject {
    pub fn parse(value: Option<&str>) -> RowObject {
        match value {
            Some("None") => RowObject::None,
            Some("Object") => RowObject::Object,
            _ => RowObject::Metadata,
        }
    }
}

pub fn row(columns: &[Column], object: &Value, include: RowObject) -> Value {
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| match (&c.json_path, c.computed) {
            (_, Some(printer)) => crate::printers::cell(printer, object),
            (None, None) => object
                .pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null),
            (Some(path), None) => cell(&c.kind, first_match(object, path)),
        })
        .collect();
    let mut row = json!({ "cells": cells });
    match include {
        RowObject::None => {}
        RowObject::Metadata => row["object"] = negotiate::partial(object),
        RowObject::Object => row["object"] = object.clone(),
    }
    row
}

/// A Table of these rows; `columns` are left out when `with_columns` is false (watch events after the
/// first, as the real server does).
pub fn table(columns: &[Column], rows: Vec<Value>, metadata: Value, with_columns: bool) -> Value {
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "type": c.kind, "format": c.format,
                "description": c.description, "priority": c.priority,
            })
        })
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = Value::Array(definitions);
    }
    table
}

/// The real server converts the first match to the column's type and leaves the cell empty otherwise;
/// `date` cells become the time since then ("5m", "3d"), as kubectl shows AGE.
fn cell(kind: &str, value: Option<Value>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    match (kind, &value) {
        ("date", Value::String(text)) => match text.parse::<jiff::Timestamp>() {
            Ok(t) => Value::String(human_duration(
                jiff::Timestamp::now().as_second() - t.as_second(),
            )),
            Err(_) => value,
        },
        ("integer", Value::Number(n)) if n.is_i64() => value,
        ("number", Value::Number(_)) => value,
        ("boolean", Value::Bool(_)) => value,
        ("integer" | "number" | "boolean", _) => Value::Null,
        (_, Value::String(_)) => value,
        (_, Value::Null) => Value::Null,
        (_, other) => Value::String(other.to_string()),
    }
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let both = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        both(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        both(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        both(d, "d", h % 24, "h")
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        both(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// Evaluates a printer-column JSONPath and returns its first result.
pub fn first_match(object: &Value, path: &str) -> Option<Value> {
    let mut current: Vec<&Value> = vec![object];
    for step in steps(path.trim().trim_start_matches('{').trim_end_matches('}'))? {
        let mut next = Vec::new();
        for value in current {
            match &step {
                Step::Field(name) => next.extend(value.get(name.as_str())),
                Step::Index(i) => next.extend(value.as_array().and_then(|a| a.get(*i))),
                Step::All => {
                    if let Some(items) = value.as_array() {
                        next.extend(items.iter());
                    }
                }
                Step::Filter { field, equals } => {
                    if let Some(items) = value.as_array() {
                        next.extend(items.iter().filter(|item| {
                            item.pointer(&format!("/{}", field.replace('.', "/")))
                                .and_then(Value::as_str)
                                == Some(equals.as_str())
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current.first().map(|v| (*v).clone())
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter { field: String, equals: String },
}

fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end > 0 {
                out.push(Step::Field(after[..end].to_string()));
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            // A filter's quoted value may hold `]`: take up to the `)]` that closes it.
            let (inner, tail) = if after.starts_with("?(") {
                let close = after.find(")]")?;
                (&after[..=close], &after[close + 2..])
            } else {
                (&after[..end], &after[end + 1..])
            };
            out.push(bracket(inner)?);
            rest = tail;
        } else {
            return None;
        }
    }
    Some(out)
}

fn bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse() {
        return Some(Step::Index(i));
    }
    let expr = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (left, right) = expr.split_once("==")?;
    let field = left.trim().strip_prefix("@.")?.to_string();
    let right = right.trim();
    let equals = right
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| right.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))?
        .to_string();
    Some(Step::Filter { field, equals })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Value {
        json!({
            "metadata": {"name": "shop", "namespace": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"certificateId": "abc", "replicas": 3},
            "status": {"conditions": [
                {"type": "Synced", "status": "True", "reason": "Downloaded"},
                {"type": "Ready", "status": "False", "reason": "KeyMissing"}
            ]}
        })
    }

    #[test]
    fn evaluates_printer_column_paths() {
        let o = object();
        assert_eq!(first_match(&o, ".spec.certificateId"), Some(json!("abc")));
        assert_eq!(
            first_match(&o, r#".status.conditions[?(@.type=="Ready")].reason"#),
            Some(json!("KeyMissing"))
        );
        assert_eq!(
            first_match(&o, ".status.conditions[0].type"),
            Some(json!("Synced"))
        );
        assert_eq!(
            first_match(&o, ".status.conditions[*].status"),
            Some(json!("True"))
        );
        assert_eq!(first_match(&o, ".status.missing"), None);
        assert_eq!(
            first_match(&o, r#".status.conditions[?(@.type=="Gone")].status"#),
            None
        );
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86_400), "400d");
        assert_eq!(human_duration(3 * 365 * 86_400), "3y");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn rows_convert_cells_to_column_types() {
        let columns = vec![
            Column {
                name: "Name".into(),
                kind: "string".into(),
                format: "name".into(),
                description: String::new(),
                priority: 0,
                json_path: None,
                computed: None,
            },
            Column {
                name: "Replicas".into(),
                kind: "integer".into(),
                format: String::new(),
                description: String::new(),
                priority: 1,
                json_path: Some(".spec.replicas".into()),
                computed: None,
            },
            Column {
                name: "Bad".into(),
                kind: "integer".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: Some(".spec.certificateId".into()),
                computed: None,
            },
        ];
        let r = row(&columns, &object(), RowObject::Metadata);
        assert_eq!(r["cells"], json!(["shop", 3, null]));
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert!(r["object"].get("spec").is_none());
        let t = table(&columns, vec![r], json!({"resourceVersion": "5"}), true);
        assert_eq!(t["columnDefinitions"][1]["priority"], 1);
        assert_eq!(t["kind"], "Table");
    }
}
