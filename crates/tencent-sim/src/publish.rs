//! Publishing to Tencent in the simulator: uploading a certificate, the cloud resources bound to
//! certificates, moving them onto another certificate with asynchronous deploy records, and deleting.
//!
//! Actions (field names and error codes from the official SDK's `models.py` and `errorcodes.py`, 3.1.145):
//!
//! - `UploadCertificate`: `CertificatePublicKey`, `CertificatePrivateKey`, `CertificateType` (`SVR` only),
//!   `Alias`, `ProjectId`, `CertificateUse`, `Tags`, `Repeatable` (default true). The pair is checked as
//!   Tencent does: `FailedOperation.CertificateParseError` (not PEM / no certificate / no key),
//!   `FailedOperation.CertificateMismatch` (key of another certificate), `FailedOperation.CertificateInvalid`
//!   (expired). With `Repeatable: false` a certificate whose leaf was uploaded before answers the existing
//!   id, as `RepeatCertId` (and `CertificateId`), and stores nothing. Uploaded certificates are `From:
//!   upload`, carry their tags (so `DescribeCertificates` with `Tags` finds them) and can be downloaded.
//! - `CreateCertificateBindResourceSyncTask` (`CertificateIds` ≤ 100) and
//!   `DescribeCertificateBindResourceTaskResult` (`TaskIds` ≤ 100): the resources bound to a certificate, as
//!   counts per resource type and region, snapshotted when the task is created (status 1 at once).
//! - `UpdateCertificateInstance`: `OldCertificateId`, `CertificateId`, `ResourceTypes`, `ResourceTypesRegions`
//!   (required for the regional types `clb`, `tke`, `apigateway`, `waf`, `tcb`, `tse`, `cos`, `mqtt`, `scf`,
//!   `tdmq`: `InvalidParameter.RegionNotEmpty`). Creates a deploy record with one detail per bound resource
//!   of those types and regions (`FailedOperation.CertificateDeployInstanceEmpty` when there is none), and
//!   answers `DeployRecordId` with `DeployStatus: 1`; while a record of the same old certificate is still
//!   running it answers that record with `DeployStatus: 0`, as Tencent does. Uploading in the same call
//!   (`CertificatePublicKey`…) is not modelled and refused.
//! - `DescribeHostUpdateRecordDetail` (`DeployRecordId`, `Limit` ≤ 200, `Offset`, all strings as the SDK
//!   types them): `RecordDetailList` grouped by resource type, with the counts. Each call advances every
//!   unfinished detail one step — 0 pending → 3 deploying → 1 succeeded or 2 failed — so a caller sees the
//!   asynchronous progress by polling, deterministically. A succeeded detail moves its binding onto the new
//!   certificate.
//! - `UpdateCertificateRecordRetry` (`DeployRecordId` or `DeployRecordDetailId`): failed details go back to
//!   pending (`FailedOperation.CertificateDeployRetryStatusInvalid` when none failed,
//!   `FailedOperation.CertificateDeployNotExist` for an unknown record).
//! - `DeleteCertificate` (`CertificateId`): `FailedOperation.DeleteResourceFailed` while any resource is bound
//!   to it, else `DeleteResult: true`.
//!
//! Faults and latencies registered for `*` or for the action's name apply to these actions.
//!
//! Control endpoints: `GET /_sim/bindings`, `POST /_sim/bindings` (a [`Binding`] or a list of them),
//! `POST /_sim/deploy-faults` (a [`DeployFault`]: the next deploys of a resource type, optionally in one
//! region, fail with its message), `DELETE /_sim/deploy-faults`, `GET /_sim/deploys` (every record with
//! its details).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::layout::{self, ZipEntry};
use super::server::{error_response, success_response, tencent_time};
use super::state::{SimCertificate, SimLinks, SimState};
use tencent_ssl::bundle::{self, BundleError};

