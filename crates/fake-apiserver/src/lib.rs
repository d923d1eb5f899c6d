//! An in-process fake Kubernetes API server for tests.
//!
//! A real HTTP server on `127.0.0.1` speaking the Kubernetes REST API generically (any group, version and
//! resource), so `kube::Client` and a real operator binary (through a kubeconfig) talk to it as to a
//! cluster. It emulates what an operator notices: resourceVersions and optimistic concurrency, watches
//! with history and `410 Expired`, selectors, the patch types, server-side apply with field ownership,
//! status subresources, generation, finalizers, garbage collection, PartialObjectMetadata, validation of
//! names/labels/Secrets, and Kubernetes `Status` errors. The store can be inspected without HTTP. For
//! kubectl (the demo's embedded cluster): optional HTTPS with a bearer token, discovery of the built-in kinds
//! from the start (`builtin.rs`) and of CRDs with their short names, OpenAPI v3 (and JSON v2) documents so
//! that `kubectl apply` validates (`openapi.rs`), `fieldValidation=Strict` against a CRD's schema
//! (`schema.rs`), the protobuf bodies of `kubectl create namespace|secret|configmap` (`protobuf.rs`), Table
//! output from a CRD's printer columns and the usual columns of Secrets, Events, Namespaces, ConfigMaps and
//! Ingresses (`printers.rs`), namespaces created `Active` and deleted with their contents, and core `v1`
//! events that include the `events.k8s.io/v1` ones (`kubectl describe`).
//!
//! `TokenReview`/`SubjectAccessReview` answer from [`Builder::token_user`] and
//! [`Builder::allow_non_resource`] (non-resource URLs only).
//!
//! Not emulated (only a real cluster shows these): RBAC (the bearer token is all-or-nothing), other
//! authentication, and admission webhooks; CRD schema types, CEL,
//! defaulting and pruning (only undeclared fields are refused, with `fieldValidation=Strict`), the fields of
//! built-in kinds; version conversion (objects are stored once per resource);
//! namespace existence (objects may be created in any namespace) and the `Terminating` phase (a deleted
//! namespace goes at once, then its contents);
//! `listType=map|set` list merging in SSA and strategic merge patch (lists are atomic); foreground deletion
//! (treated as background); consistent-snapshot list pagination and `resourceVersionMatch=Exact` on old
//! versions (lists always serve the latest state); watch-cache lag, API priority and fairness (429s come
//! only from `fail_next`); protobuf other than those creates, CBOR, Table output for other built-in kinds
//! (kubectl prints NAME and AGE for them); persistence (everything lives in memory and goes with the server).
//!
//! The server runs on the caller's tokio runtime: a test that blocks its thread (e.g. waiting on a child
//! process with `std::process`) starves it on a current-thread runtime; use `tokio::process` or
//! `#[tokio::test(flavor = "multi_thread")]`.
//!
//! ```no_run
//! # async fn demo() {
//! let server = fake_apiserver::FakeApiServer::builder()
//!     .status_subresource("tencentcert.io", "tencentcertificates")
//!     .start()
//!     .await;
//! let client = server.client();
//! # let _ = client;
//! assert!(server.object("", "v1", "secrets", Some("default"), "tls").is_none());
//! # }
//! ```

mod builtin;
mod events;
mod gc;
mod negotiate;
mod openapi;
mod patch;
mod paths;
mod printers;
mod protobuf;
mod reviews;
mod schema;
mod selectors;
mod server;
mod ssa;
mod status;
mod store;
mod table;
mod tls;
mod validation;
mod watch;

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

pub use status::ApiError;
pub use tls::TlsIdentity;

use server::{Fault, Interleaved, Shared};
use store::{GcQueue, Op, ResKey, State};

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string, without `?`.
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// `""` for the core API, and for non-resource paths.
    pub group: String,
    /// `""` for non-resource paths (`/version`, discovery).
    pub plural: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The request body as text (lossy for non-UTF-8 bytes).
    pub body: String,
}

/// Options for [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    status_subresources: Vec<(String, String)>,
    garbage_collection: bool,
    gc_delay: Duration,
    history_limit: usize,
    bookmark_interval: Duration,
    tls: Option<TlsIdentity>,
    token: Option<String>,
    reviews: reviews::Reviews,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            status_subresources: Vec::new(),
            garbage_collection: true,
            gc_delay: Duration::from_millis(20),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(10),
            tls: None,
            token: None,
            reviews: reviews::Reviews::default(),
        }
    }
}

impl Builder {
    /// Gives a resource a `/status` subresource (built-in kinds that have one, and CRDs created through the
    /// server that declare one, get it automatically).
    pub fn status_subresource(mut self, group: &str, plural: &str) -> Self {
        self.status_subresources
            .push((group.to_string(), plural.to_string()));
        self
    }

    /// Background garbage collection of dependents (on by default).
    pub fn garbage_collection(mut self, enabled: bool) -> Self {
        self.garbage_collection = enabled;
        self
    }

    /// How long after an owner goes the GC acts (default 20 ms).
    pub fn gc_delay(mut self, delay: Duration) -> Self {
        self.gc_delay = delay;
        self
    }

