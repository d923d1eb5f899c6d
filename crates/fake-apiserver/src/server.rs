//! The HTTP layer: one axum fallback handler that records the request, injects faults, negotiates the
//! response shape and dispatches verbs to the store.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::RecordedRequest;
use crate::negotiate::{self, Shape};
use crate::patch::PatchKind;
use crate::paths::{self, ResourcePath, Target};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{DeleteOpts, Deleted, Op, ResKey, State};
use crate::table;
use crate::watch::{self, WatchSpec};

/// The real server's request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Watches without `timeoutSeconds` last this long on the real server (`--min-request-timeout`).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A pending injected fault.
pub struct Fault {
    pub method: String,
    pub plural: String,
    pub status: u16,
    pub remaining: u32,
}

/// An object stored just before the next write (POST, PUT, PATCH, DELETE) to `plural` is handled: a
/// concurrent writer winning the race between a client's read and its write.
pub struct Interleaved {
    pub plural: String,
    pub op: Op,
    pub object: Value,
}

/// Everything the handler and the public API share.
pub struct Shared {
    pub state: Mutex<State>,
    pub log: Mutex<Vec<RecordedRequest>>,
    pub faults: Mutex<Vec<Fault>>,
    pub interleaved: Mutex<Vec<Interleaved>>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Bumped by [`crate::FakeApiServer::outage`]: the server stops serving and its watches end.
    pub outages: tokio::sync::watch::Sender<u64>,
    /// How long the current outage lasts.
    pub outage_length: Mutex<Duration>,
    pub bookmark_interval: Duration,
    pub address: String,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// What TokenReviews and SubjectAccessReviews answer.
    pub reviews: crate::reviews::Reviews,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock must not cascade into every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: u16, value: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

/// Whether the request carries `Authorization: Bearer TOKEN`, compared without an early exit.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_json())
}

/// Query parameters, percent-decoded (`+` is a space, as in form encoding, which is what kube sends).
fn parse_query(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len()
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit() =>
                {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(token) = &shared.token
        && !bearer_matches(&parts.headers, token)
    {
        return error_response(&ApiError::for_code(401, "Unauthorized"));
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::for_code(
                413,
                "the request body is too large (limit 3 MiB)",
            ));
        }
    };
    let path = parts.uri.path().to_string();
    let query = Query(parse_query(parts.uri.query().unwrap_or_default()));
    let target = paths::parse(&path);
    record(
        &shared,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &target,
        &body,
    );

    let resource = match target {
        Ok(Target::Resource(r)) => r,
        Ok(other) => {
            let accept = parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            return discovery(&shared, other, accept);
        }
        Err(e) => return error_response(&e),
    };
    run_interleaved(&shared, parts.method.as_str(), &resource.plural);
    if let Some(code) = take_fault(&shared, parts.method.as_str(), &resource.plural) {
        return error_response(&ApiError::for_code(
            code,
            format!("injected fault for {} {}", parts.method, resource.plural),
        ));
    }
    if parts.method == Method::POST
        && let Some(answer) = shared
            .reviews
            .answer(&resource.group, &resource.plural, &body)
    {
        return match answer {
            Ok(review) => json_response(201, &review),
            Err(e) => error_response(&e),
        };
    }
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ctx = Ctx {
        shared,
        resource,
        query,
        accept,
        content_type,
        default_manager: default_manager(user_agent),
        body,
    };
    match dispatch(&ctx, &parts.method) {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

/// The real server's default field manager: the user agent up to its first `/`.
fn default_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or_default().trim();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix.chars().take(128).collect()
    }
}