pub use tencent_ssl::publish::{
    ACTION_BIND_RESULT, ACTION_BIND_TASK, ACTION_DELETE, ACTION_RECORD_DETAIL, ACTION_RECORD_RETRY,
    ACTION_UPDATE_INSTANCE, ACTION_UPLOAD, REGIONAL_TYPES, RESOURCE_TYPES,
};

/// Deploy detail states (`UpdateRecordDetail.Status`).
pub const DEPLOY_PENDING: i64 = 0;
pub const DEPLOY_SUCCEEDED: i64 = 1;
pub const DEPLOY_FAILED: i64 = 2;
pub const DEPLOY_RUNNING: i64 = 3;

const MAX_IDS: usize = 100;
const MAX_DETAIL_LIMIT: usize = 200;

/// A cloud resource using a certificate (a CLB listener, a CDN domain, a TKE Secret, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub certificate_id: String,
    /// One of [`RESOURCE_TYPES`].
    pub resource_type: String,
    /// The region, for the [`REGIONAL_TYPES`].
    #[serde(default)]
    pub region: Option<String>,
    pub instance_id: String,
    #[serde(default)]
    pub domains: Vec<String>,
}

/// Makes the next deploys of `resource_type` (in `region`, or any) fail with `error_msg`, `remaining` times
/// (or always).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployFault {
    pub resource_type: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub remaining: Option<u32>,
    #[serde(default = "default_deploy_error")]
    pub error_msg: String,
}

fn default_deploy_error() -> String {
    "Injected by the simulator: the instance rejected the certificate.".to_string()
}

/// One resource of a deploy record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployDetail {
    pub id: u64,
    pub resource_type: String,
    pub region: Option<String>,
    pub instance_id: String,
    pub domains: Vec<String>,
    pub status: i64,
    pub error_msg: Option<String>,
    pub attempts: u32,
}

/// One `UpdateCertificateInstance` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployRecord {
    pub id: u64,
    pub old_certificate_id: String,
    pub certificate_id: String,
    pub details: Vec<DeployDetail>,
    #[serde(skip)]
    pub created_at: jiff::Timestamp,
}

impl DeployRecord {
    pub fn is_finished(&self) -> bool {
        self.details
            .iter()
            .all(|d| d.status == DEPLOY_SUCCEEDED || d.status == DEPLOY_FAILED)
    }
}

#[derive(Debug, Default)]
struct Inner {
    bindings: Vec<Binding>,
    records: BTreeMap<u64, DeployRecord>,
    next_record: u64,
    next_detail: u64,
    faults: Vec<DeployFault>,
    /// Bind-resource query tasks: id → (certificate id, snapshot of its bindings).
    tasks: HashMap<String, (String, Vec<Binding>)>,
    next_task: u64,
}

/// The publishing side of the simulator's state (a field of [`SimState`]).
#[derive(Debug, Default)]
pub struct Publishing {
    inner: Mutex<Inner>,
}

impl Publishing {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SimState {
    /// Binds a resource to a certificate (a fixture: what a console user did before).
    pub fn add_binding(&self, binding: Binding) {
        self.publishing.lock().bindings.push(binding);
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.publishing.lock().bindings.clone()
    }

    /// The resources bound to one certificate.
    pub fn bindings_of(&self, certificate_id: &str) -> Vec<Binding> {
        self.publishing
            .lock()
            .bindings
            .iter()
            .filter(|b| b.certificate_id == certificate_id)
            .cloned()
            .collect()
    }

    pub fn add_deploy_fault(&self, fault: DeployFault) {
        self.publishing.lock().faults.push(fault);
    }

    pub fn clear_deploy_faults(&self) {
        self.publishing.lock().faults.clear();
    }

    pub fn deploy_records(&self) -> Vec<DeployRecord> {
        self.publishing.lock().records.values().cloned().collect()
    }

