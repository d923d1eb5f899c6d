//! The simulator's state: certificates, injected faults, rate-limit buckets and request counters.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::auth::Account;
use super::catalog::CertificateSpec;
use super::manage::relink;
use super::pki::Pki;

/// Renewal and reissue links between certificates, as `CertificateExtra` (and the list's
/// `HasRenewOrder`/`HostingRenewCertId`) report them. Forward links come from specs and control calls;
/// the backward ones (`origin_certificate_id`, `replaced_for`, `service_origin_certificate_id`) are
/// derived from them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLinks {
    /// `RenewOrder`: the renewal certificate.
    pub renew_order: Option<String>,
    /// `ReplacedBy`: the reissued certificate.
    pub replaced_by: Option<String>,
    /// `HostingRenewCertId`: the certificate hosting swapped in.
    pub hosting_renew_cert_id: Option<String>,
    /// `ServiceRenewCertificateId`: the next certificate of a subscription service.
    pub service_renew_certificate_id: Option<String>,
    pub origin_certificate_id: Option<String>,
    pub replaced_for: Option<String>,
    pub service_origin_certificate_id: Option<String>,
}

/// A certificate the simulator serves.
#[derive(Clone)]
pub struct SimCertificate {
    pub id: String,
    /// Main domain (CN).
    pub domain: String,
    /// Other names, excluding `domain` (as the detail API reports them).
    pub subject_alt_names: Vec<String>,
    /// Tencent status code: 1 issued, 0 under review, 3 expired, …
    pub status: i64,
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
    /// `trustasia`, `upload`, …
    pub from: String,
    /// Hex SHA-1 of the leaf, as Tencent reports `CertFingerprint`.
    pub fingerprint_sha1: Option<String>,
    /// The archive `DownloadCertificate` returns.
    pub zip: Vec<u8>,
    pub links: SimLinks,
    pub project_id: u64,
    pub tags: Vec<(String, String)>,
    /// The user's note (`Alias`).
    pub alias: String,
    /// Creation time: the list's default order is newest first.
    pub inserted_at: jiff::Timestamp,
    /// How it was generated, so it can be renewed or expired while running (`None` for `--zip-dir`).
    pub spec: Option<CertificateSpec>,
}

impl std::fmt::Debug for SimCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCertificate")
            .field("id", &self.id)
            .field("domain", &self.domain)
            .field("status", &self.status)
            .field("links", &self.links)
            .field("zip", &format_args!("<{} bytes>", self.zip.len()))
            .finish_non_exhaustive()
    }
}

/// An injected error: answer `code` for a certificate (or `*` for any), `remaining` times (or forever),
/// with a probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub certificate_id: String,
    pub code: String,
    #[serde(default)]
    pub remaining: Option<u32>,
    #[serde(default = "always")]
    pub probability: f64,
}

fn always() -> f64 {
    1.0
}

impl Fault {
    fn applies_to(&self, certificate_id: &str) -> bool {
        self.certificate_id == "*" || self.certificate_id == certificate_id
    }
}

/// CLI form: `ID=CODE` (always), `ID=CODE:COUNT` (COUNT times) or `ID=CODE:pPROB` (with probability PROB).
impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (certificate_id, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("expected ID=CODE[:COUNT|:pPROB], got {text:?}"))?;
        let (code, modifier) = match rest.split_once(':') {
            Some((code, modifier)) => (code, Some(modifier)),
            None => (rest, None),
        };
        if certificate_id.is_empty() || code.is_empty() {
            return Err(format!("expected ID=CODE[:COUNT|:pPROB], got {text:?}"));
        }
        let mut fault = Fault {
            certificate_id: certificate_id.to_string(),
            code: code.to_string(),
            remaining: None,
            probability: 1.0,
        };
        match modifier {
            None => {}
            Some(p) if p.starts_with('p') => {
                let probability: f64 = p[1..]
                    .parse()
                    .map_err(|_| format!("bad probability in {text:?}"))?;
                if !(0.0..=1.0).contains(&probability) {
                    return Err(format!("probability must be within 0..=1 in {text:?}"));
                }
                fault.probability = probability;
            }
            Some(count) => {
                fault.remaining = Some(
                    count
                        .parse()
                        .map_err(|_| format!("bad count in {text:?}"))?,
                );
            }
        }
        Ok(fault)
    }
}

