//! Status computation and retry timing, as pure functions of what a reconcile saw and did.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::TencentCertificateStatus;
use tencent_ssl::ErrorClass;
use tencent_ssl::bundle::CertMetadata;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_SYNCED: &str = "Synced";
pub const REASON_READY: &str = "Ready";
pub const REASON_SYNCED: &str = "Synced";
pub const REASON_PENDING: &str = "Pending";

/// Transient failures back off 5 s, 10 s, 20 s … up to 5 minutes.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Credential problems are retried this often (and at once when the credentials Secret changes).
pub const CREDENTIALS_RETRY: Duration = Duration::from_secs(300);

/// RFC 3339, UTC, whole seconds: the format of every time in the status.
pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The outcome of this reconcile's download attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// No download was needed (up to date, or only metadata repaired).
    NotNeeded,
    Succeeded,
    Failed {
        reason: String,
        message: String,
    },
}

/// The certificate the Secret holds once this reconcile is done (only when the Secret is ours).
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    pub certificate_id: &'a str,
    pub meta: &'a CertMetadata,
}

pub struct StatusInput<'a> {
    pub previous: &'a TencentCertificateStatus,
    pub generation: Option<i64>,
    /// The certificate the Secret should hold (the resolved one after a sync; else the spec's).
    pub spec_certificate_id: &'a str,
    /// What this sync resolved the spec to (ID and renewal chain); `None` keeps the previous values.
    pub resolved: Option<(&'a str, &'a [String])>,
    /// Something to add to the Synced message (e.g. a renewal not issued yet).
    pub note: Option<&'a str>,
    pub secret_name: &'a str,
    pub serving: Option<Serving<'a>>,
    pub attempt: Attempt,
    /// Whether a successful attempt downloaded the certificate (rather than confirming it from a listing).
    pub downloaded: bool,
    /// Set when the Secret at the target name belongs to someone else.
    pub conflict: Option<&'a str>,
    /// The `refresh-requested-at` value this reconcile acted upon.
    pub refresh_request: Option<&'a str>,
    pub now: jiff::Timestamp,
    /// When to fetch next; `None` keeps the previous plan.
    pub next_sync: Option<jiff::Timestamp>,
}

/// A condition whose transition time moves only when its status flips (shared with the cluster resource).
pub(crate) fn condition(
    type_: &str,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: jiff::Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    // Within metav1.Condition's limit: our CRDs do not enforce it, but clients that validate conditions
    // against it (and CRDs that embed the upstream schema) refuse a longer message.
    let message = if message.len() > crate::message::CONDITION_MESSAGE_MAX_BYTES {
        crate::message::truncate(&message, crate::message::CONDITION_MESSAGE_MAX_BYTES).into_owned()
    } else {
        message
    };
    // The transition time moves only when the status flips, as the condition conventions require.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn describe(serving: &Serving<'_>) -> String {
    let subject = serving
        .meta
        .subject_cn
        .as_deref()
        .or(serving.meta.dns_names.first().map(String::as_str))
        .unwrap_or("no subject name");
    format!("certificate {} ({subject})", serving.certificate_id)
}

fn ready_condition(input: &StatusInput<'_>) -> (bool, String, String) {
    if let Some(message) = input.conflict {
        return (
            false,
            crate::error::REASON_SECRET_CONFLICT.into(),
            message.to_string(),
        );
    }
    let failure = match &input.attempt {
        Attempt::Failed { reason, message } => Some((reason.clone(), message.clone())),
        Attempt::Succeeded => None,
        // Nothing attempted (waiting for a retry, or up to date): the last failure still stands.
        Attempt::NotNeeded => input
            .previous
            .condition(CONDITION_SYNCED)
            .filter(|c| c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone())),
    };
    match (input.serving, failure) {
        (Some(serving), failure) if serving.certificate_id == input.spec_certificate_id => {
            if serving.meta.is_expired_at(input.now) {
                let message = format!(
                    "the {} in Secret {} expired at {}",
                    describe(&serving),
                    input.secret_name,
                    format_time(serving.meta.not_after)
                );
                return (false, crate::error::REASON_EXPIRED.into(), message);
            }
            let mut message = format!(
                "Secret {} holds {}, valid until {}",
                input.secret_name,
                describe(&serving),
                format_time(serving.meta.not_after)
            );
            // A failed refresh does not affect traffic while the Secret in place is valid.
            if let Some((reason, _)) = failure {
                message.push_str(&format!("; the last refresh failed ({reason}), see Synced"));
            }
            (true, REASON_READY.into(), message)
        }
        (Some(serving), Some((reason, message))) => (
            false,
            reason,
            format!(
                "Secret {} still holds {}: {message}",
                input.secret_name,
                describe(&serving)
            ),
        ),
        (_, Some((reason, message))) => (false, reason, message),
        (_, None) => (
            false,
            REASON_PENDING.into(),
            format!(
                "waiting to download certificate {}",
                input.spec_certificate_id
            ),
        ),
    }
}

