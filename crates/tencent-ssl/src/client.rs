//! The Tencent Cloud SSL API client: one per operator, shared by all reconciles.
//!
//! Each attempt is signed afresh, right before sending. Calls pass through the per-action rate limiter,
//! in the turn of their credentials (see `limiter`: the budget is shared fairly between credential sets);
//! concurrent downloads of one certificate with one credential set share a single HTTP request, and so do
//! concurrent scans of the certificate list with one credential set and filter; a short-lived cache serves
//! bursts (see `coalesce`). Shared results are keyed by a digest of the *whole* credential set, so a
//! caller holding someone else's SecretId with the wrong key never receives their certificate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::coalesce::Coalescer;
use super::credentials::Credentials;
use super::error::{TencentError, reason};
use super::limiter::{LimiterConfig, RateLimiter};
use super::list::{
    self, ACTION_DESCRIBE_CERTIFICATES, CertificateFilter, CertificateSummary, PageStep, Pager,
};
use super::lookup::{self, Book, Want};
use super::observer::{NoObserver, Observer};
use super::priority;
use super::sign::{self, RequestToSign};
use crate::renewal::{self, LinkInfo, Resolution};

pub const DEFAULT_ENDPOINT: &str = "https://ssl.tencentcloudapi.com";
pub const API_VERSION: &str = "2019-12-05";
/// The service name in the credential scope: `ssl` for both the China and the international host.
pub const SERVICE: &str = "ssl";
/// The exact Content-Type sent and signed (Tencent's Python SDK sends this value, without a charset).
pub const CONTENT_TYPE: &str = "application/json";
pub const ACTION_DOWNLOAD: &str = "DownloadCertificate";
pub const ACTION_DESCRIBE_DETAIL: &str = "DescribeCertificateDetail";
/// Tencent Cloud STS (temporary credentials for roles): service, version and default endpoint.
pub const STS_SERVICE: &str = "sts";
pub const STS_API_VERSION: &str = "2018-08-13";
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.tencentcloudapi.com";
/// The region STS calls name when the caller has none (the Python SDK's `STSAssumeRoleCredential` default).
pub const DEFAULT_STS_REGION: &str = "ap-guangzhou";

