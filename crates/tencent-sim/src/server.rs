//! The simulator's HTTP surface: Tencent API 3.0 on `POST /`, plus `/_sim/*` control endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use super::auth::{self, IncomingRequest};
use super::catalog::CertificateSpec;
use super::listing::{self, ListQuery};
use super::manage::{ControlError, RenewRequest};
use super::state::{Fault, Latency, SimCertificate, SimState, Stats};
use super::sts::{self, SimRole};
use tencent_ssl::client::{
    ACTION_DESCRIBE_DETAIL, ACTION_DOWNLOAD, API_VERSION, SERVICE, STATUS_ISSUED, STS_API_VERSION,
};
use tencent_ssl::list::ACTION_DESCRIBE_CERTIFICATES;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", post(api_or_http_fault))
        .route("/healthz", get(|| async { "ok" }))
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(reset_stats))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/latency", post(add_latency))
        .route(
            "/_sim/certificates",
            get(list_certificates).post(add_certificate),
        )
        .route("/_sim/certificates/{id}/renew", post(renew_certificate))
        .route("/_sim/certificates/{id}/expire", post(expire_certificate))
        .route("/_sim/certificates/{id}/status", post(set_status))
        .route("/_sim/roles", post(put_role))
        .route("/_sim/sts/expire", post(expire_issued))
        .merge(super::apply::routes())
        .merge(super::publish::routes())
        .with_state(state)
}

fn request_id() -> String {
    // UUID v4 layout, like Tencent's RequestIds.
    let hex = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

pub(super) fn error_response(code: &str, message: &str) -> Json<Value> {
    Json(json!({
        "Response": {
            "Error": { "Code": code, "Message": message },
            "RequestId": request_id(),
        }
    }))
}

pub(super) fn success_response(mut fields: Value) -> Json<Value> {
    if let Some(object) = fields.as_object_mut() {
        object.insert("RequestId".into(), Value::String(request_id()));
    }
    Json(json!({ "Response": fields }))
}

/// A fault code `HTTP<status>` (e.g. `HTTP503`) is answered with that HTTP status and a plain-text body,
/// as a gateway in front of Tencent's API does; every other answer is the API's JSON.
async fn api_or_http_fault(
    state: State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Json(answer) = api(state, method, uri, headers, body).await;
    let http_status = answer["Response"]["Error"]["Code"]
        .as_str()
        .and_then(|code| code.strip_prefix("HTTP"))
        .and_then(|status| status.parse::<u16>().ok())
        .and_then(|status| StatusCode::from_u16(status).ok())
        .filter(|status| !status.is_success());
    match http_status {
        Some(status) => (status, format!("{status}: injected by the simulator\n")).into_response(),
        None => Json(answer).into_response(),
    }
}

async fn api(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let action_header = headers
        .get("x-tc-action")
        .cloned()
        .unwrap_or_else(|| "-".to_string());
    let incoming = IncomingRequest {
        method: method.as_str(),
        query: uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    if incoming.header("x-tc-version") == Some(STS_API_VERSION) {
        let (action, answer) = sts::handle(&state, &incoming);
        return match answer {
            Ok(fields) => {
                state.record(&action, "Success", None);
                success_response(fields)
            }
            Err((code, message)) => {
                state.record(&action, code, None);
                error_response(code, &message)
            }
        };
    }
    let caller = match auth::authenticate_for(
        &incoming,
        &|id| state.account(id),
        state.now(),
        SERVICE,
        API_VERSION,
    ) {
        Ok(caller) => caller,
        Err(rejection) => {
            state.record(&action_header, rejection.code, None);
            return error_response(rejection.code, &rejection.message);
        }
    };
    if state.issued_expired(&caller.secret_id) == Some(true) {
        state.record(&caller.action, "AuthFailure.TokenFailure", None);
        return error_response(
            "AuthFailure.TokenFailure",
            "The temporary credentials have expired; request new ones from STS.",
        );
    }
    state.record_caller(&caller.secret_id);
    let action = caller.action.as_str();
    let params: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            state.record(action, "InvalidParameter", None);
            return error_response("InvalidParameter", "The request body is not a JSON object.");
        }
    };
    if !state.admit(&caller.secret_id, action) {
        state.record(action, "RequestLimitExceeded", None);
        return error_response(
            "RequestLimitExceeded",
            "Your current request times equals to `limit`, please retry later.",
        );
    }
    super::apply::advance(&state);
    if action == tencent_ssl::apply::ACTION_APPLY_CERTIFICATE {
        let answer = super::apply::apply_certificate(state.clone(), params).await;
        let answer = respond(&state, action, answer);
        super::apply::answer_delay(&state).await;
        return answer;
    }
    if action == ACTION_DESCRIBE_CERTIFICATES {
        return describe_certificates(&state, &params).await;
    }
    if let Some(answer) = super::publish::handle(&state, action, &params).await {
        return answer;
    }
    if action != ACTION_DOWNLOAD && action != ACTION_DESCRIBE_DETAIL {
        state.record(action, "InvalidAction", None);
        return error_response(
            "InvalidAction",
            &format!("The action `{action}` is not supported by the simulator."),
        );
    }
    let certificate_id = match params.get("CertificateId") {
        None | Some(Value::Null) => {
            state.record(action, "MissingParameter", None);
            return error_response(
                "MissingParameter",
                "The request is missing a required parameter `CertificateId`.",
            );
        }
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(_) => {
            state.record(action, "InvalidParameter", None);
            return error_response(
                "InvalidParameter",
                "The parameter `CertificateId` must be a non-empty string.",
            );
        }
    };
    let delay = state.latency_for(&certificate_id);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = state.take_fault(&certificate_id) {
        state.record(action, &code, Some(&certificate_id));
        return error_response(&code, "Injected by the simulator.");
    }
    let Some(certificate) = state.certificate(&certificate_id) else {
        state.record(
            action,
            "FailedOperation.CertificateNotFound",
            Some(&certificate_id),
        );
        return error_response(
            "FailedOperation.CertificateNotFound",
            "Certificate does not exist.",
        );
    };
    let answer = if action == ACTION_DOWNLOAD {
        download(&certificate)
    } else {
        Ok(super::apply::detail_fields(
            &state,
            &certificate,
            detail(&certificate),
        ))
    };
    match answer {
        Ok(fields) => {
            state.record(action, "Success", Some(&certificate_id));
            success_response(fields)
        }
        Err((code, message)) => {
            state.record(action, code, Some(&certificate_id));
            error_response(code, message)
        }
    }
}

