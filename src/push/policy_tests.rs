use std::collections::BTreeMap;
use std::time::Duration;

use tencent_ssl::Tag;
use tencent_ssl::publish::{BoundResources, DeployDetail, DeployProgress, DeployState};

use super::*;
use crate::push::test_support::{deploying_spec, key_lines, pair, spec, tls_data};
use crate::push::{DeployStatus, PreviousPolicy, TencentCertificatePushStatus};

const UID: &str = "7d1c7a52-uid";

fn input<'a>(
    spec: &'a TencentCertificatePushSpec,
    status: &'a TencentCertificatePushStatus,
    pair: Result<&'a CertBundle, &'a Refusal>,
) -> Input<'a> {
    Input {
        namespace: "team-a",
        name: "shop",
        uid: UID,
        spec,
        status,
        pair,
        own_credentials: true,
        now: jiff::Timestamp::now(),
    }
}

fn bundle(days: i64) -> CertBundle {
    let issued = pair(days);
    read_pair("shop-tls", Some(("kubernetes.io/tls", &tls_data(&issued)))).unwrap()
}

fn published(bundle: &CertBundle, id: &str) -> TencentCertificatePushStatus {
    TencentCertificatePushStatus {
        certificate_id: Some(id.into()),
        fingerprint_sha256: Some(bundle.meta.fingerprint_sha256.clone()),
        ..TencentCertificatePushStatus::default()
    }
}

fn detail(kind: &str, state: DeployState, error: Option<&str>) -> DeployDetail {
    DeployDetail {
        id: 1,
        resource_type: kind.into(),
        region: None,
        instance_id: None,
        domains: vec![],
        state,
        error_msg: error.map(String::from),
    }
}

fn progress(details: Vec<DeployDetail>) -> DeployProgress {
    let count = |f: fn(DeployState) -> bool| details.iter().filter(|d| f(d.state)).count() as u64;
    DeployProgress {
        total: details.len() as u64,
        succeeded: count(|s| s == DeployState::Succeeded),
        failed: count(|s| s == DeployState::Failed),
        running: count(|s| s == DeployState::Running),
        pending: count(|s| s == DeployState::Pending),
        details,
        truncated: false,
    }
}

#[test]
fn broken_mismatched_and_missing_secrets_are_refused_without_their_contents() {
    let issued = pair(30);
    let other = pair(30);
    let mut mismatched = tls_data(&issued);
    mismatched.insert("tls.key".into(), other.key_pem.clone().into_bytes());
    let refusal = read_pair("shop-tls", Some(("kubernetes.io/tls", &mismatched))).unwrap_err();
    assert_eq!(refusal.reason, "KeyMismatch");
    let mut broken = tls_data(&issued);
    broken.insert(
        "tls.crt".into(),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n".to_vec(),
    );
    let broken = read_pair("shop-tls", Some(("kubernetes.io/tls", &broken))).unwrap_err();
    assert_eq!(broken.reason, "InvalidBundle");
    let opaque = read_pair("shop-tls", Some(("Opaque", &tls_data(&issued)))).unwrap_err();
    assert_eq!(opaque.reason, reason::SECRET_NOT_TLS);
    let missing = read_pair("shop-tls", None).unwrap_err();
    assert_eq!(missing.reason, reason::SECRET_NOT_FOUND);
    for refusal in [refusal, broken, opaque, missing] {
        assert!(refusal.message.contains("shop-tls"), "{}", refusal.message);
        for line in key_lines(&issued.key_pem)
            .iter()
            .chain(&key_lines(&other.key_pem))
        {
            assert!(!refusal.message.contains(line.as_str()));
        }
        // A refusal looks nothing up and decides nothing but the refusal.
        let spec = spec();
        let status = TencentCertificatePushStatus::default();
        let input = input(&spec, &status, Err(&refusal));
        assert_eq!(lookups(&input), Lookups::default());
        assert_eq!(
            decide(&input, &Observed::default()),
            Step::Refuse(refusal.clone())
        );
    }
}

