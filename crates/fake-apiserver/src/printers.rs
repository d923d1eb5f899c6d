//! The real server's table columns for the built-in kinds a `kubectl get` against the demo shows: Secret
//! (TYPE DATA AGE), Event (LAST SEEN TYPE REASON OBJECT MESSAGE), Namespace (STATUS AGE) and Ingress (CLASS
//! HOSTS ADDRESS PORTS AGE), as `k8s.io/kubernetes/pkg/printers/internalversion` prints them. Other built-in
//! kinds get no table, and kubectl prints NAME and AGE.

use std::sync::Arc;

use serde_json::Value;

use crate::table::{Column, Columns, human_duration};

/// Cells that are not one JSONPath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    /// Number of `data` keys (plus `stringData`, never stored).
    DataCount,
    /// Since `series.lastObservedTime`, `lastTimestamp` or `eventTime`.
    EventLastSeen,
    /// `kind/name` of `involvedObject`, the kind lower-case.
    EventObject,
    IngressClass,
    IngressHosts,
    IngressAddress,
    IngressPorts,
}

fn column(name: &str, kind: &str, json_path: Option<&str>, computed: Option<Printer>) -> Column {
    Column {
        name: name.to_string(),
        kind: kind.to_string(),
        format: if json_path.is_none() && computed.is_none() {
            "name".to_string()
        } else {
            String::new()
        },
        description: String::new(),
        priority: 0,
        json_path: json_path.map(str::to_string),
        computed,
    }
}

fn name() -> Column {
    column("Name", "string", None, None)
}

fn age() -> Column {
    column("Age", "date", Some(".metadata.creationTimestamp"), None)
}

/// The columns of a built-in resource that has them here.
pub fn builtin_columns(group: &str, plural: &str) -> Option<Columns> {
    let columns = match (group, plural) {
        ("", "secrets") => vec![
            name(),
            column("Type", "string", Some(".type"), None),
            column("Data", "integer", None, Some(Printer::DataCount)),
            age(),
        ],
        ("", "configmaps") => vec![
            name(),
            column("Data", "integer", None, Some(Printer::DataCount)),
            age(),
        ],
        ("", "namespaces") => vec![
            name(),
            column("Status", "string", Some(".status.phase"), None),
            age(),
        ],
        ("", "events") => vec![
            column("Last Seen", "string", None, Some(Printer::EventLastSeen)),
            column("Type", "string", Some(".type"), None),
            column("Reason", "string", Some(".reason"), None),
            column("Object", "string", None, Some(Printer::EventObject)),
            column("Message", "string", Some(".message"), None),
        ],
        ("networking.k8s.io", "ingresses") => vec![
            name(),
            column("Class", "string", None, Some(Printer::IngressClass)),
            column("Hosts", "string", None, Some(Printer::IngressHosts)),
            column("Address", "string", None, Some(Printer::IngressAddress)),
            column("Ports", "string", None, Some(Printer::IngressPorts)),
            age(),
        ],
        _ => return None,
    };
    Some(Arc::new(columns))
}

fn since(timestamp: &str) -> Option<String> {
    let t = timestamp.parse::<jiff::Timestamp>().ok()?;
    Some(human_duration(
        jiff::Timestamp::now().as_second() - t.as_second(),
    ))
}