/// Synced: this reconcile's attempt, or the conflict; the previous condition (at this generation) when
/// nothing was attempted.
fn synced_condition(input: &StatusInput<'_>) -> Option<Condition> {
    let previous = input.previous;
    let synced = match (&input.attempt, input.conflict) {
        (_, Some(message)) => Some((
            false,
            crate::error::REASON_SECRET_CONFLICT.to_string(),
            message.to_string(),
        )),
        (Attempt::Succeeded, None) => {
            Some((true, REASON_SYNCED.to_string(), synced_message(input)))
        }
        (Attempt::Failed { reason, message }, None) => {
            Some((false, reason.clone(), message.clone()))
        }
        (Attempt::NotNeeded, None) => None,
    };
    match synced {
        Some((ok, reason, message)) => Some(condition(
            CONDITION_SYNCED,
            ok,
            &reason,
            message,
            input.generation,
            &previous.conditions,
            input.now,
        )),
        None => previous.condition(CONDITION_SYNCED).map(|kept| {
            let mut kept = kept.clone();
            kept.observed_generation = input.generation;
            kept
        }),
    }
}

/// What a successful attempt did: downloaded, or found the listing unchanged; and the resolution's note.
fn synced_message(input: &StatusInput<'_>) -> String {
    let what = if input.downloaded {
        format!(
            "downloaded certificate {} from Tencent Cloud",
            input.spec_certificate_id
        )
    } else {
        format!(
            "Tencent Cloud lists certificate {} unchanged (issued, same validity); no download needed",
            input.spec_certificate_id
        )
    };
    match input.note {
        Some(note) => format!("{what}; {note}"),
        None => what,
    }
}