/// Records and shapes an answer of the actions handled in other modules.
fn respond(
    state: &SimState,
    action: &str,
    answer: Result<Value, super::apply::Refusal>,
) -> Json<Value> {
    match answer {
        Ok(fields) => {
            state.record(action, "Success", None);
            success_response(fields)
        }
        Err((code, message)) => {
            state.record(action, &code, None);
            error_response(&code, &message)
        }
    }
}

/// `DescribeCertificates`. Faults and latencies registered for `*` or for the action name apply.
async fn describe_certificates(state: &SimState, params: &Value) -> Json<Value> {
    let action = ACTION_DESCRIBE_CERTIFICATES;
    let query = match ListQuery::parse(params) {
        Ok(query) => query,
        Err((code, message)) => {
            state.record(action, code, None);
            return error_response(code, &message);
        }
    };
    let delay = state.latency_for(action);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = state.take_fault(action) {
        state.record(action, &code, None);
        return error_response(&code, "Injected by the simulator.");
    }
    let (total, certificates) = listing::describe_certificates(state, &query);
    state.record(action, "Success", None);
    success_response(json!({ "TotalCount": total, "Certificates": certificates }))
}

fn download(certificate: &SimCertificate) -> Result<Value, (&'static str, &'static str)> {
    if certificate.status != STATUS_ISSUED {
        return Err((
            "FailedOperation.InvalidCertificateStatusCode",
            "The certificate status does not allow this operation.",
        ));
    }
    Ok(json!({
        "Content": base64::engine::general_purpose::STANDARD.encode(&certificate.zip),
        "ContentType": "application/zip",
    }))
}

/// Tencent's `YYYY-MM-DD HH:MM:SS` in UTC+8.
pub(super) fn tencent_time(timestamp: Option<jiff::Timestamp>) -> Value {
    timestamp
        .map(|t| {
            let beijing = t.to_zoned(jiff::tz::Offset::constant(8).to_time_zone());
            Value::String(beijing.strftime("%Y-%m-%d %H:%M:%S").to_string())
        })
        .unwrap_or(Value::Null)
}

pub(super) fn status_name(status: i64) -> &'static str {
    match status {
        0 => "审核中",
        1 => "已通过",
        2 => "审核失败",
        3 => "已过期",
        7 => "已取消",
        10 => "已吊销",
        11 => "重颁发中",
        _ => "未知",
    }
}

fn detail(certificate: &SimCertificate) -> Value {
    json!({
        "CertificateId": certificate.id,
        "Status": certificate.status,
        "StatusName": status_name(certificate.status),
        "Domain": certificate.domain,
        "SubjectAltName": certificate.subject_alt_names,
        "CertificateType": "SVR",
        "From": certificate.from,
        "CertBeginTime": tencent_time(certificate.not_before),
        "CertEndTime": tencent_time(certificate.not_after),
        "CertFingerprint": certificate.fingerprint_sha1,
        "InsertTime": tencent_time(Some(certificate.inserted_at)),
        "ProjectId": certificate.project_id.to_string(),
        "Alias": certificate.alias,
        "RenewAble": false,
        "Deployable": true,
        "HostingStatus": if certificate.links.hosting_renew_cert_id.is_some() { 10 } else { -1 },
        "HostingRenewCertId": certificate.links.hosting_renew_cert_id,
        "Tags": certificate
            .tags
            .iter()
            .map(|(key, value)| json!({"TagKey": key, "TagValue": value}))
            .collect::<Vec<_>>(),
        "CertificateExtra": certificate_extra(certificate),
    })
}

