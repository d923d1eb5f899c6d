//! Puts the CRD and the demo resources (the manifests of `examples/demo/`, compiled in) into the cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{CustomResourceExt as _, ResourceExt as _};

use super::DemoError;
use crate::crd::TencentCertificate;

/// Field manager of everything the demo applies.
const MANAGER: &str = "tencent-cert-demo";
const CREDENTIALS_YAML: &str = include_str!("../../examples/demo/credentials.yaml");
const CERTIFICATES_YAML: &str = include_str!("../../examples/demo/certificates.yaml");
/// How long a real cluster gets to establish the CRD.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's resources, parsed from the compiled-in manifests.
pub struct DemoResources {
    pub credentials: Secret,
    pub certificates: Vec<TencentCertificate>,
}

impl DemoResources {
    pub fn parse() -> Result<DemoResources, DemoError> {
        let manifest = |e: serde_saphyr::Error| DemoError::Manifest(e.to_string());
        let credentials = serde_saphyr::from_str(CREDENTIALS_YAML).map_err(manifest)?;
        let certificates = serde_saphyr::from_multiple(CERTIFICATES_YAML).map_err(manifest)?;
        Ok(DemoResources {
            credentials,
            certificates,
        })
    }

    /// The namespace they live in (the manifests put them all in one).
    pub fn namespace(&self) -> String {
        self.credentials
            .namespace()
            .unwrap_or_else(|| "default".to_string())
    }
}

/// Installs the CRD unless the cluster already has it (a cluster where the chart installed it keeps its
/// own), and waits until the API serves it.
pub async fn crd(client: &kube::Client) -> Result<bool, DemoError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = TencentCertificate::crd();
    let name = crd.name_any();
    let installed = match crds.get_opt(&name).await {
        Ok(Some(_)) => false,
        Ok(None) => {
            crds.patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&crd))
                .await
                .map_err(|source| DemoError::Install {
                    what: format!("CustomResourceDefinition {name}"),
                    source,
                })?;
            true
        }
        Err(source) => {
            return Err(DemoError::Install {
                what: format!("CustomResourceDefinition {name}"),
                source,
            });
        }
    };
    let served: Api<TencentCertificate> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        match served.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(installed),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(DemoError::Install {
                    what: format!(
                        "CustomResourceDefinition {name} (not served after {ESTABLISH_TIMEOUT:?})"
                    ),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Installs the ClusterTencentCertificate CRD (embedded API server only: it serves a CRD at once).
pub async fn cluster_crd(client: &kube::Client) -> Result<(), DemoError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crate::cluster::crd::ClusterTencentCertificate::crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&crd))
        .await
        .map_err(|source| DemoError::Install {
            what: format!("CustomResourceDefinition {name}"),
            source,
        })?;
    Ok(())
}

/// Applies the credentials Secret and the TencentCertificates (server-side apply: rerunning the demo
/// against the same cluster changes nothing).
pub async fn resources(client: &kube::Client, resources: &DemoResources) -> Result<(), DemoError> {
    let namespace = resources.namespace();
    let params = PatchParams::apply(MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = resources.credentials.name_any();
    secrets
        .patch(&name, &params, &Patch::Apply(&resources.credentials))
        .await
        .map_err(|source| DemoError::Install {
            what: format!("Secret {namespace}/{name}"),
            source,
        })?;
    let certificates: Api<TencentCertificate> = Api::namespaced(client.clone(), &namespace);
    for certificate in &resources.certificates {
        let name = certificate.name_any();
        certificates
            .patch(&name, &params, &Patch::Apply(certificate))
            .await
            .map_err(|source| DemoError::Install {
                what: format!("TencentCertificate {namespace}/{name}"),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_manifests_parse() {
        let demo = DemoResources::parse().unwrap();
        assert_eq!(demo.namespace(), "default");
        assert_eq!(demo.credentials.name_any(), "demo-credentials");
        let ids: Vec<_> = demo
            .certificates
            .iter()
            .filter_map(|c| c.spec.certificate_id.clone())
            .collect();
        assert_eq!(ids, ["demo0001", "demo0002", "demoNoKey1", "demoOld001"]);
    }
}
