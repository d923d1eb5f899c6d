//! Following Tencent's renewal and reissue links from a spec'd certificate id to the newest usable one.
//!
//! A renewal in Tencent Cloud is a new certificate with a new id; the old certificate points at it. The
//! decision logic lives in [`Follower`], a small state machine without I/O: it names the next id to look
//! up and is fed what the lookup found, so the reconcile loop can drive it with awaited
//! `DescribeCertificateDetail` calls (see [`follow_renewals_with`]) and tests can drive it from a table.
//!
//! Rules:
//! - From each certificate one link is followed, the first present in this order: `RenewOrder` (an
//!   explicit renewal: a new validity period), `HostingRenewCertId` (the certificate hosting swapped in),
//!   `ServiceRenewCertificateId` (subscription renewal), `ReplacedBy` (reissue within the same order).
//!   Renewals come first because they extend validity; a reissue keeps its order's end date.
//! - The certificate to use is the last one on the chain that is issued (status 1) and valid now. An
//!   expired certificate (status 3, or status 1 past its end) is passed through: renewing an expired
//!   certificate is how chains usually grow.
//! - Following stops at a target that is not issued (under review, cancelled, revoked, …), not valid yet,
//!   or that expires *before* the certificate linking to it. The last is a guard: Tencent's documentation
//!   of `ReplacedBy`/`ReplacedFor` is ambiguous about their direction, and a link pointing backwards must
//!   never make the operator roll back to an older certificate.
//! - Loops and chains longer than [`MAX_DEPTH`] links stop the walk; the last good certificate is kept.
//! - Unknown validity times (Tencent documents them as "may be null") do not disqualify a certificate;
//!   the downloaded bundle's own dates are checked later anyway.

use std::future::Future;

use jiff::Timestamp;

use crate::client::{CertificateDetail, STATUS_ISSUED};
use crate::list::CertificateSummary;

/// Links followed at most, whatever the caller asks for.
pub const MAX_DEPTH: usize = 10;
/// Tencent status 3: expired.
pub const STATUS_EXPIRED: i64 = 3;

/// Whether a Tencent status code means the certificate may still become issued (under review, DNS
/// validation, documents pending, reissuing), as opposed to a final state (failed, cancelled, revoked,
/// refunded). Callers use it to choose between a slow requeue and reporting a dead end.
pub fn status_in_progress(status: i64) -> bool {
    matches!(status, 0 | 4 | 5 | 8 | 11 | 13 | 15)
}

/// Which link led from one certificate to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    RenewOrder,
    HostingRenew,
    ServiceRenew,
    ReplacedBy,
}

/// What the follower needs to know about one certificate: its state and its onward links. Built from a
/// `DescribeCertificateDetail` answer or a `DescribeCertificates` item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: String,
    pub status: Option<i64>,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    pub renew_order: Option<String>,
    pub hosting_renew_cert_id: Option<String>,
    pub service_renew_certificate_id: Option<String>,
    pub replaced_by: Option<String>,
}

fn non_empty(id: Option<&String>) -> Option<&str> {
    id.map(|id| id.trim()).filter(|id| !id.is_empty())
}

impl LinkInfo {
    /// The link to follow, in the documented priority order. Empty strings count as absent (Tencent
    /// answers `""` as often as `null`).
    pub fn next_link(&self) -> Option<(LinkKind, &str)> {
        [
            (LinkKind::RenewOrder, &self.renew_order),
            (LinkKind::HostingRenew, &self.hosting_renew_cert_id),
            (LinkKind::ServiceRenew, &self.service_renew_certificate_id),
            (LinkKind::ReplacedBy, &self.replaced_by),
        ]
        .into_iter()
        .find_map(|(kind, id)| non_empty(id.as_ref()).map(|id| (kind, id)))
    }

    pub fn is_issued(&self) -> bool {
        self.status == Some(STATUS_ISSUED)
    }

    /// Issued and within its validity period at `now` (unknown bounds do not disqualify).
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.is_issued() && valid_at(self.not_before, self.not_after, now)
    }
}

/// `not_before ≤ now ≤ not_after`, treating unknown bounds as satisfied.
pub fn valid_at(
    not_before: Option<Timestamp>,
    not_after: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    not_before.is_none_or(|start| start <= now) && not_after.is_none_or(|end| now <= end)
}