/// An injected delay before answering requests for a certificate (or `*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub certificate_id: String,
    pub millis: u64,
}

/// CLI form: `ID=MILLIS`.
impl FromStr for Latency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (certificate_id, millis) = text
            .split_once('=')
            .ok_or_else(|| format!("expected ID=MILLIS, got {text:?}"))?;
        Ok(Latency {
            certificate_id: certificate_id.to_string(),
            millis: millis
                .parse()
                .map_err(|_| format!("bad milliseconds in {text:?}"))?,
        })
    }
}

/// Request counters, readable at `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    /// action → answer code (`Success` or the error code) → count.
    pub by_action: BTreeMap<String, BTreeMap<String, u64>>,
    /// certificate id → requests naming it.
    pub by_certificate: BTreeMap<String, u64>,
    /// SecretId → requests whose signature it verified (which key pair a client really used).
    #[serde(default)]
    pub by_secret_id: BTreeMap<String, u64>,
}

impl Stats {
    pub fn count(&self, action: &str, code: &str) -> u64 {
        self.by_action
            .get(action)
            .and_then(|codes| codes.get(code))
            .copied()
            .unwrap_or(0)
    }

    pub fn action_total(&self, action: &str) -> u64 {
        self.by_action
            .get(action)
            .map(|codes| codes.values().sum())
            .unwrap_or(0)
    }

