//! The client against the in-process simulator, over real HTTP on loopback.

use std::sync::Arc;
use std::time::Duration;

use tencent_sim::{self as sim, Account, CertificateSpec, Fault, Latency, SimConfig, SimHandle};
use tencent_ssl::limiter::LimiterConfig;
use tencent_ssl::{Client, ClientConfig, Credentials, ErrorClass, TencentError};

const SECRET_ID: &str = "AKIDsimulatorTEST0001";
const SECRET_KEY: &str = "simulator-secret-key-0001";

fn account() -> Account {
    Account {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.into(),
        token: None,
    }
}

fn credentials() -> Credentials {
    Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap()
}

fn specs(ids: &[&str]) -> Vec<CertificateSpec> {
    ids.iter().map(|id| id.parse().unwrap()).collect()
}

async fn start(config: SimConfig) -> SimHandle {
    sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn simulator(ids: &[&str]) -> SimHandle {
    start(SimConfig {
        accounts: vec![account()],
        certificates: specs(ids),
        ..SimConfig::default()
    })
    .await
}

fn client_for(sim: &SimHandle) -> Client {
    client_with(sim, |_| {})
}

fn client_with(sim: &SimHandle, adjust: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    };
    adjust(&mut config);
    Client::new(config).unwrap()
}

fn api_code(err: &TencentError) -> &str {
    err.code().unwrap_or("<no code>")
}

#[tokio::test]
async fn download_round_trips_the_zip_bytes() {
    let sim = simulator(&["demo0001"]).await;
    let client = client_for(&sim);
    let download = client
        .download_certificate(&credentials(), "demo0001")
        .await
        .unwrap();
    let served = sim.state().certificate("demo0001").unwrap();
    assert_eq!(download.zip, served.zip);
    assert!(download.zip.starts_with(b"PK"));
    assert_eq!(download.request_id.len(), 36);
    assert_eq!(sim.stats().count("DownloadCertificate", "Success"), 1);
}

#[tokio::test]
async fn describe_detail_reports_status_dates_and_domains() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["shop0001:domain=shop.example.com,san=www.shop.example.com"]),
        ..SimConfig::default()
    })
    .await;
    let detail = client_for(&sim)
        .describe_certificate_detail(&credentials(), "shop0001")
        .await
        .unwrap();
    let served = sim.state().certificate("shop0001").unwrap();
    assert!(detail.is_issued());
    assert_eq!(detail.domain.as_deref(), Some("shop.example.com"));
    assert_eq!(detail.subject_alt_names, vec!["www.shop.example.com"]);
    // Tencent's times have second precision, in UTC+8 on the wire; they must come back as the same instant.
    assert_eq!(
        detail.not_after.unwrap().as_second(),
        served.not_after.unwrap().as_second()
    );
    assert_eq!(detail.fingerprint_sha1, served.fingerprint_sha1);
}

#[tokio::test]
async fn each_error_class_is_reported_with_its_reason() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["flaky001", "pending01:status=0"]),
        faults: vec!["flaky001=FailedOperation.NetworkError".parse().unwrap()],
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let creds = credentials();

    let transient = client
        .download_certificate(&creds, "flaky001")
        .await
        .unwrap_err();
    assert_eq!(api_code(&transient), "FailedOperation.NetworkError");
    assert_eq!(
        (transient.class(), transient.reason()),
        (ErrorClass::Transient, "NetworkError")
    );

    let not_found = client
        .download_certificate(&creds, "missing1")
        .await
        .unwrap_err();
    assert_eq!(api_code(&not_found), "FailedOperation.CertificateNotFound");
    assert_eq!(
        (not_found.class(), not_found.reason()),
        (ErrorClass::Permanent, "CertificateNotFound")
    );

    let pending = client
        .download_certificate(&creds, "pending01")
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&pending),
        "FailedOperation.InvalidCertificateStatusCode"
    );
    assert_eq!(
        (pending.class(), pending.reason()),
        (ErrorClass::NotYetIssued, "CertificateNotIssued")
    );

    let wrong_key = Credentials::new(SECRET_ID, "not-the-key", None).unwrap();
    let auth = client
        .download_certificate(&wrong_key, "flaky001")
        .await
        .unwrap_err();
    assert_eq!(api_code(&auth), "AuthFailure.SignatureFailure");
    assert_eq!(
        (auth.class(), auth.reason()),
        (ErrorClass::Credentials, "AuthFailed")
    );

    let unknown_id = Credentials::new("AKIDnobody", SECRET_KEY, None).unwrap();
    let unknown = client
        .download_certificate(&unknown_id, "flaky001")
        .await
        .unwrap_err();
    assert_eq!(api_code(&unknown), "AuthFailure.SecretIdNotFound");
    assert_eq!(unknown.class(), ErrorClass::Credentials);
}

