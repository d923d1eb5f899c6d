//! Publishing to Tencent Cloud SSL: upload a certificate, find what is bound to one, move bound cloud
//! resources onto another (`UpdateCertificateInstance`), follow the deploy record, retry it, and delete.
//!
//! Every call goes through the same limiter, retries and error classes as the rest of the client. The
//! private key is only ever in the body of `UploadCertificate`: [`UploadRequest`]'s `Debug` hides it, and an
//! error message that quotes it back (or any PEM private key) is withheld before it reaches the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::Client;
use super::credentials::Credentials;
use super::error::TencentError;
use super::list::{Tag, text};

pub const ACTION_UPLOAD: &str = "UploadCertificate";
pub const ACTION_UPDATE_INSTANCE: &str = "UpdateCertificateInstance";
pub const ACTION_RECORD_DETAIL: &str = "DescribeHostUpdateRecordDetail";
pub const ACTION_RECORD_RETRY: &str = "UpdateCertificateRecordRetry";
pub const ACTION_DELETE: &str = "DeleteCertificate";
pub const ACTION_BIND_TASK: &str = "CreateCertificateBindResourceSyncTask";
pub const ACTION_BIND_RESULT: &str = "DescribeCertificateBindResourceTaskResult";

/// Resource types `UpdateCertificateInstance` accepts (the SDK's list, lower case).
pub const RESOURCE_TYPES: &[&str] = &[
    "clb",
    "cdn",
    "waf",
    "live",
    "ddos",
    "teo",
    "apigateway",
    "vod",
    "tke",
    "tcb",
    "tse",
    "cos",
    "mqtt",
    "scf",
    "tdmq",
    "gaap",
];
/// Resource types deployed per region: a deploy must name their regions.
pub const REGIONAL_TYPES: &[&str] = &[
    "clb",
    "tke",
    "apigateway",
    "waf",
    "tcb",
    "tse",
    "cos",
    "mqtt",
    "scf",
    "tdmq",
];

/// Record details per page of `DescribeHostUpdateRecordDetail` (Tencent's maximum).
const RECORD_PAGE: u64 = 200;
/// Pages read at most (an account with more bound instances than this is reported as truncated).
const RECORD_PAGES: u64 = 50;

/// What `UploadCertificate` sends. `Debug` shows the chain and never the key.
#[derive(Clone)]
pub struct UploadRequest<'a> {
    /// Leaf then intermediates, PEM.
    pub chain_pem: &'a str,
    /// The private key, PEM. Goes into the request body and nowhere else.
    pub key_pem: &'a str,
    /// `Alias`: the note shown in the console.
    pub alias: &'a str,
    pub project_id: Option<u64>,
    pub tags: &'a [Tag],
}

impl fmt::Debug for UploadRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadRequest")
            .field(
                "chain_pem",
                &format_args!("<{} bytes>", self.chain_pem.len()),
            )
            .field("key_pem", &"<redacted>")
            .field("alias", &self.alias)
            .field("project_id", &self.project_id)
            .field("tags", &self.tags)
            .finish()
    }
}

/// The certificate Tencent holds after an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub certificate_id: String,
    /// Tencent already held this certificate (`RepeatCertId`): nothing new was stored.
    pub repeat: bool,
    pub request_id: String,
}

/// A resource type to move, with its regions (required for the [`REGIONAL_TYPES`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeployTarget {
    pub resource_type: String,
    pub regions: Vec<String>,
}

/// The answer of `UpdateCertificateInstance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployStarted {
    pub record_id: u64,
    /// `DeployStatus` 1: a new record. `false`: a record of the same old certificate was still running and
    /// `record_id` is that one.
    pub created: bool,
    pub request_id: String,
}

/// A deploy detail's state (`UpdateRecordDetail.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeployState {
    Pending,
    Succeeded,
    Failed,
    Running,
    RolledBack,
    RollbackFailed,
    /// 6: the resource had nothing to deploy.
    NoResource,
    Unknown(i64),
}

