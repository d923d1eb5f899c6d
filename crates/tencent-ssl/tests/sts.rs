//! Roles against the in-process simulator over real HTTP: STS `AssumeRole` and
//! `AssumeRoleWithWebIdentity`, the temporary credentials they issue, their cache and refresh.

use std::path::Path;

use tencent_sim::{self as sim, Account, SimConfig, SimHandle, SimRole};
use tencent_ssl::sts::{
    self, FAILURE_HOLD_SECS, REASON_ASSUME_ROLE_FAILED, Role, Source, WebIdentity,
};
use tencent_ssl::{Client, ClientConfig, Credentials, ErrorClass};

const BASE_ID: &str = "AKIDstsBASE0001";
const BASE_KEY: &str = "sts-base-secret-key";
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/cert-reader";
const PROVIDER: &str = "cls-abcd1234";
const CERT: &str = "stsCert1";

fn role(trusted: &[&str], tokens: &[&str]) -> SimRole {
    SimRole {
        role_arn: ROLE.into(),
        trusted_secret_ids: trusted.iter().map(|s| s.to_string()).collect(),
        oidc_provider_id: Some(PROVIDER.into()),
        web_identity_tokens: tokens.iter().map(|s| s.to_string()).collect(),
    }
}

async fn simulator(role: SimRole) -> SimHandle {
    sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: BASE_ID.into(),
                secret_key: BASE_KEY.into(),
                token: None,
            }],
            certificates: vec![format!("{CERT}:domain=sts.example.com").parse().unwrap()],
            roles: vec![role],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// One simulator serves both APIs: the STS endpoint follows the SSL endpoint.