#[tokio::test]
async fn missing_and_empty_ids_are_invalid_requests() {
    let sim = simulator(&["demo0001"]).await;
    let err = client_for(&sim)
        .download_certificate(&credentials(), "")
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), "InvalidParameter");
    assert_eq!(
        (err.class(), err.reason()),
        (ErrorClass::Permanent, "InvalidRequest")
    );
}

#[tokio::test]
async fn an_expired_timestamp_is_re_signed_once_then_reported_as_clock_skew() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["demo0001"]),
        // The simulator's clock runs 10 minutes ahead of ours: every signature looks stale.
        clock_offset: 600,
        ..SimConfig::default()
    })
    .await;
    let err = client_for(&sim)
        .download_certificate(&credentials(), "demo0001")
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), "AuthFailure.SignatureExpire");
    assert_eq!(
        (err.class(), err.reason()),
        (ErrorClass::Credentials, "ClockSkew")
    );
    assert_eq!(
        sim.stats()
            .count("DownloadCertificate", "AuthFailure.SignatureExpire"),
        2
    );
}

#[tokio::test]
async fn temporary_credentials_send_their_token() {
    let sim = start(SimConfig {
        accounts: vec![Account {
            token: Some("session-token-1".into()),
            ..account()
        }],
        certificates: specs(&["demo0001"]),
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let with_token =
        Credentials::new(SECRET_ID, SECRET_KEY, Some("session-token-1".into())).unwrap();
    client
        .download_certificate(&with_token, "demo0001")
        .await
        .unwrap();
    let err = client
        .download_certificate(&credentials(), "demo0001")
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), "AuthFailure.TokenFailure");
}

#[tokio::test]
async fn a_slow_api_times_out_as_a_transient_network_error() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["slow0001"]),
        latencies: vec![Latency {
            certificate_id: "slow0001".into(),
            millis: 3_000,
        }],
        ..SimConfig::default()
    })
    .await;
    let client = client_with(&sim, |c| c.timeout = Duration::from_millis(300));
    let err = client
        .download_certificate(&credentials(), "slow0001")
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Timeout { .. }), "{err:?}");
    assert_eq!(
        (err.class(), err.reason()),
        (ErrorClass::Transient, "NetworkError")
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transient_network_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let err = client
        .download_certificate(&credentials(), "demo0001")
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Connect { .. }), "{err:?}");
    assert_eq!(err.reason(), "NetworkError");
}

#[tokio::test]
async fn fifty_concurrent_downloads_of_one_id_make_one_request() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["shared01"]),
        // Keep the first request in flight while the other 49 arrive.
        latencies: vec![Latency {
            certificate_id: "shared01".into(),
            millis: 300,
        }],
        ..SimConfig::default()
    })
    .await;
    let client = client_with(&sim, |c| c.download_cache_ttl = Duration::ZERO);
    let creds = credentials();
    let results =
        futures::future::join_all((0..50).map(|_| client.download_certificate(&creds, "shared01")))
            .await;
    let first = results[0].as_ref().unwrap().clone();
    for result in &results {
        assert!(Arc::ptr_eq(result.as_ref().unwrap(), &first));
    }
    assert_eq!(sim.stats().action_total("DownloadCertificate"), 1);
    // Once settled, a new call makes a new request (the cache is off here).
    client
        .download_certificate(&creds, "shared01")
        .await
        .unwrap();
    assert_eq!(sim.stats().action_total("DownloadCertificate"), 2);
}