/// `CertificateExtra`, with the renewal and reissue links.
pub(super) fn certificate_extra(certificate: &SimCertificate) -> Value {
    let links = &certificate.links;
    json!({
        "DomainNumber": (1 + certificate.subject_alt_names.len()).to_string(),
        "RenewOrder": links.renew_order,
        "OriginCertificateId": links.origin_certificate_id,
        "ReplacedBy": links.replaced_by,
        "ReplacedFor": links.replaced_for,
        "ServiceRenewCertificateId": links.service_renew_certificate_id,
        "ServiceOriginCertificateId": links.service_origin_certificate_id,
        "SMCert": 0,
        "CompanyType": 0,
    })
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<Stats> {
    Json(state.stats())
}

async fn put_role(State(state): State<Arc<SimState>>, Json(role): Json<SimRole>) -> Json<Value> {
    state.put_role(role);
    Json(json!({"ok": true}))
}

async fn expire_issued(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.expire_issued();
    Json(json!({"ok": true}))
}

async fn reset_stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.reset_stats();
    Json(json!({"ok": true}))
}

async fn add_fault(State(state): State<Arc<SimState>>, Json(fault): Json<Fault>) -> Json<Value> {
    state.add_fault(fault);
    Json(json!({"ok": true}))
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    state.clear_faults();
    Json(json!({"ok": true}))
}

async fn add_latency(
    State(state): State<Arc<SimState>>,
    Json(latency): Json<Latency>,
) -> Json<Value> {
    state.add_latency(latency);
    Json(json!({"ok": true}))
}

async fn list_certificates(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "CertificateIds": state.certificate_ids() }))
}

type ControlAnswer = (StatusCode, Json<Value>);

/// Runs a certificate change on a blocking thread (generation is CPU work) and answers with the changed
/// certificate as a `DescribeCertificates` item.
async fn control(
    state: Arc<SimState>,
    change: impl FnOnce(&SimState) -> Result<SimCertificate, ControlError> + Send + 'static,
) -> ControlAnswer {
    let done = tokio::task::spawn_blocking(move || {
        change(&state).map(|certificate| listing::item(&certificate))
    })
    .await;
    let failure = |status: StatusCode, message: String| (status, Json(json!({ "error": message })));
    match done {
        Ok(Ok(item)) => (StatusCode::OK, Json(item)),
        Ok(Err(err @ ControlError::NotFound(_))) => failure(StatusCode::NOT_FOUND, err.to_string()),
        Ok(Err(err @ ControlError::Duplicate(_))) => failure(StatusCode::CONFLICT, err.to_string()),
        Ok(Err(err @ ControlError::Invalid(_))) => {
            failure(StatusCode::BAD_REQUEST, err.to_string())
        }
        Ok(Err(err @ ControlError::Catalog(_))) => {
            failure(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
        Err(join) => failure(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()),
    }
}

fn json_body(body: &Bytes) -> Result<Option<Value>, ControlAnswer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("the body is not JSON: {e}") })),
        )
    })
}

fn bad_request(message: String) -> ControlAnswer {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message })))
}

/// `POST /_sim/certificates`: a spec as a CLI string or an object (see `CertificateSpec::from_json`).
async fn add_certificate(State(state): State<Arc<SimState>>, body: Bytes) -> ControlAnswer {
    let spec = match json_body(&body) {
        Ok(Some(value)) => CertificateSpec::from_json(&value),
        Ok(None) => Err("a certificate spec is required".to_string()),
        Err(answer) => return answer,
    };
    match spec {
        Ok(spec) => control(state, move |state| state.add_certificate(&spec)).await,
        Err(message) => bad_request(message),
    }
}

/// `POST /_sim/certificates/{id}/renew` with an optional `RenewRequest` body.
async fn renew_certificate(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ControlAnswer {
    let request = match json_body(&body) {
        Ok(None) => RenewRequest::default(),
        Ok(Some(value)) => match serde_json::from_value(value) {
            Ok(request) => request,
            Err(e) => return bad_request(format!("bad renew request: {e}")),
        },
        Err(answer) => return answer,
    };
    control(state, move |state| state.renew_certificate(&id, &request)).await
}

/// `POST /_sim/certificates/{id}/expire`.
async fn expire_certificate(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
) -> ControlAnswer {
    control(state, move |state| state.expire_certificate(&id)).await
}

/// `POST /_sim/certificates/{id}/status` with `{"status": N}`.
async fn set_status(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ControlAnswer {
    let status = match json_body(&body) {
        Ok(Some(value)) => value.get("status").and_then(Value::as_i64),
        Ok(None) => None,
        Err(answer) => return answer,
    };
    match status {
        Some(status) => {
            control(state, move |state| {
                state.set_certificate_status(&id, status)
            })
            .await
        }
        None => bad_request("expected {\"status\": N}".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, request_id());
    }

    #[test]
    fn detail_times_are_rendered_in_beijing_time() {
        let t: jiff::Timestamp = "2024-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(tencent_time(Some(t)), json!("2025-01-01 07:59:59"));
        assert_eq!(tencent_time(None), Value::Null);
    }
}