fn record(
    shared: &Shared,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    target: &Result<Target, ApiError>,
    body: &Bytes,
) {
    let r = match target {
        Ok(Target::Resource(r)) => Some(r),
        _ => None,
    };
    let header = |h| {
        headers
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let entry = RecordedRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        group: r.map(|r| r.group.clone()).unwrap_or_default(),
        plural: r.map(|r| r.plural.clone()).unwrap_or_default(),
        subresource: r.and_then(|r| r.subresource.clone()),
        namespace: r.and_then(|r| r.namespace.clone()),
        name: r.and_then(|r| r.name.clone()),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(entry);
}

fn run_interleaved(shared: &Shared, method: &str, plural: &str) {
    if !matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") {
        return;
    }
    let pending = {
        let mut interleaved = shared.interleaved.lock().unwrap_or_else(|p| p.into_inner());
        match interleaved.iter().position(|i| i.plural == plural) {
            Some(at) => interleaved.remove(at),
            None => return,
        }
    };
    let mut state = shared.state();
    // The test chose the object; a refusal is its own mistake, shown where it looks.
    if let Err(err) = state.create(&pending.op, pending.object) {
        eprintln!("fake-apiserver: the interleaved create failed: {err:?}");
    }
}

fn take_fault(shared: &Shared, method: &str, plural: &str) -> Option<u16> {
    let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let fault = faults.iter_mut().find(|f| {
        f.remaining > 0
            && f.method.eq_ignore_ascii_case(method)
            && (f.plural == plural || f.plural == "*")
    })?;
    fault.remaining -= 1;
    let status = fault.status;
    faults.retain(|f| f.remaining > 0);
    Some(status)
}

struct Ctx {
    shared: Arc<Shared>,
    resource: ResourcePath,
    query: Query,
    accept: Option<String>,
    content_type: String,
    default_manager: String,
    body: Bytes,
}

impl Ctx {
    fn op(&self, manager_required: bool) -> Op {
        let r = &self.resource;
        let manager = match self.query.get("fieldManager") {
            Some(m) => m.to_string(),
            None if manager_required => String::new(),
            None => self.default_manager.clone(),
        };
        Op {
            group: r.group.clone(),
            version: r.version.clone(),
            plural: r.plural.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            subresource: r.subresource.clone(),
            manager,
            force: self.query.flag("force"),
            dry_run: self.query.get("dryRun") == Some("All"),
            strict: self.query.get("fieldValidation") == Some("Strict"),
        }
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        if crate::protobuf::is_protobuf(&self.content_type) {
            return crate::protobuf::decode(&self.body);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
    }

    fn shape(&self, list: bool) -> Result<Shape, ApiError> {
        negotiate::shape(self.accept.as_deref(), list, false)
    }

    /// The shape of a read that can answer with a Table, and the columns when it does.
    fn read_shape(&self, list: bool) -> Result<(Shape, Option<table::Columns>), ApiError> {
        let r = &self.resource;
        let columns = if r.subresource.is_none() {
            table::columns(&self.shared.state(), &r.group, &r.plural, &r.version)
        } else {
            None
        };
        let shape = negotiate::shape(self.accept.as_deref(), list, columns.is_some())?;
        Ok((shape, columns.filter(|_| shape == Shape::Table)))
    }

    fn row_object(&self) -> table::RowObject {
        table::RowObject::parse(self.query.get("includeObject"))
    }
}

fn dispatch(ctx: &Ctx, method: &Method) -> Result<Response, ApiError> {
    let r = &ctx.resource;
    let watching = r.legacy_watch || ctx.query.flag("watch");
    if let Some(manager) = ctx.query.get("fieldManager")
        && manager.len() > 128
    {
        return Err(ApiError::unprocessable(
            "fieldManager: Too long: may not be longer than 128 characters",
        ));
    }
    let collection_read = r.name.is_none() && matches!(*method, Method::GET | Method::DELETE);
    ctx.shared
        .state()
        .check_scope(&ctx.op(false), collection_read)?;
    match (method.clone(), r.name.is_some()) {
        (Method::GET, _) if watching => watch_response(ctx),
        (Method::GET, false) => list(ctx),
        (Method::GET, true) => get(ctx),
        (Method::POST, false) => {
            let shape = ctx.shape(false)?;
            let created = ctx
                .shared
                .state()
                .create(&ctx.op(false), ctx.body_json()?)?;
            Ok(json_response(201, &negotiate::shaped(created, shape)))
        }
        (Method::PUT, true) => {
            let shape = ctx.shape(false)?;
            let replaced = ctx
                .shared
                .state()
                .replace(&ctx.op(false), ctx.body_json()?)?;
            Ok(json_response(200, &negotiate::shaped(replaced, shape)))
        }
        (Method::PATCH, true) => patch(ctx),
        (Method::DELETE, true) if r.subresource.is_none() => delete(ctx),
        (Method::DELETE, false) => delete_collection(ctx),
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let r = &ctx.resource;
    let (shape, columns) = ctx.read_shape(false)?;
    if r.subresource.as_deref().is_some_and(|s| s != "status") {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let state = ctx.shared.state();
    let name = r.name.as_deref().unwrap_or_default();
    let stored = state
        .get(
            &ResKey::new(&r.group, &r.plural),
            r.namespace.as_deref().unwrap_or_default(),
            name,
        )
        .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
    let object = State::render(stored);
    if let Some(columns) = columns {
        let metadata = json!({ "resourceVersion": state.resource_version().to_string() });
        let row = table::row(&columns, &object, ctx.row_object());
        return Ok(json_response(
            200,
            &table::table(&columns, vec![row], metadata, true),
        ));
    }
    Ok(json_response(200, &negotiate::shaped(object, shape)))
}

fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let r = &ctx.resource;
    let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        ctx.query.get("fieldSelector").unwrap_or_default(),
        &r.group,
        &r.plural,
    )?;
    Ok((labels, fields))
}

fn list_kind(state: &State, r: &ResourcePath) -> (String, String) {
    let res = ResKey::new(&r.group, &r.plural);
    let kind = state
        .kind_of(&res)
        .map_or_else(|| "List".to_string(), |k| format!("{k}List"));
    (kind, state.api_version_of(&res, &r.api_version()))
}

/// Continue tokens carry the list's resourceVersion and the last key returned.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}\n{ns}\n{name}"))
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    let rv = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    let ns = parts.next().ok_or_else(invalid)?.to_string();
    let name = parts.next().ok_or_else(invalid)?.to_string();
    Ok((rv, ns, name))
}

fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let r = &ctx.resource;
    let (shape, columns) = ctx.read_shape(true)?;
    let (labels, fields) = selectors(ctx)?;
    let limit = match ctx.query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    }
    .filter(|l| *l > 0);
    let state = ctx.shared.state();
    let start = ctx
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(decode_continue)
        .transpose()?;
    if let Some((rv, _, _)) = &start
        && *rv < state.compacted_rv()
    {
        return Err(ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ));
    }
    let mut matching: Vec<(String, String, Value)> = state
        .list(&ResKey::new(&r.group, &r.plural), r.namespace.as_deref())
        .into_iter()
        .map(State::render)
        .chain(if crate::events::is_core_events(&r.group, &r.plural) {
            crate::events::core_view(&state, r.namespace.as_deref())
        } else {
            Vec::new()
        })
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (ns, name, o)
        })
        .collect();
    // Converted events are appended to the stored ones: continue tokens need one order.
    matching.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if let Some((_, ns, name)) = &start {
        matching.retain(|(n, m, _)| (n, m) > (ns, name));
    }
    let rv = state.resource_version();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(limit) = limit
        && matching.len() > limit
    {
        let remaining = matching.len() - limit;
        matching.truncate(limit);
        let (ns, name, _) = matching.last().expect("limit > 0 leaves an item");
        // A continued list resumes at the first page's resourceVersion, as the real server promises.
        let list_rv = start.as_ref().map_or(rv, |(rv, _, _)| *rv);
        metadata["continue"] = Value::String(encode_continue(list_rv, ns, name));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if let Some(columns) = columns {
        let include = ctx.row_object();
        let rows = matching
            .iter()
            .map(|(_, _, o)| table::row(&columns, o, include))
            .collect();
        return Ok(json_response(
            200,
            &table::table(&columns, rows, metadata, true),
        ));
    }
    let items: Vec<Value> = matching
        .into_iter()
        .map(|(_, _, o)| negotiate::shaped(o, shape))
        .collect();
    let (kind, api_version) = match shape {
        Shape::Full | Shape::Table => list_kind(&state, r),
        Shape::Metadata => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
    };
    Ok(json_response(
        200,
        &json!({ "kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items }),
    ))
}

fn watch_response(ctx: &Ctx) -> Result<Response, ApiError> {
    let r = &ctx.resource;
    let (shape, columns) = ctx.read_shape(false)?;
    let (labels, mut fields) = selectors(ctx)?;
    if let Some(name) = &r.name {
        // Watching a named object (deprecated form) is a watch with a name field selector.
        fields = FieldSelector::parse(&format!("metadata.name={name}"), &r.group, &r.plural)?;
    }
    let since = match ctx.query.get("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let send_initial_events = ctx.query.flag("sendInitialEvents");
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    if send_initial_events && !bookmarks {
        return Err(ApiError::unprocessable(
            "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
        ));
    }
    let timeout = match ctx.query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let (kind, api_version) = {
        let state = ctx.shared.state();
        let res = ResKey::new(&r.group, &r.plural);
        (
            state.kind_of(&res).unwrap_or_default(),
            state.api_version_of(&res, &r.api_version()),
        )
    };
    let spec = WatchSpec {
        res: ResKey::new(&r.group, &r.plural),
        namespace: r.namespace.clone(),
        labels,
        fields,
        shape,
        bookmarks,
        send_initial_events,
        since,
        timeout,
        kind,
        api_version,
        table: columns.map(|c| (c, ctx.row_object())),
    };
    let stream = watch::start(ctx.shared.clone(), spec);
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

fn patch(ctx: &Ctx) -> Result<Response, ApiError> {
    let shape = ctx.shape(false)?;
    let kind = PatchKind::from_content_type(&ctx.content_type)?;
    let op = ctx.op(kind == PatchKind::Apply);
    let mut state = ctx.shared.state();
    let existed = state
        .get(
            &ResKey::new(&op.group, &op.plural),
            op.namespace.as_deref().unwrap_or_default(),
            op.name.as_deref().unwrap_or_default(),
        )
        .is_some();
    let patched = state.patch(&op, kind, &ctx.body)?;
    // An apply that creates answers 201, like a POST.
    Ok(json_response(
        if existed { 200 } else { 201 },
        &negotiate::shaped(patched, shape),
    ))
}

fn delete_options(ctx: &Ctx) -> Result<DeleteOpts, ApiError> {
    let body: Value = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        ctx.body_json()?
    };
    let policy = body.get("propagationPolicy").and_then(Value::as_str);
    if let Some(p) = policy
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::unprocessable(format!(
            "propagationPolicy: Unsupported value: {p:?}"
        )));
    }
    let dry_run_body = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOpts {
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        orphan: policy == Some("Orphan")
            || (policy.is_none() && body.get("orphanDependents") == Some(&Value::Bool(true))),
        dry_run: dry_run_body || ctx.query.get("dryRun") == Some("All"),
    })
}

