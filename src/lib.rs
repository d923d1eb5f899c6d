//! tencent-cert-operator: keeps `kubernetes.io/tls` Secrets in sync with Tencent Cloud SSL certificates.

pub mod bundle;
pub mod controller;
pub mod crd;
pub mod error;
pub mod fetch;
pub mod policy;
pub mod renewal;
pub mod secret;
pub mod sim;
pub mod status;
pub mod tencent;
