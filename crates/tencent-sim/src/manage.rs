//! Changing the simulator's certificates while it runs: add, renew, expire, change status. The
//! `/_sim/certificates…` control endpoints call these; in-process tests may call them directly.
//!
//! Generating a certificate is CPU work (milliseconds for ECDSA, seconds for RSA-4096): async callers
//! should run these methods on a blocking thread, as the control endpoints do.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::{self, CatalogError, CertificateSpec, is_valid_certificate_id};
use super::pki::{KeyKind, Pki};
use super::state::{SimCertificate, SimLinks, SimState};
use tencent_ssl::client::STATUS_ISSUED;

/// Tencent status 3: expired.
const STATUS_EXPIRED: i64 = 3;
/// A renewal is valid from a little before it was made, so clocks a bit behind still accept it.
const RENEWAL_BACKDATE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("certificate {0} does not exist")]
    NotFound(String),
    #[error("certificate {0} already exists")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Which link a renewal made through the control API sets on the old certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RenewLink {
    /// `RenewOrder` (the new certificate gets `OriginCertificateId`).
    #[default]
    Renew,
    /// `ReplacedBy` (the new certificate gets `ReplacedFor`).
    Reissue,
    /// `HostingRenewCertId`.
    Hosting,
    /// `ServiceRenewCertificateId` (the new certificate gets `ServiceOriginCertificateId`).
    Service,
}

/// Body of `POST /_sim/certificates/{id}/renew` (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenewRequest {
    /// The new certificate's id (default: 8 random letters and digits).
    pub new_id: Option<String>,
    /// The new certificate's status (default 1, issued; 0 models a renewal still under review).
    pub status: Option<i64>,
    pub link: RenewLink,
    /// Validity in days (default: the old certificate's spec, else 90).
    pub valid_days: Option<i64>,
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// Recomputes the backward links from the forward ones, so a renewal points back at what it renews.
pub(super) fn relink(certificates: &mut HashMap<String, SimCertificate>) {
    for certificate in certificates.values_mut() {
        certificate.links.origin_certificate_id = None;
        certificate.links.replaced_for = None;
        certificate.links.service_origin_certificate_id = None;
    }
    let forward: Vec<(String, SimLinks)> = certificates
        .values()
        .map(|c| (c.id.clone(), c.links.clone()))
        .collect();
    for (id, links) in forward {
        let mut back = |target: &Option<String>, set: fn(&mut SimLinks, String)| {
            if let Some(certificate) = target.as_ref().and_then(|t| certificates.get_mut(t)) {
                set(&mut certificate.links, id.clone());
            }
        };
        back(&links.renew_order, |l, id| {
            l.origin_certificate_id = Some(id)
        });
        back(&links.replaced_by, |l, id| l.replaced_for = Some(id));
        back(&links.service_renew_certificate_id, |l, id| {
            l.service_origin_certificate_id = Some(id)
        });
    }
}

impl SimState {
    /// Sets the CA for certificates made while running (`start` passes the one of the initial set).
    pub fn set_pki(&self, pki: Arc<Pki>) {
        let _ = self.pki.set(pki);
    }

    fn pki(&self) -> Result<Arc<Pki>, ControlError> {
        if let Some(pki) = self.pki.get() {
            return Ok(pki.clone());
        }
        let generated = Arc::new(Pki::generate(KeyKind::EcdsaP256).map_err(CatalogError::from)?);
        // Another thread may have won the race; either CA is fine, but keep one.
        let _ = self.pki.set(generated);
        self.pki
            .get()
            .cloned()
            .ok_or_else(|| ControlError::Invalid("the simulator's CA is unavailable".into()))
    }