/// The new status. Fields not decided by this reconcile carry over from `previous`.
pub fn compute(input: &StatusInput<'_>) -> TencentCertificateStatus {
    let previous = input.previous;
    let (ready, ready_reason, ready_message) = ready_condition(input);
    let mut conditions = vec![condition(
        CONDITION_READY,
        ready,
        &ready_reason,
        ready_message,
        input.generation,
        &previous.conditions,
        input.now,
    )];
    conditions.extend(synced_condition(input));
    let failed = input.conflict.is_some() || matches!(input.attempt, Attempt::Failed { .. });
    let attempted = failed || input.attempt == Attempt::Succeeded;
    let serving = input.serving;
    TencentCertificateStatus {
        conditions,
        observed_generation: input.generation,
        secret_name: Some(input.secret_name.to_string()),
        certificate_id: serving.map(|s| s.certificate_id.to_string()),
        not_before: serving.map(|s| format_time(s.meta.not_before)),
        not_after: serving.map(|s| format_time(s.meta.not_after)),
        serial_number: serving.map(|s| s.meta.serial_hex.clone()),
        fingerprint_sha256: serving.map(|s| s.meta.fingerprint_sha256.clone()),
        dns_names: serving
            .map(|s| s.meta.dns_names.clone())
            .unwrap_or_default(),
        issuer: serving.and_then(|s| s.meta.issuer_cn.clone()),
        resolved_certificate_id: match input.resolved {
            Some((id, _)) => Some(id.to_string()),
            None => previous.resolved_certificate_id.clone(),
        },
        renewal_chain: match input.resolved {
            Some((_, chain)) if chain.len() > 1 => chain.to_vec(),
            Some(_) => Vec::new(),
            None => previous.renewal_chain.clone(),
        },
        last_sync_time: if input.attempt == Attempt::Succeeded {
            Some(format_time(input.now))
        } else {
            previous.last_sync_time.clone()
        },
        last_download_time: if input.attempt == Attempt::Succeeded && input.downloaded {
            Some(format_time(input.now))
        } else {
            previous.last_download_time.clone()
        },
        next_sync_time: input
            .next_sync
            .map(format_time)
            .or_else(|| previous.next_sync_time.clone()),
        failures: if input.attempt == Attempt::Succeeded {
            0
        } else if failed {
            previous.failures.saturating_add(1)
        } else {
            previous.failures
        },
        last_refresh_request: match input.refresh_request {
            Some(value) if attempted => Some(value.to_string()),
            _ => previous.last_refresh_request.clone(),
        },
        // The clock of the once-per-minute rule (`policy::refresh_request`) starts when a new value is
        // acted upon, whether the attempt succeeded or not: a failing download must not be retried
        // faster by rewriting the annotation.
        last_refresh_request_time: match input.refresh_request {
            Some(value) if attempted && previous.last_refresh_request.as_deref() != Some(value) => {
                Some(format_time(input.now))
            }
            _ => previous.last_refresh_request_time.clone(),
        },
        // The renewal step's reporter sets the new one.
        renewal: previous.renewal.clone(),
    }
}

/// `delay` scaled by a factor in `[1 - spread, 1 + spread)`; `unit` is a uniform sample in `[0, 1)`.
fn jittered(delay: Duration, spread: f64, unit: f64) -> Duration {
    delay.mul_f64(1.0 - spread + 2.0 * spread * unit.clamp(0.0, 1.0))
}

/// When to try again after a failure of `class`, the `failures`-th in a row.
pub fn retry_delay(class: ErrorClass, failures: u32, refresh: Duration, unit: f64) -> Duration {
    match class {
        ErrorClass::Transient => {
            let exponent = failures.saturating_sub(1).min(16);
            let backoff = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP);
            jittered(backoff, 0.2, unit).min(BACKOFF_CAP)
        }
        ErrorClass::Credentials => jittered(CREDENTIALS_RETRY, 0.1, unit),
        // No hot loop: a spec change or the refresh interval brings the next attempt.
        ErrorClass::Permanent | ErrorClass::NotYetIssued => jittered(refresh, 0.1, unit),
    }
}

/// When to sync next after this reconcile's attempt: the refresh interval (jittered) after a success; the
/// retry delay of `failed_class` for the `previous_failures + 1`-th failure in a row after a failure;
/// `None` when nothing was tried (the previous plan stands).
pub fn next_sync(
    attempt: &Attempt,
    failed_class: Option<ErrorClass>,
    previous_failures: u32,
    refresh: Duration,
    at: &crate::skeleton::Inputs,
) -> Option<jiff::Timestamp> {
    let delay = match attempt {
        Attempt::NotNeeded => return None,
        Attempt::Succeeded => refresh_delay(refresh, at.jitter),
        Attempt::Failed { .. } => retry_delay(
            failed_class.unwrap_or(ErrorClass::Transient),
            previous_failures.saturating_add(1),
            refresh,
            at.jitter,
        ),
    };
    Some(at.now + delay)
}

/// How old a lookup answer (status, validity, renewal links) a sync accepts: half the refresh interval, at
/// most 15 minutes; explicit refresh requests accept none. The credentials' lookup clock (tencent-ssl
/// `lookup`) starts a round of ⌈K/50⌉ requests at most once per this age, so a refresh wave spread over the
/// interval (jitter, and a first sync that took a while) costs one or two rounds; a quarter of the interval
/// cost three to four at 1m (scale benchmark, issue 23). A change in Tencent reaches a routine refresh at
/// most half an interval late.
pub fn lookup_max_age(refresh: Duration) -> Duration {
    (refresh / 2).min(Duration::from_secs(15 * 60))
}

