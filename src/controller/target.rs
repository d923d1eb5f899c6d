//! Which certificate to download: the spec's ID or its newest renewal, or the newest certificate covering
//! the spec's domain.

use std::time::Duration;

use crate::crd::{CertificateSelector, Target, TencentCertificate};
use crate::error::SyncError;
use tencent_ssl::error::reason;
use tencent_ssl::list::{CertificateFilter, Tag};
use tencent_ssl::renewal::{self, LinkInfo, Stop};
use tencent_ssl::{Client, Credentials};

/// The certificate chosen for this sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: String,
    /// Renewal links followed, spec ID first (just the ID when nothing was followed).
    pub chain: Vec<String>,
    /// Something the user should know even though the sync goes on (e.g. a renewal not issued yet).
    pub note: Option<String>,
    /// What Tencent's listing says about `id` (status, validity window), when it was looked up.
    pub listed: Option<LinkInfo>,
}

/// The filter for domain selection. It has no per-domain search key, so every resource with the same
/// credentials and selector shares one paginated scan per cache window.
pub fn domain_filter(selector: Option<&CertificateSelector>) -> CertificateFilter {
    let mut filter = CertificateFilter::issued_server_certificates();
    if let Some(selector) = selector {
        filter.project_id = selector.project_id;
        filter.tags = selector
            .tags
            .iter()
            .map(|(key, value)| Tag::new(key, value))
            .collect();
    }
    filter.normalized()
}

fn describe_stop(resolution: &renewal::Resolution) -> Option<String> {
    let serving = resolution.certificate_id();
    match &resolution.stop {
        Stop::End | Stop::Unfinished { .. } => None,
        // The spec'd id itself is not listed: the download says what Tencent thinks of it.
        Stop::NotFound { id } if *id == resolution.start => None,
        Stop::NotIssued { id, status } => Some(format!(
            "renewal {id} is not issued yet (status {}); keeping {serving} until it is",
            status.map_or_else(|| "unknown".to_string(), |s| s.to_string())
        )),
        Stop::NotYetValid { id, .. } => Some(format!(
            "renewal {id} is not valid yet; keeping {serving} until it is"
        )),
        Stop::NotFound { id } => Some(format!(
            "renewal link to {id} leads to no visible certificate; keeping {serving}"
        )),
        Stop::NotNewer { id } => Some(format!(
            "link to {id} points to an older certificate; keeping {serving}"
        )),
        Stop::Loop { id } => Some(format!(
            "renewal links loop back to {id}; keeping {serving}"
        )),
        Stop::DepthLimit { next } => Some(format!(
            "more than {} renewal links; stopped before {next}",
            renewal::MAX_DEPTH
        )),
    }
}

/// Resolves the spec to one certificate ID, with lookup answers up to `max_age` old (`ZERO`: fresh).
/// `want_listing` asks for Tencent's listing of the chosen id even when resolving needed none (for the
/// download skip of a routine refresh).
pub async fn resolve(
    cr: &TencentCertificate,
    client: &Client,
    credentials: &Credentials,
    now: jiff::Timestamp,
    max_age: Duration,
    want_listing: bool,
) -> Result<Resolved, SyncError> {
    match cr.spec.target() {
        Target::Certificate {
            id,
            follow_renewals: false,
        } => Ok(Resolved {
            id: id.to_string(),
            chain: vec![id.to_string()],
            note: None,
            // Without the listing the refresh downloads; that is all a failed lookup costs.
            listed: if want_listing {
                client
                    .lookup_certificate(credentials, id, max_age)
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            },
        }),
        Target::Certificate {
            id,
            follow_renewals: true,
        } => follow(cr, id, client, credentials, now, max_age).await,
        Target::Domain {
            domain,
            additional,
            selector,
        } => {
            let mut domains = vec![domain];
            domains.extend(additional.iter().map(String::as_str));
            select_by_domain(&domains, selector, client, credentials, now, max_age).await
        }
        Target::Invalid => Err(SyncError::InvalidSpec(
            "set exactly one of spec.certificateId and spec.domain".to_string(),
        )),
    }
}