fn client(sim: &SimHandle) -> Client {
    Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn assume_role() -> Source {
    Source::AssumeRole {
        base: Credentials::new(BASE_ID, BASE_KEY, None).unwrap(),
        role: Role::new(ROLE),
    }
}

fn web_identity(token_file: &Path) -> Source {
    Source::WebIdentity(WebIdentity {
        region: "ap-guangzhou".into(),
        provider_id: PROVIDER.into(),
        role_arn: ROLE.into(),
        token_file: token_file.to_path_buf(),
        session_name: sts::DEFAULT_SESSION_NAME.into(),
        duration_secs: 7200,
    })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn a_role_yields_temporary_credentials_that_download() {
    let sim = simulator(role(&[BASE_ID], &[])).await;
    let client = client(&sim);
    let source = assume_role();
    let temporary = client.credentials(&source).await.unwrap();
    assert!(temporary.secret_id().starts_with("AKIDtmp"), "{temporary}");
    assert_ne!(temporary.secret_id(), BASE_ID);
    assert!(
        temporary
            .to_string()
            .contains("temporary credentials (with session token)")
    );
    // Keyed by the source, so shared downloads and lookups keep their key across refreshes.
    assert_eq!(temporary.fingerprint(), source.key());

    let download = client.download_certificate(&temporary, CERT).await.unwrap();
    assert_eq!(download.zip, sim.state().certificate(CERT).unwrap().zip);
    let stats = sim.stats();
    assert_eq!(stats.count("AssumeRole", "Success"), 1);
    assert_eq!(stats.count("DownloadCertificate", "Success"), 1);
    // The download was signed by the temporary key (with its token), not the base key.
    assert_eq!(stats.by_secret_id.get(temporary.secret_id()), Some(&1));
    assert_eq!(stats.by_secret_id.get(BASE_ID), None);

    // Cached: a second caller asks STS nothing.
    let again = client.credentials(&source).await.unwrap();
    assert_eq!(again.secret_id(), temporary.secret_id());
    assert_eq!(sim.stats().count("AssumeRole", "Success"), 1);
}

#[tokio::test]
async fn temporary_credentials_are_refreshed_ahead_of_expiry_and_after_a_refusal() {
    let sim = simulator(role(&[BASE_ID], &[])).await;
    let client = client(&sim);
    let source = assume_role();
    let t0 = now();
    let first = client.credentials_at(&source, t0).await.unwrap();
    // 7200 s credentials are refreshed 15 minutes before they expire, not earlier …
    let refresh = sts::refresh_at(t0, t0 + 7200);
    assert_eq!(refresh, t0 + 7200 - 900);
    let cached = client.credentials_at(&source, refresh - 1).await.unwrap();
    assert_eq!(cached.secret_id(), first.secret_id());
    assert_eq!(sim.stats().count("AssumeRole", "Success"), 1);
    // … and at that point, while the old ones still work.
    let fresh = client.credentials_at(&source, refresh).await.unwrap();
    assert_ne!(fresh.secret_id(), first.secret_id());
    assert_eq!(fresh.fingerprint(), first.fingerprint());
    assert_eq!(sim.stats().count("AssumeRole", "Success"), 2);
    client.download_certificate(&first, CERT).await.unwrap();

    // Expired on Tencent's side: the SSL API refuses them (the token is required and checked) …
    sim.state().expire_issued();
    let err = client
        .download_certificate_within(&fresh, CERT, std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.TokenFailure"));
    assert_eq!(err.class(), ErrorClass::Credentials);
    // … and once forgotten, the role is assumed again.
    client.forget_credentials(&source);
    let renewed = client.credentials(&source).await.unwrap();
    assert_ne!(renewed.secret_id(), fresh.secret_id());
    client
        .download_certificate_within(&renewed, CERT, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(sim.stats().count("AssumeRole", "Success"), 3);
}

#[tokio::test]
async fn a_trust_policy_that_does_not_name_the_key_is_a_condition_saying_what_to_fix() {
    let sim = simulator(role(&["AKIDsomeoneElse"], &[])).await;
    let client = client(&sim);
    let source = assume_role();
    let t0 = now();
    let err = client.credentials_at(&source, t0).await.unwrap_err();
    assert_eq!(err.reason(), REASON_ASSUME_ROLE_FAILED);
    assert_eq!(err.class(), ErrorClass::Credentials);
    let text = err.to_string();
    assert!(text.contains("UnauthorizedOperation"), "{text}");
    assert!(text.contains("trust policy"), "{text}");
    // The key is named by where it is, never by its SecretId (a value of the tenant's Secret).
    assert!(
        text.contains(ROLE) && text.contains("credentials Secret"),
        "{text}"
    );
    assert!(!text.contains(BASE_ID), "{text}");
    assert!(!text.contains(BASE_KEY), "{text}");
    // Other resources on the same source get the answer without asking STS again for a while.
    let held = client.credentials_at(&source, t0 + 1).await.unwrap_err();
    assert_eq!(held, err);
    assert_eq!(sim.stats().count("AssumeRole", "UnauthorizedOperation"), 1);
    // Fixed trust policy: the next attempt after the hold succeeds.
    sim.state().put_role(role(&[BASE_ID], &[]));
    client
        .credentials_at(&source, t0 + FAILURE_HOLD_SECS)
        .await
        .unwrap();

    // A role that does not exist says to check the ARN.
    let missing = Source::AssumeRole {
        base: Credentials::new(BASE_ID, BASE_KEY, None).unwrap(),
        role: Role::new("qcs::cam::uin/100000000001:roleName/typo"),
    };
    let err = client.credentials(&missing).await.unwrap_err();
    assert_eq!(err.reason(), REASON_ASSUME_ROLE_FAILED);
    assert!(err.to_string().contains("check the role ARN"), "{err}");
}

#[tokio::test]
async fn web_identity_rereads_a_rotated_token_file() {
    let dir = std::env::temp_dir().join(format!("tco-sts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.first-token.sig\n").unwrap();
    let sim = simulator(role(&[], &["eyJhbGciOiJSUzI1NiJ9.first-token.sig"])).await;
    let client = client(&sim);
    let source = web_identity(&token_file);
    let t0 = now();
    let first = client.credentials_at(&source, t0).await.unwrap();
    client.download_certificate(&first, CERT).await.unwrap();
    assert_eq!(sim.stats().count("AssumeRoleWithWebIdentity", "Success"), 1);

    // The kubelet rotates the projected token; the provider no longer vouches for the old one.
    sim.state()
        .put_role(role(&[], &["eyJhbGciOiJSUzI1NiJ9.second-token.sig"]));
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.second-token.sig\n").unwrap();
    let refresh = sts::refresh_at(t0, t0 + 7200);
    let second = client.credentials_at(&source, refresh).await.unwrap();
    assert_ne!(second.secret_id(), first.secret_id());
    assert_eq!(second.fingerprint(), first.fingerprint());
    client
        .download_certificate_within(&second, CERT, std::time::Duration::ZERO)
        .await
        .unwrap();

    // A token the provider does not vouch for (stale file): what to fix, and never the token itself.
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.stale-token.sig").unwrap();
    let later = refresh + 7200;
    let err = client.credentials_at(&source, later).await.unwrap_err();
    assert_eq!(err.reason(), REASON_ASSUME_ROLE_FAILED);
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("InvalidParameter.WebIdentityTokenError"),
        "{text}"
    );
    assert!(
        text.contains("trust policy") && text.contains(PROVIDER),
        "{text}"
    );
    assert!(!text.contains("stale-token"), "{text}");

    // No token file at all.
    let gone = web_identity(&dir.join("missing"));
    let err = client.credentials(&gone).await.unwrap_err();
    assert_eq!(err.reason(), "CredentialsNotFound");
    assert!(
        err.to_string().contains("TKE_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_simulator_requires_the_unsigned_form_for_web_identity_and_a_signature_for_assume_role()
{
    let sim = simulator(role(&[BASE_ID], &["tok"])).await;
    let http = reqwest::Client::new();
    let post = |action: &str, authorization: &str, body: &str| {
        http.post(sim.endpoint())
            .header("Content-Type", "application/json")
            .header("X-TC-Action", action)
            .header("X-TC-Version", "2018-08-13")
            .header("X-TC-Region", "ap-guangzhou")
            .header("X-TC-Timestamp", now().to_string())
            .header("Authorization", authorization)
            .body(body.to_string())
            .send()
    };
    let code = |answer: serde_json::Value| answer["Response"]["Error"]["Code"].clone();
    let body = format!(
        r#"{{"ProviderId":"{PROVIDER}","WebIdentityToken":"tok","RoleArn":"{ROLE}","RoleSessionName":"s1"}}"#
    );
    let unsigned: serde_json::Value = post("AssumeRoleWithWebIdentity", "SKIP", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        unsigned["Response"]["Credentials"]["Token"].is_string(),
        "{unsigned}"
    );
    assert!(unsigned["Response"]["ExpiredTime"].is_i64(), "{unsigned}");
    let wrong: serde_json::Value = post("AssumeRoleWithWebIdentity", "TC3-HMAC-SHA256 x", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(wrong), "AuthFailure.InvalidAuthorization");
    // AssumeRole is signed: SKIP is no signature.
    let body = format!(r#"{{"RoleArn":"{ROLE}","RoleSessionName":"s1"}}"#);
    let skipped: serde_json::Value = post("AssumeRole", "SKIP", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(skipped), "AuthFailure.InvalidAuthorization");
}

/// An STS stand-in answering every request with these temporary credentials expiring at `expired_time`;
/// returns its endpoint and a request counter.
async fn sts_answering(
    expired_time: i64,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            axum::Json(serde_json::json!({"Response": {
                "Credentials": {"Token": "tok", "TmpSecretId": "AKIDtmp", "TmpSecretKey": "tmpkey"},
                "ExpiredTime": expired_time,
                "RequestId": "r"
            }}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), count)
}

/// `ExpiredTime` at the ends of i64 and far in the past: no overflow anywhere on the way (debug builds
/// panic on one); a far-future expiry is cached, an expired one is refused and held, not re-asked.
#[tokio::test]
async fn extreme_expired_times_neither_overflow_nor_loop() {
    use std::sync::atomic::Ordering;
    let now = now();
    let (endpoint, count) = sts_answering(i64::MAX).await;
    let client = Client::new(ClientConfig {
        endpoint,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let source = assume_role();
    for at in [now, now + 86_400 * 365 * 100, i64::MIN] {
        let credentials = client.credentials_at(&source, at).await.unwrap();
        assert_eq!(credentials.secret_id(), "AKIDtmp");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "cached until near i64::MAX"
    );

    for expired in [-1, i64::MIN, 0, now - 86_400 * 365 * 50, now] {
        let (endpoint, count) = sts_answering(expired).await;
        let client = Client::new(ClientConfig {
            endpoint,
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .unwrap();
        let err = client.credentials_at(&source, now).await.unwrap_err();
        assert_eq!(err.reason(), "InvalidResponse", "{expired}: {err}");
        assert!(err.to_string().contains("ExpiredTime"), "{err}");
        // Held for FAILURE_HOLD_SECS: no second request.
        let again = client.credentials_at(&source, now + 1).await.unwrap_err();
        assert_eq!(again.reason(), "InvalidResponse");
        assert_eq!(count.load(Ordering::SeqCst), 1, "{expired}");
    }
}