    /// Watch events retained for resuming watches (default 10 000); older resourceVersions get `410 Expired`.
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// Interval of BOOKMARK events on watches that allow them (default 10 s; the real server's is ~1 min).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Serve HTTPS with this identity instead of plain HTTP.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Require `Authorization: Bearer TOKEN` on every request; others get `401 Unauthorized`. This is the
    /// only authentication: any holder of the token may do anything (there is no RBAC).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// TokenReviews of `token` authenticate it as `username` in `groups` (any other token: not
    /// authenticated). Reviews are answered, not stored.
    pub fn token_user(mut self, token: &str, username: &str, groups: &[&str]) -> Self {
        self.reviews.users.insert(
            token.to_string(),
            (
                username.to_string(),
                groups.iter().map(|g| g.to_string()).collect(),
            ),
        );
        self
    }

    /// SubjectAccessReviews allow `username` to `verb` the non-resource URL `path` (everything else is
    /// refused; resource attributes are not emulated).
    pub fn allow_non_resource(mut self, username: &str, path: &str, verb: &str) -> Self {
        self.reviews.non_resource.insert((
            username.to_string(),
            path.to_string(),
            verb.to_string(),
        ));
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving on the current tokio runtime.
    ///
    /// # Panics
    /// If no loopback port can be bound, which leaves a test nothing to run against, or the TLS identity is
    /// unusable; [`Self::try_start`] reports these instead.
    pub async fn start(self) -> FakeApiServer {
        match self.try_start().await {
            Ok(server) => server,
            Err(err) => panic!("fake API server: {err}"),
        }
    }

    /// [`Self::start`], with failures as errors (for callers outside tests, such as the demo).
    pub async fn try_start(self) -> Result<FakeApiServer, String> {
        let tls_config = match &self.tls {
            Some(identity) => Some(tls::server_config(identity)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("bound listener has no address: {e}"))?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let tracker = Arc::new(gc::GcTracker {
            pending: Arc::new(AtomicUsize::new(0)),
            idle: Notify::new(),
        });
        let (gc_tx, gc_rx) = tokio::sync::mpsc::unbounded_channel();
        let queue = self.garbage_collection.then(|| GcQueue {
            tx: gc_tx,
            pending: tracker.pending.clone(),
        });
        let mut state = State::new(self.history_limit, queue);
        for (group, plural) in &self.status_subresources {
            state.set_status_subresource(group, plural);
        }
        let (outages, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            interleaved: Mutex::new(Vec::new()),
            shutdown: shutdown_rx.clone(),
            outages,
            outage_length: Mutex::new(Duration::ZERO),
            bookmark_interval: self.bookmark_interval.max(Duration::from_millis(10)),
            address: address.to_string(),
            token: self.token.clone(),
            reviews: self.reviews.clone(),
        });
        if self.garbage_collection {
            tokio::spawn(gc::run(
                shared.clone(),
                tracker.clone(),
                gc_rx,
                self.gc_delay,
            ));
        }
        let app = server::router(shared.clone());
        let stop = shutdown_rx;
        let serving = shared.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(bound) = listener.take() else { break };
                let mut outage = serving.outages.subscribe();
                let mut stopped = stop.clone();
                // Resolves when the server is dropped (the sender goes away), or an outage begins.
                let until = async move {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = outage.changed() => {}
                    }
                };
                // An accept-loop failure ends the server; requests then fail with connection errors, which
                // is what the test would see from a dead API server.
                match &tls_config {
                    Some(config) => {
                        let tls = tls::TlsListener::new(bound, config.clone());
                        let _ = axum::serve(tls, app.clone())
                            .with_graceful_shutdown(until)
                            .await;
                    }
                    None => {
                        let _ = axum::serve(bound, app.clone())
                            .with_graceful_shutdown(until)
                            .await;
                    }
                }
                if stop.has_changed().unwrap_or(true) {
                    break;
                }
                // An outage: nothing listens for its length; then the same address again, with a fresh
                // watch cache (old resourceVersions answer 410, as after a real restart).
                let length = *serving
                    .outage_length
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                tokio::time::sleep(length).await;
                serving.state().compact_all();
                for _ in 0..100 {
                    if let Ok(bound) = tokio::net::TcpListener::bind(address).await {
                        listener = Some(bound);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(FakeApiServer {
            shared,
            url: format!("{scheme}://{address}"),
            tls: self.tls,
            token: self.token,
            tracker,
            _shutdown: shutdown_tx,
        })
    }
}

/// Creates (or truncates) a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// A running fake API server. Dropping it stops the server, its watches and its garbage collector.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    url: String,
    tls: Option<TlsIdentity>,
    token: Option<String>,
    tracker: Arc<gc::GcTracker>,
    /// Dropped with the server: every shutdown receiver then wakes.
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl FakeApiServer {
    /// A server with default options.
    pub async fn start() -> FakeApiServer {
        Builder::default().start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The API server goes away for `length` — open connections and watches are cut, new connections are
    /// refused — and comes back on the same address with a fresh watch cache. Returns once it answers.
    pub async fn outage(&self, length: Duration) {
        *self
            .shared
            .outage_length
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = length;
        self.shared.outages.send_modify(|n| *n += 1);
        tokio::time::sleep(length).await;
        let address = self.shared.address.clone();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`Builder::tls`]).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A `kube::Client` for this server, default namespace `default`. Call it inside a tokio runtime (the
    /// client spawns its request buffer there).
    ///
    /// # Panics
    /// If the client cannot be built (an unusable TLS identity).
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(client) => client,
            Err(err) => panic!("fake API server client: {err}"),
        }
    }

    /// [`Self::client`], with failures as errors.
    pub fn try_client(&self) -> Result<kube::Client, String> {
        kube::Client::try_from(self.config()?).map_err(|e| e.to_string())
    }

    /// The client configuration behind [`Self::client`], to build a client with layers of one's own.
    pub fn config(&self) -> Result<kube::Config, String> {
        let uri = self.url.parse().map_err(|e| format!("server URL: {e}"))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_string();
        if let Some(identity) = &self.tls {
            config.root_cert = Some(identity.ca_der()?);
        }
        if let Some(token) = &self.token {
            config.auth_info.token = Some(token.clone().into());
        }
        Ok(config)
    }

    /// Writes a kubeconfig (context `fake`, namespace `default`) pointing at [`Self::url`], with the CA
    /// and bearer token when the server has them. The file is created with mode 0600 (it may hold a token).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        self.write_kubeconfig_named(path, "fake")
    }