#[tokio::test]
async fn recent_downloads_are_served_from_the_cache_within_its_ttl() {
    let sim = simulator(&["cached01"]).await;
    let client = client_with(&sim, |c| c.download_cache_ttl = Duration::from_secs(30));
    let creds = credentials();
    client
        .download_certificate(&creds, "cached01")
        .await
        .unwrap();
    client
        .download_certificate(&creds, "cached01")
        .await
        .unwrap();
    assert_eq!(sim.stats().action_total("DownloadCertificate"), 1);
    // A caller that needs fresh data bypasses the cache.
    client
        .download_certificate_within(&creds, "cached01", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(sim.stats().action_total("DownloadCertificate"), 2);
}

#[tokio::test]
async fn downloads_are_never_shared_across_credentials() {
    let sim = start(SimConfig {
        accounts: vec![
            account(),
            Account {
                secret_id: "AKIDsecondTENANT".into(),
                secret_key: "second-key".into(),
                token: None,
            },
        ],
        certificates: specs(&["tenant01"]),
        latencies: vec![Latency {
            certificate_id: "tenant01".into(),
            millis: 300,
        }],
        ..SimConfig::default()
    })
    .await;
    let client = client_with(&sim, |c| c.download_cache_ttl = Duration::from_secs(30));
    let tenant_a = credentials();
    let tenant_b = Credentials::new("AKIDsecondTENANT", "second-key", None).unwrap();
    // Someone who knows tenant A's SecretId but not its key.
    let impostor = Credentials::new(SECRET_ID, "guessed-key", None).unwrap();
    let (a, b, c) = tokio::join!(
        client.download_certificate(&tenant_a, "tenant01"),
        client.download_certificate(&tenant_b, "tenant01"),
        client.download_certificate(&impostor, "tenant01"),
    );
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(api_code(&c.unwrap_err()), "AuthFailure.SignatureFailure");
    // Nor from the cache afterwards.
    let again = client
        .download_certificate(&impostor, "tenant01")
        .await
        .unwrap_err();
    assert_eq!(api_code(&again), "AuthFailure.SignatureFailure");
    assert_eq!(sim.stats().count("DownloadCertificate", "Success"), 2);
}

#[tokio::test]
async fn a_burst_of_100_downloads_at_10_per_second_is_never_throttled() {
    let ids: Vec<String> = (0..100).map(|i| format!("burst{i:03}")).collect();
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: ids
            .iter()
            .map(|id| CertificateSpec::new(id.as_str()))
            .collect(),
        rate_limit: Some(10.0),
        ..SimConfig::default()
    })
    .await;
    let client = client_with(&sim, |c| c.limiter = LimiterConfig::per_second(10.0));
    let creds = credentials();
    let started = std::time::Instant::now();
    let results =
        futures::future::join_all(ids.iter().map(|id| client.download_certificate(&creds, id)))
            .await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let stats = sim.stats();
    assert_eq!(stats.count("DownloadCertificate", "Success"), 100);
    assert_eq!(stats.rate_limited(), 0, "{stats:?}");
    // The limiter spaced the requests out (99 gaps of 100 ms) rather than firing them at once.
    assert!(elapsed >= Duration::from_millis(9_800), "{elapsed:?}");
    eprintln!("100 downloads at 10/s took {elapsed:?} with 0 RequestLimitExceeded");
}

#[tokio::test]
async fn the_limiter_adapts_when_tencent_allows_less_than_configured() {
    let ids: Vec<String> = (0..24).map(|i| format!("slow{i:03}")).collect();
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: ids
            .iter()
            .map(|id| CertificateSpec::new(id.as_str()))
            .collect(),
        // The account's real quota is lower than the client believes.
        rate_limit: Some(4.0),
        ..SimConfig::default()
    })
    .await;
    let client = client_with(&sim, |c| c.limiter = LimiterConfig::per_second(10.0));
    let creds = credentials();
    let results =
        futures::future::join_all(ids.iter().map(|id| client.download_certificate(&creds, id)))
            .await;
    let stats = sim.stats();
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(succeeded, 24, "{stats:?}");
    // Without adaptation, 10/s against a 4/s quota rejects most of a 24-request burst.
    assert!(stats.rate_limited() <= 4, "{stats:?}");
    assert!(client.limiter().current_rate("DownloadCertificate") < 10.0);
    eprintln!(
        "24 downloads against a 4/s quota: {} RequestLimitExceeded, rate now {:.1}/s",
        stats.rate_limited(),
        client.limiter().current_rate("DownloadCertificate")
    );
}

#[tokio::test]
async fn faults_can_be_injected_and_cleared_while_running() {
    let sim = simulator(&["demo0001"]).await;
    let client = client_with(&sim, |c| c.download_cache_ttl = Duration::ZERO);
    let creds = credentials();
    sim.state().add_fault(Fault {
        certificate_id: "demo0001".into(),
        code: "InternalError".into(),
        remaining: Some(1),
        probability: 1.0,
    });
    let err = client
        .download_certificate(&creds, "demo0001")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "TencentInternalError");
    client
        .download_certificate(&creds, "demo0001")
        .await
        .unwrap();
}