    fn write_certificates(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, SimCertificate>> {
        self.certificates
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn existing(&self, id: &str) -> Result<SimCertificate, ControlError> {
        self.certificate(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    /// Generates and adds a certificate; an existing id is refused (Tencent never reuses ids).
    pub fn add_certificate(&self, spec: &CertificateSpec) -> Result<SimCertificate, ControlError> {
        if self.certificate(&spec.id).is_some() {
            return Err(ControlError::Duplicate(spec.id.clone()));
        }
        let certificate = catalog::generate(&*self.pki()?, spec)?;
        let mut certificates = self.write_certificates();
        if certificates.contains_key(&spec.id) {
            return Err(ControlError::Duplicate(spec.id.clone()));
        }
        certificates.insert(certificate.id.clone(), certificate);
        relink(&mut certificates);
        certificates
            .get(&spec.id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(spec.id.clone()))
    }

    /// Renews `id`: a new certificate for the same names, linked from the old one. The renewal ends
    /// `valid_days` after the later of now and the old certificate's end, so it is always the newer one.
    pub fn renew_certificate(
        &self,
        id: &str,
        request: &RenewRequest,
    ) -> Result<SimCertificate, ControlError> {
        let old = self.existing(id)?;
        let new_id = match &request.new_id {
            Some(new_id) if !is_valid_certificate_id(new_id) => {
                return Err(ControlError::Invalid(format!(
                    "new_id {new_id:?} must be 1-32 ASCII letters and digits"
                )));
            }
            Some(new_id) => new_id.clone(),
            None => loop {
                let candidate = random_id();
                if self.certificate(&candidate).is_none() {
                    break candidate;
                }
            },
        };
        if self.certificate(&new_id).is_some() {
            return Err(ControlError::Duplicate(new_id));
        }
        let mut spec = old.spec.clone().unwrap_or_else(|| {
            // An archive from --zip-dir: renew its names with a generated key.
            let mut spec = CertificateSpec::new(new_id.as_str());
            spec.domain = Some(old.domain.clone());
            spec.extra_names = old.subject_alt_names.clone();
            spec
        });
        spec.id = new_id.clone();
        spec.status = request.status.unwrap_or(STATUS_ISSUED);
        spec.expired = false;
        spec.not_yet_valid = false;
        spec.links = SimLinks::default();
        spec.from = Some(old.from.clone());
        if let Some(valid_days) = request.valid_days {
            if !(1..=3650).contains(&valid_days) {
                return Err(ControlError::Invalid(format!(
                    "valid_days {valid_days} must be within 1..=3650"
                )));
            }
            spec.valid_days = valid_days;
        }
        let now = catalog::now_seconds();
        let base = old.not_after.filter(|end| *end > now).unwrap_or(now);
        let renewal = catalog::generate_between(
            &*self.pki()?,
            &spec,
            now - RENEWAL_BACKDATE,
            base + days(spec.valid_days),
        )?;
        let mut certificates = self.write_certificates();
        if certificates.contains_key(&new_id) {
            return Err(ControlError::Duplicate(new_id));
        }
        let old = certificates
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        let link = Some(new_id.clone());
        match request.link {
            RenewLink::Renew => old.links.renew_order = link,
            RenewLink::Reissue => old.links.replaced_by = link,
            RenewLink::Hosting => old.links.hosting_renew_cert_id = link,
            RenewLink::Service => old.links.service_renew_certificate_id = link,
        }
        certificates.insert(new_id.clone(), renewal);
        relink(&mut certificates);
        certificates
            .get(&new_id)
            .cloned()
            .ok_or(ControlError::NotFound(new_id))
    }

    /// Lets `id` expire: status 3, and a certificate whose validity ended 10 days ago (regenerated, so the
    /// archive agrees with the metadata; an archive from --zip-dir keeps its content).
    pub fn expire_certificate(&self, id: &str) -> Result<SimCertificate, ControlError> {
        let old = self.existing(id)?;
        let mut expired = match &old.spec {
            Some(spec) => {
                let mut spec = spec.clone();
                spec.expired = true;
                let mut expired = catalog::generate(&*self.pki()?, &spec)?;
                expired.inserted_at = old.inserted_at;
                expired
            }
            None => {
                let mut expired = old.clone();
                let now = catalog::now_seconds();
                expired.not_after = Some(old.not_after.map_or(now, |end| end.min(now)));
                expired
            }
        };
        expired.status = STATUS_EXPIRED;
        let mut certificates = self.write_certificates();
        let current = certificates
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        // Links made since the snapshot stay.
        expired.links = current.links.clone();
        *current = expired.clone();
        Ok(expired)
    }

    /// Sets the status code of `id` (e.g. 1 to issue a renewal that was under review).
    pub fn set_certificate_status(
        &self,
        id: &str,
        status: i64,
    ) -> Result<SimCertificate, ControlError> {
        let mut certificates = self.write_certificates();
        let certificate = certificates
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        certificate.status = status;
        Ok(certificate.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(specs: &[&str]) -> SimState {
        let specs: Vec<CertificateSpec> = specs.iter().map(|s| s.parse().unwrap()).collect();
        SimState::new(
            vec![],
            catalog::build(&specs, None).unwrap(),
            vec![],
            vec![],
            None,
            0,
        )
    }

    #[test]
    fn spec_links_get_their_backward_links() {
        let state = state_with(&[
            "old1:renewed-by=new1,replaced-by=re1,service-renew=svc1",
            "new1",
            "re1",
            "svc1",
        ]);
        let old = state.certificate("old1").unwrap();
        assert_eq!(old.links.renew_order.as_deref(), Some("new1"));
        let new = state.certificate("new1").unwrap();
        assert_eq!(new.links.origin_certificate_id.as_deref(), Some("old1"));
        let reissued = state.certificate("re1").unwrap();
        assert_eq!(reissued.links.replaced_for.as_deref(), Some("old1"));
        let service = state.certificate("svc1").unwrap();
        assert_eq!(
            service.links.service_origin_certificate_id.as_deref(),
            Some("old1")
        );
    }

    #[test]
    fn renewals_are_newer_linked_and_issued_for_the_same_names() {
        let state = state_with(&["shop1:domain=shop.example.com,san=www.shop.example.com"]);
        let renewal = state
            .renew_certificate(
                "shop1",
                &RenewRequest {
                    new_id: Some("shop2".into()),
                    ..RenewRequest::default()
                },
            )
            .unwrap();
        let old = state.certificate("shop1").unwrap();
        assert_eq!(old.links.renew_order.as_deref(), Some("shop2"));
        assert_eq!(
            renewal.links.origin_certificate_id.as_deref(),
            Some("shop1")
        );
        assert_eq!(renewal.status, STATUS_ISSUED);
        assert_eq!(renewal.domain, "shop.example.com");
        assert_eq!(renewal.subject_alt_names, vec!["www.shop.example.com"]);
        assert!(renewal.not_after > old.not_after);
        assert_ne!(renewal.fingerprint_sha1, old.fingerprint_sha1);
        assert!(renewal.zip.starts_with(b"PK"));

        let pending = state
            .renew_certificate(
                "shop2",
                &RenewRequest {
                    status: Some(0),
                    link: RenewLink::Hosting,
                    ..RenewRequest::default()
                },
            )
            .unwrap();
        assert_eq!(pending.status, 0);
        assert_eq!(pending.id.len(), 8);
        assert_eq!(
            state
                .certificate("shop2")
                .unwrap()
                .links
                .hosting_renew_cert_id,
            Some(pending.id.clone())
        );
        assert_eq!(
            state.set_certificate_status(&pending.id, 1).unwrap().status,
            1
        );
    }

    #[test]
    fn control_calls_refuse_unknown_and_duplicate_ids() {
        let state = state_with(&["a1", "b1"]);
        assert!(matches!(
            state.renew_certificate("nope", &RenewRequest::default()),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            state.renew_certificate(
                "a1",
                &RenewRequest {
                    new_id: Some("b1".into()),
                    ..RenewRequest::default()
                }
            ),
            Err(ControlError::Duplicate(_))
        ));
        assert!(matches!(
            state.renew_certificate(
                "a1",
                &RenewRequest {
                    new_id: Some("bad id".into()),
                    ..RenewRequest::default()
                }
            ),
            Err(ControlError::Invalid(_))
        ));
        assert!(matches!(
            state.add_certificate(&"a1".parse().unwrap()),
            Err(ControlError::Duplicate(_))
        ));
        assert!(matches!(
            state.expire_certificate("nope"),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            state.set_certificate_status("nope", 1),
            Err(ControlError::NotFound(_))
        ));
    }

    #[test]
    fn expiring_regenerates_an_expired_certificate_and_keeps_links() {
        let state = state_with(&["a1:renewed-by=b1", "b1"]);
        let before = state.certificate("a1").unwrap();
        let expired = state.expire_certificate("a1").unwrap();
        assert_eq!(expired.status, STATUS_EXPIRED);
        assert!(expired.not_after.unwrap() < jiff::Timestamp::now());
        assert_ne!(expired.fingerprint_sha1, before.fingerprint_sha1);
        assert_eq!(expired.links.renew_order.as_deref(), Some("b1"));
        assert_eq!(expired.inserted_at, before.inserted_at);
    }

    #[test]
    fn added_certificates_link_to_existing_ones() {
        let state = state_with(&["old1:renewed-by=new1"]);
        let added = state
            .add_certificate(&"new1:domain=shop.example.com".parse().unwrap())
            .unwrap();
        assert_eq!(added.links.origin_certificate_id.as_deref(), Some("old1"));
        assert_eq!(added.domain, "shop.example.com");
    }
}
