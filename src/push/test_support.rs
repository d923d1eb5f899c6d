//! Fixtures for the push tests: cert-manager-shaped TLS Secrets with a new key each time.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tencent_sim::pki::{KeyKind, Pki};
use tencent_sim::publish::{IssuedPair, issue_pair};

use super::{DeploySpec, DeployTargetSpec, PreviousPolicy, TencentCertificatePushSpec};

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(KeyKind::EcdsaP256).unwrap())
}

/// A pair valid from an hour ago for `days` days (negative: ended that many days ago).
pub fn pair(days: i64) -> IssuedPair {
    let now = jiff::Timestamp::now();
    let day = jiff::SignedDuration::from_hours(24);
    let (start, end) = if days > 0 {
        (
            now - jiff::SignedDuration::from_hours(1),
            now + day * days as i32,
        )
    } else {
        (now - day * 90, now + day * days.min(-1) as i32)
    };
    issue_pair(pki(), &["shop.example.com"], start, end).unwrap()
}

/// `tls.crt`/`tls.key` as a kubernetes.io/tls Secret holds them.
pub fn tls_data(pair: &IssuedPair) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("tls.crt".to_string(), pair.chain_pem.clone().into_bytes()),
        ("tls.key".to_string(), pair.key_pem.clone().into_bytes()),
    ])
}

pub fn spec() -> TencentCertificatePushSpec {
    TencentCertificatePushSpec {
        secret_name: "shop-tls".into(),
        alias: None,
        project_id: None,
        tags: BTreeMap::new(),
        deploy: None,
        tke_secret_name: None,
        credentials_ref: None,
        refresh_interval: "1h".into(),
    }
}

pub fn deploying_spec(from: Option<&str>, previous: PreviousPolicy) -> TencentCertificatePushSpec {
    TencentCertificatePushSpec {
        deploy: Some(DeploySpec {
            targets: vec![
                DeployTargetSpec {
                    resource_type: "clb".into(),
                    regions: vec!["ap-guangzhou".into()],
                },
                DeployTargetSpec {
                    resource_type: "cdn".into(),
                    regions: vec![],
                },
            ],
            from_certificate_id: from.map(String::from),
            previous_certificate: previous,
        }),
        ..spec()
    }
}

/// Base64 lines of a key's body, to look for in any output.
pub fn key_lines(key_pem: &str) -> Vec<String> {
    key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}