fn delete(ctx: &Ctx) -> Result<Response, ApiError> {
    let shape = ctx.shape(false)?;
    let opts = delete_options(ctx)?;
    let deleted = ctx.shared.state().delete(&ctx.op(false), &opts)?;
    Ok(match deleted {
        Deleted::Object(o) => json_response(200, &negotiate::shaped(o, shape)),
        Deleted::Status(s) => json_response(200, &s),
    })
}

fn delete_collection(ctx: &Ctx) -> Result<Response, ApiError> {
    let r = &ctx.resource;
    let shape = ctx.shape(true)?;
    let opts = delete_options(ctx)?;
    let (labels, fields) = selectors(ctx)?;
    let mut state = ctx.shared.state();
    let res = ResKey::new(&r.group, &r.plural);
    let victims: Vec<Value> = state
        .list(&res, r.namespace.as_deref())
        .into_iter()
        .map(State::render)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    let mut items = Vec::new();
    for victim in victims {
        let mut op = ctx.op(false);
        op.namespace = victim
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        op.name = victim
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        match state.delete(&op, &opts)? {
            Deleted::Object(o) => items.push(negotiate::shaped(o, shape)),
            Deleted::Status(_) => items.push(negotiate::shaped(victim, shape)),
        }
    }
    let (kind, api_version) = match shape {
        Shape::Full | Shape::Table => list_kind(&state, r),
        Shape::Metadata => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
    };
    let metadata = json!({ "resourceVersion": state.resource_version().to_string() });
    Ok(json_response(
        200,
        &json!({ "kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items }),
    ))
}

/// `/version`, `/healthz`, and enough discovery (`/api`, `/apis`, resource lists) for clients that look.
fn discovery(shared: &Shared, target: Target, accept: Option<&str>) -> Response {
    match target {
        Target::OpenApiV3Index => json_response(200, &crate::openapi::v3_index(&shared.state())),
        Target::OpenApiV3 { group, version } => {
            match crate::openapi::v3_document(&shared.state(), &group, &version) {
                Some(document) => json_response(200, &document),
                None => error_response(&ApiError::new(
                    404,
                    "NotFound",
                    format!("no OpenAPI document for {group}/{version}"),
                )),
            }
        }
        Target::OpenApiV2 => match negotiate::shape(accept, false, false) {
            Ok(_) => json_response(200, &crate::openapi::v2_document(&shared.state())),
            Err(_) => error_response(&ApiError::new(
                406,
                "NotAcceptable",
                "this test API server serves /openapi/v2 as application/json only (no protobuf); /openapi/v3 describes every kind",
            )),
        },
        Target::Healthz => (StatusCode::OK, "ok").into_response(),
        Target::Version => json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
                "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        Target::CoreVersions => json_response(
            200,
            &json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": shared.address }],
            }),
        ),
        Target::Groups => {
            let state = shared.state();
            let mut groups: std::collections::BTreeMap<String, Vec<String>> =
                std::collections::BTreeMap::new();
            for (res, info) in state.resources() {
                if res.group.is_empty() {
                    continue;
                }
                let version = info
                    .api_version
                    .rsplit('/')
                    .next()
                    .unwrap_or("v1")
                    .to_string();
                let versions = groups.entry(res.group.clone()).or_default();
                if !versions.contains(&version) {
                    versions.push(version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(name, versions)| {
                    let vs: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                        .collect();
                    json!({ "name": name, "versions": vs, "preferredVersion": vs[0] })
                })
                .collect();
            json_response(
                200,
                &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }),
            )
        }
        Target::Resources { group, version } => {
            let state = shared.state();
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            let mut resources = Vec::new();
            for (res, info) in state.resources() {
                if res.group != group {
                    continue;
                }
                let verbs = [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ];
                let mut resource = json!({
                    "name": res.plural, "singularName": info.singular, "namespaced": info.namespaced.unwrap_or(true),
                    "kind": info.kind.clone().unwrap_or_default(), "verbs": verbs,
                });
                if !info.short_names.is_empty() {
                    resource["shortNames"] = json!(info.short_names);
                }
                if !info.categories.is_empty() {
                    resource["categories"] = json!(info.categories);
                }
                resources.push(resource);
                if info.status_subresource {
                    resources.push(json!({
                        "name": format!("{}/status", res.plural), "singularName": "", "namespaced": info.namespaced.unwrap_or(true),
                        "kind": info.kind.clone().unwrap_or_default(), "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            json_response(
                200,
                &json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
            )
        }
        Target::Resource(_) => {
            error_response(&ApiError::internal("resource requests are not discovery"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&x&bad=%zz%4");
        assert_eq!(q[0], ("labelSelector".into(), "app=web,tier in (a)".into()));
        assert_eq!(q[1], ("watch".into(), "true".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
        assert_eq!(q[3], ("bad".into(), "%zz%4".into()));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(7, "ns", "a/b");
        assert_eq!(decode_continue(&t).unwrap(), (7, "ns".into(), "a/b".into()));
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }

    #[test]
    fn default_manager_is_the_user_agent_prefix() {
        assert_eq!(default_manager("kubectl/v1.33.0 (linux/amd64)"), "kubectl");
        assert_eq!(default_manager(""), "unknown");
    }
}