impl From<&CertificateDetail> for LinkInfo {
    fn from(detail: &CertificateDetail) -> Self {
        Self {
            id: detail.certificate_id.clone(),
            status: detail.status,
            not_before: detail.not_before,
            not_after: detail.not_after,
            renew_order: detail.extra.renew_order.clone(),
            hosting_renew_cert_id: detail.hosting_renew_cert_id.clone(),
            service_renew_certificate_id: detail.extra.service_renew_certificate_id.clone(),
            replaced_by: detail.extra.replaced_by.clone(),
        }
    }
}

impl From<&CertificateSummary> for LinkInfo {
    fn from(summary: &CertificateSummary) -> Self {
        Self {
            id: summary.certificate_id.clone(),
            status: summary.status,
            not_before: summary.not_before,
            not_after: summary.not_after,
            renew_order: summary.renew_order.clone(),
            hosting_renew_cert_id: summary.hosting_renew_cert_id.clone(),
            service_renew_certificate_id: summary.extra.service_renew_certificate_id.clone(),
            replaced_by: summary.extra.replaced_by.clone(),
        }
    }
}

/// Why following stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The last certificate has no onward link: the normal end.
    End,
    /// A linked certificate does not exist (or is not visible to these credentials).
    NotFound { id: String },
    /// A linked certificate is not issued; see [`status_in_progress`] for whether it may still be.
    NotIssued { id: String, status: Option<i64> },
    /// A linked certificate is issued but its validity starts later.
    NotYetValid {
        id: String,
        not_before: Option<Timestamp>,
    },
    /// A linked certificate expires before the one linking to it: the link points backwards.
    NotNewer { id: String },
    /// A link leads back to a certificate already on the chain.
    Loop { id: String },
    /// The chain is longer than the depth limit; `next` is the first id not followed.
    DepthLimit { next: String },
    /// The caller stopped before the follower was done; `next` is the id it wanted next.
    Unfinished { next: String },
}

/// The outcome of following links from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub start: String,
    /// The newest certificate on the chain that is issued and valid now, if any.
    pub resolved: Option<String>,
    /// Every id looked up, in order, `start` first.
    pub chain: Vec<String>,
    pub stop: Stop,
}

impl Resolution {
    /// The id to download: the resolved one, else the spec'd one (whose own state then decides).
    pub fn certificate_id(&self) -> &str {
        self.resolved.as_deref().unwrap_or(&self.start)
    }

    /// Whether a renewal replaced the spec'd certificate.
    pub fn moved(&self) -> bool {
        self.resolved.as_deref().is_some_and(|id| id != self.start)
    }
}

/// The state machine: ask [`Follower::next_lookup`] which id to look up, pass the answer to
/// [`Follower::observe`], repeat until `next_lookup` is `None`, then [`Follower::finish`].
#[derive(Debug, Clone)]
pub struct Follower {
    start: String,
    now: Timestamp,
    max_depth: usize,
    chain: Vec<String>,
    resolved: Option<String>,
    /// End of the previous certificate, for the backwards-link guard.
    previous_not_after: Option<Timestamp>,
    next: Option<String>,
    stop: Option<Stop>,
}

impl Follower {
    /// Starts at `start`; `max_depth` links at most (capped at [`MAX_DEPTH`]).
    pub fn new(start: impl Into<String>, now: Timestamp, max_depth: usize) -> Self {
        let start = start.into();
        Self {
            next: Some(start.clone()),
            start,
            now,
            max_depth: max_depth.min(MAX_DEPTH),
            chain: Vec::new(),
            resolved: None,
            previous_not_after: None,
            stop: None,
        }
    }

    /// The id to look up next, or `None` when done.
    pub fn next_lookup(&self) -> Option<&str> {
        self.next.as_deref()
    }

    /// Feeds the lookup of [`Follower::next_lookup`]'s id: `None` when it does not exist.
    pub fn observe(&mut self, found: Option<&LinkInfo>) {
        let Some(id) = self.next.take() else {
            return;
        };
        self.chain.push(id.clone());
        let Some(info) = found else {
            self.stop = Some(Stop::NotFound { id });
            return;
        };
        // The spec'd certificate is taken as it is; the checks below are about where links lead.
        if self.chain.len() > 1
            && let Some(stop) = self.refuse_target(&id, info)
        {
            self.stop = Some(stop);
            return;
        }
        if info.is_usable_at(self.now) {
            self.resolved = Some(id);
        }
        self.previous_not_after = info.not_after;
        self.stop = match info.next_link() {
            None => Some(Stop::End),
            Some((_, next)) if self.chain.iter().any(|seen| seen == next) => Some(Stop::Loop {
                id: next.to_string(),
            }),
            // `chain.len() - 1` links are followed so far; one more must stay within the limit.
            Some((_, next)) if self.chain.len() > self.max_depth => Some(Stop::DepthLimit {
                next: next.to_string(),
            }),
            Some((_, next)) => {
                self.next = Some(next.to_string());
                None
            }
        };
    }