/// Responses larger than this are refused (a certificate ZIP is a few KiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Extra attempts after a rate-limit answer (the limiter has slowed down by then), like the SDK's retryer.
const RATE_LIMIT_RETRIES: u32 = 2;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://ssl.tencentcloudapi.com`, `https://ssl.intl.tencentcloudapi.com`, or a simulator URL.
    pub endpoint: String,
    /// The STS endpoint for roles. `None`: derived from `endpoint` — `ssl.` becomes `sts.` on Tencent's
    /// hosts, and any other URL (a simulator, which serves both APIs) is used as it is.
    pub sts_endpoint: Option<String>,
    pub timeout: Duration,
    pub limiter: LimiterConfig,
    /// How long a successful download serves later callers (≤ 60 s by design; the operator keeps the
    /// extracted bundles of a wave itself, see `controller::bundles`).
    pub download_cache_ttl: Duration,
    /// The cached downloads' total size bound; the oldest go first.
    pub download_cache_bytes: usize,
    /// The oldest lookup answer (status, validity, renewal links) ever used, whatever a caller accepts.
    pub lookup_cache_ttl: Duration,
    /// `X-TC-Language`: the language of Tencent's error messages.
    pub language: String,
    /// How long a certificate list scan serves later callers with the same credentials and filter.
    pub list_cache_ttl: Duration,
    /// Certificates per `DescribeCertificates` page (1..=1000).
    pub list_page_size: u32,
    /// Accept `http://` endpoints (a local simulator). Off by default: the answer of
    /// `DownloadCertificate` carries the private key, and every request the signature and token.
    pub allow_insecure_endpoint: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            sts_endpoint: None,
            timeout: Duration::from_secs(10),
            limiter: LimiterConfig::default(),
            download_cache_ttl: Duration::from_secs(10),
            download_cache_bytes: 8 * 1024 * 1024,
            lookup_cache_ttl: Duration::from_secs(15 * 60),
            language: "en-US".to_string(),
            list_cache_ttl: Duration::from_secs(60),
            list_page_size: list::DEFAULT_PAGE_SIZE,
            allow_insecure_endpoint: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("invalid Tencent endpoint {endpoint:?}: {why}")]
    InvalidEndpoint { endpoint: String, why: String },
    #[error(
        "refusing the plain-http Tencent endpoint {endpoint:?}: its answers carry private keys and its \
         requests signatures and tokens; use https, or --allow-insecure-endpoint \
         (TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT=true) for a local simulator"
    )]
    InsecureEndpoint { endpoint: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// A downloaded certificate archive: the decoded ZIP bytes. `Debug` shows only the size.
#[derive(Clone, PartialEq, Eq)]
pub struct Download {
    pub zip: Vec<u8>,
    pub request_id: String,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("zip", &format_args!("<{} bytes>", self.zip.len()))
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Renewal and reissue links of a certificate (`CertificateExtra`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CertificateExtra {
    pub renew_order: Option<String>,
    pub origin_certificate_id: Option<String>,
    pub replaced_by: Option<String>,
    pub replaced_for: Option<String>,
    /// The next certificate of a subscription service (`ServiceRenewCertificateId`).
    pub service_renew_certificate_id: Option<String>,
    pub service_origin_certificate_id: Option<String>,
    #[serde(rename = "SMCert")]
    pub sm_cert: Option<i64>,
}

/// Status code 1: issued, the only state whose certificate is usable.
pub const STATUS_ISSUED: i64 = 1;

/// What `DescribeCertificateDetail` says about a certificate. The private key the API may also return
/// is deliberately not deserialised, so it never lives in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateDetail {
    pub certificate_id: String,
    pub status: Option<i64>,
    pub status_name: Option<String>,
    /// The main domain (certificate CN).
    pub domain: Option<String>,
    /// The other names, excluding `domain` (in the detail response, unlike the list response).
    pub subject_alt_names: Vec<String>,
    /// `SVR` (server) or `CA` (client).
    pub certificate_type: Option<String>,
    /// Brand or origin: `trustasia`, `upload`, …
    pub from: Option<String>,
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
    pub inserted_at: Option<jiff::Timestamp>,
    /// SHA-1 fingerprint as Tencent reports it.
    pub fingerprint_sha1: Option<String>,
    pub renewable: Option<bool>,
    pub deployable: Option<bool>,
    pub encrypt_algorithm: Option<String>,
    /// The certificate that hosting swapped in for this one, when Tencent reports it.
    pub hosting_renew_cert_id: Option<String>,
    /// -1 not hosted, 0 hosting, 5 replacing resources, 10 done.
    pub hosting_status: Option<i64>,
    pub extra: CertificateExtra,
    pub request_id: String,
}

impl CertificateDetail {
    pub fn is_issued(&self) -> bool {
        self.status == Some(STATUS_ISSUED)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawDetail {
    certificate_id: Option<String>,
    status: Option<i64>,
    status_name: Option<String>,
    domain: Option<String>,
    subject_alt_name: Option<Vec<String>>,
    certificate_type: Option<String>,
    from: Option<String>,
    cert_begin_time: Option<String>,
    cert_end_time: Option<String>,
    insert_time: Option<String>,
    cert_fingerprint: Option<String>,
    renew_able: Option<bool>,
    deployable: Option<bool>,
    encrypt_algorithm: Option<String>,
    // Read leniently: added to the API later, their types vary between answers.
    hosting_renew_cert_id: Option<Value>,
    hosting_status: Option<Value>,
    certificate_extra: Option<CertificateExtra>,
}

/// Parses Tencent's `YYYY-MM-DD HH:MM:SS` times, which are in UTC+8 (Beijing time).
pub fn parse_tencent_time(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text).ok()?;
    let beijing = jiff::tz::Offset::constant(8).to_time_zone();
    civil.to_zoned(beijing).ok().map(|zoned| zoned.timestamp())
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct DownloadKey {
    credentials: [u8; 32],
    certificate_id: String,
}

/// One list scan is shared by callers with the same credentials and (normalized) filter.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ListKey {
    credentials: [u8; 32],
    filter: CertificateFilter,
}

/// A finished list scan, shared by all its callers.
pub type CertificateList = Arc<[CertificateSummary]>;

/// Where one Tencent API lives and how its requests are scoped.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    endpoint: reqwest::Url,
    /// The Host header sent and signed.
    host: String,
    service: &'static str,
    version: &'static str,
}

impl Api {
    fn parse(
        endpoint: &str,
        service: &'static str,
        version: &'static str,
        allow_insecure: bool,
    ) -> Result<Self, ClientBuildError> {
        let invalid = |why: &str| ClientBuildError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            why: why.to_string(),
        };
        let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure => {}
            "http" => {
                return Err(ClientBuildError::InsecureEndpoint {
                    endpoint: endpoint.to_string(),
                });
            }
            _ => {
                return Err(invalid(
                    "the scheme must be https (or http for a local simulator)",
                ));
            }
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(invalid("API 3.0 endpoints take no path or query"));
        }
        let host_name = url.host_str().ok_or_else(|| invalid("no host"))?;
        // The Host header reqwest sends: the port appears only when it is not the scheme's default.
        let host = match url.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_string(),
        };
        Ok(Self {
            endpoint: url,
            host,
            service,
            version,
        })
    }
}

/// The STS endpoint that goes with an SSL endpoint (see [`ClientConfig::sts_endpoint`]).
pub fn sts_endpoint_for(ssl_endpoint: &str) -> String {
    match reqwest::Url::parse(ssl_endpoint) {
        Ok(url)
            if url
                .host_str()
                .is_some_and(|h| h.starts_with("ssl.") && h.ends_with(".tencentcloudapi.com")) =>
        {
            let host = url.host_str().unwrap_or_default();
            format!("{}://sts.{}", url.scheme(), &host["ssl.".len()..])
        }
        _ => ssl_endpoint.to_string(),
    }
}

