//! `tencent-cert-operator demo`: the whole flow on a machine with nothing set up. It starts the Tencent API
//! simulator with demo certificates, uses the kubeconfig's cluster or embeds an API server, installs the
//! CRD and the resources of `examples/demo/`, runs the real controller, and prints what happens.

// The `demo` command embeds the fake API server: behind the `demo` feature, which the image build turns
// off. `run --demo` needs only the simulator below.
#[cfg(feature = "demo")]
mod cluster;
#[cfg(feature = "demo")]
mod install;
#[cfg(feature = "demo")]
mod report;
#[cfg(feature = "demo")]
mod rivals;
#[cfg(feature = "demo")]
mod session;

use std::path::PathBuf;

use tencent_sim::SimConfig;

#[cfg(feature = "demo")]
pub use cluster::ClusterChoice;
#[cfg(feature = "demo")]
pub use session::{DemoOptions, run};

/// The demo's credentials: only the embedded simulator accepts them (`examples/demo/credentials.yaml`).
pub const DEMO_SECRET_ID: &str = "AKIDdemoTENCENTcertOPERATOR";
pub const DEMO_SECRET_KEY: &str = "demo-secret-key-for-the-embedded-simulator";
/// The simulator's certificates: those `examples/demo/certificates.yaml` names, and `aBcD1234`, the one of
/// `examples/*.yaml`, so that those examples become Ready in the demo once given the demo's credentials.
const DEMO_CERTIFICATES: [&str; 5] = [
    "demo0001:domain=shop.demo.test,san=www.shop.demo.test",
    "demo0002:domain=api.demo.test,key=rsa2048",
    "demoNoKey1:domain=csr.demo.test,no-key",
    "demoOld001:domain=old.demo.test,expired",
    "aBcD1234:domain=shop.example.com,san=www.shop.example.com",
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the Tencent API simulator: {0}")]
    Simulator(String),
    #[error("no cluster to use: {0} (run without --cluster kubeconfig to embed an API server)")]
    NoCluster(String),
    #[error("cannot start the embedded API server: {0}")]
    Embedded(String),
    #[error("cannot write {}: {source}", path.display())]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the compiled-in demo manifests do not parse: {0}")]
    Manifest(String),
    #[error("cannot install {what}: {source}")]
    Install { what: String, source: kube::Error },
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    #[error("cannot build the Tencent client: {0}")]
    Tencent(String),
    /// Another operator would reconcile the demo's resources (one line: what it is and what to do).
    #[error("{0}")]
    OtherOperator(String),
}

/// Starts the simulator with the demo account and certificates.
pub async fn start_simulator() -> Result<tencent_sim::SimHandle, DemoError> {
    let mut config = SimConfig::single_account(DEMO_SECRET_ID, DEMO_SECRET_KEY, &DEMO_CERTIFICATES)
        .map_err(DemoError::Simulator)?;
    config.rate_limit = Some(10.0);
    tencent_sim::start_local(config)
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))
}