    /// Why a linked certificate ends the walk, if it does.
    fn refuse_target(&self, id: &str, info: &LinkInfo) -> Option<Stop> {
        let id = id.to_string();
        // Status first: the dates of a certificate that is not issued mean nothing yet.
        if !matches!(info.status, Some(STATUS_ISSUED | STATUS_EXPIRED)) {
            return Some(Stop::NotIssued {
                id,
                status: info.status,
            });
        }
        if let (Some(previous), Some(end)) = (self.previous_not_after, info.not_after)
            && end < previous
        {
            return Some(Stop::NotNewer { id });
        }
        match info.not_before {
            Some(start) if info.is_issued() && self.now < start => Some(Stop::NotYetValid {
                id,
                not_before: Some(start),
            }),
            _ => None,
        }
    }

    /// The outcome so far (`Stop::Unfinished` if lookups remain).
    pub fn finish(self) -> Resolution {
        let stop = match (self.stop, self.next) {
            (Some(stop), _) => stop,
            (None, Some(next)) => Stop::Unfinished { next },
            (None, None) => Stop::End,
        };
        Resolution {
            start: self.start,
            resolved: self.resolved,
            chain: self.chain,
            stop,
        }
    }
}

/// Follows links with a synchronous lookup (an in-memory index, e.g. built from one list scan).
pub fn follow_renewals(
    start: &str,
    lookup: impl Fn(&str) -> Option<LinkInfo>,
    max_depth: usize,
    now: Timestamp,
) -> Resolution {
    let mut follower = Follower::new(start, now, max_depth);
    while let Some(id) = follower.next_lookup() {
        let found = lookup(id);
        follower.observe(found.as_ref());
    }
    follower.finish()
}