#[tokio::test]
async fn control_endpoints_report_stats_over_http() {
    let sim = simulator(&["demo0001"]).await;
    client_for(&sim)
        .download_certificate(&credentials(), "demo0001")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let stats: serde_json::Value = http
        .get(format!("{}/_sim/stats", sim.endpoint()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_action"]["DownloadCertificate"]["Success"], 1);
    assert_eq!(stats["by_certificate"]["demo0001"], 1);
    let fault =
        serde_json::json!({"certificate_id": "*", "code": "RequestLimitExceeded", "remaining": 1});
    let added = http
        .post(format!("{}/_sim/faults", sim.endpoint()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());
    assert_eq!(
        sim.state().take_fault("x").as_deref(),
        Some("RequestLimitExceeded")
    );
}

#[tokio::test]
async fn no_error_or_debug_output_contains_the_secret_key() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["demo0001", "flaky001"]),
        faults: vec!["flaky001=FailedOperation.NetworkError".parse().unwrap()],
        ..SimConfig::default()
    })
    .await;
    let client = client_for(&sim);
    let token = "token-value-that-must-not-leak";
    let creds = Credentials::new(SECRET_ID, SECRET_KEY, Some(token.into())).unwrap();
    let mut texts = vec![
        format!("{creds:?}"),
        creds.to_string(),
        format!("{client:?}"),
    ];
    for id in ["demo0001", "flaky001", "missing1", ""] {
        if let Err(err) = client.download_certificate(&creds, id).await {
            texts.push(err.to_string());
            texts.push(format!("{err:?}"));
        }
    }
    let wrong = Credentials::new(SECRET_ID, "wrong-key-that-must-not-leak", None).unwrap();
    let err = client
        .download_certificate(&wrong, "demo0001")
        .await
        .unwrap_err();
    texts.extend([err.to_string(), format!("{err:?}"), format!("{wrong:?}")]);
    assert!(texts.len() >= 10);
    for text in texts {
        for secret in [SECRET_KEY, token, "wrong-key-that-must-not-leak"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

/// Records what the client reports, as the operator's metrics would.
#[derive(Default)]
struct Recorder {
    requests: std::sync::Mutex<Vec<(String, String)>>,
    coalesced: std::sync::Mutex<Vec<String>>,
}

impl tencent_ssl::Observer for Recorder {
    fn request(&self, action: &str, code: &str, _took: Duration) {
        self.requests
            .lock()
            .unwrap()
            .push((action.to_string(), code.to_string()));
    }

    fn coalesced(&self, source: &str) {
        self.coalesced.lock().unwrap().push(source.to_string());
    }
}

#[tokio::test]
async fn the_observer_hears_requests_and_coalesced_downloads() {
    let sim = start(SimConfig {
        accounts: vec![account()],
        certificates: specs(&["watch001"]),
        latencies: vec![Latency {
            certificate_id: "watch001".into(),
            millis: 200,
        }],
        ..SimConfig::default()
    })
    .await;
    let recorder = Arc::new(Recorder::default());
    let client = Client::with_observer(
        ClientConfig {
            endpoint: sim.endpoint(),
            download_cache_ttl: Duration::from_secs(30),
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        },
        recorder.clone(),
    )
    .unwrap();
    let creds = credentials();
    let results =
        futures::future::join_all((0..10).map(|_| client.download_certificate(&creds, "watch001")))
            .await;
    assert!(results.iter().all(Result::is_ok));
    client
        .download_certificate(&creds, "watch001")
        .await
        .unwrap();
    let mut coalesced = recorder.coalesced.lock().unwrap().clone();
    coalesced.sort();
    let mut expected = vec!["in_flight".to_string(); 9];
    expected.insert(0, "cache".to_string());
    assert_eq!(coalesced, expected);
    assert_eq!(
        *recorder.requests.lock().unwrap(),
        [("DownloadCertificate".to_string(), "Success".to_string())]
    );
}

/// A signed request carries the signature and `X-TC-Token` made for one host: a redirect must not take
/// them to another. An endpoint answering 3xx towards a second listener (the simulator, which would
/// answer) is a typed error, and the second listener sees nothing.
#[tokio::test]
async fn redirects_are_not_followed_and_are_a_typed_error() {
    let target = simulator(&["demo0001"]).await;
    for status in [301u16, 302, 303, 307, 308] {
        let location = target.endpoint();
        let redirector = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    [(axum::http::header::LOCATION, location)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, redirector).await });
        let client = Client::new(ClientConfig {
            endpoint: format!("http://{address}"),
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .unwrap();
        let with_token =
            Credentials::new(SECRET_ID, SECRET_KEY, Some("session-token".to_string())).unwrap();
        let err = client
            .download_certificate(&with_token, "demo0001")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TencentError::Redirected {
                action: "DownloadCertificate".into(),
                status
            }
        );
        assert_eq!(
            (err.class(), err.reason()),
            (ErrorClass::Permanent, "TencentHttpError")
        );
        assert!(err.to_string().contains("not followed"), "{err}");
        server.abort();
    }
    assert_eq!(
        target.stats().requests,
        0,
        "the redirect target saw a request"
    );
}
