//! Following renewals against the in-process simulator, over real HTTP on loopback: the certificate list
//! (pagination, filters, shared scans), renewal links, and renewals made while running.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tencent_sim::{self as sim, Account, CertificateSpec, Latency, SimConfig, SimHandle};
use tencent_ssl::limiter::LimiterConfig;
use tencent_ssl::renewal::{self, Stop};
use tencent_ssl::{CertificateFilter, Client, ClientConfig, Credentials, Tag, TencentError};

const SECRET_ID: &str = "AKIDrenewalTEST0001";
const SECRET_KEY: &str = "renewal-secret-key-0001";
const OTHER_ID: &str = "AKIDrenewalTENANT02";
const OTHER_KEY: &str = "renewal-secret-key-0002";
const LIST: &str = "DescribeCertificates";
const DETAIL: &str = "DescribeCertificateDetail";

fn accounts() -> Vec<Account> {
    [(SECRET_ID, SECRET_KEY), (OTHER_ID, OTHER_KEY)]
        .into_iter()
        .map(|(id, key)| Account {
            secret_id: id.into(),
            secret_key: key.into(),
            token: None,
        })
        .collect()
}

fn credentials() -> Credentials {
    Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap()
}

fn specs(texts: &[&str]) -> Vec<CertificateSpec> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

async fn start(
    certificates: Vec<CertificateSpec>,
    adjust: impl FnOnce(&mut SimConfig),
) -> SimHandle {
    let mut config = SimConfig {
        accounts: accounts(),
        certificates,
        ..SimConfig::default()
    };
    adjust(&mut config);
    sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
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

/// `count` numbered certificates, every `DescribeCertificates` answer taking `millis`.
async fn start_with_slow_lists(count: usize, prefix: &str, millis: u64) -> SimHandle {
    start(numbered(count, prefix), |config| {
        config.latencies = vec![Latency {
            certificate_id: LIST.into(),
            millis,
        }];
    })
    .await
}

fn numbered(count: usize, prefix: &str) -> Vec<CertificateSpec> {
    (0..count)
        .map(|i| CertificateSpec::new(format!("{prefix}{i:04}")))
        .collect()
}

fn ids(list: &[tencent_ssl::CertificateSummary]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|c| c.certificate_id.clone()).collect();
    ids.sort();
    ids
}

async fn control(sim: &SimHandle, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{}{path}", sim.endpoint()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_list_is_read_page_by_page_until_the_total() {
    let sim = start(numbered(250, "page"), |_| {}).await;
    let client = client_with(&sim, |_| {});
    let list = client
        .describe_certificates(&credentials(), &CertificateFilter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 250);
    assert_eq!(ids(&list), sim.state().certificate_ids());
    // 100 per page: 100 + 100 + 50, the short page ends the scan.
    assert_eq!(sim.stats().count(LIST, "Success"), 3);

    // An exact multiple of the page size ends on TotalCount, without an empty extra page.
    let client = client_with(&sim, |c| c.list_page_size = 50);
    let list = client
        .describe_certificates(&credentials(), &CertificateFilter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 250);
    assert_eq!(sim.stats().count(LIST, "Success"), 3 + 5);
}

