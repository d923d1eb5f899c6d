//! Bound resources, `UpdateCertificateInstance` and its deploy records in the simulator (see [`super`]).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::super::server::tencent_time;
use super::super::state::SimState;
use super::{
    Answer, Binding, DEPLOY_FAILED, DEPLOY_PENDING, DEPLOY_RUNNING, DEPLOY_SUCCEEDED, DeployDetail,
    DeployRecord, Inner, MAX_DETAIL_LIMIT, MAX_IDS, REGIONAL_TYPES, RESOURCE_TYPES, Refusal,
    check_known, loose_u64, object, refuse, required_string, string_list,
};

pub(super) fn bind_task(state: &SimState, params: &Value) -> Answer {
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

pub(super) fn bind_result(state: &SimState, params: &Value) -> Answer {
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

pub(super) fn update_instance(state: &SimState, params: &Value) -> Answer {
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

pub(super) fn record_detail(state: &SimState, params: &Value) -> Answer {
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

pub(super) fn record_retry(state: &SimState, params: &Value) -> Answer {
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