/// Follows links with an asynchronous lookup that may fail (e.g. `DescribeCertificateDetail`); the first
/// error ends the walk and is returned. `Ok(None)` from the lookup means the id does not exist.
pub async fn follow_renewals_with<F, Fut, E>(
    start: &str,
    max_depth: usize,
    now: Timestamp,
    mut lookup: F,
) -> Result<Resolution, E>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<LinkInfo>, E>>,
{
    let mut follower = Follower::new(start, now, max_depth);
    while let Some(id) = follower.next_lookup() {
        let found = lookup(id.to_string()).await?;
        follower.observe(found.as_ref());
    }
    Ok(follower.finish())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T00:00:00Z".parse().unwrap()
    }

    fn days(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * n)
    }

    /// A certificate valid from `from` to `to` days relative to now, with `status`.
    fn cert(id: &str, status: i64, from: i64, to: i64) -> LinkInfo {
        LinkInfo {
            id: id.into(),
            status: Some(status),
            not_before: Some(now() + days(from)),
            not_after: Some(now() + days(to)),
            ..LinkInfo::default()
        }
    }

    fn renewed(mut info: LinkInfo, next: &str) -> LinkInfo {
        info.renew_order = Some(next.into());
        info
    }

    fn follow(certs: &[LinkInfo], start: &str, depth: usize) -> Resolution {
        let index: HashMap<&str, &LinkInfo> = certs.iter().map(|c| (c.id.as_str(), c)).collect();
        follow_renewals(
            start,
            |id| index.get(id).map(|c| (*c).clone()),
            depth,
            now(),
        )
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    struct Case {
        name: &'static str,
        certs: Vec<LinkInfo>,
        depth: usize,
        resolved: Option<&'static str>,
        chain: &'static [&'static str],
        stop: Stop,
    }

    #[test]
    fn chains_resolve_by_the_table() {
        let cases = vec![
            Case {
                name: "no links: the spec'd certificate itself",
                certs: vec![cert("a", 1, -10, 80)],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a"],
                stop: Stop::End,
            },
            Case {
                name: "one renewal",
                certs: vec![renewed(cert("a", 1, -80, 10), "b"), cert("b", 1, -1, 90)],
                depth: MAX_DEPTH,
                resolved: Some("b"),
                chain: &["a", "b"],
                stop: Stop::End,
            },
            Case {
                name: "expired start renewed twice, passing an expired middle",
                certs: vec![
                    renewed(cert("a", 3, -200, -110), "b"),
                    renewed(cert("b", 3, -110, -20), "c"),
                    cert("c", 1, -20, 70),
                ],
                depth: MAX_DEPTH,
                resolved: Some("c"),
                chain: &["a", "b", "c"],
                stop: Stop::End,
            },
            Case {
                name: "renewal under review: keep the old one",
                certs: vec![renewed(cert("a", 1, -80, 10), "b"), cert("b", 0, 0, 0)],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "b"],
                stop: Stop::NotIssued {
                    id: "b".into(),
                    status: Some(0),
                },
            },
            Case {
                name: "issued renewal that starts tomorrow: keep the old one",
                certs: vec![renewed(cert("a", 1, -80, 10), "b"), cert("b", 1, 1, 91)],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "b"],
                stop: Stop::NotYetValid {
                    id: "b".into(),
                    not_before: Some(now() + days(1)),
                },
            },
            Case {
                name: "revoked middle stops the walk before a good tail",
                certs: vec![
                    renewed(cert("a", 1, -80, 10), "b"),
                    renewed(cert("b", 10, -1, 90), "c"),
                    cert("c", 1, -1, 95),
                ],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "b"],
                stop: Stop::NotIssued {
                    id: "b".into(),
                    status: Some(10),
                },
            },
            Case {
                name: "loop between two good certificates",
                certs: vec![
                    renewed(cert("a", 1, -80, 10), "b"),
                    renewed(cert("b", 1, -1, 90), "a"),
                ],
                depth: MAX_DEPTH,
                resolved: Some("b"),
                chain: &["a", "b"],
                stop: Stop::Loop { id: "a".into() },
            },
            Case {
                name: "self link",
                certs: vec![renewed(cert("a", 1, -1, 90), "a")],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a"],
                stop: Stop::Loop { id: "a".into() },
            },
            Case {
                name: "dangling link",
                certs: vec![renewed(cert("a", 1, -80, 10), "gone")],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "gone"],
                stop: Stop::NotFound { id: "gone".into() },
            },
            Case {
                name: "missing start",
                certs: vec![],
                depth: MAX_DEPTH,
                resolved: None,
                chain: &["a"],
                stop: Stop::NotFound { id: "a".into() },
            },
            Case {
                name: "backwards link (target expires earlier) is refused",
                certs: vec![
                    LinkInfo {
                        replaced_by: Some("old".into()),
                        ..cert("a", 1, -1, 90)
                    },
                    cert("old", 1, -80, 10),
                ],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "old"],
                stop: Stop::NotNewer { id: "old".into() },
            },
            Case {
                name: "reissue with the same end date is followed",
                certs: vec![
                    LinkInfo {
                        replaced_by: Some("re".into()),
                        ..cert("a", 1, -30, 60)
                    },
                    cert("re", 1, -1, 60),
                ],
                depth: MAX_DEPTH,
                resolved: Some("re"),
                chain: &["a", "re"],
                stop: Stop::End,
            },
            Case {
                name: "pending start without links resolves to nothing",
                certs: vec![cert("a", 0, 0, 0)],
                depth: MAX_DEPTH,
                resolved: None,
                chain: &["a"],
                stop: Stop::End,
            },
            Case {
                name: "depth 0 never follows",
                certs: vec![renewed(cert("a", 1, -80, 10), "b"), cert("b", 1, -1, 90)],
                depth: 0,
                resolved: Some("a"),
                chain: &["a"],
                stop: Stop::DepthLimit { next: "b".into() },
            },
            Case {
                name: "unknown times do not disqualify",
                certs: vec![
                    renewed(cert("a", 1, -80, 10), "b"),
                    LinkInfo {
                        id: "b".into(),
                        status: Some(1),
                        ..LinkInfo::default()
                    },
                ],
                depth: MAX_DEPTH,
                resolved: Some("b"),
                chain: &["a", "b"],
                stop: Stop::End,
            },
            Case {
                name: "status unknown is not issued",
                certs: vec![
                    renewed(cert("a", 1, -80, 10), "b"),
                    LinkInfo {
                        id: "b".into(),
                        ..LinkInfo::default()
                    },
                ],
                depth: MAX_DEPTH,
                resolved: Some("a"),
                chain: &["a", "b"],
                stop: Stop::NotIssued {
                    id: "b".into(),
                    status: None,
                },
            },
            Case {
                name: "expired chain end keeps nothing usable",
                certs: vec![
                    renewed(cert("a", 3, -200, -110), "b"),
                    cert("b", 1, -110, -20),
                ],
                depth: MAX_DEPTH,
                resolved: None,
                chain: &["a", "b"],
                stop: Stop::End,
            },
        ];
        for case in cases {
            let resolution = follow(&case.certs, "a", case.depth);
            assert_eq!(
                resolution.resolved.as_deref(),
                case.resolved,
                "{}",
                case.name
            );
            assert_eq!(resolution.chain, ids(case.chain), "{}", case.name);
            assert_eq!(resolution.stop, case.stop, "{}", case.name);
        }
    }

    #[test]
    fn link_priority_prefers_renewals_over_reissues() {
        let mut info = cert("a", 1, 0, 1);
        info.replaced_by = Some("re".into());
        assert_eq!(info.next_link(), Some((LinkKind::ReplacedBy, "re")));
        info.service_renew_certificate_id = Some("svc".into());
        assert_eq!(info.next_link(), Some((LinkKind::ServiceRenew, "svc")));
        info.hosting_renew_cert_id = Some("host".into());
        assert_eq!(info.next_link(), Some((LinkKind::HostingRenew, "host")));
        info.renew_order = Some(" ".into());
        assert_eq!(info.next_link(), Some((LinkKind::HostingRenew, "host")));
        info.renew_order = Some("ren".into());
        assert_eq!(info.next_link(), Some((LinkKind::RenewOrder, "ren")));
    }

    #[test]
    fn chains_longer_than_the_limit_stop_at_the_limit() {
        // c0 → c1 → … → c14, each a little newer and all valid.
        let certs: Vec<LinkInfo> = (0..15)
            .map(|i| {
                let info = cert(&format!("c{i}"), 1, -1, 30 + i);
                if i < 14 {
                    renewed(info, &format!("c{}", i + 1))
                } else {
                    info
                }
            })
            .collect();
        let limited = follow(&certs, "c0", 3);
        assert_eq!(limited.resolved.as_deref(), Some("c3"));
        assert_eq!(limited.chain.len(), 4);
        assert_eq!(limited.stop, Stop::DepthLimit { next: "c4".into() });
        // Asking for more than MAX_DEPTH still stops after MAX_DEPTH links.
        let capped = follow(&certs, "c0", 100);
        assert_eq!(capped.chain.len(), MAX_DEPTH + 1);
        assert_eq!(capped.resolved.as_deref(), Some("c10"));
        assert_eq!(capped.stop, Stop::DepthLimit { next: "c11".into() });
        assert!(capped.moved());
        assert_eq!(capped.certificate_id(), "c10");
    }

    #[test]
    fn resolution_falls_back_to_the_start_id() {
        let resolution = follow(&[cert("a", 0, 0, 0)], "a", MAX_DEPTH);
        assert_eq!(resolution.certificate_id(), "a");
        assert!(!resolution.moved());
    }

    #[test]
    fn a_caller_that_stops_early_gets_an_unfinished_resolution() {
        let mut follower = Follower::new("a", now(), MAX_DEPTH);
        follower.observe(Some(&renewed(cert("a", 1, -1, 10), "b")));
        assert_eq!(follower.next_lookup(), Some("b"));
        let resolution = follower.finish();
        assert_eq!(resolution.resolved.as_deref(), Some("a"));
        assert_eq!(resolution.stop, Stop::Unfinished { next: "b".into() });
    }

    #[tokio::test]
    async fn the_async_driver_stops_at_the_first_lookup_error() {
        let certs = [renewed(cert("a", 1, -80, 10), "b"), cert("b", 1, -1, 90)];
        let ok: Result<Resolution, String> = follow_renewals_with("a", MAX_DEPTH, now(), |id| {
            let found = certs.iter().find(|c| c.id == id).cloned();
            async move { Ok(found) }
        })
        .await;
        assert_eq!(ok.unwrap().resolved.as_deref(), Some("b"));
        let mut calls = 0;
        let failed = follow_renewals_with("a", MAX_DEPTH, now(), |id| {
            calls += 1;
            let found = certs.iter().find(|c| c.id == id).cloned();
            async move {
                if id == "b" {
                    Err("throttled".to_string())
                } else {
                    Ok(found)
                }
            }
        })
        .await;
        assert_eq!(failed, Err("throttled".to_string()));
        assert_eq!(calls, 2);
    }

    #[test]
    fn progress_statuses_are_told_from_final_ones() {
        for status in [0, 4, 5, 8, 11, 13, 15] {
            assert!(status_in_progress(status), "{status}");
        }
        for status in [1, 2, 3, 6, 7, 9, 10, 12, 14] {
            assert!(!status_in_progress(status), "{status}");
        }
    }
}