/// When to refresh after a success: the interval ± 10 %, so thousands of resources do not fire together.
pub fn refresh_delay(refresh: Duration, unit: f64) -> Duration {
    jittered(refresh, 0.1, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_sync_follows_the_attempt_and_its_class() {
        let at = crate::skeleton::Inputs {
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
            jitter: 0.5,
        };
        let hour = Duration::from_secs(3600);
        let failed = Attempt::Failed {
            reason: "NetworkError".into(),
            message: String::new(),
        };
        assert_eq!(next_sync(&Attempt::NotNeeded, None, 0, hour, &at), None);
        // The middle of the jitter range is the interval itself.
        assert_eq!(
            next_sync(&Attempt::Succeeded, None, 3, hour, &at),
            Some(at.now + hour)
        );
        // The third transient failure in a row: 5 s doubled twice.
        assert_eq!(
            next_sync(&failed, Some(ErrorClass::Transient), 2, hour, &at),
            Some(at.now + Duration::from_secs(20))
        );
        assert_eq!(
            next_sync(&failed, Some(ErrorClass::Permanent), 7, hour, &at),
            Some(at.now + hour)
        );
        assert_eq!(
            next_sync(&failed, Some(ErrorClass::Credentials), 0, hour, &at),
            Some(at.now + CREDENTIALS_RETRY)
        );
    }

    fn meta(not_after: &str) -> CertMetadata {
        CertMetadata {
            not_before: "2025-01-01T00:00:00Z".parse().unwrap(),
            not_after: not_after.parse().unwrap(),
            serial_hex: "0a".into(),
            fingerprint_sha256: "ab".repeat(32),
            subject_cn: Some("shop.example.com".into()),
            dns_names: vec!["shop.example.com".into()],
            ip_addresses: vec![],
            issuer_cn: Some("Test CA".into()),
            key_algorithm: tencent_ssl::bundle::KeyAlgorithm::EcdsaP256,
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn input<'a>(
        previous: &'a TencentCertificateStatus,
        serving: Option<Serving<'a>>,
        attempt: Attempt,
    ) -> StatusInput<'a> {
        StatusInput {
            previous,
            generation: Some(3),
            spec_certificate_id: "aBcD1234",
            resolved: None,
            note: None,
            secret_name: "shop-tls",
            serving,
            attempt,
            downloaded: true,
            conflict: None,
            refresh_request: None,
            now: now(),
            next_sync: Some("2026-01-01T01:00:00Z".parse().unwrap()),
        }
    }

    fn cond<'a>(status: &'a TencentCertificateStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_successful_sync_is_ready_and_synced_with_metadata() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let previous = TencentCertificateStatus {
            failures: 4,
            ..Default::default()
        };
        let status = compute(&input(&previous, Some(serving), Attempt::Succeeded));
        let ready = cond(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert!(
            ready
                .message
                .contains("shop-tls holds certificate aBcD1234 (shop.example.com)")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(cond(&status, "Synced").status, "True");
        assert_eq!(status.failures, 0);
        assert_eq!(status.not_after.as_deref(), Some("2026-06-01T00:00:00Z"));
        assert_eq!(
            status.last_sync_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            status.next_sync_time.as_deref(),
            Some("2026-01-01T01:00:00Z")
        );
        assert_eq!(status.certificate_id.as_deref(), Some("aBcD1234"));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn a_failed_refresh_keeps_ready_true_while_the_secret_is_valid() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let previous = TencentCertificateStatus {
            failures: 1,
            ..Default::default()
        };
        let failed = Attempt::Failed {
            reason: "NetworkError".into(),
            message: "CA busy".into(),
        };
        let status = compute(&input(&previous, Some(serving), failed));
        assert_eq!(cond(&status, "Ready").status, "True");
        assert!(
            cond(&status, "Ready")
                .message
                .contains("last refresh failed (NetworkError)")
        );
        let synced = cond(&status, "Synced");
        assert_eq!(
            (
                synced.status.as_str(),
                synced.reason.as_str(),
                synced.message.as_str()
            ),
            ("False", "NetworkError", "CA busy")
        );
        assert_eq!(status.failures, 2);
    }

    #[test]
    fn without_a_secret_a_failure_is_not_ready_with_its_reason() {
        let previous = TencentCertificateStatus::default();
        let failed = Attempt::Failed {
            reason: "KeyMissing".into(),
            message: "no key".into(),
        };
        let status = compute(&input(&previous, None, failed));
        let ready = cond(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "KeyMissing")
        );
        assert_eq!(status.not_after, None);
    }

    #[test]
    fn an_old_certificate_in_place_is_not_ready_for_a_new_spec_id() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "OlD00001",
            meta: &m,
        };
        let failed = Attempt::Failed {
            reason: "CertificateNotFound".into(),
            message: "gone".into(),
        };
        let status = compute(&input(
            &TencentCertificateStatus::default(),
            Some(serving),
            failed,
        ));
        let ready = cond(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CertificateNotFound")
        );
        assert!(ready.message.contains("still holds certificate OlD00001"));
    }

    #[test]
    fn a_reconcile_that_attempts_nothing_keeps_the_last_failure_in_ready() {
        let failed = Attempt::Failed {
            reason: "AuthFailed".into(),
            message: "bad key".into(),
        };
        let first = compute(&input(&TencentCertificateStatus::default(), None, failed));
        let mut idle = input(&first, None, Attempt::NotNeeded);
        idle.next_sync = None;
        let second = compute(&idle);
        let ready = cond(&second, "Ready");
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("AuthFailed", "bad key")
        );
        assert_eq!(
            second, first,
            "an idle reconcile must not change the status"
        );
    }

    #[test]
    fn an_expired_certificate_is_not_ready() {
        let m = meta("2025-12-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let status = compute(&input(
            &TencentCertificateStatus::default(),
            Some(serving),
            Attempt::NotNeeded,
        ));
        let ready = cond(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Expired")
        );
    }

    #[test]
    fn a_conflict_is_reported_on_both_conditions() {
        let empty = TencentCertificateStatus::default();
        let mut i = input(&empty, None, Attempt::NotNeeded);
        i.conflict = Some("Secret shop-tls is not ours");
        let status = compute(&i);
        assert_eq!(cond(&status, "Ready").reason, "SecretConflict");
        assert_eq!(cond(&status, "Synced").reason, "SecretConflict");
        assert_eq!(status.failures, 1);
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let first = compute(&input(
            &TencentCertificateStatus::default(),
            Some(serving),
            Attempt::Succeeded,
        ));
        let mut later = input(&first, Some(serving), Attempt::Succeeded);
        later.now = "2026-01-01T05:00:00Z".parse().unwrap();
        let second = compute(&later);
        assert_eq!(
            cond(&second, "Ready").last_transition_time,
            cond(&first, "Ready").last_transition_time
        );
        let mut failing = input(
            &second,
            None,
            Attempt::Failed {
                reason: "AuthFailed".into(),
                message: "bad key".into(),
            },
        );
        failing.now = "2026-01-01T06:00:00Z".parse().unwrap();
        let third = compute(&failing);
        assert_eq!(
            cond(&third, "Ready").last_transition_time.0.to_string(),
            "2026-01-01T06:00:00Z"
        );
    }

    #[test]
    fn a_metadata_repair_keeps_the_synced_condition_and_sync_times() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let first = compute(&input(
            &TencentCertificateStatus::default(),
            Some(serving),
            Attempt::Succeeded,
        ));
        let mut repair = input(&first, Some(serving), Attempt::NotNeeded);
        repair.next_sync = None;
        repair.now = "2026-01-01T00:30:00Z".parse().unwrap();
        let second = compute(&repair);
        assert_eq!(cond(&second, "Synced"), cond(&first, "Synced"));
        assert_eq!(second.last_sync_time, first.last_sync_time);
        assert_eq!(second.next_sync_time, first.next_sync_time);
    }

    #[test]
    fn refresh_requests_are_recorded_only_when_acted_upon() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let empty = TencentCertificateStatus::default();
        let mut acted = input(&empty, Some(serving), Attempt::Succeeded);
        acted.refresh_request = Some("now-1");
        assert_eq!(
            compute(&acted).last_refresh_request.as_deref(),
            Some("now-1")
        );
        let mut ignored = input(&empty, Some(serving), Attempt::NotNeeded);
        ignored.refresh_request = Some("now-2");
        assert_eq!(compute(&ignored).last_refresh_request, None);
        assert_eq!(compute(&ignored).last_refresh_request_time, None);
    }

    #[test]
    fn the_time_a_new_refresh_request_was_acted_upon_is_kept() {
        let m = meta("2026-06-01T00:00:00Z");
        let serving = Serving {
            certificate_id: "aBcD1234",
            meta: &m,
        };
        let empty = TencentCertificateStatus::default();
        let mut acted = input(&empty, Some(serving), Attempt::Succeeded);
        acted.refresh_request = Some("now-1");
        let first = compute(&acted);
        let acted_at = first.last_refresh_request_time.clone();
        assert_eq!(acted_at, Some(format_time(acted.now)));
        // A later download that finds the same value does not restart the minute.
        let mut later = input(&first, Some(serving), Attempt::Succeeded);
        later.refresh_request = Some("now-1");
        later.now = acted.now + Duration::from_secs(3600);
        assert_eq!(compute(&later).last_refresh_request_time, acted_at);
        // A failed attempt for a new value starts it too: rewriting the annotation is no faster retry.
        let mut failed = input(
            &first,
            Some(serving),
            Attempt::Failed {
                reason: "NetworkError".into(),
                message: "timeout".into(),
            },
        );
        failed.refresh_request = Some("now-2");
        failed.now = acted.now + Duration::from_secs(120);
        let after_failure = compute(&failed);
        assert_eq!(after_failure.last_refresh_request.as_deref(), Some("now-2"));
        assert_eq!(
            after_failure.last_refresh_request_time,
            Some(format_time(failed.now))
        );
    }

    #[test]
    fn transient_backoff_doubles_from_5s_and_caps_at_5_minutes() {
        let refresh = Duration::from_secs(3600);
        let mid = |failures| retry_delay(ErrorClass::Transient, failures, refresh, 0.5);
        assert_eq!(mid(1), Duration::from_secs(5));
        assert_eq!(mid(2), Duration::from_secs(10));
        assert_eq!(mid(3), Duration::from_secs(20));
        assert_eq!(mid(7), Duration::from_secs(300));
        assert_eq!(mid(100), Duration::from_secs(300));
        assert_eq!(
            retry_delay(ErrorClass::Transient, 1, refresh, 0.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            retry_delay(ErrorClass::Transient, 20, refresh, 0.999),
            BACKOFF_CAP
        );
    }

    #[test]
    fn other_classes_wait_without_hot_loops() {
        let refresh = Duration::from_secs(3600);
        assert_eq!(
            retry_delay(ErrorClass::Credentials, 9, refresh, 0.5),
            Duration::from_secs(300)
        );
        assert_eq!(retry_delay(ErrorClass::Permanent, 9, refresh, 0.5), refresh);
        assert_eq!(
            retry_delay(ErrorClass::NotYetIssued, 1, refresh, 0.5),
            refresh
        );
        assert_eq!(refresh_delay(refresh, 0.0), Duration::from_secs(3240));
        assert!(refresh_delay(refresh, 0.999) < Duration::from_secs(3960));
    }

    #[test]
    fn condition_messages_are_cut_to_the_metav1_limit() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let long = "証".repeat(20_000);
        let c = condition("Synced", false, "AuthFailed", long.clone(), None, &[], now);
        assert!(c.message.len() <= crate::message::CONDITION_MESSAGE_MAX_BYTES);
        assert!(c.message.ends_with(crate::message::ELLIPSIS));
        assert!(long.starts_with(c.message.trim_end_matches(crate::message::ELLIPSIS)));
        let short = condition("Synced", true, "Synced", "ok".into(), None, &[], now);
        assert_eq!(short.message, "ok");
    }
}