    /// [`Self::write_kubeconfig`] with this cluster, user and context name.
    pub fn write_kubeconfig_named(&self, path: &Path, name: &str) -> std::io::Result<()> {
        use base64::Engine as _;
        let ca = match &self.tls {
            Some(identity) => format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(&identity.ca_pem)
            ),
            None => String::new(),
        };
        let user = match &self.token {
            Some(token) => format!("\n    token: {token}"),
            None => " {}".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}{ca}\n\
             contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n\
             current-context: {name}\nusers:\n- name: {name}\n  user:{user}\npreferences: {{}}\n",
            url = self.url
        );
        write_private(path, text.as_bytes())
    }

    /// One stored object as the API would return it (`version` is not checked: objects are stored once per
    /// resource, not per version).
    pub fn object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let _ = version;
        let state = self.shared.state();
        state
            .get(
                &ResKey::new(group, plural),
                namespace.unwrap_or_default(),
                name,
            )
            .map(State::render)
    }

    /// The objects of a resource in a namespace (`None`: all namespaces, or a cluster-scoped resource),
    /// ordered by namespace and name.
    pub fn objects(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let _ = version;
        let state = self.shared.state();
        state
            .list(&ResKey::new(group, plural), namespace)
            .into_iter()
            .map(State::render)
            .collect()
    }

    /// How many objects of a resource (all namespaces) satisfy `matches`, read in place: no copy and no
    /// `managedFields` rendered, so that a benchmark polling 20,000 objects does not hold the state lock
    /// (and stall the server) for as long as [`FakeApiServer::objects`] would.
    pub fn count(&self, group: &str, plural: &str, matches: impl Fn(&Value) -> bool) -> usize {
        let state = self.shared.state();
        state
            .list(&ResKey::new(group, plural), None)
            .into_iter()
            .filter(|stored| matches(&stored.value))
            .count()
    }

    /// Stores an object without HTTP, through the same create path as a POST (validation, uid, generation,
    /// resourceVersion, watch event; field manager `fake-apiserver`).
    pub fn create(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let op = Op {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            manager: "fake-apiserver".to_string(),
            ..Op::default()
        };
        let mut state = self.shared.state();
        state.check_scope(&op, false)?;
        state.create(&op, object)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().resource_version()
    }

    /// Requests with this HTTP method (case-insensitive) to this resource, subresources included.
    pub fn request_count(&self, method: &str, plural: &str) -> u64 {
        let log = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.plural == plural)
            .count() as u64
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers the next `times` requests with this method to this resource (`"*"`: any resource) with a
    /// Kubernetes `Status` error of HTTP `status` and its usual reason. Note that kube clients retry 429,
    /// 503 and 504 by themselves (up to 15 times with backoff), so such faults are invisible to the
    /// caller unless injected more often than that.
    pub fn fail_next(&self, method: &str, plural: &str, status: u16, times: u32) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.push(Fault {
            method: method.to_string(),
            plural: plural.to_string(),
            status,
            remaining: times,
        });
    }

    /// Creates `object` (as [`FakeApiServer::create`] does) just before the next write (POST, PUT, PATCH or
    /// DELETE) to `plural` is handled: another writer that wins the race between a client's read and its
    /// write.
    pub fn create_before_next_write(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        object: Value,
    ) {
        let op = Op {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            manager: "fake-apiserver".to_string(),
            ..Op::default()
        };
        self.shared
            .interleaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Interleaved {
                plural: plural.to_string(),
                op,
                object,
            });
    }

    /// Waits until the garbage collector has no queued or running work (returns at once with GC off).
    pub async fn wait_for_gc(&self) {
        self.tracker.settled().await;
    }
}
