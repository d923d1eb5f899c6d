//! tencent-cert-operator: keeps `kubernetes.io/tls` Secrets in sync with Tencent Cloud SSL certificates.

pub mod api_client;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod error;
pub mod fetch;
pub mod inspect;
pub mod install_check;
pub mod intern;
pub mod leader;
pub mod message;
pub mod metrics_auth;
pub mod operator;
pub mod outputs;
pub mod policy;
pub mod push;
pub mod renew;
pub mod secret;
pub mod shim;
pub mod skeleton;
pub mod status;
pub mod telemetry;

/// The git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("TCO_GIT_COMMIT");
/// The target triple the binary was built for.
pub const BUILD_TARGET: &str = env!("TCO_BUILD_TARGET");
