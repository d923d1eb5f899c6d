//! The real API server stores one Event resource and serves it as both `events.k8s.io/v1` and core `v1`.
//! Operators write the former (kube's `Recorder`), `kubectl describe` reads the latter; this server stores
//! objects once per resource, so core `v1` lists of events also show the `events.k8s.io/v1` ones, converted.

use serde_json::{Map, Value, json};

use crate::store::{ResKey, State};

/// Whether a list of this resource should include the converted `events.k8s.io/v1` events.
pub fn is_core_events(group: &str, plural: &str) -> bool {
    group.is_empty() && plural == "events"
}

/// The `events.k8s.io/v1` events of a namespace (or all), as core `v1` Events.
pub fn core_view(state: &State, namespace: Option<&str>) -> Vec<Value> {
    state
        .list(&ResKey::new("events.k8s.io", "events"), namespace)
        .into_iter()
        .map(|stored| to_core(&State::render(stored)))
        .collect()
}

/// The field mapping of the real server's conversion (`k8s.io/kubernetes/pkg/apis/events/v1`).
pub fn to_core(event: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("v1"));
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = event.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "metadata", "metadata");
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "note", "message");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    copy(&mut out, "deprecatedCount", "count");
    match event.get("deprecatedSource").filter(|v| !v.is_null()) {
        Some(source) => {
            out.insert("source".into(), source.clone());
        }
        None => {
            if let Some(controller) = event.get("reportingController") {
                out.insert("source".into(), json!({ "component": controller }));
            }
        }
    }
    if let Some(series) = event.get("series").filter(|v| !v.is_null()) {
        out.insert(
            "series".into(),
            json!({ "count": series.get("count"), "lastObservedTime": series.get("lastObservedTime") }),
        );
        // `kubectl describe` shows "(xN over …)" from count and the last observation.
        if !out.contains_key("count") {
            out.insert(
                "count".into(),
                series.get("count").cloned().unwrap_or(Value::Null),
            );
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_fields_describe_reads() {
        let event = json!({
            "kind": "Event", "apiVersion": "events.k8s.io/v1",
            "metadata": {"name": "shop.1", "namespace": "web"},
            "regarding": {"kind": "TencentCertificate", "name": "shop", "namespace": "web", "uid": "u1"},
            "reason": "SecretWritten", "note": "wrote Secret web/shop-tls", "type": "Normal",
            "action": "Reconcile", "eventTime": "2026-11-28T00:00:00.000000Z",
            "reportingController": "tencent-cert-operator", "reportingInstance": "pod-1",
            "series": {"count": 3, "lastObservedTime": "2026-11-28T00:05:00.000000Z"}
        });
        let core = to_core(&event);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "u1");
        assert_eq!(core["message"], "wrote Secret web/shop-tls");
        assert_eq!(core["source"]["component"], "tencent-cert-operator");
        assert_eq!(core["count"], 3);
        assert!(core.get("note").is_none());
    }
}