    /// Uploaded certificates (`From: upload`), in no particular order.
    pub fn uploaded_certificates(&self) -> Vec<SimCertificate> {
        self.certificates()
            .into_iter()
            .filter(|c| c.from == "upload")
            .collect()
    }
}

type Refusal = (&'static str, String);
/// An action's answer fields and the certificate it concerns (for the stats), or its refusal.
type Answer = Result<(Value, Option<String>), Refusal>;

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    (code, message.into())
}

fn object(params: &Value) -> Result<&Map<String, Value>, Refusal> {
    params
        .as_object()
        .ok_or_else(|| refuse("InvalidParameter", "The request body is not a JSON object."))
}

fn check_known(params: &Map<String, Value>, known: &[&str]) -> Result<(), Refusal> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => Err(refuse(
            "UnknownParameter",
            format!("The parameter `{name}` is not recognized."),
        )),
        None => Ok(()),
    }
}

fn opt_string(params: &Map<String, Value>, name: &str) -> Result<Option<String>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refuse(
            "InvalidParameter",
            format!("The parameter `{name}` must be a string."),
        )),
    }
}

fn required_string(params: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
    opt_string(params, name)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            refuse(
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )
        })
}

fn string_list(params: &Map<String, Value>, name: &str) -> Result<Vec<String>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    refuse(
                        "InvalidParameter",
                        format!("The parameter `{name}` must be a list of strings."),
                    )
                })
            })
            .collect(),
        Some(_) => Err(refuse(
            "InvalidParameter",
            format!("The parameter `{name}` must be a list of strings."),
        )),
    }
}

/// An integer the SDK may send as a string (`DescribeHostUpdateRecordDetail` types its ids as `str`).
fn loose_u64(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    let bad = || {
        refuse(
            "InvalidParameter",
            format!("The parameter `{name}` must be a non-negative integer."),
        )
    };
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

fn leaf_sha1(chain_pem: &str) -> Option<String> {
    let blocks = bundle::pem::parse_blocks(chain_pem.as_bytes(), 64).ok()?;
    let leaf = blocks.into_iter().find(|b| b.label == "CERTIFICATE")?;
    Some(hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &leaf.der,
    )))
}

/// Serves a publishing action; `None` when `action` is not one of them.
pub(super) async fn handle(state: &SimState, action: &str, params: &Value) -> Option<Json<Value>> {
    let run: fn(&SimState, &Value) -> Answer = match action {
        ACTION_UPLOAD => upload,
        ACTION_UPDATE_INSTANCE => update_instance,
        ACTION_RECORD_DETAIL => record_detail,
        ACTION_RECORD_RETRY => record_retry,
        ACTION_DELETE => delete,
        ACTION_BIND_TASK => bind_task,
        ACTION_BIND_RESULT => bind_result,
        _ => return None,
    };
    let delay = state.latency_for(action);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = state.take_fault(action) {
        state.record(action, &code, None);
        return Some(error_response(&code, "Injected by the simulator."));
    }
    Some(match run(state, params) {
        Ok((fields, certificate_id)) => {
            state.record(action, "Success", certificate_id.as_deref());
            success_response(fields)
        }
        Err((code, message)) => {
            state.record(action, code, None);
            error_response(code, &message)
        }
    })
}

