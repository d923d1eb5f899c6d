//! The secure metrics server end to end, in process: HTTPS, TokenReview and SubjectAccessReview against
//! the fake API server.

use std::sync::Arc;

use fake_apiserver::FakeApiServer;

use super::MetricsAccess;
use super::tls;
use crate::telemetry::{self, Metrics, Readiness};

const READER: &str = "system:serviceaccount:monitoring:prometheus";
const READER_TOKEN: &str = "reader-token";
const OTHER_TOKEN: &str = "tenant-token";

struct Running {
    api: FakeApiServer,
    base: String,
    http: reqwest::Client,
    readiness: Arc<Readiness>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let api = FakeApiServer::builder()
        .token_user(READER_TOKEN, READER, &["system:serviceaccounts"])
        .token_user(OTHER_TOKEN, "system:serviceaccount:web:app", &[])
        .allow_non_resource(READER, "/metrics", "get")
        .start()
        .await;
    let metrics = Arc::new(Metrics::new());
    metrics.set_certificate("web", "shop", "aBcD1234", None, false, "Pending");
    let readiness = Arc::new(Readiness::default());
    let listener = telemetry::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(telemetry::serve_secure(
        listener,
        tls::server_config(None).unwrap(),
        metrics,
        readiness.clone(),
        Arc::new(MetricsAccess::new(api.client())),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder()
        // The certificate is self-signed, as a scraper with insecureSkipVerify sees it.
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    Running {
        api,
        base: format!("https://{address}"),
        http,
        readiness,
        _stop: stop,
    }
}

impl Running {
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    fn reviews(&self) -> (u64, u64) {
        (
            self.api.request_count("POST", "tokenreviews"),
            self.api.request_count("POST", "subjectaccessreviews"),
        )
    }
}

#[tokio::test]
async fn metrics_need_a_reviewed_token_and_the_probes_stay_open() {
    let server = start().await;
    // No token, or not a bearer token: 401 without asking the API server.
    let (status, _) = server.get("/metrics", None).await;
    assert_eq!(status, 401);
    let basic = server
        .http
        .get(format!("{}/metrics", server.base))
        .basic_auth("user", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");
    assert_eq!(server.reviews(), (0, 0));
    // A token the API server does not know: 401 after one TokenReview.
    let (status, body) = server.get("/metrics", Some("made-up")).await;
    assert_eq!(status, 401);
    assert!(!body.contains("aBcD1234"));
    assert_eq!(server.reviews(), (1, 0));
    // A tenant's valid token without the metrics-reader grant: 403.
    let (status, body) = server.get("/metrics", Some(OTHER_TOKEN)).await;
    assert_eq!(status, 403);
    assert!(!body.contains("aBcD1234"), "{body}");
    assert_eq!(server.reviews(), (2, 1));
    // The reader: 200 with the series.
    let (status, body) = server.get("/metrics", Some(READER_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("certificate_id=\"aBcD1234\""), "{body}");
    assert_eq!(server.reviews(), (3, 2));
    // Repeated scrapes within the cache's minute ask the API server nothing more, whatever the answer.
    for token in [READER_TOKEN, OTHER_TOKEN, "made-up", READER_TOKEN] {
        server.get("/metrics", Some(token)).await;
    }
    assert_eq!(server.reviews(), (3, 2));
    // The probes need no token.
    assert_eq!(server.get("/healthz", None).await.0, 200);
    assert_eq!(server.get("/readyz", None).await.0, 503);
    server.readiness.set(true);
    assert_eq!(server.get("/readyz", None).await.0, 200);
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = server.base.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/metrics")).await.is_err()
            || reqwest::get(format!("{plain}/metrics"))
                .await
                .is_ok_and(|r| !r.status().is_success())
    );
}

#[tokio::test]
async fn an_api_server_that_cannot_review_is_503_and_not_cached() {
    let server = start().await;
    server.api.fail_next("POST", "tokenreviews", 500, 1);
    let (status, body) = server.get("/metrics", Some(READER_TOKEN)).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(READER_TOKEN));
    // The failure was not remembered: the next scrape is reviewed and allowed.
    let (status, _) = server.get("/metrics", Some(READER_TOKEN)).await;
    assert_eq!(status, 200);
}

#[test]
fn a_provided_certificate_is_loaded_and_a_bad_one_is_named() {
    let dir = std::env::temp_dir().join(format!("tco-metrics-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let missing = tls::server_config(Some(&dir)).unwrap_err();
    assert!(missing.to_string().contains("tls.crt"), "{missing}");
    let generated =
        rcgen::generate_simple_self_signed(vec!["metrics.example".to_string()]).unwrap();
    std::fs::write(dir.join("tls.crt"), generated.cert.pem()).unwrap();
    let key_pem = generated.signing_key.serialize_pem();
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    let bad = tls::server_config(Some(&dir)).unwrap_err();
    assert!(bad.to_string().contains("tls.key"), "{bad}");
    std::fs::write(dir.join("tls.key"), &key_pem).unwrap();
    assert!(tls::server_config(Some(&dir)).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
