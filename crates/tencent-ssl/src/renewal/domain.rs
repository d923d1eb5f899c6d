//! Choosing a certificate by domain: among the certificates of a list scan, the newest usable one whose
//! names cover the domain the way a browser would match them.

use jiff::Timestamp;

use super::follow::valid_at;
use crate::list::CertificateSummary;

/// Lowercased, without one trailing dot; `None` for an empty or blank-containing name.
fn normalize(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// Whether a certificate name (`san`) covers `domain`, as browsers match them (RFC 6125 §6.4.3 as
/// implemented by Chromium and Firefox):
/// - equal names match, case-insensitively and ignoring a trailing dot;
/// - `*.example.com` covers exactly one extra leftmost label: `a.example.com`, but neither
///   `example.com` nor `a.b.example.com`;
/// - a wildcard directly under a top-level label (`*.com`) and partial wildcards (`a*.example.com`) cover
///   nothing but themselves;
/// - a requested wildcard (`*.example.com`) is covered only by the same wildcard name, because serving a
///   wildcard name needs a wildcard certificate.
pub fn domain_covers(san: &str, domain: &str) -> bool {
    let (Some(san), Some(domain)) = (normalize(san), normalize(domain)) else {
        return false;
    };
    if san == domain {
        return true;
    }
    if domain.contains('*') {
        return false;
    }
    let Some(base) = san.strip_prefix("*.") else {
        return false;
    };
    if !base.contains('.') || base.contains('*') {
        return false;
    }
    domain
        .strip_suffix(base)
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

/// Whether any name of the certificate (main domain included) covers `domain`.
pub fn certificate_covers(certificate: &CertificateSummary, domain: &str) -> bool {
    certificate
        .domain
        .iter()
        .chain(&certificate.subject_alt_names)
        .any(|san| domain_covers(san, domain))
}

fn is_sm2(certificate: &CertificateSummary) -> bool {
    certificate.is_sm == Some(true)
        || certificate.extra.sm_cert == Some(1)
        || certificate
            .encrypt_algorithm
            .as_deref()
            .is_some_and(|algorithm| algorithm.eq_ignore_ascii_case("SM2"))
}

/// Whether a certificate can be selected at `now`: issued, valid now, a server certificate, downloadable,
/// and not an SM2 (国密) certificate, which standard TLS stacks cannot serve. Fields Tencent left out
/// do not disqualify.
pub fn is_selectable(certificate: &CertificateSummary, now: Timestamp) -> bool {
    certificate.is_issued()
        && valid_at(certificate.not_before, certificate.not_after, now)
        && certificate
            .certificate_type
            .as_deref()
            .is_none_or(|kind| kind.eq_ignore_ascii_case("SVR"))
        && certificate.allow_download != Some(false)
        && !is_sm2(certificate)
}

/// The certificate to use for `domain`: among the selectable ones whose names cover it, the one that
/// expires last; ties go to the later start, then to the greatest id (arbitrary, but stable across scans
/// whatever their order).
pub fn select_by_domain<'a>(
    domain: &str,
    candidates: &'a [CertificateSummary],
    now: Timestamp,
) -> Option<&'a CertificateSummary> {
    select_covering(&[domain], candidates, now)
}