fn upload(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(
        params,
        &[
            "CertificatePublicKey",
            "CertificatePrivateKey",
            "CertificateType",
            "Alias",
            "ProjectId",
            "CertificateUse",
            "Tags",
            "Repeatable",
            "KeyPassword",
        ],
    )?;
    let public_key = required_string(params, "CertificatePublicKey")?;
    match opt_string(params, "CertificateType")?.as_deref() {
        None | Some("SVR") => {}
        Some("CA") => {
            return Err(refuse(
                "InvalidParameter",
                "CA certificates are not modelled by the simulator.",
            ));
        }
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `CertificateType` must be SVR or CA.",
            ));
        }
    }
    let private_key = required_string(params, "CertificatePrivateKey")?;
    if opt_string(params, "KeyPassword")?.is_some_and(|p| !p.is_empty()) {
        return Err(refuse(
            "InvalidParameter",
            "Encrypted private keys are not modelled by the simulator.",
        ));
    }
    let alias = opt_string(params, "Alias")?.unwrap_or_default();
    let project_id = match params.get("ProjectId") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_u64().ok_or_else(|| {
            refuse(
                "InvalidParameter",
                "The parameter `ProjectId` must be a non-negative integer.",
            )
        })?,
    };
    let tags = match params.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|tag| {
                Some((
                    tag.get("TagKey")?.as_str()?.to_string(),
                    tag.get("TagValue")?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                refuse(
                    "InvalidParameter",
                    "The parameter `Tags` must be a list of {TagKey, TagValue}.",
                )
            })?,
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `Tags` must be a list of {TagKey, TagValue}.",
            ));
        }
    };
    let repeatable = match params.get("Repeatable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `Repeatable` must be a boolean.",
            ));
        }
    };
    let checked = bundle::from_pem_entries(&[
        ("CertificatePublicKey", public_key.as_bytes()),
        ("CertificatePrivateKey", private_key.as_bytes()),
    ]);
    let pair = match checked {
        Ok(pair) => pair,
        Err(BundleError::KeyMismatch { .. }) => {
            return Err(refuse(
                "FailedOperation.CertificateMismatch",
                "The certificate and the private key do not match.",
            ));
        }
        Err(_) => {
            return Err(refuse(
                "FailedOperation.CertificateParseError",
                "Parsing failed: check that the certificate and key are standard PEM without extra spaces.",
            ));
        }
    };
    if pair.meta.is_expired_at(jiff::Timestamp::now()) {
        return Err(refuse(
            "FailedOperation.CertificateInvalid",
            "The certificate does not meet the standard: it has expired.",
        ));
    }
    let fingerprint = leaf_sha1(&pair.chain_pem);
    if !repeatable
        && let Some(existing) = state
            .certificates()
            .into_iter()
            .filter(|c| c.from == "upload" && c.fingerprint_sha1 == fingerprint)
            .min_by_key(|c| c.inserted_at)
    {
        return Ok((
            json!({ "CertificateId": existing.id, "RepeatCertId": existing.id }),
            Some(existing.id),
        ));
    }
    let domain = pair
        .meta
        .subject_cn
        .clone()
        .or_else(|| pair.meta.dns_names.first().cloned())
        .unwrap_or_default();
    let stem = layout::file_stem(&domain);
    let zip = layout::write_zip(&[
        ZipEntry {
            name: format!("Nginx/{stem}_bundle.crt"),
            contents: pair.chain_pem.clone().into_bytes(),
            is_pem: true,
        },
        ZipEntry {
            name: format!("Nginx/{stem}.key"),
            contents: pair.key_pem.clone().into_bytes(),
            is_pem: true,
        },
    ])
    .map_err(|_| refuse("InternalError", "The certificate could not be stored."))?;
    let id = loop {
        let candidate = random_id();
        if state.certificate(&candidate).is_none() {
            break candidate;
        }
    };
    state.put_certificate(SimCertificate {
        id: id.clone(),
        subject_alt_names: pair
            .meta
            .dns_names
            .iter()
            .filter(|name| **name != domain)
            .cloned()
            .collect(),
        domain,
        status: tencent_ssl::client::STATUS_ISSUED,
        not_before: Some(pair.meta.not_before),
        not_after: Some(pair.meta.not_after),
        from: "upload".to_string(),
        fingerprint_sha1: fingerprint,
        zip,
        links: SimLinks::default(),
        project_id,
        tags,
        alias,
        inserted_at: jiff::Timestamp::now(),
        spec: None,
    });
    Ok((json!({ "CertificateId": id, "RepeatCertId": "" }), Some(id)))
}

