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
//! Faults and latencies registered for `*` or for the action's name apply to these actions; a latency for
//! `<action>:after` (e.g. `UploadCertificate:after`) holds back the answer of a successful call after its
//! effect is stored and counted, so a test can kill the caller between the two.
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

use super::server::{error_response, success_response};
use super::state::{SimCertificate, SimState};

mod deploy;
mod upload;

pub use upload::{IssuedPair, issue_pair};

pub use tencent_ssl::publish::{
    ACTION_BIND_RESULT, ACTION_BIND_TASK, ACTION_DELETE, ACTION_RECORD_DETAIL, ACTION_RECORD_RETRY,
    ACTION_UPDATE_INSTANCE, ACTION_UPLOAD, REGIONAL_TYPES, RESOURCE_TYPES,
};

/// Deploy detail states (`UpdateRecordDetail.Status`).
pub const DEPLOY_PENDING: i64 = 0;
pub const DEPLOY_SUCCEEDED: i64 = 1;
pub const DEPLOY_FAILED: i64 = 2;
pub const DEPLOY_RUNNING: i64 = 3;

pub(super) const MAX_IDS: usize = 100;
pub(super) const MAX_DETAIL_LIMIT: usize = 200;

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
pub(super) struct Inner {
    pub(super) bindings: Vec<Binding>,
    pub(super) records: BTreeMap<u64, DeployRecord>,
    pub(super) next_record: u64,
    pub(super) next_detail: u64,
    pub(super) faults: Vec<DeployFault>,
    /// Bind-resource query tasks: id → (certificate id, snapshot of its bindings).
    pub(super) tasks: HashMap<String, (String, Vec<Binding>)>,
    pub(super) next_task: u64,
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

pub(super) type Refusal = (&'static str, String);
/// An action's answer fields and the certificate it concerns (for the stats), or its refusal.
pub(super) type Answer = Result<(Value, Option<String>), Refusal>;

pub(super) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    (code, message.into())
}

pub(super) fn object(params: &Value) -> Result<&Map<String, Value>, Refusal> {
    params
        .as_object()
        .ok_or_else(|| refuse("InvalidParameter", "The request body is not a JSON object."))
}

pub(super) fn check_known(params: &Map<String, Value>, known: &[&str]) -> Result<(), Refusal> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => Err(refuse(
            "UnknownParameter",
            format!("The parameter `{name}` is not recognized."),
        )),
        None => Ok(()),
    }
}

pub(super) fn opt_string(
    params: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refuse(
            "InvalidParameter",
            format!("The parameter `{name}` must be a string."),
        )),
    }
}

pub(super) fn required_string(params: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
    opt_string(params, name)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            refuse(
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )
        })
}

pub(super) fn string_list(params: &Map<String, Value>, name: &str) -> Result<Vec<String>, Refusal> {
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
pub(super) fn loose_u64(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
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

/// Serves a publishing action; `None` when `action` is not one of them.
pub(super) async fn handle(state: &SimState, action: &str, params: &Value) -> Option<Json<Value>> {
    let run: fn(&SimState, &Value) -> Answer = match action {
        ACTION_UPLOAD => upload::upload,
        ACTION_UPDATE_INSTANCE => deploy::update_instance,
        ACTION_RECORD_DETAIL => deploy::record_detail,
        ACTION_RECORD_RETRY => deploy::record_retry,
        ACTION_DELETE => upload::delete,
        ACTION_BIND_TASK => deploy::bind_task,
        ACTION_BIND_RESULT => deploy::bind_result,
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
            // `<action>:after`: done and counted, the answer held back (a caller killed meanwhile
            // never learns of it, e.g. an upload before a crash).
            let after = state.latency_for(&format!("{action}:after"));
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            success_response(fields)
        }
        Err((code, message)) => {
            state.record(action, code, None);
            error_response(code, &message)
        }
    })
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
