//! Certificates downloaded during a wave, reused by every resource naming the same certificate with the
//! same credentials: a first-sync wave of N resources over K ids downloads K times, not N.
//!
//! The extracted bundle is kept rather than the ZIP (a fraction of its size: the ZIP also carries PFX
//! and JKS keystores). Keys include a digest of the whole credential set, so no resource receives a
//! certificate through another tenant's credentials; the total size is bounded, oldest out first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tencent_ssl::Credentials;
use tencent_ssl::bundle::CertBundle;

type Key = ([u8; 32], String);
type Entries = HashMap<Key, (Instant, Arc<CertBundle>)>;

/// Cheap to clone: clones share the entries (the background downloads of parked reconciles put into it).
#[derive(Clone)]
pub struct BundleCache {
    ttl: Duration,
    max_bytes: usize,
    entries: Arc<Mutex<Entries>>,
}

/// How long a download serves other resources: a first-sync wave runs at the download rate, so this
/// covers 3,000 distinct ids at 10 downloads/s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The cached bundles' total size bound (PEM bytes): some 2,000 certificates.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

fn weight(bundle: &Arc<CertBundle>) -> usize {
    bundle.chain_pem.len() + bundle.key_pem.len() + bundle.ca_pem.as_ref().map_or(0, String::len)
}

impl Default for BundleCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_MAX_BYTES)
    }
}

impl BundleCache {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            ttl,
            max_bytes,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bundle of `certificate_id` downloaded with these credentials less than `max_age` ago.
    pub fn get(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
        max_age: Duration,
    ) -> Option<Arc<CertBundle>> {
        let max_age = max_age.min(self.ttl);
        self.entries()
            .get(&(credentials.fingerprint(), certificate_id.to_string()))
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, bundle)| bundle.clone())
    }

    pub fn put(&self, credentials: &Credentials, certificate_id: &str, bundle: Arc<CertBundle>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.ttl);
        entries.insert(
            (credentials.fingerprint(), certificate_id.to_string()),
            (now, bundle),
        );
        tencent_ssl::coalesce::evict_oldest_beyond(&mut entries, weight, self.max_bytes);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tencent_ssl::bundle::{CertMetadata, KeyAlgorithm};

    /// A bundle of `size` chain bytes (also the parking table's tests' bundle).
    pub(in crate::controller) fn bundle(size: usize) -> Arc<CertBundle> {
        Arc::new(CertBundle {
            chain_pem: "c".repeat(size),
            key_pem: String::new(),
            ca_pem: None,
            meta: CertMetadata {
                not_before: "2026-01-01T00:00:00Z".parse().unwrap(),
                not_after: "2027-01-01T00:00:00Z".parse().unwrap(),
                serial_hex: "01".into(),
                fingerprint_sha256: "ab".into(),
                subject_cn: None,
                dns_names: vec![],
                ip_addresses: vec![],
                issuer_cn: None,
                key_algorithm: KeyAlgorithm::EcdsaP256,
            },
        })
    }

    fn credentials(key: &str) -> Credentials {
        Credentials::new("AKIDbundles", key, None).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_serves_other_resources_with_the_same_credentials_only() {
        let cache = BundleCache::default();
        let minute = Duration::from_secs(60);
        cache.put(&credentials("k1"), "aBcD1234", bundle(10));
        assert!(cache.get(&credentials("k1"), "aBcD1234", minute).is_some());
        assert!(
            cache.get(&credentials("k2"), "aBcD1234", minute).is_none(),
            "another tenant"
        );
        assert!(cache.get(&credentials("k1"), "other", minute).is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            cache.get(&credentials("k1"), "aBcD1234", minute).is_none(),
            "older than asked"
        );
        assert!(
            cache
                .get(&credentials("k1"), "aBcD1234", Duration::from_secs(120))
                .is_some()
        );
        assert!(
            cache
                .get(&credentials("k1"), "aBcD1234", Duration::ZERO)
                .is_none()
        );
        tokio::time::advance(DEFAULT_TTL).await;
        assert!(
            cache
                .get(&credentials("k1"), "aBcD1234", Duration::MAX)
                .is_none(),
            "past the TTL"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_bundles_go_when_the_budget_is_full() {
        let cache = BundleCache::new(DEFAULT_TTL, 2500);
        for i in 0..5 {
            cache.put(&credentials("k"), &format!("id{i}"), bundle(1000));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let kept: Vec<bool> = (0..5)
            .map(|i| {
                cache
                    .get(&credentials("k"), &format!("id{i}"), DEFAULT_TTL)
                    .is_some()
            })
            .collect();
        assert_eq!(kept, [false, false, false, true, true]);
    }
}
