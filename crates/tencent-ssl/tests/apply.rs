//! `ApplyCertificate` and renewal orders: the client against the in-process simulator, over real HTTP.
//! The point of most of these: however the call ends, there is never a second application.

use std::time::Duration;

use tencent_sim::{self as sim, Account, ApplySettings, Latency, SimConfig, SimHandle};
use tencent_ssl::apply::{
    ACTION_APPLY_CERTIFICATE, ApplyError, ApplyLocks, ApplyRequest, DvAuthMethod, RenewalOrder,
};
use tencent_ssl::renewal::order::{OrderState, Report};
use tencent_ssl::{Client, ClientConfig, Credentials};

const SECRET_ID: &str = "AKIDsimulatorAPPLY001";
const SECRET_KEY: &str = "simulator-secret-key-apply-0001";

fn credentials() -> Credentials {
    Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap()
}

async fn simulator(specs: &[&str]) -> SimHandle {
    sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: SECRET_ID.into(),
                secret_key: SECRET_KEY.into(),
                token: None,
            }],
            certificates: specs.iter().map(|s| s.parse().unwrap()).collect(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn client(sim: &SimHandle, timeout: Duration) -> Client {
    Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        timeout,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn applications(sim: &SimHandle) -> u64 {
    sim.stats().action_total(ACTION_APPLY_CERTIFICATE)
}

const FREE_IN_WINDOW: &str = "old1:domain=shop.example.com,valid-days=20";

#[tokio::test]
async fn a_renewal_is_applied_for_once_and_found_afterwards() {
    let sim = simulator(&[FREE_IN_WINDOW]).await;
    let client = client(&sim, Duration::from_secs(10));
    let locks = ApplyLocks::default();
    let first = client
        .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::DnsAuto)
        .await
        .unwrap();
    let RenewalOrder::Applied(applied) = first else {
        panic!("expected an application, got {first:?}");
    };
    assert_eq!(applications(&sim), 1);
    let again = client
        .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::DnsAuto)
        .await
        .unwrap();
    let RenewalOrder::Found(order) = again else {
        panic!("expected the existing order, got {again:?}");
    };
    assert_eq!(order.certificate_id, applied.certificate_id);
    assert_eq!(order.origin(), Some("old1"));
    assert_eq!(applications(&sim), 1);
}

#[tokio::test]
async fn a_timeout_after_sending_finds_the_order_instead_of_applying_twice() {
    let sim = simulator(&[FREE_IN_WINDOW]).await;
    // The simulator creates the order, then answers too late for the client.
    sim.state().add_latency(Latency {
        certificate_id: ACTION_APPLY_CERTIFICATE.into(),
        millis: 1500,
    });
    let client = client(&sim, Duration::from_millis(400));
    let outcome = client
        .apply_renewal(
            &ApplyLocks::default(),
            &credentials(),
            "old1",
            DvAuthMethod::DnsAuto,
        )
        .await
        .unwrap();
    let RenewalOrder::Found(order) = outcome else {
        panic!("expected the order found after the timeout, got {outcome:?}");
    };
    assert_eq!(order.origin(), Some("old1"));
    assert_eq!(applications(&sim), 1);
    assert_eq!(sim.state().orders().len(), 1);
    // A plain send that times out says the outcome is unknown, not that it failed.
    let direct = client
        .apply_certificate(
            &credentials(),
            &ApplyRequest {
                old_certificate_id: None,
                ..ApplyRequest::renewal("-", "new.example.com", DvAuthMethod::Dns)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(direct, ApplyError::Uncertain(_)), "{direct:?}");
}

#[tokio::test]
async fn concurrent_renewals_of_one_certificate_apply_once() {
    let sim = simulator(&[FREE_IN_WINDOW]).await;
    let client = client(&sim, Duration::from_secs(10));
    let locks = ApplyLocks::default();
    let runs = (0..4).map(|_| {
        let (client, locks) = (client.clone(), locks.clone());
        tokio::spawn(async move {
            client
                .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::Dns)
                .await
        })
    });
    let outcomes = futures::future::join_all(runs).await;
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Ok(RenewalOrder::Applied(_)))))
        .count();
    let found = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Ok(RenewalOrder::Found(_)))))
        .count();
    assert_eq!((applied, found), (1, 3));
    assert_eq!(applications(&sim), 1);
}