fn strings<'v>(object: &'v Value, pointer: &str, field: &'v str) -> Vec<&'v str> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get(field).and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// A computed cell.
pub fn cell(printer: Printer, object: &Value) -> Value {
    let text = |s: String| Value::String(s);
    match printer {
        Printer::DataCount => {
            let count = |key: &str| {
                object
                    .get(key)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            Value::from(count("data") + count("binaryData"))
        }
        Printer::EventLastSeen => {
            let at = object
                .pointer("/series/lastObservedTime")
                .or_else(|| object.get("lastTimestamp"))
                .or_else(|| object.get("eventTime"))
                .and_then(Value::as_str);
            text(
                at.and_then(since)
                    .unwrap_or_else(|| "<unknown>".to_string()),
            )
        }
        Printer::EventObject => {
            let kind = object
                .pointer("/involvedObject/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            match object
                .pointer("/involvedObject/name")
                .and_then(Value::as_str)
            {
                Some(name) if !name.is_empty() => text(format!("{kind}/{name}")),
                _ => text(kind),
            }
        }
        Printer::IngressClass => text(
            object
                .pointer("/spec/ingressClassName")
                .and_then(Value::as_str)
                .unwrap_or("<none>")
                .to_string(),
        ),
        Printer::IngressHosts => {
            let rules = object.pointer("/spec/rules").and_then(Value::as_array);
            let hosts: Vec<&str> = rules
                .map(|r| {
                    r.iter()
                        .map(|rule| rule.get("host").and_then(Value::as_str).unwrap_or("*"))
                        .collect()
                })
                .unwrap_or_default();
            text(match hosts.len() {
                0 => "*".to_string(),
                1..=3 => hosts.join(","),
                n => format!("{} + {} more...", hosts[..3].join(","), n - 3),
            })
        }
        Printer::IngressAddress => {
            let mut addresses = strings(object, "/status/loadBalancer/ingress", "ip");
            addresses.extend(strings(object, "/status/loadBalancer/ingress", "hostname"));
            text(addresses.join(","))
        }
        Printer::IngressPorts => {
            let tls = object
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            text(if tls { "80, 443" } else { "80" }.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_and_event_cells() {
        let secret = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": "", "ca.crt": ""}});
        assert_eq!(cell(Printer::DataCount, &secret), json!(3));
        let event = json!({"involvedObject": {"kind": "TencentCertificate", "name": "shop"},
            "lastTimestamp": (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90)).to_string()});
        assert_eq!(
            cell(Printer::EventObject, &event),
            json!("tencentcertificate/shop")
        );
        assert!(
            cell(Printer::EventLastSeen, &event)
                .as_str()
                .unwrap()
                .starts_with('9')
        );
        let series = json!({"series": {"lastObservedTime": jiff::Timestamp::now().to_string()}});
        assert_eq!(cell(Printer::EventLastSeen, &series), json!("0s"));
    }

    #[test]
    fn ingress_cells_as_kubectl_prints_them() {
        let ingress = json!({"spec": {"ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [{"host": "shop.example.com"}, {}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]}}});
        assert_eq!(cell(Printer::IngressClass, &ingress), json!("nginx"));
        assert_eq!(
            cell(Printer::IngressHosts, &ingress),
            json!("shop.example.com,*")
        );
        assert_eq!(
            cell(Printer::IngressAddress, &ingress),
            json!("10.0.0.1,lb.example.com")
        );
        assert_eq!(cell(Printer::IngressPorts, &ingress), json!("80, 443"));
        let bare = json!({"spec": {}});
        assert_eq!(cell(Printer::IngressClass, &bare), json!("<none>"));
        assert_eq!(cell(Printer::IngressPorts, &bare), json!("80"));
        let many = json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}]}});
        assert_eq!(
            cell(Printer::IngressHosts, &many),
            json!("a,b,c + 1 more...")
        );
    }

    #[test]
    fn columns_of_the_printed_kinds() {
        let names = |g: &str, p: &str| -> Vec<String> {
            builtin_columns(g, p)
                .unwrap()
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names("", "secrets"), ["Name", "Type", "Data", "Age"]);
        assert_eq!(
            names("", "events"),
            ["Last Seen", "Type", "Reason", "Object", "Message"]
        );
        assert_eq!(names("", "namespaces"), ["Name", "Status", "Age"]);
        assert_eq!(
            names("networking.k8s.io", "ingresses"),
            ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
        );
        assert!(builtin_columns("apps", "deployments").is_none());
    }
}