    /// Requests answered with any rate-limit code.
    pub fn rate_limited(&self) -> u64 {
        self.by_action
            .values()
            .flat_map(|codes| codes.iter())
            .filter(|(code, _)| code.starts_with("RequestLimitExceeded"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Token bucket: `capacity` tokens, refilled at `rate` per second, as a per-second API quota behaves.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
pub struct SimState {
    pub(crate) accounts: HashMap<String, Account>,
    pub(super) certificates: RwLock<HashMap<String, SimCertificate>>,
    /// The CA that issues certificates added while running (created on first use if `start` did not).
    pub(super) pki: OnceLock<Arc<Pki>>,
    faults: Mutex<Vec<Fault>>,
    latencies: Mutex<Vec<Latency>>,
    stats: Mutex<Stats>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    /// Requests per second per (SecretId, action); `None` disables limiting.
    rate_limit: Option<f64>,
    /// Seconds added to the real clock (to test clock skew).
    pub(crate) clock_offset: i64,
    /// STS: roles by ARN, and the temporary credentials issued, by SecretId.
    roles: RwLock<HashMap<String, super::sts::SimRole>>,
    issued: Mutex<HashMap<String, super::sts::Issued>>,
    /// `ApplyCertificate` orders and settings (see `apply`).
    pub(crate) applications: super::apply::Applications,
    /// Uploads' bindings, deploy records and deploy faults (see `publish`).
    pub(crate) publishing: super::publish::Publishing,
}

impl SimState {
    pub fn new(
        accounts: Vec<Account>,
        certificates: Vec<SimCertificate>,
        faults: Vec<Fault>,
        latencies: Vec<Latency>,
        rate_limit: Option<f64>,
        clock_offset: i64,
    ) -> Self {
        let mut certificates: HashMap<String, SimCertificate> = certificates
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        relink(&mut certificates);
        Self {
            accounts: accounts
                .into_iter()
                .map(|a| (a.secret_id.clone(), a))
                .collect(),
            certificates: RwLock::new(certificates),
            pki: OnceLock::new(),
            faults: Mutex::new(faults),
            latencies: Mutex::new(latencies),
            stats: Mutex::new(Stats::default()),
            buckets: Mutex::new(HashMap::new()),
            rate_limit: rate_limit.filter(|r| r.is_finite() && *r > 0.0),
            clock_offset,
            roles: RwLock::new(HashMap::new()),
            issued: Mutex::new(HashMap::new()),
            applications: Default::default(),
            publishing: Default::default(),
        }
    }

    /// Adds or replaces a role (e.g. with rotated web identity tokens or another trust policy).
    pub fn put_role(&self, role: super::sts::SimRole) {
        self.roles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(role.role_arn.clone(), role);
    }

    pub fn role(&self, role_arn: &str) -> Option<super::sts::SimRole> {
        self.roles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(role_arn)
            .cloned()
    }

    /// A key the simulator knows: permanent, or temporary (expired ones too, so their signature is still
    /// verified before the expiry is reported).
    pub fn account(&self, secret_id: &str) -> Option<Account> {
        self.accounts.get(secret_id).cloned().or_else(|| {
            lock(&self.issued)
                .get(secret_id)
                .map(|issued| issued.account.clone())
        })
    }

    /// `Some(expired?)` for temporary credentials, `None` for others.
    pub fn issued_expired(&self, secret_id: &str) -> Option<bool> {
        let now = self.now();
        lock(&self.issued)
            .get(secret_id)
            .map(|issued| issued.expires_at <= now)
    }

    pub(crate) fn put_issued(&self, issued: super::sts::Issued) {
        let now = self.now();
        let mut all = lock(&self.issued);
        // Keep expired ones an hour, so late callers get TokenFailure rather than SecretIdNotFound.
        all.retain(|_, i| i.expires_at > now - 3600);
        all.insert(issued.account.secret_id.clone(), issued);
    }

    /// Temporary credentials issued and still valid, per role ARN.
    pub fn issued_count(&self, role_arn: &str) -> usize {
        let now = self.now();
        lock(&self.issued)
            .values()
            .filter(|i| i.role_arn == role_arn && i.expires_at > now)
            .count()
    }

    /// The secret parts (keys and tokens) of every temporary credential issued, for tests that check
    /// they never leak.
    pub fn issued_secrets(&self) -> Vec<String> {
        lock(&self.issued)
            .values()
            .flat_map(|i| {
                [i.account.secret_key.clone()]
                    .into_iter()
                    .chain(i.account.token.clone())
            })
            .collect()
    }

    /// Makes every temporary credential issued so far expire now.
    pub fn expire_issued(&self) {
        let now = self.now();
        for issued in lock(&self.issued).values_mut() {
            issued.expires_at = issued.expires_at.min(now);
        }
    }

    pub fn certificate(&self, id: &str) -> Option<SimCertificate> {
        self.certificates
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    pub fn certificate_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .certificates
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Adds or replaces a certificate while running.
    pub fn put_certificate(&self, certificate: SimCertificate) {
        let mut certificates = self
            .certificates
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        certificates.insert(certificate.id.clone(), certificate);
        relink(&mut certificates);
    }

    /// Every certificate, in no particular order.
    pub fn certificates(&self) -> Vec<SimCertificate> {
        self.certificates
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn add_fault(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
        lock(&self.latencies).clear();
    }

    pub fn add_latency(&self, latency: Latency) {
        lock(&self.latencies).push(latency);
    }

    /// The first matching fault that fires now, consuming one of its `remaining` uses.
    pub fn take_fault(&self, certificate_id: &str) -> Option<String> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|f| f.applies_to(certificate_id) && f.remaining != Some(0))?;
        let fault = faults.get_mut(index)?;
        if fault.probability < 1.0 && fastrand::f64() >= fault.probability {
            return None;
        }
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining -= 1;
        }
        Some(fault.code.clone())
    }

    pub fn latency_for(&self, certificate_id: &str) -> Duration {
        lock(&self.latencies)
            .iter()
            .filter(|l| l.certificate_id == "*" || l.certificate_id == certificate_id)
            .map(|l| Duration::from_millis(l.millis))
            .max()
            .unwrap_or_default()
    }

    /// Takes a token for (SecretId, action); `false` means the request must be refused.
    pub fn admit(&self, secret_id: &str, action: &str) -> bool {
        let Some(rate) = self.rate_limit else {
            return true;
        };
        let capacity = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let bucket = buckets
            .entry((secret_id.to_string(), action.to_string()))
            .or_insert(Bucket {
                tokens: capacity,
                updated: now,
            });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn record(&self, action: &str, code: &str, certificate_id: Option<&str>) {
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        *stats
            .by_action
            .entry(action.to_string())
            .or_default()
            .entry(code.to_string())
            .or_default() += 1;
        if let Some(id) = certificate_id {
            *stats.by_certificate.entry(id.to_string()).or_default() += 1;
        }
    }

    /// Counts an authenticated request under its SecretId.
    pub fn record_caller(&self, secret_id: &str) {
        *lock(&self.stats)
            .by_secret_id
            .entry(secret_id.to_string())
            .or_default() += 1;
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.stats) = Stats::default();
    }

    /// The simulator's clock, in Unix seconds.
    pub fn now(&self) -> i64 {
        jiff::Timestamp::now().as_second() + self.clock_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rate: Option<f64>) -> SimState {
        SimState::new(vec![], vec![], vec![], vec![], rate, 0)
    }

    #[test]
    fn fault_cli_forms_parse() {
        assert_eq!(
            "abc=FailedOperation.NetworkError:3"
                .parse::<Fault>()
                .unwrap(),
            Fault {
                certificate_id: "abc".into(),
                code: "FailedOperation.NetworkError".into(),
                remaining: Some(3),
                probability: 1.0
            }
        );
        let p: Fault = "*=InternalError:p0.25".parse().unwrap();
        assert_eq!((p.remaining, p.probability), (None, 0.25));
        assert_eq!("x=Code".parse::<Fault>().unwrap().remaining, None);
        for bad in ["", "abc", "=Code", "abc=", "a=C:x", "a=C:p2", "a=C:pz"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        assert_eq!(
            "abc=250".parse::<Latency>().unwrap(),
            Latency {
                certificate_id: "abc".into(),
                millis: 250
            }
        );
        assert!("abc".parse::<Latency>().is_err());
    }

    #[test]
    fn counted_faults_fire_exactly_count_times() {
        let state = state(None);
        state.add_fault("a=FailedOperation.NetworkError:2".parse().unwrap());
        assert_eq!(state.take_fault("b"), None);
        assert_eq!(
            state.take_fault("a").as_deref(),
            Some("FailedOperation.NetworkError")
        );
        assert_eq!(
            state.take_fault("a").as_deref(),
            Some("FailedOperation.NetworkError")
        );
        assert_eq!(state.take_fault("a"), None);
    }

    #[test]
    fn wildcard_faults_apply_to_every_certificate() {
        let state = state(None);
        state.add_fault("*=InternalError".parse().unwrap());
        assert!(state.take_fault("x").is_some());
        assert!(state.take_fault("y").is_some());
        state.clear_faults();
        assert!(state.take_fault("x").is_none());
    }

    #[test]
    fn buckets_allow_a_burst_of_rate_then_refuse() {
        let state = state(Some(5.0));
        let admitted = (0..8)
            .filter(|_| state.admit("AKID", "DownloadCertificate"))
            .count();
        assert_eq!(admitted, 5);
        // Another action and another account have their own buckets.
        assert!(state.admit("AKID", "DescribeCertificateDetail"));
        assert!(state.admit("AKID2", "DownloadCertificate"));
    }

    #[test]
    fn stats_count_by_action_code_and_certificate() {
        let state = state(None);
        state.record("DownloadCertificate", "Success", Some("a"));
        state.record("DownloadCertificate", "RequestLimitExceeded", Some("a"));
        state.record("DescribeCertificateDetail", "Success", Some("b"));
        let stats = state.stats();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.count("DownloadCertificate", "Success"), 1);
        assert_eq!(stats.action_total("DownloadCertificate"), 2);
        assert_eq!(stats.rate_limited(), 1);
        assert_eq!(stats.by_certificate["a"], 2);
        state.reset_stats();
        assert_eq!(state.stats(), Stats::default());
    }
}