#[test]
fn an_expired_pair_is_refused_and_nothing_is_looked_up() {
    let expired = bundle(-1);
    let spec = spec();
    let status = TencentCertificatePushStatus::default();
    let input = input(&spec, &status, Ok(&expired));
    assert_eq!(lookups(&input), Lookups::default());
    match decide(&input, &Observed::default()) {
        Step::Refuse(refusal) => {
            assert_eq!(refusal.reason, reason::CERTIFICATE_EXPIRED);
            assert!(refusal.message.contains("shop-tls"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_fingerprint_looks_for_an_earlier_upload_before_uploading() {
    let current = bundle(30);
    let mut spec = spec();
    spec.tags = BTreeMap::from([
        ("team".to_string(), "a".to_string()),
        // A tenant cannot pose as another resource by setting the operator's own tag.
        (crate::push::TAG_UID.to_string(), "someone-else".to_string()),
    ]);
    let status = TencentCertificatePushStatus::default();
    let input = input(&spec, &status, Ok(&current));
    let wanted = vec![
        Tag::new(crate::push::TAG_UID, UID),
        Tag::new(
            crate::push::TAG_FINGERPRINT,
            current.meta.fingerprint_sha256.as_str(),
        ),
    ];
    assert_eq!(lookups(&input).tagged, Some(wanted.clone()));
    // Without the answer, never an upload.
    assert!(matches!(
        decide(&input, &Observed::default()),
        Step::Wait { .. }
    ));
    let found = Observed {
        tagged: Some(vec!["zzz".into(), "aaa".into()]),
        ..Observed::default()
    };
    assert_eq!(
        decide(&input, &found),
        Step::Adopt {
            certificate_id: "aaa".into()
        }
    );
    let none = Observed {
        tagged: Some(vec![]),
        ..Observed::default()
    };
    match decide(&input, &none) {
        Step::Upload { alias, tags, .. } => {
            assert_eq!(alias, "team-a/shop");
            assert!(tags.contains(&Tag::new("team", "a")));
            for tag in wanted {
                assert!(tags.contains(&tag));
            }
            assert!(!tags.iter().any(|t| t.value == "someone-else"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unchanged_secret_needs_no_tencent_call() {
    let current = bundle(30);
    for spec in [spec(), deploying_spec(None, PreviousPolicy::Keep)] {
        let status = published(&current, "cert1");
        let input = input(&spec, &status, Ok(&current));
        assert_eq!(lookups(&input), Lookups::default());
        assert_eq!(
            decide(&input, &Observed::default()),
            Step::InSync {
                after: Duration::from_secs(3600)
            }
        );
    }
}

#[test]
fn publishing_records_the_previous_certificate_and_the_fingerprint() {
    let current = bundle(30);
    let spec = deploying_spec(None, PreviousPolicy::Delete);
    let mut status = published(&bundle(30), "cert1");
    status.deploy = Some(DeployStatus {
        from_certificate_id: "cert0".into(),
        to_certificate_id: "cert1".into(),
        record_id: Some(4),
        finished: true,
        ..DeployStatus::default()
    });
    let input = input(&spec, &status, Ok(&current));
    let after = apply(
        &input,
        &Outcome::Published {
            certificate_id: "cert2".into(),
            uploaded: true,
        },
    );
    assert_eq!(after.certificate_id.as_deref(), Some("cert2"));
    assert_eq!(after.previous_certificate_id.as_deref(), Some("cert1"));
    assert_eq!(
        after.fingerprint_sha256.as_deref(),
        Some(current.meta.fingerprint_sha256.as_str())
    );
    assert!(after.last_upload_time.is_some());
    assert!(after.not_after.as_deref().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(after.deploy, None);
    // A repeat (or a found upload) is not an upload.
    let found = apply(
        &input,
        &Outcome::Published {
            certificate_id: "cert2".into(),
            uploaded: false,
        },
    );
    assert_eq!(found.last_upload_time, None);
}

#[test]
fn resources_move_off_the_previous_certificate_only_if_it_is_ours() {
    let current = bundle(30);
    let spec = deploying_spec(None, PreviousPolicy::Keep);
    let mut status = published(&current, "cert2");
    status.previous_certificate_id = Some("cert1".into());
    let input = input(&spec, &status, Ok(&current));
    assert_eq!(lookups(&input).previous_tags.as_deref(), Some("cert1"));
    let ours = Observed {
        previous_tags: Some(Some(vec![Tag::new(crate::push::TAG_UID, UID)])),
        ..Observed::default()
    };
    match decide(&input, &ours) {
        Step::StartDeploy { from, to, targets } => {
            assert_eq!((from.as_str(), to.as_str()), ("cert1", "cert2"));
            assert_eq!(targets.len(), 2);
            assert_eq!(targets[0].regions, vec!["ap-guangzhou"]);
        }
        other => panic!("{other:?}"),
    }
    for theirs in [
        Some(vec![Tag::new(crate::push::TAG_UID, "another-uid")]),
        None,
    ] {
        let observed = Observed {
            previous_tags: Some(theirs),
            ..Observed::default()
        };
        assert!(matches!(
            decide(&input, &observed),
            Step::Refuse(Refusal {
                reason: reason::PREVIOUS_NOT_OURS,
                ..
            })
        ));
    }
}

#[test]
fn a_named_source_certificate_needs_the_namespaces_own_credentials() {
    let current = bundle(30);
    let spec = deploying_spec(Some("console1"), PreviousPolicy::Keep);
    let status = published(&current, "cert1");
    let mut input = input(&spec, &status, Ok(&current));
    // Named by the spec with own credentials: moved without a tag check.
    assert_eq!(lookups(&input).previous_tags, None);
    assert!(matches!(
        decide(&input, &Observed::default()),
        Step::StartDeploy { ref from, .. } if from == "console1"
    ));
    input.own_credentials = false;
    assert!(matches!(
        decide(&input, &Observed::default()),
        Step::Refuse(Refusal {
            reason: reason::DEPLOY_SOURCE_NOT_ALLOWED,
            ..
        })
    ));
}

#[test]
fn a_failed_resource_is_reported_per_type_and_retried_with_backoff() {
    let current = bundle(30);
    let spec = deploying_spec(None, PreviousPolicy::Keep);
    let mut status = published(&current, "cert2");
    status.previous_certificate_id = Some("cert1".into());
    status.deploy = Some(DeployStatus {
        from_certificate_id: "cert1".into(),
        to_certificate_id: "cert2".into(),
        record_id: Some(7),
        ..DeployStatus::default()
    });
    let mut input = input(&spec, &status, Ok(&current));
    assert_eq!(lookups(&input).deploy_record, Some(7));
    let running = Observed {
        deploy: Some(progress(vec![
            detail("clb", DeployState::Succeeded, None),
            detail("cdn", DeployState::Running, None),
        ])),
        ..Observed::default()
    };
    assert!(matches!(
        decide(&input, &running),
        Step::RecordDeploy {
            finished: false,
            after: Some(DEPLOY_POLL),
            ..
        }
    ));
    let failed = Observed {
        deploy: Some(progress(vec![
            detail("clb", DeployState::Succeeded, None),
            detail("cdn", DeployState::Failed, Some("domain is offline")),
        ])),
        ..Observed::default()
    };
    // First the results are recorded, then the retry.
    let Step::RecordDeploy {
        results,
        finished: false,
        ..
    } = decide(&input, &failed)
    else {
        panic!("expected the failure recorded first");
    };
    assert_eq!(results[0].resource_type, "clb");
    assert_eq!((results[0].succeeded, results[0].failed), (1, 0));
    assert_eq!(
        (results[1].resource_type.as_str(), results[1].failed),
        ("cdn", 1)
    );
    assert_eq!(results[1].message.as_deref(), Some("domain is offline"));
    let recorded = apply(
        &input,
        &Outcome::DeployRecorded {
            results: results.clone(),
            finished: false,
        },
    );
    input.status = &recorded;
    // The first retry backs off too, from when the failures were recorded.
    match decide(&input, &failed) {
        Step::RecordDeploy {
            after: Some(after),
            finished: false,
            ..
        } => assert!(
            after > Duration::from_secs(20) && after <= retry_backoff(0),
            "{after:?}"
        ),
        other => panic!("expected the first retry to wait: {other:?}"),
    }
    input.now = input.now + retry_backoff(0) + Duration::from_secs(1);
    assert_eq!(decide(&input, &failed), Step::RetryDeploy { record_id: 7 });
    let retried = apply(&input, &Outcome::DeployRetried);
    assert_eq!(retried.deploy.as_ref().unwrap().retries, 1);
    input.status = &retried;
    // Failed again at once: wait out the backoff.
    match decide(&input, &failed) {
        Step::RecordDeploy {
            after: Some(after),
            finished: false,
            ..
        } => {
            assert!(
                after > Duration::from_secs(50) && after <= retry_backoff(1),
                "{after:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    input.now = input.now + retry_backoff(1) + Duration::from_secs(1);
    assert_eq!(decide(&input, &failed), Step::RetryDeploy { record_id: 7 });
    // Out of retries: finished, failed, reported.
    let mut exhausted = retried.clone();
    exhausted.deploy.as_mut().unwrap().retries = MAX_DEPLOY_RETRIES;
    input.status = &exhausted;
    assert!(matches!(
        decide(&input, &failed),
        Step::RecordDeploy { finished: true, .. }
    ));
    let done = apply(
        &input,
        &Outcome::DeployRecorded {
            results,
            finished: true,
        },
    );
    input.status = &done;
    assert_eq!(lookups(&input), Lookups::default());
    match decide(&input, &Observed::default()) {
        Step::Wait {
            reason, message, ..
        } => {
            assert_eq!(reason, reason::DEPLOY_FAILED);
            assert!(
                message.contains("cdn") && message.contains("domain is offline"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_previous_certificate_is_deleted_only_when_nothing_is_bound() {
    let current = bundle(30);
    let spec = deploying_spec(None, PreviousPolicy::Delete);
    let mut status = published(&current, "cert2");
    status.previous_certificate_id = Some("cert1".into());
    status.deploy = Some(DeployStatus {
        from_certificate_id: "cert1".into(),
        to_certificate_id: "cert2".into(),
        record_id: Some(7),
        finished: true,
        ..DeployStatus::default()
    });
    let input = input(&spec, &status, Ok(&current));
    let needs = lookups(&input);
    assert_eq!(needs.bound.as_deref(), Some("cert1"));
    assert_eq!(needs.previous_tags.as_deref(), Some("cert1"));
    let ours = Some(Some(vec![Tag::new(crate::push::TAG_UID, UID)]));
    let still_bound = Observed {
        previous_tags: ours.clone(),
        bound: Some(BoundResources {
            counts: BTreeMap::from([(
                "clb".to_string(),
                BTreeMap::from([("ap-shanghai".to_string(), 1)]),
            )]),
        }),
        ..Observed::default()
    };
    assert!(matches!(
        decide(&input, &still_bound),
        Step::Wait {
            reason: reason::PREVIOUS_STILL_BOUND,
            ..
        }
    ));
    let unbound = Observed {
        previous_tags: ours,
        bound: Some(BoundResources::default()),
        ..Observed::default()
    };
    assert_eq!(
        decide(&input, &unbound),
        Step::DeletePrevious {
            certificate_id: "cert1".into()
        }
    );
    let foreign = Observed {
        previous_tags: Some(Some(vec![])),
        bound: Some(BoundResources::default()),
        ..Observed::default()
    };
    assert!(matches!(decide(&input, &foreign), Step::Refuse(_)));
    let deleted = apply(&input, &Outcome::PreviousDeleted);
    let input = Input {
        status: &deleted,
        ..input
    };
    assert_eq!(lookups(&input), Lookups::default());
    assert!(matches!(
        decide(&input, &Observed::default()),
        Step::InSync { .. }
    ));
}

#[test]
fn bad_targets_are_refused_before_any_deploy() {
    let current = bundle(30);
    let mut spec = deploying_spec(Some("console1"), PreviousPolicy::Keep);
    spec.deploy.as_mut().unwrap().targets[0].regions.clear();
    let status = published(&current, "cert1");
    let input = input(&spec, &status, Ok(&current));
    assert!(matches!(
        decide(&input, &Observed::default()),
        Step::Refuse(Refusal {
            reason: reason::INVALID_DEPLOY_TARGET,
            ..
        })
    ));
}

#[test]
fn the_secret_is_always_read_in_the_push_namespace_and_the_tke_secret_holds_the_id() {
    assert_eq!(
        secret_key("team-a", &spec()),
        ("team-a".to_string(), "shop-tls".to_string())
    );
    assert_eq!(
        tke_secret_data(&TencentCertificatePushStatus::default()),
        None
    );
    let status = TencentCertificatePushStatus {
        certificate_id: Some("cert9".into()),
        ..TencentCertificatePushStatus::default()
    };
    assert_eq!(
        tke_secret_data(&status).unwrap()["qcloud_cert_id"],
        b"cert9".to_vec()
    );
    assert_eq!(retry_backoff(0), Duration::from_secs(30));
    assert_eq!(retry_backoff(9), Duration::from_secs(600));
}

#[test]
fn steps_report_readiness_and_when_to_come_back() {
    let status = TencentCertificatePushStatus {
        certificate_id: Some("cert2".into()),
        ..TencentCertificatePushStatus::default()
    };
    let in_sync = Step::InSync {
        after: Duration::from_secs(3600),
    };
    let report = in_sync.report(&status);
    assert!(report.ready);
    assert_eq!(report.reason, reason::PUBLISHED);
    assert!(report.message.contains("cert2"));
    assert_eq!(in_sync.requeue_after(), Some(Duration::from_secs(3600)));
    let failed = Step::RecordDeploy {
        results: vec![crate::push::DeployResult {
            resource_type: "cdn".into(),
            succeeded: 0,
            failed: 1,
            in_progress: 0,
            message: Some("domain is offline".into()),
        }],
        finished: true,
        after: None,
    };
    let report = failed.report(&status);
    assert!(!report.ready);
    assert_eq!(report.reason, reason::DEPLOY_FAILED);
    assert!(
        report.message.contains("cdn: 0 succeeded, 1 failed") && report.message.contains("offline")
    );
    let bound = Step::Wait {
        reason: reason::PREVIOUS_STILL_BOUND,
        message: "m".into(),
        after: BOUND_RECHECK,
    };
    assert!(bound.report(&status).ready);
    assert_eq!(bound.requeue_after(), Some(BOUND_RECHECK));
    assert_eq!(
        Step::Upload {
            alias: "a".into(),
            project_id: None,
            tags: vec![]
        }
        .requeue_after(),
        None
    );
}
