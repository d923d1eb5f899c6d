//! The `check` command, the chart's `helm test` (cert-manager's `startupapicheck` is the model): from inside
//! the cluster, check that the API server serves the CRDs and that every operator pod behind the metrics
//! Service answers `/readyz`. The pods are found through the Service's EndpointSlices and asked on their own
//! IPs, so the check needs neither cluster DNS nor Service routing; it retries until a deadline.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::{Api, ListParams};

/// The group version both CRDs serve.
pub const API_VERSION: &str = "tencentcert.io/v1alpha1";
/// The plural names the operator needs served.
pub const RESOURCES: [&str; 2] = ["tencentcertificates", "clustertencentcertificates"];

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "discovery of {API_VERSION} failed (are the CRDs installed? crds.enabled, or crds/): {0}"
    )]
    Discovery(#[source] kube::Error),
    #[error("{API_VERSION} does not serve {}: install or upgrade the CRDs", .0.join(", "))]
    NotServed(Vec<String>),
    #[error("listing the EndpointSlices of Service {namespace}/{service} failed: {source}")]
    Endpoints {
        namespace: String,
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Service {namespace}/{service} has no operator endpoint with a port named {port_name}: no operator pod exists yet"
    )]
    NoEndpoints {
        namespace: String,
        service: String,
        port_name: String,
    },
    #[error("operator pods not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
}

/// One operator pod to ask: its address, port and (when the slice names it) pod name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub pod: Option<String>,
}

impl Target {
    pub fn readyz_url(&self) -> String {
        if self.address.contains(':') {
            format!("http://[{}]:{}/readyz", self.address, self.port)
        } else {
            format!("http://{}:{}/readyz", self.address, self.port)
        }
    }

    fn label(&self) -> String {
        match &self.pod {
            Some(pod) => format!("pod {pod} ({}:{})", self.address, self.port),
            None => format!("{}:{}", self.address, self.port),
        }
    }
}

/// The CRD plurals of [`RESOURCES`] that `list` lacks (subresources such as `…/status` do not count).
pub fn missing_resources(list: &APIResourceList) -> Vec<String> {
    RESOURCES
        .iter()
        .filter(|wanted| !list.resources.iter().any(|r| r.name == **wanted))
        .map(|wanted| (*wanted).to_string())
        .collect()
}

/// Every endpoint of `slices` that is not terminating, on the port named `port_name`, without duplicates.
pub fn targets(slices: &[EndpointSlice], port_name: &str) -> Vec<Target> {
    let mut found: Vec<Target> = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let terminating = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            if terminating {
                continue;
            }
            let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone());
            for address in &endpoint.addresses {
                let target = Target {
                    address: address.clone(),
                    port,
                    pod: pod.clone(),
                };
                if !found.contains(&target) {
                    found.push(target);
                }
            }
        }
    }
    found
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub timeout: Duration,
}

/// One attempt: the CRDs are served, and every operator endpoint answers `/readyz` with 200. Returns the
/// lines to print.
pub async fn attempt(
    client: &kube::Client,
    http: &reqwest::Client,
    options: &Options,
) -> Result<Vec<String>, CheckError> {
    let list = client
        .list_api_group_resources(API_VERSION)
        .await
        .map_err(CheckError::Discovery)?;
    let missing = missing_resources(&list);
    if !missing.is_empty() {
        return Err(CheckError::NotServed(missing));
    }
    let mut lines = vec![format!(
        "CRDs served: {} ({API_VERSION})",
        RESOURCES.join(", ")
    )];
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &options.namespace)
        .list(
            &ListParams::default()
                .labels(&format!("kubernetes.io/service-name={}", options.service)),
        )
        .await
        .map_err(|source| CheckError::Endpoints {
            namespace: options.namespace.clone(),
            service: options.service.clone(),
            source,
        })?;
    let targets = targets(&slices.items, &options.port_name);
    if targets.is_empty() {
        return Err(CheckError::NoEndpoints {
            namespace: options.namespace.clone(),
            service: options.service.clone(),
            port_name: options.port_name.clone(),
        });
    }
    let mut not_ready = Vec::new();
    for target in &targets {
        match http.get(target.readyz_url()).send().await {
            Ok(response) if response.status().is_success() => lines.push(format!(
                "{}: /readyz {}",
                target.label(),
                response.status().as_u16()
            )),
            Ok(response) => not_ready.push(format!(
                "{}: /readyz {}",
                target.label(),
                response.status().as_u16()
            )),
            Err(err) => not_ready.push(format!("{}: /readyz unreachable: {err}", target.label())),
        }
    }
    if not_ready.is_empty() {
        Ok(lines)
    } else {
        Err(CheckError::NotReady(not_ready))
    }
}

/// [`attempt`] every 2 s until it succeeds or `options.timeout` passes; each new failure is reported
/// through `progress`. Returns the successful attempt's lines, or the last error.
pub async fn run(
    client: &kube::Client,
    options: &Options,
    mut progress: impl FnMut(&str),
) -> Result<Vec<String>, CheckError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut last_message = String::new();
    loop {
        match attempt(client, &http, options).await {
            Ok(lines) => return Ok(lines),
            Err(err) => {
                let message = err.to_string();
                if tokio::time::Instant::now() >= deadline {
                    return Err(err);
                }
                if message != last_message {
                    progress(&format!("not yet: {message}"));
                    last_message = message;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn targets_take_the_named_port_and_skip_terminating_endpoints() {
        let slices = [slice(json!({
            "metadata": {"name": "m-abc"}, "addressType": "IPv4",
            "ports": [{"name": "other", "port": 9}, {"name": "metrics", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.88.1.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "op-1"}},
                {"addresses": ["10.88.1.6"], "conditions": {"ready": false}},
                {"addresses": ["10.88.1.7"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["10.88.1.5"], "targetRef": {"kind": "Pod", "name": "op-1"}}
            ]
        }))];
        let found = targets(&slices, "metrics");
        assert_eq!(
            found,
            vec![
                Target {
                    address: "10.88.1.5".into(),
                    port: 8080,
                    pod: Some("op-1".into())
                },
                Target {
                    address: "10.88.1.6".into(),
                    port: 8080,
                    pod: None
                },
            ]
        );
        assert_eq!(found[0].readyz_url(), "http://10.88.1.5:8080/readyz");
        assert!(targets(&slices, "nope").is_empty());
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let target = Target {
            address: "fd00::5".into(),
            port: 8080,
            pod: None,
        };
        assert_eq!(target.readyz_url(), "http://[fd00::5]:8080/readyz");
    }

    #[test]
    fn missing_resources_ignores_subresources() {
        let list: APIResourceList = serde_json::from_value(json!({
            "groupVersion": API_VERSION,
            "resources": [
                {"name": "tencentcertificates", "singularName": "tencentcertificate", "namespaced": true,
                 "kind": "TencentCertificate", "verbs": ["get"]},
                {"name": "clustertencentcertificates/status", "singularName": "", "namespaced": false,
                 "kind": "ClusterTencentCertificate", "verbs": ["get"]}
            ]
        }))
        .unwrap();
        assert_eq!(missing_resources(&list), vec!["clustertencentcertificates"]);
    }
}