/// How a request proves who sends it.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// TC3-HMAC-SHA256 with these credentials (and `X-TC-Token` for temporary ones).
    Signed(&'a Credentials),
    /// `Authorization: SKIP`, as the SDK sends `AssumeRoleWithWebIdentity`: the web identity token in the
    /// body is the proof.
    Unsigned,
}

struct Inner {
    http: reqwest::Client,
    ssl: Api,
    sts: Api,
    /// Temporary credentials per role source (see `sts`).
    sts_cache: super::sts::Cache,
    config: ClientConfig,
    limiter: RateLimiter,
    observer: Arc<dyn Observer>,
    downloads: Coalescer<DownloadKey, Arc<Download>>,
    lists: Coalescer<ListKey, CertificateList>,
    /// `DescribeCertificateDetail` read for renewal decisions, per (credentials fingerprint, id).
    orders: Coalescer<([u8; 32], String), Arc<crate::apply::OrderDetail>>,
    /// Batched id lookups, one book per credential set (keyed by its fingerprint).
    lookups: std::sync::Mutex<std::collections::HashMap<[u8; 32], Book>>,
    /// Lookup requests in flight at once, all credentials together: while they are taken, ids gather
    /// into fuller batches.
    lookup_slots: Arc<tokio::sync::Semaphore>,
}

