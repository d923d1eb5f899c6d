//! tencent-cert-operator: keeps `kubernetes.io/tls` Secrets in sync with Tencent Cloud SSL certificates.

pub mod bundle;
pub mod secret;
pub mod sim;
pub mod tencent;