#[tokio::test]
async fn filters_are_sent_and_applied() {
    let sim = start(
        specs(&[
            "shop0001:domain=shop.example.com,project=7,tag=env=prod",
            "shop0002:domain=shop.example.com,status=0,project=7",
            "blog0001:domain=blog.example.com,tag=env=dev,alias=Blog",
            "upl00001:domain=upload.example.com,from=upload,tag=env=prod",
            "old00001:domain=old.example.com,status=3,expired",
        ]),
        |_| {},
    )
    .await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let list = |filter: CertificateFilter| {
        let client = client.clone();
        let creds = creds.clone();
        async move { ids(&client.describe_certificates(&creds, &filter).await.unwrap()) }
    };
    assert_eq!(
        list(CertificateFilter::issued_server_certificates()).await,
        ["blog0001", "shop0001", "upl00001"]
    );
    assert_eq!(
        list(CertificateFilter {
            search_key: Some("SHOP.example".into()),
            ..CertificateFilter::default()
        })
        .await,
        ["shop0001", "shop0002"]
    );
    assert_eq!(
        list(CertificateFilter {
            search_key: Some("blog".into()),
            certificate_status: vec![1],
            ..CertificateFilter::default()
        })
        .await,
        ["blog0001"]
    );
    assert_eq!(
        list(CertificateFilter {
            project_id: Some(7),
            ..CertificateFilter::default()
        })
        .await,
        ["shop0001", "shop0002"]
    );
    assert_eq!(
        list(CertificateFilter {
            tags: vec![Tag::new("env", "prod")],
            ..CertificateFilter::default()
        })
        .await,
        ["shop0001", "upl00001"]
    );
    assert_eq!(
        list(CertificateFilter {
            filter_source: Some("upload".into()),
            ..CertificateFilter::default()
        })
        .await,
        ["upl00001"]
    );
    assert_eq!(
        list(CertificateFilter {
            certificate_status: vec![0, 3],
            ..CertificateFilter::default()
        })
        .await,
        ["old00001", "shop0002"]
    );
    assert_eq!(
        list(CertificateFilter {
            cert_ids: vec!["blog0001".into(), "old00001".into(), "nosuch01".into()],
            ..CertificateFilter::default()
        })
        .await,
        ["blog0001", "old00001"]
    );
    assert!(
        list(CertificateFilter {
            certificate_type: Some("CA".into()),
            ..CertificateFilter::default()
        })
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn list_items_carry_every_name_links_and_beijing_times() {
    let sim = start(
        specs(&[
            "shop0001:domain=shop.example.com,san=www.shop.example.com,renewed-by=shop0002",
            "shop0002:domain=shop.example.com,san=www.shop.example.com,hosting-renew=shop0003",
            "shop0003:domain=shop.example.com",
        ]),
        |_| {},
    )
    .await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let list = client
        .describe_certificates(&creds, &CertificateFilter::default())
        .await
        .unwrap();
    let item = |id: &str| list.iter().find(|c| c.certificate_id == id).unwrap();
    let first = item("shop0001");
    // The list names include the main domain...
    assert_eq!(
        first.subject_alt_names,
        ["shop.example.com", "www.shop.example.com"]
    );
    // ...the detail's do not.
    let detail = client
        .describe_certificate_detail(&creds, "shop0001")
        .await
        .unwrap();
    assert_eq!(detail.subject_alt_names, ["www.shop.example.com"]);

    let served = sim.state().certificate("shop0001").unwrap();
    // Times travel as "YYYY-MM-DD HH:MM:SS" in UTC+8 and must come back as the same instants.
    assert_eq!(first.not_before, served.not_before);
    assert_eq!(first.not_after, served.not_after);
    assert_eq!(first.not_after, detail.not_after);
    assert_eq!(
        first.inserted_at.map(|t| t.as_second()),
        Some(served.inserted_at.as_second())
    );
    assert_eq!(first.renew_order.as_deref(), Some("shop0002"));
    assert!(first.has_renew_order);
    assert_eq!(first.hosting_renew_cert_id, None);
    assert_eq!(first.allow_download, Some(true));
    assert_eq!(first.is_expiring, Some(false));
    let second = item("shop0002");
    assert_eq!(second.hosting_renew_cert_id.as_deref(), Some("shop0003"));
    assert_eq!(
        second.extra.origin_certificate_id.as_deref(),
        Some("shop0001")
    );
    assert!(!second.has_renew_order);
}

#[tokio::test]
async fn the_detail_exposes_every_renewal_link() {
    let sim = start(
        specs(&[
            "aaaa0001:renewed-by=bbbb0001",
            "bbbb0001:replaced-by=cccc0001",
            "cccc0001:hosting-renew=dddd0001",
            "dddd0001:service-renew=eeee0001",
            "eeee0001",
        ]),
        |_| {},
    )
    .await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let detail = |id: &'static str| {
        let client = client.clone();
        let creds = creds.clone();
        async move {
            client
                .describe_certificate_detail(&creds, id)
                .await
                .unwrap()
        }
    };
    let a = detail("aaaa0001").await;
    assert_eq!(a.extra.renew_order.as_deref(), Some("bbbb0001"));
    let b = detail("bbbb0001").await;
    assert_eq!(b.extra.origin_certificate_id.as_deref(), Some("aaaa0001"));
    assert_eq!(b.extra.replaced_by.as_deref(), Some("cccc0001"));
    let c = detail("cccc0001").await;
    assert_eq!(c.extra.replaced_for.as_deref(), Some("bbbb0001"));
    assert_eq!(c.hosting_renew_cert_id.as_deref(), Some("dddd0001"));
    assert_eq!(c.hosting_status, Some(10));
    let d = detail("dddd0001").await;
    assert_eq!(
        d.extra.service_renew_certificate_id.as_deref(),
        Some("eeee0001")
    );
    assert_eq!(d.hosting_status, Some(-1));
    let e = detail("eeee0001").await;
    assert_eq!(
        e.extra.service_origin_certificate_id.as_deref(),
        Some("dddd0001")
    );

    // The whole chain is followed through the batched listing (no detail call), one link at a time.
    sim.state().reset_stats();
    let resolution = client
        .resolve_renewals(
            &creds,
            "aaaa0001",
            jiff::Timestamp::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(resolution.resolved.as_deref(), Some("eeee0001"));
    let chain = ["aaaa0001", "bbbb0001", "cccc0001", "dddd0001", "eeee0001"];
    assert_eq!(resolution.chain, chain);
    assert_eq!(resolution.stop, Stop::End);
    assert_eq!(sim.stats().action_total(DETAIL), 0);
    assert_eq!(sim.stats().count(LIST, "Success"), 5);
    // Within the accepted age the next walk is answered from the shared lookups.
    let again = client
        .resolve_renewals(
            &creds,
            "aaaa0001",
            jiff::Timestamp::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(again, resolution);
    assert_eq!(sim.stats().action_total(LIST), 5);
    // The detail walk (for credentials without ssl:DescribeCertificates) agrees, one call per link.
    let by_detail = client
        .resolve_renewals_by_detail(&creds, "aaaa0001", jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(by_detail, resolution);
    assert_eq!(sim.stats().count(DETAIL, "Success"), 5);
}

#[tokio::test]
async fn a_renewal_made_while_running_is_followed_and_selected() {
    let sim = start(
        specs(&["shop0001:domain=shop.example.com,san=www.shop.example.com"]),
        |_| {},
    )
    .await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let before = client
        .resolve_renewals(
            &creds,
            "shop0001",
            jiff::Timestamp::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(before.resolved.as_deref(), Some("shop0001"));
    assert!(!before.moved());
    let filter = CertificateFilter::issued_server_certificates();
    let list = client.describe_certificates(&creds, &filter).await.unwrap();
    assert_eq!(
        renewal::select_by_domain("www.shop.example.com", &list, jiff::Timestamp::now())
            .map(|c| c.certificate_id.as_str()),
        Some("shop0001")
    );

    let (status, renewed) = control(&sim, "/_sim/certificates/shop0001/renew", None).await;
    assert_eq!(status, 200, "{renewed}");
    let new_id = renewed["CertificateId"].as_str().unwrap().to_string();
    assert_eq!(renewed["Domain"], "shop.example.com");
    assert_eq!(
        renewed["CertificateExtra"]["OriginCertificateId"],
        "shop0001"
    );

    // A lookup answer younger than the accepted age still shows no renewal; a fresh one does.
    let cached = client
        .resolve_renewals(
            &creds,
            "shop0001",
            jiff::Timestamp::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(cached, before);
    let after = client
        .resolve_renewals(&creds, "shop0001", jiff::Timestamp::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(after.resolved.as_deref(), Some(new_id.as_str()));
    assert_eq!(after.chain, ["shop0001", new_id.as_str()]);
    assert!(after.moved());
    let download = client
        .download_certificate(&creds, after.certificate_id())
        .await
        .unwrap();
    assert_eq!(download.zip, sim.state().certificate(&new_id).unwrap().zip);

    // The cached scan does not know the renewal yet; a fresh one does, and selects it.
    let cached = client.describe_certificates(&creds, &filter).await.unwrap();
    assert_eq!(cached.len(), 1);
    let fresh = client
        .describe_certificates_within(&creds, &filter, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 2);
    let chosen =
        renewal::select_by_domain("www.shop.example.com", &fresh, jiff::Timestamp::now()).unwrap();
    assert_eq!(chosen.certificate_id, new_id);
    // Following through the list items alone gives the same answer (no detail calls).
    let from_list = renewal::follow_renewals(
        "shop0001",
        |id| {
            fresh
                .iter()
                .find(|c| c.certificate_id == id)
                .map(renewal::LinkInfo::from)
        },
        renewal::MAX_DEPTH,
        jiff::Timestamp::now(),
    );
    assert_eq!(from_list.resolved.as_deref(), Some(new_id.as_str()));
}

#[tokio::test]
async fn a_renewal_under_review_keeps_the_old_certificate_until_issued() {
    let sim = start(specs(&["shop0001:domain=shop.example.com"]), |_| {}).await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let (status, pending) = control(
        &sim,
        "/_sim/certificates/shop0001/renew",
        Some(json!({"new_id": "shop0002", "status": 0})),
    )
    .await;
    assert_eq!(status, 200, "{pending}");
    let waiting = client
        .resolve_renewals(&creds, "shop0001", jiff::Timestamp::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(waiting.resolved.as_deref(), Some("shop0001"));
    assert_eq!(
        waiting.stop,
        Stop::NotIssued {
            id: "shop0002".into(),
            status: Some(0)
        }
    );
    assert!(renewal::status_in_progress(0));

    let (status, issued) = control(
        &sim,
        "/_sim/certificates/shop0002/status",
        Some(json!({"status": 1})),
    )
    .await;
    assert_eq!((status, &issued["Status"]), (200, &json!(1)));
    let done = client
        .resolve_renewals(&creds, "shop0001", jiff::Timestamp::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(done.resolved.as_deref(), Some("shop0002"));
    assert_eq!(done.stop, Stop::End);
}

#[tokio::test]
async fn following_reports_dangling_links_and_fails_on_a_missing_start() {
    let sim = start(specs(&["shop0001:renewed-by=gone0001"]), |_| {}).await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let dangling = client
        .resolve_renewals(&creds, "shop0001", jiff::Timestamp::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dangling.resolved.as_deref(), Some("shop0001"));
    assert_eq!(
        dangling.stop,
        Stop::NotFound {
            id: "gone0001".into()
        }
    );
    // An unlisted start ends the walk at once; the download then says what Tencent thinks of it.
    let unlisted = client
        .resolve_renewals(&creds, "nosuch01", jiff::Timestamp::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(unlisted.certificate_id(), "nosuch01");
    assert_eq!(
        unlisted.stop,
        Stop::NotFound {
            id: "nosuch01".into()
        }
    );
    let download = client
        .download_certificate(&creds, "nosuch01")
        .await
        .unwrap_err();
    assert_eq!(download.reason(), "CertificateNotFound");
    // The detail walk fails on a missing start itself.
    let missing = client
        .resolve_renewals_by_detail(&creds, "nosuch01", jiff::Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "CertificateNotFound");
}

#[tokio::test]
async fn lookups_of_many_resources_share_one_batched_listing_per_fifty_ids() {
    // 120 certificates, named by 1,000 concurrent resources (round robin): ⌈120/50⌉ = 3 list requests.
    let sim = start_with_slow_lists(120, "bulk", 50).await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let ids: Vec<String> = sim.state().certificate_ids();
    assert_eq!(ids.len(), 120);
    let answers = futures::future::join_all((0..1000).map(|i| {
        let id = ids[i % ids.len()].clone();
        let client = client.clone();
        let creds = creds.clone();
        async move {
            let info = client
                .lookup_certificate(&creds, &id, Duration::from_secs(60))
                .await;
            (id, info)
        }
    }))
    .await;
    for (id, info) in &answers {
        let info = info.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(&info.id, id);
        assert_eq!(info.status, Some(1));
        assert!(info.not_before.is_some() && info.not_after.is_some());
    }
    assert_eq!(sim.stats().action_total(LIST), 3);
    assert_eq!(sim.stats().action_total(DETAIL), 0);
    // An id Tencent does not list is "not found", answered in one request.
    let unknown = client
        .lookup_certificate(&creds, "nosuch01", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(unknown, None);
    assert_eq!(sim.stats().action_total(LIST), 4);
    // A second wave within the accepted age costs nothing.
    let again = client
        .lookup_certificate(&creds, &ids[7], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.unwrap().id, ids[7]);
    assert_eq!(sim.stats().action_total(LIST), 4);
    // An explicit refresh (no cached answer accepted) asks about its own id only: one request.
    let fresh = client
        .lookup_certificate(&creds, &ids[0], Duration::ZERO)
        .await
        .unwrap();
    assert!(fresh.is_some());
    assert_eq!(sim.stats().action_total(LIST), 5);
    // A routine caller whose answer aged out starts a round of the credentials' lookup clock: every
    // remembered id at once, ⌈121/50⌉ = 3 requests, and the rest of the wave is served from it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let routine = client
        .lookup_certificate(&creds, &ids[1], Duration::from_millis(200))
        .await
        .unwrap();
    assert!(routine.is_some());
    // The round's other batches follow the one that answered this caller.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.stats().action_total(LIST) < 5 + 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.stats().action_total(LIST), 5 + 3);
    for id in &ids {
        client
            .lookup_certificate(&creds, id, Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(sim.stats().action_total(LIST), 8);
}

#[tokio::test]
async fn lookups_never_cross_credentials() {
    let sim = start(numbered(3, "tenant"), |_| {}).await;
    let client = client_with(&sim, |_| {});
    let good = credentials();
    let ids = sim.state().certificate_ids();
    assert!(
        client
            .lookup_certificate(&good, &ids[0], Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
    // The same SecretId with a wrong key is refused, not served from the other tenant's answer.
    let wrong = Credentials::new(good.secret_id(), "wrong-key", None).unwrap();
    let refused = client
        .lookup_certificate(&wrong, &ids[0], Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "AuthFailed");
}

#[tokio::test]
async fn two_hundred_concurrent_callers_share_one_paginated_scan() {
    // Each page takes a while, so all callers arrive while the scan runs.
    let sim = start_with_slow_lists(250, "conc", 150).await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let filter = CertificateFilter::issued_server_certificates();
    let results =
        futures::future::join_all((0..200).map(|_| client.describe_certificates(&creds, &filter)))
            .await;
    let first = results[0].as_ref().unwrap().clone();
    assert_eq!(first.len(), 250);
    for result in &results {
        assert!(Arc::ptr_eq(result.as_ref().unwrap(), &first));
    }
    let one_scan = sim.stats().action_total(LIST);
    // 250 certificates at 100 per page: one scan is three requests.
    assert_eq!(one_scan, 3);

    // Later callers within the TTL get the same list without a request.
    let later = client.describe_certificates(&creds, &filter).await.unwrap();
    assert!(Arc::ptr_eq(&later, &first));
    assert_eq!(sim.stats().action_total(LIST), one_scan);

    // Another tenant, and someone with the first tenant's SecretId but another key, get scans of their
    // own, concurrently: never the first tenant's cached list.
    let other = Credentials::new(OTHER_ID, OTHER_KEY, None).unwrap();
    let impostor = Credentials::new(SECRET_ID, "guessed-key", None).unwrap();
    let (others, impostors) = tokio::join!(
        futures::future::join_all((0..100).map(|_| client.describe_certificates(&other, &filter))),
        futures::future::join_all(
            (0..100).map(|_| client.describe_certificates(&impostor, &filter))
        ),
    );
    assert!(
        others
            .iter()
            .all(|r| r.as_ref().is_ok_and(|l| l.len() == 250))
    );
    for result in &impostors {
        let err = result.as_ref().unwrap_err();
        assert_eq!(err.code(), Some("AuthFailure.SignatureFailure"));
    }
    let stats = sim.stats();
    // One more three-page scan for the other tenant; the impostors' shared scan fails on its first page.
    assert_eq!(stats.count(LIST, "Success"), 6);
    assert_eq!(stats.count(LIST, "AuthFailure.SignatureFailure"), 1);
    // A different filter is a different scan.
    client
        .describe_certificates(&creds, &CertificateFilter::default())
        .await
        .unwrap();
    assert_eq!(sim.stats().count(LIST, "Success"), 9);
    eprintln!(
        "200 concurrent describe_certificates callers: {one_scan} DescribeCertificates requests; \
         then 100 + 100 callers with two other credential sets: {} more",
        stats.action_total(LIST) - one_scan
    );
}

#[tokio::test]
async fn failed_scans_are_shared_but_not_cached() {
    let sim = start(numbered(5, "flak"), |config| {
        config.faults = vec![format!("{LIST}=InternalError:1").parse().unwrap()];
        config.latencies = vec![Latency {
            certificate_id: LIST.into(),
            millis: 100,
        }];
    })
    .await;
    let client = client_with(&sim, |_| {});
    let creds = credentials();
    let filter = CertificateFilter::default();
    let results =
        futures::future::join_all((0..20).map(|_| client.describe_certificates(&creds, &filter)))
            .await;
    for result in &results {
        let err: &TencentError = result.as_ref().unwrap_err();
        assert_eq!(err.reason(), "TencentInternalError");
    }
    assert_eq!(sim.stats().action_total(LIST), 1);
    let retried = client.describe_certificates(&creds, &filter).await.unwrap();
    assert_eq!(retried.len(), 5);
    assert_eq!(sim.stats().count(LIST, "Success"), 1);
}

#[tokio::test]
async fn list_pages_go_through_the_rate_limiter() {
    let sim = start(numbered(45, "rate"), |config| config.rate_limit = Some(2.0)).await;
    let client = client_with(&sim, |c| {
        c.list_page_size = 10;
        c.limiter = LimiterConfig::per_second(2.0);
    });
    let started = std::time::Instant::now();
    let list = client
        .describe_certificates(&credentials(), &CertificateFilter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 45);
    let stats = sim.stats();
    assert_eq!(stats.count(LIST, "Success"), 5);
    assert_eq!(stats.rate_limited(), 0, "{stats:?}");
    // Five pages at 2/s: four gaps of 500 ms.
    assert!(started.elapsed() >= Duration::from_millis(1_900));
}

#[tokio::test]
async fn control_endpoints_add_and_expire_certificates_and_refuse_bad_requests() {
    let sim = start(specs(&["base0001"]), |_| {}).await;
    let client = client_with(&sim, |c| c.list_cache_ttl = Duration::ZERO);
    let creds = credentials();

    let (status, added) = control(
        &sim,
        "/_sim/certificates",
        Some(json!({"id": "wild0001", "domain": "*.example.com", "san": ["example.com"], "tag": {"env": "prod"}})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        added["SubjectAltName"],
        json!(["*.example.com", "example.com"])
    );
    let (status, from_text) =
        control(&sim, "/_sim/certificates", Some(json!("text0001:status=0"))).await;
    assert_eq!((status, &from_text["Status"]), (200, &json!(0)));

    let list = client
        .describe_certificates(&creds, &CertificateFilter::issued_server_certificates())
        .await
        .unwrap();
    assert_eq!(ids(&list), ["base0001", "wild0001"]);
    assert_eq!(
        renewal::select_by_domain("api.example.com", &list, jiff::Timestamp::now())
            .map(|c| c.certificate_id.as_str()),
        Some("wild0001")
    );
    let wild = list
        .iter()
        .find(|c| c.certificate_id == "wild0001")
        .unwrap();
    assert_eq!(wild.tags, [Tag::new("env", "prod")]);

    let (status, expired) = control(&sim, "/_sim/certificates/wild0001/expire", None).await;
    assert_eq!((status, &expired["Status"]), (200, &json!(3)));
    let list = client
        .describe_certificates(&creds, &CertificateFilter::issued_server_certificates())
        .await
        .unwrap();
    assert_eq!(ids(&list), ["base0001"]);
    let detail = client
        .describe_certificate_detail(&creds, "wild0001")
        .await
        .unwrap();
    assert!(detail.not_after.unwrap() < jiff::Timestamp::now());

    for (path, body, expected) in [
        ("/_sim/certificates", Some(json!("base0001")), 409),
        (
            "/_sim/certificates",
            Some(json!({"id": "x1", "frob": 1})),
            400,
        ),
        ("/_sim/certificates", None, 400),
        ("/_sim/certificates/nosuch01/renew", None, 404),
        ("/_sim/certificates/nosuch01/expire", None, 404),
        (
            "/_sim/certificates/base0001/renew",
            Some(json!({"link": "sideways"})),
            400,
        ),
        (
            "/_sim/certificates/base0001/renew",
            Some(json!({"new_id": "wild0001"})),
            409,
        ),
        ("/_sim/certificates/base0001/status", Some(json!({})), 400),
    ] {
        let (status, answer) = control(&sim, path, body.clone()).await;
        assert_eq!(status, expected, "{path} {body:?}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}