#[tokio::test]
async fn a_dns_order_shows_the_record_until_it_exists_then_is_followed() {
    let sim = simulator(&[FREE_IN_WINDOW]).await;
    let client = client(&sim, Duration::from_secs(10));
    let RenewalOrder::Applied(applied) = client
        .apply_renewal(
            &ApplyLocks::default(),
            &credentials(),
            "old1",
            DvAuthMethod::Dns,
        )
        .await
        .unwrap()
    else {
        panic!("expected an application");
    };
    let order = client
        .describe_order(&credentials(), &applied.certificate_id)
        .await
        .unwrap();
    let state = OrderState::of(&order);
    let OrderState::AwaitingValidation { records, .. } = &state else {
        panic!("expected validation to wait, got {state:?}");
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "_dnsauth.shop.example.com");
    assert_eq!(records[0].record_type.as_deref(), Some("TXT"));
    let report = Report::order("old1", &applied.certificate_id, &state);
    assert!(
        report
            .message
            .contains("create the DNS record TXT _dnsauth.shop.example.com with the value"),
        "{}",
        report.message
    );
    assert!(report.message.contains(&records[0].value));
    // Nothing is followed while it waits.
    let now = jiff::Timestamp::now();
    let resolution = client
        .resolve_renewals(&credentials(), "old1", now, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(resolution.certificate_id(), "old1");
    // "The record exists": it issues, and the renewal following takes it.
    sim.state().validate_order(&applied.certificate_id).unwrap();
    let issued = client
        .describe_order(&credentials(), &applied.certificate_id)
        .await
        .unwrap();
    assert_eq!(OrderState::of(&issued), OrderState::Issued);
    let resolution = client
        .resolve_renewals(&credentials(), "old1", now, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(resolution.certificate_id(), applied.certificate_id);
    assert_eq!(applications(&sim), 1);
}

#[tokio::test]
async fn refusals_are_refused_with_tencents_code_and_no_secret() {
    let sim = simulator(&[
        "paid1:domain=paid.example.com,valid-days=20,package=2",
        "early1:domain=early.example.com,valid-days=60",
        FREE_IN_WINDOW,
    ])
    .await;
    let client = client(&sim, Duration::from_secs(10));
    let locks = ApplyLocks::default();
    for (id, code) in [
        ("paid1", "FailedOperation.InvalidCertificateSource"),
        ("early1", "InvalidParameter.WithDetailReason"),
    ] {
        let err = client
            .apply_renewal(&locks, &credentials(), id, DvAuthMethod::Dns)
            .await
            .unwrap_err();
        let ApplyError::Refused(inner) = &err else {
            panic!("expected a refusal for {id}, got {err:?}");
        };
        assert_eq!(inner.code(), Some(code));
        assert!(!err.to_string().contains(SECRET_KEY));
    }
    sim.state().set_apply_settings(ApplySettings {
        free_quota: Some(0),
        ..ApplySettings::default()
    });
    let quota = client
        .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::Dns)
        .await
        .unwrap_err();
    assert!(matches!(quota, ApplyError::Refused(_)), "{quota:?}");
    assert_eq!(quota.reason(), "QuotaExceeded");
    let report = Report::refused("old1", quota.error().code(), &quota.error().to_string());
    assert!(report.message.contains("FailedOperation.ExceedsFreeLimit"));
    assert!(!report.message.contains(SECRET_KEY));
    // Refusals created nothing.
    assert!(sim.state().orders().is_empty());
}

#[tokio::test]
async fn the_old_certificate_is_read_with_package_type_and_links() {
    let sim = simulator(&[FREE_IN_WINDOW, "paid1:domain=paid.example.com,package=2"]).await;
    let client = client(&sim, Duration::from_secs(10));
    let old = client.describe_order(&credentials(), "old1").await.unwrap();
    assert!(old.is_free());
    assert_eq!(old.renewal(), None);
    assert_eq!(
        client
            .find_renewal_order(&credentials(), &old)
            .await
            .unwrap(),
        None
    );
    let paid = client
        .describe_order(&credentials(), "paid1")
        .await
        .unwrap();
    assert!(!paid.is_free());
    assert_eq!(paid.is_vip, Some(true));
}

#[tokio::test]
async fn after_a_failed_order_a_new_application_may_go() {
    let sim = simulator(&[FREE_IN_WINDOW]).await;
    let client = client(&sim, Duration::from_secs(10));
    let locks = ApplyLocks::default();
    let RenewalOrder::Applied(first) = client
        .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::Dns)
        .await
        .unwrap()
    else {
        panic!("expected an application");
    };
    sim.state()
        .fail_order(&first.certificate_id, "CA审核失败")
        .unwrap();
    let failed = client
        .describe_order(&credentials(), &first.certificate_id)
        .await
        .unwrap();
    assert_eq!(
        OrderState::of(&failed),
        OrderState::Failed {
            reason: "CA审核失败".into()
        }
    );
    // The decision holds while the spec is the same; once it asks again, the failed order is no obstacle.
    let again = client
        .apply_renewal(&locks, &credentials(), "old1", DvAuthMethod::Dns)
        .await
        .unwrap();
    let RenewalOrder::Applied(second) = again else {
        panic!("expected a new application, got {again:?}");
    };
    assert_ne!(second.certificate_id, first.certificate_id);
    assert_eq!(applications(&sim), 2);
}