fn bind_task(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["CertificateIds", "IsCache"])?;
    let ids = string_list(params, "CertificateIds")?;
    if ids.is_empty() {
        return Err(refuse(
            "MissingParameter",
            "The request is missing a required parameter `CertificateIds`.",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(refuse(
            "InvalidParameter.CertificatesNumberExceeded",
            format!("At most {MAX_IDS} certificate ids per request."),
        ));
    }
    if let Some(unknown) = ids.iter().find(|id| state.certificate(id).is_none()) {
        return Err(refuse(
            "InvalidParameter.ContainsInvalidCertificateId",
            format!("The certificate id {unknown} is invalid."),
        ));
    }
    let mut inner = state.publishing.lock();
    let mut answer = Vec::new();
    for id in ids {
        inner.next_task += 1;
        let task_id = format!("bind-{}", inner.next_task);
        let snapshot: Vec<Binding> = inner
            .bindings
            .iter()
            .filter(|b| b.certificate_id == id)
            .cloned()
            .collect();
        inner.tasks.insert(task_id.clone(), (id.clone(), snapshot));
        answer.push(json!({ "CertId": id, "TaskId": task_id }));
    }
    Ok((json!({ "CertTaskIds": answer }), None))
}

fn bind_result(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["TaskIds"])?;
    let task_ids = string_list(params, "TaskIds")?;
    if task_ids.is_empty() {
        return Err(refuse(
            "MissingParameter",
            "The request is missing a required parameter `TaskIds`.",
        ));
    }
    if task_ids.len() > MAX_IDS {
        return Err(refuse(
            "InvalidParameter",
            format!("At most {MAX_IDS} task ids per request."),
        ));
    }
    let inner = state.publishing.lock();
    let results: Vec<Value> = task_ids
        .iter()
        .filter_map(|task_id| {
            let (_, snapshot) = inner.tasks.get(task_id)?;
            // resource type → region → count
            let mut counts: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
            for binding in snapshot {
                *counts
                    .entry(binding.resource_type.as_str())
                    .or_default()
                    .entry(binding.region.as_deref().unwrap_or(""))
                    .or_default() += 1;
            }
            Some(json!({
                "TaskId": task_id,
                "Status": 1,
                "Error": Value::Null,
                "CacheTime": tencent_time(Some(jiff::Timestamp::now())),
                "BindResourceResult": counts.iter().map(|(kind, regions)| json!({
                    "ResourceType": kind,
                    "BindResourceRegionResult": regions.iter().map(|(region, total)| json!({
                        "Region": region,
                        "TotalCount": total,
                        "Error": "",
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Ok((json!({ "SyncTaskBindResourceResult": results }), None))
}

/// `ResourceTypesRegions`: resource type → regions.
fn types_regions(params: &Map<String, Value>) -> Result<HashMap<String, Vec<String>>, Refusal> {
    let bad = || {
        refuse(
            "InvalidParameter",
            "The parameter `ResourceTypesRegions` must be a list of {ResourceType, Regions}.",
        )
    };
    match params.get("ResourceTypesRegions") {
        None | Some(Value::Null) => Ok(HashMap::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let kind = item
                    .get("ResourceType")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?;
                let regions = match item.get("Regions") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(regions)) => regions
                        .iter()
                        .map(|r| r.as_str().map(String::from).ok_or_else(bad))
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(bad()),
                };
                Ok((kind.to_string(), regions))
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn update_instance(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(
        params,
        &[
            "OldCertificateId",
            "ResourceTypes",
            "CertificateId",
            "Regions",
            "ResourceTypesRegions",
            "CertificatePublicKey",
            "CertificatePrivateKey",
            "ExpiringNotificationSwitch",
            "Repeatable",
            "AllowDownload",
            "Tags",
            "ProjectId",
        ],
    )?;
    let old = required_string(params, "OldCertificateId")?;
    if params.contains_key("CertificatePublicKey") || params.contains_key("CertificatePrivateKey") {
        return Err(refuse(
            "InvalidParameter",
            "Uploading within UpdateCertificateInstance is not modelled by the simulator; upload first.",
        ));
    }
    let new = required_string(params, "CertificateId")?;
    let kinds = string_list(params, "ResourceTypes")?;
    if kinds.is_empty() {
        return Err(refuse(
            "MissingParameter",
            "The request is missing a required parameter `ResourceTypes`.",
        ));
    }
    if let Some(kind) = kinds.iter().find(|k| !RESOURCE_TYPES.contains(&k.as_str())) {
        return Err(refuse(
            "FailedOperation.CertificateHostResourceTypeInvalid",
            format!("The resource type {kind} is invalid."),
        ));
    }
    let regions = types_regions(params)?;
    for kind in &kinds {
        if REGIONAL_TYPES.contains(&kind.as_str()) && regions.get(kind).is_none_or(|r| r.is_empty())
        {
            return Err(refuse(
                "InvalidParameter.RegionNotEmpty",
                format!("Region must not be empty for resource type {kind}."),
            ));
        }
    }
    for id in [&old, &new] {
        if state.certificate(id).is_none() {
            return Err(refuse(
                "FailedOperation.CertificateNotFound",
                "Certificate does not exist.",
            ));
        }
    }
    let mut inner = state.publishing.lock();
    if let Some(running) = inner
        .records
        .values()
        .find(|r| r.old_certificate_id == old && !r.is_finished())
    {
        return Ok((
            json!({ "DeployRecordId": running.id, "DeployStatus": 0, "UpdateSyncProgress": Value::Null }),
            Some(old),
        ));
    }
    let targets: Vec<Binding> = inner
        .bindings
        .iter()
        .filter(|b| b.certificate_id == old && kinds.contains(&b.resource_type))
        .filter(|b| {
            !REGIONAL_TYPES.contains(&b.resource_type.as_str())
                || regions.get(&b.resource_type).is_some_and(|wanted| {
                    b.region
                        .as_ref()
                        .is_some_and(|region| wanted.contains(region))
                })
        })
        .cloned()
        .collect();
    if targets.is_empty() {
        return Err(refuse(
            "FailedOperation.CertificateDeployInstanceEmpty",
            "The selected cloud resources have no instance to update.",
        ));
    }
    inner.next_record += 1;
    let id = inner.next_record;
    let mut details = Vec::new();
    for binding in targets {
        inner.next_detail += 1;
        details.push(DeployDetail {
            id: inner.next_detail,
            resource_type: binding.resource_type,
            region: binding.region,
            instance_id: binding.instance_id,
            domains: binding.domains,
            status: DEPLOY_PENDING,
            error_msg: None,
            attempts: 0,
        });
    }
    let progress: Vec<Value> = kinds
        .iter()
        .map(|kind| json!({ "ResourceType": kind, "Status": 1, "UpdateSyncProgressRegions": [] }))
        .collect();
    inner.records.insert(
        id,
        DeployRecord {
            id,
            old_certificate_id: old.clone(),
            certificate_id: new,
            details,
            created_at: jiff::Timestamp::now(),
        },
    );
    Ok((
        json!({ "DeployRecordId": id, "DeployStatus": 1, "UpdateSyncProgress": progress }),
        Some(old),
    ))
}

/// Advances every unfinished detail of a record one step (see the module docs).
fn advance(inner: &mut Inner, record_id: u64) {
    let Inner {
        records,
        bindings,
        faults,
        ..
    } = inner;
    let Some(record) = records.get_mut(&record_id) else {
        return;
    };
    for detail in &mut record.details {
        match detail.status {
            DEPLOY_PENDING => detail.status = DEPLOY_RUNNING,
            DEPLOY_RUNNING => {
                detail.attempts += 1;
                let fault = faults.iter_mut().find(|f| {
                    f.resource_type == detail.resource_type
                        && f.region
                            .as_ref()
                            .is_none_or(|r| Some(r) == detail.region.as_ref())
                        && f.remaining != Some(0)
                });
                if let Some(fault) = fault {
                    if let Some(remaining) = fault.remaining.as_mut() {
                        *remaining -= 1;
                    }
                    detail.status = DEPLOY_FAILED;
                    detail.error_msg = Some(fault.error_msg.clone());
                } else {
                    detail.status = DEPLOY_SUCCEEDED;
                    detail.error_msg = None;
                    for binding in bindings.iter_mut().filter(|b| {
                        b.certificate_id == record.old_certificate_id
                            && b.resource_type == detail.resource_type
                            && b.region == detail.region
                            && b.instance_id == detail.instance_id
                    }) {
                        binding.certificate_id = record.certificate_id.clone();
                    }
                }
            }
            _ => {}
        }
    }
}

fn record_detail(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["DeployRecordId", "Limit", "Offset"])?;
    let id = loose_u64(params, "DeployRecordId")?.ok_or_else(|| {
        refuse(
            "MissingParameter",
            "The request is missing a required parameter `DeployRecordId`.",
        )
    })?;
    let limit = loose_u64(params, "Limit")?
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX))
        .filter(|l| *l > 0)
        .unwrap_or(10)
        .min(MAX_DETAIL_LIMIT);
    let offset = loose_u64(params, "Offset")?
        .map(|o| usize::try_from(o).unwrap_or(usize::MAX))
        .unwrap_or(0);
    let mut inner = state.publishing.lock();
    if !inner.records.contains_key(&id) {
        return Err(refuse(
            "FailedOperation.CertificateDeployNotExist",
            "The deploy record does not exist.",
        ));
    }
    advance(&mut inner, id);
    let record = inner.records.get(&id).cloned().ok_or_else(|| {
        refuse(
            "FailedOperation.CertificateDeployNotExist",
            "The deploy record does not exist.",
        )
    })?;
    let count = |status: i64| record.details.iter().filter(|d| d.status == status).count();
    let now = tencent_time(Some(jiff::Timestamp::now()));
    let created = tencent_time(Some(record.created_at));
    // One page of details, grouped by resource type in the order they were bound.
    let page: Vec<&DeployDetail> = record.details.iter().skip(offset).take(limit).collect();
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for detail in page {
        let item = json!({
            "Id": detail.id,
            "CertId": record.certificate_id,
            "OldCertId": record.old_certificate_id,
            "Domains": detail.domains,
            "ResourceType": detail.resource_type,
            "Region": detail.region,
            "Status": detail.status,
            "ErrorMsg": detail.error_msg,
            "CreateTime": created,
            "UpdateTime": now,
            "InstanceId": detail.instance_id,
            "InstanceName": detail.instance_id,
        });
        match groups
            .iter_mut()
            .find(|(kind, _)| *kind == detail.resource_type)
        {
            Some((_, items)) => items.push(item),
            None => groups.push((detail.resource_type.clone(), vec![item])),
        }
    }
    let list: Vec<Value> = groups
        .into_iter()
        .map(|(kind, items)| {
            let total = record
                .details
                .iter()
                .filter(|d| d.resource_type == kind)
                .count();
            json!({ "ResourceType": kind, "List": items, "TotalCount": total })
        })
        .collect();
    Ok((
        json!({
            "TotalCount": record.details.len(),
            "RecordDetailList": list,
            "SuccessTotalCount": count(DEPLOY_SUCCEEDED),
            "FailedTotalCount": count(DEPLOY_FAILED),
            "RunningTotalCount": count(DEPLOY_RUNNING),
            "PendingTotalCount": count(DEPLOY_PENDING),
        }),
        None,
    ))
}

fn record_retry(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["DeployRecordId", "DeployRecordDetailId"])?;
    let record_id = loose_u64(params, "DeployRecordId")?;
    let detail_id = loose_u64(params, "DeployRecordDetailId")?;
    if record_id.is_none() && detail_id.is_none() {
        return Err(refuse(
            "MissingParameter",
            "One of `DeployRecordId` and `DeployRecordDetailId` is required.",
        ));
    }
    let mut inner = state.publishing.lock();
    let record = match record_id {
        Some(id) => inner.records.get_mut(&id),
        None => inner
            .records
            .values_mut()
            .find(|r| r.details.iter().any(|d| Some(d.id) == detail_id)),
    }
    .ok_or_else(|| {
        refuse(
            "FailedOperation.CertificateDeployNotExist",
            "The deploy record does not exist.",
        )
    })?;
    let mut retried = 0;
    for detail in record
        .details
        .iter_mut()
        .filter(|d| d.status == DEPLOY_FAILED && detail_id.is_none_or(|id| id == d.id))
    {
        detail.status = DEPLOY_PENDING;
        detail.error_msg = None;
        retried += 1;
    }
    if retried == 0 {
        return Err(refuse(
            "FailedOperation.CertificateDeployRetryStatusInvalid",
            "Only failed deploy records can be retried.",
        ));
    }
    Ok((json!({}), None))
}

fn delete(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["CertificateId", "IsCheckResource"])?;
    let id = required_string(params, "CertificateId")?;
    if state.certificate(&id).is_none() {
        return Err(refuse(
            "FailedOperation.CertificateNotFound",
            "Certificate does not exist.",
        ));
    }
    let bound = state.bindings_of(&id).len();
    if bound > 0 {
        return Err(refuse(
            "FailedOperation.DeleteResourceFailed",
            format!("The certificate is bound to {bound} cloud resource(s) and cannot be deleted."),
        ));
    }
    state.remove_certificate(&id);
    Ok((
        json!({ "DeleteResult": true, "TaskId": Value::Null }),
        Some(id),
    ))
}

impl SimState {
    fn remove_certificate(&self, id: &str) {
        self.certificates
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }
}

/// The control endpoints of this module (see the module docs).
pub(super) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_sim/bindings", get(list_bindings).post(add_bindings))
        .route(
            "/_sim/deploy-faults",
            axum::routing::post(add_deploy_fault).delete(clear_deploy_faults),
        )
        .route("/_sim/deploys", get(list_deploys))
}

async fn list_bindings(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "Bindings": state.bindings() }))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Binding),
    Many(Vec<Binding>),
}

async fn add_bindings(
    State(state): State<Arc<SimState>>,
    Json(bindings): Json<OneOrMany>,
) -> (axum::http::StatusCode, Json<Value>) {
    let bindings = match bindings {
        OneOrMany::One(binding) => vec![binding],
        OneOrMany::Many(bindings) => bindings,
    };
    if let Some(bad) = bindings
        .iter()
        .find(|b| !RESOURCE_TYPES.contains(&b.resource_type.as_str()))
    {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("unknown resource type {:?}", bad.resource_type) })),
        );
    }
    for binding in bindings {
        state.add_binding(binding);
    }
    (axum::http::StatusCode::OK, Json(json!({ "ok": true })))
}