/// [`select_by_domain`] for a certificate that must cover every one of `domains` (the hosts of one
/// Ingress TLS entry share one Secret, so one certificate must serve them all).
pub fn select_covering<'a>(
    domains: &[&str],
    candidates: &'a [CertificateSummary],
    now: Timestamp,
) -> Option<&'a CertificateSummary> {
    candidates
        .iter()
        .filter(|certificate| is_selectable(certificate, now))
        .filter(|certificate| {
            domains
                .iter()
                .all(|domain| certificate_covers(certificate, domain))
        })
        .max_by(|a, b| {
            a.not_after
                .cmp(&b.not_after)
                .then(a.not_before.cmp(&b.not_before))
                .then(a.certificate_id.cmp(&b.certificate_id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::CertificateExtra;

    #[test]
    fn names_cover_domains_like_browsers() {
        let table: &[(&str, &str, bool)] = &[
            ("example.com", "example.com", true),
            ("Example.COM", "example.com.", true),
            ("www.example.com", "example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "A.Example.Com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "aexample.com", false),
            ("*.example.com", "*.example.com", true),
            ("*.EXAMPLE.com", "*.example.com", true),
            ("a.example.com", "*.example.com", false),
            ("*.a.example.com", "*.example.com", false),
            ("*.com", "example.com", false),
            ("a*.example.com", "ab.example.com", false),
            ("*.*.example.com", "a.b.example.com", false),
            ("", "example.com", false),
            ("example.com", "", false),
            ("exa mple.com", "exa mple.com", false),
        ];
        for (san, domain, expected) in table {
            assert_eq!(domain_covers(san, domain), *expected, "{san} ~ {domain}");
        }
    }

    fn now() -> Timestamp {
        "2025-06-01T00:00:00Z".parse().unwrap()
    }

    fn days(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * n)
    }

    fn summary(id: &str, names: &[&str], from: i64, to: i64) -> CertificateSummary {
        CertificateSummary {
            certificate_id: id.into(),
            status: Some(1),
            status_name: None,
            domain: names.first().map(|n| n.to_string()),
            alias: None,
            subject_alt_names: names.iter().map(|n| n.to_string()).collect(),
            certificate_type: Some("SVR".into()),
            from: Some("trustasia".into()),
            project_id: Some("0".into()),
            not_before: Some(now() + days(from)),
            not_after: Some(now() + days(to)),
            inserted_at: None,
            renew_order: None,
            has_renew_order: false,
            hosting_renew_cert_id: None,
            is_expiring: None,
            allow_download: Some(true),
            renewable: None,
            deployable: None,
            is_sm: Some(false),
            encrypt_algorithm: Some("RSA".into()),
            tags: Vec::new(),
            extra: CertificateExtra::default(),
        }
    }

    fn pick<'a>(domain: &str, candidates: &'a [CertificateSummary]) -> Option<&'a str> {
        select_by_domain(domain, candidates, now()).map(|c| c.certificate_id.as_str())
    }

    #[test]
    fn several_domains_need_one_certificate_covering_them_all() {
        let candidates = [
            summary("wide", &["shop.example.com", "*.shop.example.com"], -5, 30),
            summary("newest", &["shop.example.com"], -1, 89),
            summary("api", &["api.example.com"], -1, 89),
        ];
        let pick_all = |domains: &[&str]| {
            select_covering(domains, &candidates, now()).map(|c| c.certificate_id.as_str())
        };
        // One name alone: the newest covering it; with the second name, only `wide` covers both.
        assert_eq!(pick_all(&["shop.example.com"]), Some("newest"));
        assert_eq!(
            pick_all(&["shop.example.com", "www.shop.example.com"]),
            Some("wide")
        );
        // No single certificate covers shop and api: nothing, rather than one that serves half.
        assert_eq!(pick_all(&["shop.example.com", "api.example.com"]), None);
    }

    #[test]
    fn the_latest_expiry_wins_then_the_latest_start_then_the_greatest_id() {
        let candidates = [
            summary("old", &["shop.example.com"], -80, 10),
            summary("new", &["shop.example.com"], -1, 89),
            summary("mid", &["shop.example.com"], -40, 50),
        ];
        assert_eq!(pick("shop.example.com", &candidates), Some("new"));
        let tied_end = [
            summary("early", &["shop.example.com"], -10, 80),
            summary("late", &["shop.example.com"], -2, 80),
        ];
        assert_eq!(pick("shop.example.com", &tied_end), Some("late"));
        let tied = [
            summary("bbbb", &["shop.example.com"], -2, 80),
            summary("aaaa", &["shop.example.com"], -2, 80),
            summary("cccc", &["shop.example.com"], -2, 80),
        ];
        assert_eq!(pick("shop.example.com", &tied), Some("cccc"));
        let mut reversed = tied.clone();
        reversed.reverse();
        assert_eq!(pick("shop.example.com", &reversed), Some("cccc"));
    }

    #[test]
    fn unusable_certificates_are_never_selected() {
        let mut pending = summary("pending", &["shop.example.com"], -1, 400);
        pending.status = Some(0);
        let mut expired_status = summary("exp3", &["shop.example.com"], -400, 300);
        expired_status.status = Some(3);
        let expired = summary("expired", &["shop.example.com"], -100, -1);
        let future = summary("future", &["shop.example.com"], 1, 500);
        let mut client_ca = summary("ca", &["shop.example.com"], -1, 450);
        client_ca.certificate_type = Some("CA".into());
        let mut locked = summary("locked", &["shop.example.com"], -1, 420);
        locked.allow_download = Some(false);
        let mut sm2 = summary("sm2", &["shop.example.com"], -1, 410);
        sm2.is_sm = Some(true);
        let good = summary("good", &["shop.example.com"], -10, 30);
        let all = [
            pending,
            expired_status,
            expired,
            future,
            client_ca,
            locked,
            sm2,
            good,
        ];
        assert_eq!(pick("shop.example.com", &all), Some("good"));
        assert_eq!(pick("shop.example.com", &all[..7]), None);
    }

    #[test]
    fn wildcards_and_multi_name_certificates() {
        let candidates = [
            summary("wild", &["*.example.com"], -1, 60),
            summary(
                "multi",
                &["example.com", "www.example.com", "api.example.com"],
                -1,
                50,
            ),
            summary("deep", &["*.a.example.com"], -1, 90),
        ];
        assert_eq!(pick("www.example.com", &candidates), Some("wild"));
        assert_eq!(pick("example.com", &candidates), Some("multi"));
        assert_eq!(pick("API.example.com.", &candidates), Some("wild"));
        assert_eq!(pick("x.a.example.com", &candidates), Some("deep"));
        assert_eq!(pick("a.example.com", &candidates), Some("wild"));
        assert_eq!(pick("*.example.com", &candidates), Some("wild"));
        assert_eq!(pick("*.a.example.com", &candidates), Some("deep"));
        assert_eq!(pick("x.y.a.example.com", &candidates), None);
        assert_eq!(pick("other.test", &candidates), None);
    }

    #[test]
    fn the_main_domain_counts_even_when_missing_from_the_san_list() {
        let mut certificate = summary("cn", &["shop.example.com"], -1, 60);
        certificate.subject_alt_names.clear();
        assert!(certificate_covers(&certificate, "shop.example.com"));
        assert_eq!(
            pick("shop.example.com", std::slice::from_ref(&certificate)),
            Some("cn")
        );
    }
}