impl DeployState {
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Pending,
            1 => Self::Succeeded,
            2 => Self::Failed,
            3 => Self::Running,
            4 => Self::RolledBack,
            5 => Self::RollbackFailed,
            6 => Self::NoResource,
            other => Self::Unknown(other),
        }
    }

    /// Finished one way or another (no more change without a retry).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running | Self::Unknown(_))
    }
}

/// One resource of a deploy record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployDetail {
    pub id: u64,
    pub resource_type: String,
    pub region: Option<String>,
    pub instance_id: Option<String>,
    pub domains: Vec<String>,
    pub state: DeployState,
    /// Tencent's message for a failed deploy.
    pub error_msg: Option<String>,
}

/// A deploy record as `DescribeHostUpdateRecordDetail` reports it (every page read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployProgress {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub running: u64,
    pub pending: u64,
    pub details: Vec<DeployDetail>,
    /// More details than the client reads.
    pub truncated: bool,
}

impl DeployProgress {
    pub fn is_finished(&self) -> bool {
        self.details.iter().all(|d| d.state.is_final()) && self.running == 0 && self.pending == 0
    }
}

/// Resources bound to a certificate: resource type → region (`""` for global types) → count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundResources {
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl BoundResources {
    pub fn total(&self) -> u64 {
        self.counts.values().flat_map(|r| r.values()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// The answer of `DescribeCertificateBindResourceTaskResult` for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindQuery {
    /// Tencent is still counting (status 0): ask again.
    Pending,
    Ready(BoundResources),
    /// Tencent could not count them (status 2).
    Failed {
        code: Option<String>,
        message: String,
    },
}

fn malformed(action: &str, detail: impl Into<String>) -> TencentError {
    TencentError::Malformed {
        action: action.to_string(),
        detail: detail.into(),
    }
}

fn request_id(response: &Value) -> String {
    text(response.get("RequestId")).unwrap_or_else(|| "unknown".to_string())
}

/// A number Tencent may send as a number or a string.
fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| text(Some(v)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

/// Whether `message` quotes the private key (or any PEM private key): such a message is withheld.
fn quotes_key(message: &str, key_pem: &str) -> bool {
    if message.contains("PRIVATE KEY") {
        return true;
    }
    // Any base64 line of the key's body, long enough not to match by chance.
    key_pem
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .any(|line| message.contains(line))
        || {
            let body: String = key_pem
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .map(str::trim)
                .collect();
            body.len() >= 16
                && body
                    .as_bytes()
                    .windows(16)
                    .step_by(8)
                    .filter_map(|w| std::str::from_utf8(w).ok())
                    .any(|w| message.contains(w))
        }
}

fn without_key(err: TencentError, key_pem: &str) -> TencentError {
    match err {
        TencentError::Api {
            action,
            code,
            message,
            request_id,
        } if quotes_key(&message, key_pem) => TencentError::Api {
            action,
            code,
            message: "<message withheld: it quoted the private key>".to_string(),
            request_id,
        },
        TencentError::Malformed { action, detail } if quotes_key(&detail, key_pem) => {
            TencentError::Malformed {
                action,
                detail: "<detail withheld: it quoted the private key>".to_string(),
            }
        }
        other => other,
    }
}

impl Client {
    /// `UploadCertificate` with `Repeatable: false`: a certificate Tencent already holds answers its id
    /// (`repeat`), so uploading the same certificate twice never stores two.
    pub async fn upload_certificate(
        &self,
        credentials: &Credentials,
        request: &UploadRequest<'_>,
    ) -> Result<Uploaded, TencentError> {
        let mut params = json!({
            "CertificatePublicKey": request.chain_pem,
            "CertificatePrivateKey": request.key_pem,
            "CertificateType": "SVR",
            "Alias": request.alias,
            "Repeatable": false,
        });
        if let Some(project_id) = request.project_id {
            params["ProjectId"] = json!(project_id);
        }
        if !request.tags.is_empty() {
            params["Tags"] = json!(request.tags);
        }
        let response = self
            .call(credentials, ACTION_UPLOAD, &params)
            .await
            .map_err(|err| without_key(err, request.key_pem))?;
        let repeat_id = text(response.get("RepeatCertId"));
        let certificate_id = repeat_id
            .clone()
            .or_else(|| text(response.get("CertificateId")))
            .ok_or_else(|| malformed(ACTION_UPLOAD, "no CertificateId in the answer"))?;
        Ok(Uploaded {
            certificate_id,
            repeat: repeat_id.is_some(),
            request_id: request_id(&response),
        })
    }

    /// Starts counting the resources bound to a certificate (`CreateCertificateBindResourceSyncTask`);
    /// answers the task id.
    pub async fn create_bind_resource_task(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<String, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_BIND_TASK,
                &json!({ "CertificateIds": [certificate_id], "IsCache": 0 }),
            )
            .await?;
        response
            .get("CertTaskIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|t| text(t.get("CertId")).as_deref() == Some(certificate_id))
            .and_then(|t| text(t.get("TaskId")))
            .ok_or_else(|| malformed(ACTION_BIND_TASK, "no TaskId for the certificate"))
    }

    /// The result of a bind-resource task (`DescribeCertificateBindResourceTaskResult`).
    pub async fn bind_resource_result(
        &self,
        credentials: &Credentials,
        task_id: &str,
    ) -> Result<BindQuery, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_BIND_RESULT,
                &json!({ "TaskIds": [task_id] }),
            )
            .await?;
        let result = response
            .get("SyncTaskBindResourceResult")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| text(r.get("TaskId")).as_deref() == Some(task_id))
            .ok_or_else(|| malformed(ACTION_BIND_RESULT, "no result for the task"))?;
        decode_bind_result(result)
    }

    /// The resources bound to a certificate: a bind-resource task, polled until ready (at most `polls`
    /// times, `interval` apart). `Ok(None)` when Tencent is still counting after that.
    pub async fn bound_resources(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
        polls: u32,
        interval: Duration,
    ) -> Result<Option<BoundResources>, TencentError> {
        let task = self
            .create_bind_resource_task(credentials, certificate_id)
            .await?;
        for poll in 0..polls.max(1) {
            if poll > 0 {
                tokio::time::sleep(interval).await;
            }
            match self.bind_resource_result(credentials, &task).await? {
                BindQuery::Ready(bound) => return Ok(Some(bound)),
                BindQuery::Pending => {}
                BindQuery::Failed { code, message } => {
                    return Err(TencentError::Api {
                        action: ACTION_BIND_RESULT.to_string(),
                        code: code.unwrap_or_else(|| "FailedOperation".to_string()),
                        message,
                        request_id: "unknown".to_string(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// `UpdateCertificateInstance`: moves the resources of `targets` bound to `old_certificate_id` onto
    /// `certificate_id`, asynchronously (follow the record with [`Client::deploy_progress`]).
    pub async fn update_certificate_instance(
        &self,
        credentials: &Credentials,
        old_certificate_id: &str,
        certificate_id: &str,
        targets: &[DeployTarget],
    ) -> Result<DeployStarted, TencentError> {
        let types: Vec<&str> = targets.iter().map(|t| t.resource_type.as_str()).collect();
        let regions: Vec<Value> = targets
            .iter()
            .filter(|t| !t.regions.is_empty())
            .map(|t| json!({ "ResourceType": t.resource_type, "Regions": t.regions }))
            .collect();
        let mut params = json!({
            "OldCertificateId": old_certificate_id,
            "CertificateId": certificate_id,
            "ResourceTypes": types,
        });
        if !regions.is_empty() {
            params["ResourceTypesRegions"] = Value::Array(regions);
        }
        let response = self
            .call(credentials, ACTION_UPDATE_INSTANCE, &params)
            .await?;
        let record_id = number(response.get("DeployRecordId"))
            .filter(|id| *id > 0)
            .ok_or_else(|| malformed(ACTION_UPDATE_INSTANCE, "no DeployRecordId in the answer"))?;
        Ok(DeployStarted {
            record_id,
            created: number(response.get("DeployStatus")) == Some(1),
            request_id: request_id(&response),
        })
    }

    /// Every detail of a deploy record (`DescribeHostUpdateRecordDetail`, page by page).
    pub async fn deploy_progress(
        &self,
        credentials: &Credentials,
        record_id: u64,
    ) -> Result<DeployProgress, TencentError> {
        let mut progress = DeployProgress::default();
        for page in 0..RECORD_PAGES {
            let response = self
                .call(
                    credentials,
                    ACTION_RECORD_DETAIL,
                    // The SDK types all three as strings.
                    &json!({
                        "DeployRecordId": record_id.to_string(),
                        "Limit": RECORD_PAGE.to_string(),
                        "Offset": (page * RECORD_PAGE).to_string(),
                    }),
                )
                .await?;
            let read = decode_record_page(&response, &mut progress.details);
            if page == 0 {
                progress.total = number(response.get("TotalCount")).unwrap_or(0);
                progress.succeeded = number(response.get("SuccessTotalCount")).unwrap_or(0);
                progress.failed = number(response.get("FailedTotalCount")).unwrap_or(0);
                progress.running = number(response.get("RunningTotalCount")).unwrap_or(0);
                progress.pending = number(response.get("PendingTotalCount")).unwrap_or(0);
            }
            if read == 0 || progress.details.len() as u64 >= progress.total {
                return Ok(progress);
            }
        }
        progress.truncated = true;
        Ok(progress)
    }

    /// `UpdateCertificateRecordRetry`: the failed details of a record deploy again.
    pub async fn retry_deploy_record(
        &self,
        credentials: &Credentials,
        record_id: u64,
    ) -> Result<(), TencentError> {
        self.call(
            credentials,
            ACTION_RECORD_RETRY,
            &json!({ "DeployRecordId": record_id }),
        )
        .await
        .map(drop)
    }

    /// `DeleteCertificate`. Tencent refuses while resources are bound
    /// (`FailedOperation.DeleteResourceFailed`, reason `CertificateInUse`).
    pub async fn delete_certificate(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<bool, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_DELETE,
                &json!({ "CertificateId": certificate_id }),
            )
            .await?;
        Ok(response
            .get("DeleteResult")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }
}

fn decode_bind_result(result: &Value) -> Result<BindQuery, TencentError> {
    match number(result.get("Status")) {
        Some(0) => Ok(BindQuery::Pending),
        Some(1) => {
            let mut bound = BoundResources::default();
            for kind in result
                .get("BindResourceResult")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(resource_type) = text(kind.get("ResourceType")) else {
                    continue;
                };
                let regions = bound.counts.entry(resource_type).or_default();
                for region in kind
                    .get("BindResourceRegionResult")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let count = number(region.get("TotalCount")).unwrap_or(0);
                    if count > 0 {
                        *regions
                            .entry(text(region.get("Region")).unwrap_or_default())
                            .or_default() += count;
                    }
                }
            }
            bound.counts.retain(|_, regions| !regions.is_empty());
            Ok(BindQuery::Ready(bound))
        }
        Some(2) => Ok(BindQuery::Failed {
            code: result.get("Error").and_then(|e| text(e.get("Code"))),
            message: result
                .get("Error")
                .and_then(|e| text(e.get("Message")))
                .unwrap_or_else(|| "Tencent could not list the bound resources".to_string()),
        }),
        _ => Err(malformed(ACTION_BIND_RESULT, "unknown task status")),
    }
}

/// Appends a page's details; answers how many it had.
fn decode_record_page(response: &Value, into: &mut Vec<DeployDetail>) -> usize {
    let mut read = 0;
    for group in response
        .get("RecordDetailList")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let group_type = text(group.get("ResourceType"));
        for item in group
            .get("List")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            read += 1;
            let Some(resource_type) = text(item.get("ResourceType")).or(group_type.clone()) else {
                continue;
            };
            into.push(DeployDetail {
                id: number(item.get("Id")).unwrap_or(0),
                resource_type,
                region: text(item.get("Region")),
                instance_id: text(item.get("InstanceId")),
                domains: strings(item.get("Domains")),
                state: DeployState::from_code(
                    item.get("Status").and_then(Value::as_i64).unwrap_or(-1),
                ),
                error_msg: text(item.get("ErrorMsg")),
            });
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8fakefakefakefake\nhRmZxZ0ctZ2t5cGxhY2Vob2xkZXJwbGFjZWhvbGRlcnBsYWNlaG9sZGVy\n-----END PRIVATE KEY-----\n";

    #[test]
    fn upload_requests_never_print_the_key() {
        let tags = [Tag::new("tco-uid", "abc")];
        let request = UploadRequest {
            chain_pem: "-----BEGIN CERTIFICATE-----\n...",
            key_pem: KEY,
            alias: "shop",
            project_id: Some(0),
            tags: &tags,
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(!printed.contains("8fakefake"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn messages_quoting_the_key_are_withheld() {
        let api = |message: &str| TencentError::Api {
            action: ACTION_UPLOAD.into(),
            code: "FailedOperation.CertificateParseError".into(),
            message: message.into(),
            request_id: "r".into(),
        };
        for quoted in [
            format!("cannot parse {KEY}"),
            "bad key near hRmZxZ0ctZ2t5cGxhY2Vob2xkZXJwbGFj".to_string(),
            "-----BEGIN RSA PRIVATE KEY----- is not supported".to_string(),
        ] {
            let cleaned = without_key(api(&quoted), KEY).to_string();
            assert!(cleaned.contains("withheld"), "{cleaned}");
            assert!(!cleaned.contains("hRmZxZ0c"), "{cleaned}");
        }
        let plain = without_key(api("Parsing failed."), KEY).to_string();
        assert!(plain.contains("Parsing failed."));
    }

    #[test]
    fn bind_results_are_summed_per_type_and_region() {
        let result = json!({
            "TaskId": "t1",
            "Status": 1,
            "BindResourceResult": [
                {"ResourceType": "clb", "BindResourceRegionResult": [
                    {"Region": "ap-guangzhou", "TotalCount": 2},
                    {"Region": "ap-shanghai", "TotalCount": 0}
                ]},
                {"ResourceType": "cdn", "BindResourceRegionResult": [{"Region": "", "TotalCount": "1"}]},
                {"ResourceType": "waf", "BindResourceRegionResult": []}
            ]
        });
        let BindQuery::Ready(bound) = decode_bind_result(&result).unwrap() else {
            panic!("not ready");
        };
        assert_eq!(bound.total(), 3);
        assert_eq!(bound.counts.len(), 2);
        assert_eq!(bound.counts["clb"]["ap-guangzhou"], 2);
        assert_eq!(bound.counts["cdn"][""], 1);
        assert_eq!(
            decode_bind_result(&json!({"TaskId": "t1", "Status": 0})).unwrap(),
            BindQuery::Pending
        );
        assert!(matches!(
            decode_bind_result(&json!({"Status": 2, "Error": {"Code": "X", "Message": "m"}})).unwrap(),
            BindQuery::Failed { code: Some(c), .. } if c == "X"
        ));
    }

    #[test]
    fn record_pages_read_groups_and_states() {
        let response = json!({
            "RecordDetailList": [
                {"ResourceType": "clb", "List": [
                    {"Id": 1, "Region": "ap-guangzhou", "Status": 1, "InstanceId": "lb-1"},
                    {"Id": 2, "Region": "ap-guangzhou", "Status": 2, "ErrorMsg": "listener gone"}
                ]},
                {"ResourceType": "cdn", "List": [{"Id": 3, "ResourceType": "cdn", "Status": 3, "Domains": ["a.example"]}]}
            ]
        });
        let mut details = Vec::new();
        assert_eq!(decode_record_page(&response, &mut details), 3);
        assert_eq!(details[0].state, DeployState::Succeeded);
        assert_eq!(details[1].error_msg.as_deref(), Some("listener gone"));
        assert_eq!(details[1].resource_type, "clb");
        assert_eq!(details[2].state, DeployState::Running);
        assert_eq!(details[2].domains, vec!["a.example"]);
        assert!(!DeployState::Running.is_final());
        assert!(DeployState::Failed.is_final());
        assert_eq!(DeployState::from_code(9), DeployState::Unknown(9));
    }
}