/// Follows the renewal links from `id` to the newest issued certificate.
async fn follow(
    cr: &TencentCertificate,
    id: &str,
    client: &Client,
    credentials: &Credentials,
    now: jiff::Timestamp,
    max_age: Duration,
) -> Result<Resolved, SyncError> {
    match client.resolve_renewals(credentials, id, now, max_age).await {
        Ok(resolution) => {
            let resolved_id = resolution.certificate_id().to_string();
            // Answered from the lookups the walk just made: no request of its own.
            let listed = client
                .lookup_certificate(credentials, &resolved_id, max_age)
                .await
                .ok()
                .flatten();
            Ok(Resolved {
                id: resolved_id,
                note: describe_stop(&resolution),
                chain: resolution.chain,
                listed,
            })
        }
        // The certificate itself is gone: the download would say the same; say it once.
        Err(err) if err.reason() == reason::CERTIFICATE_NOT_FOUND => Err(err.into()),
        // Following needs ssl:DescribeCertificates (or ssl:DescribeCertificateDetail); without it
        // (or while Tencent is flaky) keep serving what was resolved before rather than failing.
        Err(err) => {
            let fallback = cr
                .expected_certificate_id()
                .unwrap_or_else(|| id.to_string());
            Ok(Resolved {
                note: Some(format!(
                    "renewal links not followed ({}: {err}); grant ssl:DescribeCertificates or set followRenewals: false",
                    err.reason()
                )),
                chain: vec![fallback.clone()],
                id: fallback,
                listed: None,
            })
        }
    }
}

/// The newest issued certificate whose names cover all of `domains` (the first is the spec's `domain`),
/// among those the selector admits.
async fn select_by_domain(
    domains: &[&str],
    selector: Option<&CertificateSelector>,
    client: &Client,
    credentials: &Credentials,
    now: jiff::Timestamp,
    max_age: Duration,
) -> Result<Resolved, SyncError> {
    let filter = domain_filter(selector);
    let list = if max_age.is_zero() {
        client
            .describe_certificates_within(credentials, &filter, Duration::ZERO)
            .await?
    } else {
        client.describe_certificates(credentials, &filter).await?
    };
    let wanted_from = selector.and_then(|s| s.from.as_deref());
    let candidates: Vec<_> = list
        .iter()
        .filter(|c| wanted_from.is_none_or(|from| c.from.as_deref() == Some(from)))
        .cloned()
        .collect();
    match renewal::select_covering(domains, &candidates, now) {
        Some(chosen) => Ok(Resolved {
            id: chosen.certificate_id.clone(),
            chain: vec![chosen.certificate_id.clone()],
            note: None,
            listed: Some(LinkInfo::from(chosen)),
        }),
        None => Err(SyncError::NoMatchingCertificate {
            domain: match domains {
                [one] => one.to_string(),
                _ => format!("all of {}", domains.join(", ")),
            },
            searched: list.len(),
            selector: selector.map(|s| format!("{s:?}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn domain_filters_do_not_depend_on_the_domain() {
        let plain = domain_filter(None);
        assert_eq!(plain.search_key, None);
        assert_eq!(plain.certificate_type.as_deref(), Some("SVR"));
        assert_eq!(plain.certificate_status, vec![1]);
        let selector = CertificateSelector {
            project_id: Some(7),
            tags: BTreeMap::from([("team".to_string(), "web".to_string())]),
            from: None,
        };
        let narrowed = domain_filter(Some(&selector));
        assert_eq!(narrowed.project_id, Some(7));
        assert_eq!(narrowed.tags, vec![Tag::new("team", "web")]);
    }

    #[test]
    fn stops_are_explained_unless_the_chain_simply_ended() {
        let resolution = |stop| renewal::Resolution {
            start: "A".into(),
            resolved: Some("B".into()),
            chain: vec!["A".into(), "B".into(), "C".into()],
            stop,
        };
        assert_eq!(describe_stop(&resolution(Stop::End)), None);
        let pending = describe_stop(&resolution(Stop::NotIssued {
            id: "C".into(),
            status: Some(0),
        }))
        .unwrap();
        assert!(
            pending.contains("renewal C is not issued yet (status 0); keeping B"),
            "{pending}"
        );
        assert!(
            describe_stop(&resolution(Stop::Loop { id: "A".into() }))
                .unwrap()
                .contains("loop")
        );
    }
}