/// Lookup requests in flight at once.
const LOOKUP_REQUESTS_IN_FLIGHT: usize = 4;

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; the books stay usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cheap to clone; clones share the connection pool, limiter, and the coalescing maps and caches.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.ssl.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientBuildError> {
        Self::with_observer(config, Arc::new(NoObserver))
    }

    /// A client that reports requests, limiter waits and coalesced downloads to `observer`.
    pub fn with_observer(
        config: ClientConfig,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, ClientBuildError> {
        let insecure = config.allow_insecure_endpoint;
        let ssl = Api::parse(&config.endpoint, SERVICE, API_VERSION, insecure)?;
        let sts_endpoint = config
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| sts_endpoint_for(&config.endpoint));
        let sts = Api::parse(&sts_endpoint, STS_SERVICE, STS_API_VERSION, insecure)?;
        let http = reqwest::Client::builder()
            // Every request carries a signature (and maybe X-TC-Token) made for this host; a redirect
            // would hand them to another. A 3xx answer becomes `TencentError::Redirected`.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("tencent-cert-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError::Http(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                ssl,
                sts,
                sts_cache: super::sts::Cache::default(),
                limiter: RateLimiter::new(config.limiter),
                observer,
                downloads: Coalescer::with_budget(
                    config.download_cache_ttl,
                    |download: &Arc<Download>| download.zip.len(),
                    config.download_cache_bytes,
                ),
                lists: Coalescer::new(config.list_cache_ttl),
                orders: Coalescer::new(config.lookup_cache_ttl),
                lookups: std::sync::Mutex::new(std::collections::HashMap::new()),
                lookup_slots: Arc::new(tokio::sync::Semaphore::new(LOOKUP_REQUESTS_IN_FLIGHT)),
                config,
            }),
        })
    }

    pub fn endpoint(&self) -> &str {
        self.inner.ssl.endpoint.as_str()
    }

    pub(crate) fn inner_orders(
        &self,
    ) -> &Coalescer<([u8; 32], String), Arc<crate::apply::OrderDetail>> {
        &self.inner.orders
    }

    pub(crate) fn sts_cache(&self) -> &super::sts::Cache {
        &self.inner.sts_cache
    }

    /// The STS endpoint used for roles.
    pub fn sts_endpoint(&self) -> &str {
        self.inner.sts.endpoint.as_str()
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// Downloads a certificate's ZIP, sharing in-flight requests and recent results (see the module docs).
    pub async fn download_certificate(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<Arc<Download>, TencentError> {
        self.download_certificate_within(
            credentials,
            certificate_id,
            self.inner.config.download_cache_ttl,
        )
        .await
    }

    /// Like [`Client::download_certificate`], accepting a cached result only if younger than `max_age`
    /// (`Duration::ZERO` forces a new request, still shared with one already in flight).
    pub async fn download_certificate_within(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
        max_age: Duration,
    ) -> Result<Arc<Download>, TencentError> {
        let key = DownloadKey {
            credentials: credentials.fingerprint(),
            certificate_id: certificate_id.to_string(),
        };
        let client = self.clone();
        let credentials = credentials.clone();
        let certificate_id = certificate_id.to_string();
        // The shared fetch keeps the priority of the caller that started it.
        let priority = priority::current();
        self.inner
            .downloads
            .get(
                key,
                max_age,
                move || {
                    priority::scope(priority, async move {
                        client
                            .fetch_download(&credentials, &certificate_id)
                            .await
                            .map(Arc::new)
                    })
                    .boxed()
                },
                |source| self.inner.observer.coalesced(source),
            )
            .await
    }

    async fn fetch_download(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<Download, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_DOWNLOAD,
                &json!({ "CertificateId": certificate_id }),
            )
            .await?;
        decode_download(certificate_id, &response)
    }

    /// Status, validity, domains and renewal links of a certificate.
    pub async fn describe_certificate_detail(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<CertificateDetail, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_DESCRIBE_DETAIL,
                &json!({ "CertificateId": certificate_id }),
            )
            .await?;
        decode_detail(certificate_id, response)
    }

    /// Every certificate matching `filter`, read page by page (`DescribeCertificates`). Callers with the
    /// same credentials and filter share one scan while it runs and its result for `list_cache_ttl`.
    pub async fn describe_certificates(
        &self,
        credentials: &Credentials,
        filter: &CertificateFilter,
    ) -> Result<CertificateList, TencentError> {
        self.describe_certificates_within(credentials, filter, self.inner.config.list_cache_ttl)
            .await
    }

    /// Like [`Client::describe_certificates`], accepting a cached scan only if younger than `max_age`
    /// (`Duration::ZERO` forces a new scan, still shared with one already running).
    pub async fn describe_certificates_within(
        &self,
        credentials: &Credentials,
        filter: &CertificateFilter,
        max_age: Duration,
    ) -> Result<CertificateList, TencentError> {
        let key = ListKey {
            credentials: credentials.fingerprint(),
            filter: filter.normalized(),
        };
        let client = self.clone();
        let credentials = credentials.clone();
        let filter = key.filter.clone();
        let priority = priority::current();
        self.inner
            .lists
            .get(
                key,
                max_age,
                move || {
                    priority::scope(priority, async move {
                        client.scan_certificates(&credentials, &filter).await
                    })
                    .boxed()
                },
                |_| {},
            )
            .await
    }

    /// One paginated scan; each page goes through the limiter and `call` like any other request.
    async fn scan_certificates(
        &self,
        credentials: &Credentials,
        filter: &CertificateFilter,
    ) -> Result<CertificateList, TencentError> {
        let mut pager = Pager::new(self.inner.config.list_page_size, list::MAX_PAGES);
        let mut step = pager.first();
        while let PageStep::Next { offset } = step {
            let params = filter.page_params(offset, pager.page_size())?;
            let response = self
                .call(credentials, ACTION_DESCRIBE_CERTIFICATES, &params)
                .await?;
            let page = list::decode_page(&response)?;
            if page.skipped > 0 {
                tracing::warn!(
                    skipped = page.skipped,
                    request_id = %page.request_id,
                    "DescribeCertificates returned items without a CertificateId; they are ignored"
                );
            }
            step = pager.record(page)?;
        }
        Ok(pager.into_certificates().into())
    }

    /// What `certificate_id` currently is (status, validity, renewal links) for these credentials, or
    /// `None` when Tencent does not list it. Lookups of all callers are batched into `DescribeCertificates`
    /// requests with `CertIds` (see [`super::lookup`]); an answer younger than `max_age` is reused.
    pub async fn lookup_certificate(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
        max_age: Duration,
    ) -> Result<Option<LinkInfo>, TencentError> {
        let key = credentials.fingerprint();
        let max_age = max_age.min(self.inner.config.lookup_cache_ttl);
        let want = {
            let mut books = lock(&self.inner.lookups);
            let book = books.entry(key).or_default();
            let want = book.want(certificate_id, max_age, priority::current(), Instant::now());
            if matches!(want, Want::Queued(_)) && !book.flushing {
                book.flushing = true;
                tokio::spawn(self.clone().flush_lookups(key, credentials.clone()));
            }
            want
        };
        match want {
            Want::Answered(info) => Ok(info),
            Want::Queued(answer) => answer.await.unwrap_or_else(|_| {
                Err(TencentError::Malformed {
                    action: ACTION_DESCRIBE_CERTIFICATES.to_string(),
                    detail: "the lookup was abandoned".to_string(),
                })
            }),
        }
    }

    /// Unless a lookup of `id` is answered or on its way, also queues `more()`: the ids other resources
    /// with the same credentials name, so that a wave of first syncs asks about them in full batches
    /// instead of one request per reconcile as reconciles start.
    pub fn prefetch_lookups(
        &self,
        credentials: &Credentials,
        id: &str,
        max_age: Duration,
        more: impl FnOnce() -> Vec<String>,
    ) {
        let key = credentials.fingerprint();
        let max_age = max_age.min(self.inner.config.lookup_cache_ttl);
        let now = Instant::now();
        let mut books = lock(&self.inner.lookups);
        let book = books.entry(key).or_default();
        if book.is_covered(id, max_age, now) {
            return;
        }
        book.prefetch(more(), max_age, now);
        // The caller's own lookup follows at once and starts the flush if nothing else has.
    }

    /// Sends the queued lookups of one credential set, [`lookup::MAX_IDS_PER_REQUEST`] ids per request,
    /// until none is left. A batch is taken only once a request slot is free, so ids queued meanwhile
    /// join it.
    async fn flush_lookups(self, key: [u8; 32], credentials: Credentials) {
        loop {
            tokio::time::sleep(lookup::GATHER_WINDOW).await;
            let Ok(slot) = self.inner.lookup_slots.clone().acquire_owned().await else {
                return;
            };
            let (batch, batch_priority) = {
                let mut books = lock(&self.inner.lookups);
                let Some(book) = books.get_mut(&key) else {
                    return;
                };
                let (batch, batch_priority) = book.take_batch();
                if batch.is_empty() {
                    book.flushing = false;
                    if book.is_idle() {
                        books.remove(&key);
                    }
                    return;
                }
                tracing::debug!(
                    ids = batch.len(),
                    still_queued = book.queued_len(),
                    "DescribeCertificates lookup batch"
                );
                (batch, batch_priority)
            };
            let client = self.clone();
            let credentials = credentials.clone();
            tokio::spawn(async move {
                let found =
                    priority::scope(batch_priority, client.list_by_ids(&credentials, &batch)).await;
                drop(slot);
                if let Some(book) = lock(&client.inner.lookups).get_mut(&key) {
                    book.record(&batch, found, Instant::now());
                }
            });
        }
    }

    /// One `DescribeCertificates` request for exactly these ids.
    async fn list_by_ids(
        &self,
        credentials: &Credentials,
        ids: &[String],
    ) -> Result<Vec<LinkInfo>, TencentError> {
        let filter = CertificateFilter {
            cert_ids: ids.to_vec(),
            ..CertificateFilter::default()
        };
        let limit = u32::try_from(ids.len()).unwrap_or(list::MAX_PAGE_SIZE);
        let params = filter.page_params(0, limit)?;
        let response = self
            .call(credentials, ACTION_DESCRIBE_CERTIFICATES, &params)
            .await?;
        let page = list::decode_page(&response)?;
        Ok(page.certificates.iter().map(LinkInfo::from).collect())
    }

    /// Follows renewal links from `start` (see [`crate::renewal::follow`] for the rules), looking each
    /// certificate up through the shared, batched [`Client::lookup_certificate`]. A `start` that is not
    /// listed ends the walk at once (`Stop::NotFound`; the download then says what Tencent thinks of it).
    /// Without `ssl:DescribeCertificates` the walk falls back to one `DescribeCertificateDetail` per link.
    pub async fn resolve_renewals(
        &self,
        credentials: &Credentials,
        start: &str,
        now: jiff::Timestamp,
        max_age: Duration,
    ) -> Result<Resolution, TencentError> {
        let listed =
            renewal::follow_renewals_with(start, renewal::MAX_DEPTH, now, |id| async move {
                self.lookup_certificate(credentials, &id, max_age).await
            })
            .await;
        match listed {
            Err(err) if err.class() == super::ErrorClass::Credentials => {
                tracing::debug!(
                    reason = err.reason(),
                    "DescribeCertificates refused; following renewals with DescribeCertificateDetail"
                );
                self.resolve_renewals_by_detail(credentials, start, now)
                    .await
            }
            other => other,
        }
    }

    /// Follows renewal links with one `DescribeCertificateDetail` per certificate. A linked certificate that
    /// does not exist ends the walk (`Stop::NotFound`); a missing `start` and every other error are errors.
    pub async fn resolve_renewals_by_detail(
        &self,
        credentials: &Credentials,
        start: &str,
        now: jiff::Timestamp,
    ) -> Result<Resolution, TencentError> {
        renewal::follow_renewals_with(start, renewal::MAX_DEPTH, now, |id| async move {
            match self.describe_certificate_detail(credentials, &id).await {
                Ok(detail) => Ok(Some(LinkInfo::from(&detail))),
                Err(err) if id != start && err.reason() == reason::CERTIFICATE_NOT_FOUND => {
                    Ok(None)
                }
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// One API call: rate limited, signed per attempt, retried only on throttling and (once) on an expired
    /// signature. Returns the `Response` object of a successful answer.
    pub(crate) async fn call(
        &self,
        credentials: &Credentials,
        action: &str,
        params: &Value,
    ) -> Result<Value, TencentError> {
        let api = &self.inner.ssl;
        self.call_api(api, Auth::Signed(credentials), None, action, params)
            .await
    }

    /// An STS call (see `tencent::sts`), through the same limiter and retries as the SSL API.
    pub(crate) async fn call_sts(
        &self,
        auth: Auth<'_>,
        region: &str,
        action: &str,
        params: &Value,
    ) -> Result<Value, TencentError> {
        let api = &self.inner.sts;
        self.call_api(api, auth, Some(region), action, params).await
    }

    async fn call_api(
        &self,
        api: &Api,
        auth: Auth<'_>,
        region: Option<&str>,
        action: &str,
        params: &Value,
    ) -> Result<Value, TencentError> {
        let body = serde_json::to_vec(params).map_err(|e| TencentError::Malformed {
            action: action.to_string(),
            detail: format!("cannot encode the request: {e}"),
        })?;
        let mut rate_limit_retries = 0;
        let mut resigned = false;
        let priority = priority::current();
        // Each set of credentials has its own share of the budget, and its own throttling.
        let share = match auth {
            Auth::Signed(credentials) => credentials.fingerprint(),
            Auth::Unsigned => super::limiter::UNSIGNED_SHARE,
        };
        loop {
            let limiter = &self.inner.limiter;
            self.inner.observer.queue_depth(
                action,
                priority.as_str(),
                limiter.waiting(action, priority) + 1,
            );
            let waited = limiter.acquire(action, share, priority).await;
            self.inner.observer.queue_depth(
                action,
                priority.as_str(),
                limiter.waiting(action, priority),
            );
            self.inner.observer.rate_limited_wait(
                action,
                waited,
                self.inner.limiter.current_rate(action),
            );
            let started = Instant::now();
            let result = self
                .send_once(api, auth, region, action, &body)
                .await
                .map_err(|err| redacted(auth, err));
            self.inner
                .observer
                .request(action, response_code(&result), started.elapsed());
            match result {
                Err(err) if err.is_rate_limited() => {
                    self.inner.limiter.on_rate_limited(action, share);
                    if rate_limit_retries >= RATE_LIMIT_RETRIES {
                        return Err(err);
                    }
                    rate_limit_retries += 1;
                }
                // A request can age past Tencent's 5-minute window while queued; re-sign once.
                Err(err) if err.code() == Some("AuthFailure.SignatureExpire") && !resigned => {
                    resigned = true;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        api: &Api,
        auth: Auth<'_>,
        region: Option<&str>,
        action: &str,
        body: &[u8],
    ) -> Result<Value, TencentError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut request = self
            .inner
            .http
            .post(api.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("X-TC-Action", action)
            .header("X-TC-Version", api.version)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Language", &self.inner.config.language)
            .body(body.to_vec());
        if let Some(region) = region {
            request = request.header("X-TC-Region", region);
        }
        match auth {
            Auth::Signed(credentials) => {
                let signed = sign::sign(
                    credentials.secret_key(),
                    api.service,
                    timestamp,
                    &RequestToSign {
                        method: "POST",
                        query: "",
                        headers: &[("content-type", CONTENT_TYPE), ("host", &api.host)],
                        payload: body,
                    },
                );
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    signed.authorization(credentials.secret_id()),
                );
                if let Some(token) = credentials.token() {
                    request = request.header("X-TC-Token", token);
                }
            }
            Auth::Unsigned => {
                request = request.header(reqwest::header::AUTHORIZATION, "SKIP");
            }
        }
        let transport = |err: reqwest::Error| {
            if err.is_timeout() {
                TencentError::Timeout {
                    action: action.to_string(),
                    after: self.inner.config.timeout,
                }
            } else {
                TencentError::Connect {
                    action: action.to_string(),
                    // Without the URL: the endpoint is known, and the error text stays short.
                    detail: error_chain(&err.without_url()),
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(TencentError::Redirected {
                action: action.to_string(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(TencentError::HttpStatus {
                action: action.to_string(),
                status: status.as_u16(),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TencentError::Malformed {
                    action: action.to_string(),
                    detail: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        parse_envelope(action, &bytes)
    }
}

/// Tencent's messages are free text and may quote what they were sent: no value of the credentials, and
/// nothing shaped like a SecretId, leaves in an error (and so in status, events or logs).
fn redacted(auth: Auth<'_>, err: TencentError) -> TencentError {
    match err {
        TencentError::Api {
            action,
            code,
            message,
            request_id,
        } => TencentError::Api {
            message: match auth {
                Auth::Signed(credentials) => credentials.redact(&message),
                Auth::Unsigned => super::credentials::redact_secret_ids(&message),
            },
            action,
            code,
            request_id,
        },
        other => other,
    }
}

/// The label a response gets in metrics: one of a fixed set (see [`super::error::metric_code`]), whatever
/// the endpoint answers.
fn response_code(result: &Result<Value, TencentError>) -> &'static str {
    match result {
        Ok(_) => "Success",
        Err(TencentError::Api { code, .. }) => super::error::metric_code(code),
        Err(TencentError::Timeout { .. }) => "Timeout",
        Err(TencentError::Connect { .. }) => "ConnectionError",
        Err(TencentError::HttpStatus { status, .. } | TencentError::Redirected { status, .. }) => {
            super::error::metric_http_status(*status)
        }
        Err(_) => "InvalidResponse",
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Splits a Tencent API 3.0 answer into the `Response` object or its `Error`.
fn parse_envelope(action: &str, bytes: &[u8]) -> Result<Value, TencentError> {
    let malformed = |detail: String| TencentError::Malformed {
        action: action.to_string(),
        detail,
    };
    let mut envelope: Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON ({e})")))?;
    let response = envelope
        .get_mut("Response")
        .map(Value::take)
        .filter(Value::is_object)
        .ok_or_else(|| malformed("no Response object".to_string()))?;
    let request_id = response
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    if let Some(error) = response.get("Error") {
        let code = error.get("Code").and_then(Value::as_str);
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            return Err(malformed(format!(
                "an Error without a Code (RequestId {request_id})"
            )));
        };
        return Err(TencentError::Api {
            action: action.to_string(),
            code: code.to_string(),
            message: error
                .get("Message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            request_id,
        });
    }
    if let Some(warning) = response.get("DeprecatedWarning").filter(|w| !w.is_null()) {
        tracing::warn!(action, %request_id, warning = %warning, "Tencent Cloud reports this API use as deprecated");
    }
    Ok(response)
}

fn decode_download(certificate_id: &str, response: &Value) -> Result<Download, TencentError> {
    let request_id = response
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let content = response
        .get("Content")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty());
    let Some(content) = content else {
        return Err(TencentError::EmptyContent {
            certificate_id: certificate_id.to_string(),
            request_id,
        });
    };
    if let Some(content_type) = response.get("ContentType").and_then(Value::as_str)
        && !content_type.is_empty()
        && !content_type.eq_ignore_ascii_case("application/zip")
    {
        return Err(TencentError::UnexpectedContentType {
            certificate_id: certificate_id.to_string(),
            content_type: content_type.to_string(),
            request_id,
        });
    }
    let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
    let zip = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| TencentError::InvalidBase64 {
            certificate_id: certificate_id.to_string(),
            request_id: request_id.clone(),
        })?;
    Ok(Download { zip, request_id })
}

fn decode_detail(certificate_id: &str, response: Value) -> Result<CertificateDetail, TencentError> {
    let request_id = response
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let raw: RawDetail = serde_json::from_value(response).map_err(|e| TencentError::Malformed {
        action: ACTION_DESCRIBE_DETAIL.to_string(),
        detail: format!("unexpected field types ({e}) (RequestId {request_id})"),
    })?;
    let time = |t: &Option<String>| t.as_deref().and_then(parse_tencent_time);
    Ok(CertificateDetail {
        certificate_id: raw
            .certificate_id
            .unwrap_or_else(|| certificate_id.to_string()),
        status: raw.status,
        status_name: raw.status_name,
        domain: raw.domain,
        subject_alt_names: raw.subject_alt_name.unwrap_or_default(),
        certificate_type: raw.certificate_type,
        from: raw.from,
        not_before: time(&raw.cert_begin_time),
        not_after: time(&raw.cert_end_time),
        inserted_at: time(&raw.insert_time),
        fingerprint_sha1: raw.cert_fingerprint,
        renewable: raw.renew_able,
        deployable: raw.deployable,
        encrypt_algorithm: raw.encrypt_algorithm,
        hosting_renew_cert_id: list::text(raw.hosting_renew_cert_id.as_ref()),
        hosting_status: list::text(raw.hosting_status.as_ref()).and_then(|s| s.parse().ok()),
        extra: raw.certificate_extra.unwrap_or_default(),
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tencent_times_are_beijing_time() {
        let ts = parse_tencent_time("2025-01-01 07:59:59").unwrap();
        assert_eq!(ts.to_string(), "2024-12-31T23:59:59Z");
        assert_eq!(parse_tencent_time(""), None);
        assert_eq!(parse_tencent_time("2025-13-01 00:00:00"), None);
        assert_eq!(parse_tencent_time("yesterday"), None);
    }

    #[test]
    fn envelope_errors_become_api_errors() {
        let body = br#"{"Response":{"Error":{"Code":"FailedOperation.NetworkError","Message":"CA busy"},"RequestId":"r-1"}}"#;
        let err = parse_envelope("DownloadCertificate", body).unwrap_err();
        assert_eq!(
            err,
            TencentError::Api {
                action: "DownloadCertificate".into(),
                code: "FailedOperation.NetworkError".into(),
                message: "CA busy".into(),
                request_id: "r-1".into(),
            }
        );
    }

    #[test]
    fn malformed_envelopes_are_reported() {
        for body in [
            &b"<html>bad gateway</html>"[..],
            br#"{"Foo":1}"#,
            br#"{"Response":"x"}"#,
            br#"{"Response":{"Error":{"Message":"no code"},"RequestId":"r"}}"#,
        ] {
            let err = parse_envelope("DownloadCertificate", body).unwrap_err();
            assert!(matches!(err, TencentError::Malformed { .. }), "{err:?}");
        }
    }

    #[test]
    fn download_decoding_checks_content_and_type() {
        let ok = json!({"Content": "UEsFBg==", "ContentType": "application/zip", "RequestId": "r"});
        assert_eq!(decode_download("a", &ok).unwrap().zip, b"PK\x05\x06");
        let null = json!({"Content": null, "ContentType": null, "RequestId": "r"});
        assert!(matches!(
            decode_download("a", &null),
            Err(TencentError::EmptyContent { .. })
        ));
        let html = json!({"Content": "UEsFBg==", "ContentType": "text/html", "RequestId": "r"});
        assert!(matches!(
            decode_download("a", &html),
            Err(TencentError::UnexpectedContentType { .. })
        ));
        let garbage = json!({"Content": "%%%not base64", "RequestId": "r"});
        assert!(matches!(
            decode_download("a", &garbage),
            Err(TencentError::InvalidBase64 { .. })
        ));
    }

    #[test]
    fn detail_decoding_reads_links_and_times() {
        let response = json!({
            "CertificateId": "aBcD1234",
            "Status": 1,
            "StatusName": "issued",
            "Domain": "shop.example.com",
            "SubjectAltName": ["www.shop.example.com"],
            "CertificateType": "SVR",
            "From": "trustasia",
            "CertBeginTime": "2025-01-01 08:00:00",
            "CertEndTime": "2025-04-01 07:59:59",
            "CertificatePrivateKey": "-----BEGIN PRIVATE KEY-----secret",
            "CertificateExtra": {"RenewOrder": "eFgH5678", "OriginCertificateId": null},
            "RequestId": "r-2"
        });
        let detail = decode_detail("aBcD1234", response).unwrap();
        assert!(detail.is_issued());
        assert_eq!(
            detail.not_before.unwrap().to_string(),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(detail.extra.renew_order.as_deref(), Some("eFgH5678"));
        assert_eq!(detail.subject_alt_names, vec!["www.shop.example.com"]);
        assert!(!format!("{detail:?}").contains("secret"));
    }

    #[test]
    fn detail_hosting_and_service_links_are_read_leniently() {
        let response = json!({
            "CertificateId": "aBcD1234",
            "Status": 1,
            "HostingRenewCertId": "hOst5678",
            "HostingStatus": "10",
            "CertificateExtra": {"ServiceRenewCertificateId": "sVc56789", "ReplacedBy": "rEis0001"},
            "RequestId": "r-3"
        });
        let detail = decode_detail("aBcD1234", response).unwrap();
        assert_eq!(detail.hosting_renew_cert_id.as_deref(), Some("hOst5678"));
        assert_eq!(detail.hosting_status, Some(10));
        assert_eq!(
            detail.extra.service_renew_certificate_id.as_deref(),
            Some("sVc56789")
        );
        let absent =
            json!({"Status": 1, "HostingRenewCertId": "", "HostingStatus": -1, "RequestId": "r"});
        let detail = decode_detail("aBcD1234", absent).unwrap();
        assert_eq!(detail.hosting_renew_cert_id, None);
        assert_eq!(detail.hosting_status, Some(-1));
    }

    #[test]
    fn endpoints_are_validated_and_host_includes_non_default_port() {
        let client = Client::new(ClientConfig {
            endpoint: "http://127.0.0.1:9000".into(),
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(client.inner.ssl.host, "127.0.0.1:9000");
        let intl = Client::new(ClientConfig {
            endpoint: "https://ssl.intl.tencentcloudapi.com".into(),
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(intl.inner.ssl.host, "ssl.intl.tencentcloudapi.com");
        // STS follows the SSL endpoint: Tencent's sts host of the same site, or the same simulator.
        assert_eq!(intl.inner.sts.host, "sts.intl.tencentcloudapi.com");
        assert_eq!(client.inner.sts.host, "127.0.0.1:9000");
        assert_eq!(
            Client::new(ClientConfig::default()).unwrap().sts_endpoint(),
            "https://sts.tencentcloudapi.com/"
        );
        let explicit = Client::new(ClientConfig {
            sts_endpoint: Some("http://127.0.0.1:9001".into()),
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(explicit.inner.sts.host, "127.0.0.1:9001");
        assert!(
            Client::new(ClientConfig {
                sts_endpoint: Some("https://x/path".into()),
                ..ClientConfig::default()
            })
            .is_err()
        );
        for bad in ["ftp://x", "https://x/path", "not a url", "https://x/?a=b"] {
            assert!(
                Client::new(ClientConfig {
                    endpoint: bad.into(),
                    ..ClientConfig::default()
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_http_endpoints_are_refused_unless_allowed() {
        let build = |endpoint: &str, sts: Option<&str>, allow: bool| {
            Client::new(ClientConfig {
                endpoint: endpoint.into(),
                sts_endpoint: sts.map(String::from),
                allow_insecure_endpoint: allow,
                ..ClientConfig::default()
            })
        };
        // The SSL endpoint, and the STS endpoint derived from it or given on its own.
        for (endpoint, sts) in [
            ("http://ssl.tencentcloudapi.com", None),
            ("http://127.0.0.1:9000", None),
            (
                "https://ssl.tencentcloudapi.com",
                Some("http://sts.tencentcloudapi.com"),
            ),
        ] {
            let err = build(endpoint, sts, false).unwrap_err();
            assert!(
                matches!(err, ClientBuildError::InsecureEndpoint { .. }),
                "{endpoint} {sts:?}: {err}"
            );
            assert!(
                err.to_string().contains("--allow-insecure-endpoint"),
                "{err}"
            );
            let allowed = build(endpoint, sts, true).unwrap();
            assert!(allowed.endpoint().starts_with("http"));
        }
        let derived = build("http://ssl.tencentcloudapi.com", None, true).unwrap();
        assert_eq!(derived.sts_endpoint(), "http://sts.tencentcloudapi.com/");
        // https needs no flag; the flag does not loosen anything else.
        assert!(build("https://ssl.tencentcloudapi.com", None, false).is_ok());
        assert!(build("ftp://x", None, true).is_err());
    }

    #[test]
    fn download_debug_hides_the_archive() {
        let download = Download {
            zip: b"PK-secret-bytes".to_vec(),
            request_id: "r".into(),
        };
        assert_eq!(
            format!("{download:?}"),
            "Download { zip: <15 bytes>, request_id: \"r\" }"
        );
    }
}