async fn add_deploy_fault(
    State(state): State<Arc<SimState>>,
    Json(fault): Json<DeployFault>,
) -> Json<Value> {
    state.add_deploy_fault(fault);
    Json(json!({ "ok": true }))
}

async fn clear_deploy_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.clear_deploy_faults();
    Json(json!({ "ok": true }))
}

async fn list_deploys(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "Records": state.deploy_records() }))
}

/// A certificate chain (leaf, intermediate) and its PKCS#8 key, as cert-manager writes them into a TLS
/// Secret: what tests publish. `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedPair {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPair")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Issues a leaf for `domains` (a new ECDSA P-256 key each time) under `pki`, valid between the two times.
pub fn issue_pair(
    pki: &super::pki::Pki,
    domains: &[&str],
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> Result<IssuedPair, super::pki::PkiError> {
    let leaf = pki.issue_leaf(&super::pki::LeafSpec {
        domains: domains.iter().map(|d| (*d).to_string()).collect(),
        ip_addresses: Vec::new(),
        key: super::pki::KeyKind::EcdsaP256,
        not_before,
        not_after,
    })?;
    Ok(IssuedPair {
        chain_pem: format!("{}{}", leaf.cert_pem, pki.intermediate.cert_pem),
        key_pem: leaf.key_pem,
    })
}
