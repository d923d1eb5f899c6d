//! A Tencent Cloud SSL API simulator: a real HTTP server that verifies TC3 signatures exactly as Tencent
//! does, serves generated certificates as Tencent-shaped ZIPs, rate-limits, and injects faults. Used by the
//! test suite (in-process, random port), by demos and by benchmarks (`tencent-cert-operator sim`).
//!
//! API actions: `DownloadCertificate`, `DescribeCertificateDetail`, `DescribeCertificates` (filters and
//! pagination, see [`listing`]), `ApplyCertificate` ([`apply`]), and STS's `AssumeRole` and `AssumeRoleWithWebIdentity` ([`sts`]): one
//! process serves both APIs, told apart by `X-TC-Version`, so a client's STS endpoint can be the same URL. Faults and latencies name a certificate id, `*`, or — for the list — the
//! action name `DescribeCertificates`.
//!
//! Control endpoints (JSON): `GET /_sim/stats`, `POST /_sim/stats/reset`, `POST /_sim/faults`
//! (`{"certificate_id","code","remaining","probability"}`; a code `HTTP<status>` such as `HTTP503` answers
//! with that HTTP status instead of a Tencent error), `DELETE /_sim/faults`, `POST /_sim/latency`
//! (`{"certificate_id","millis"}`), `GET /_sim/certificates`, and to change certificates while running
//! (each answers with the certificate as a `DescribeCertificates` item; 404 unknown id, 409 id taken,
//! 400 bad request): `POST /_sim/certificates` (a spec: the CLI string or an object, see
//! [`CertificateSpec::from_json`]), `POST /_sim/certificates/{id}/renew` (optional
//! `{"new_id","status","link":"renew|reissue|hosting|service","valid_days"}`),
//! `POST /_sim/certificates/{id}/expire`, `POST /_sim/certificates/{id}/status` (`{"status": N}`);
//! STS: `POST /_sim/roles` (a [`SimRole`] object: adds or replaces, e.g. to rotate tokens) and
//! `POST /_sim/sts/expire` (every temporary credential issued so far expires now).
//! Publishing (`UploadCertificate`, bound resources, `UpdateCertificateInstance` and its deploy records,
//! `DeleteCertificate`) and its control endpoints: see [`publish`].
//! [`SimState`] has the same operations for in-process tests.
//!
//! `ApplyCertificate` (free certificates and their renewals with `OldCertificateId`) and the domain
//! validation life cycle are in [`apply`], with their control endpoints: `GET /_sim/orders`,
//! `POST /_sim/orders/{id}/validate`, `POST /_sim/orders/{id}/fail` and `GET`/`POST /_sim/apply/settings`.

pub mod apply;
pub mod auth;
pub mod catalog;
pub mod layout;
pub mod listing;
pub mod manage;
pub mod pki;
pub mod publish;
pub mod server;
pub mod state;
pub mod sts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use apply::{ApplySettings, SimOrder};
pub use auth::Account;
pub use catalog::CertificateSpec;
pub use manage::{ControlError, RenewLink, RenewRequest};
pub use publish::{Binding, DeployFault, IssuedPair};
pub use state::{Fault, Latency, SimCertificate, SimLinks, SimState, Stats};
pub use sts::SimRole;

#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    pub accounts: Vec<Account>,
    pub certificates: Vec<CertificateSpec>,
    /// Also serve every `<id>.zip` file of this directory as certificate `<id>`.
    pub zip_dir: Option<PathBuf>,
    /// Requests per second per (SecretId, action); `None` disables rate limiting.
    pub rate_limit: Option<f64>,
    pub faults: Vec<Fault>,
    pub latencies: Vec<Latency>,
    /// Seconds added to the simulator's clock, to provoke `AuthFailure.SignatureExpire`.
    pub clock_offset: i64,
    /// STS roles (`AssumeRole`, `AssumeRoleWithWebIdentity`; see [`sts`]).
    pub roles: Vec<SimRole>,
}

impl SimConfig {
    /// One account (permanent credentials) serving certificates given in `--certificate` form.
    pub fn single_account(
        secret_id: &str,
        secret_key: &str,
        certificates: &[&str],
    ) -> Result<Self, String> {
        Ok(Self {
            accounts: vec![Account {
                secret_id: secret_id.to_string(),
                secret_key: secret_key.to_string(),
                token: None,
            }],
            certificates: certificates
                .iter()
                .map(|spec| spec.parse())
                .collect::<Result<_, _>>()?,
            ..Self::default()
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("certificate generation was interrupted: {0}")]
    Join(String),
}

/// A running simulator. Dropping the handle shuts the server down.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give the client as its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Serves until the task ends (the CLI's foreground mode).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts the simulator on a free loopback port.
pub async fn start_local(config: SimConfig) -> Result<SimHandle, SimError> {
    start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Generates the certificates, binds `listen` (port 0 picks a free port) and starts serving.
pub async fn start(config: SimConfig, listen: SocketAddr) -> Result<SimHandle, SimError> {
    let SimConfig {
        accounts,
        certificates,
        zip_dir,
        rate_limit,
        faults,
        latencies,
        clock_offset,
        roles,
    } = config;
    // Key generation is CPU work (RSA especially): keep it off the async workers. The CA is kept to issue
    // renewals made through the control API under the same root.
    let (pki, catalog) = tokio::task::spawn_blocking(move || {
        let pki =
            pki::Pki::generate(pki::KeyKind::EcdsaP256).map_err(catalog::CatalogError::from)?;
        let catalog = catalog::build_with(&pki, &certificates, zip_dir.as_deref())?;
        Ok::<_, catalog::CatalogError>((pki, catalog))
    })
    .await
    .map_err(|e| SimError::Join(e.to_string()))??;
    let state = Arc::new(SimState::new(
        accounts,
        catalog,
        faults,
        latencies,
        rate_limit,
        clock_offset,
    ));
    state.set_pki(Arc::new(pki));
    for role in roles {
        state.put_role(role);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: listen,
        source,
    })?;
    let (shutdown, stop) = oneshot::channel::<()>();
    let app = server::router(state.clone());
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "simulator server failed");
        }
    });
    Ok(SimHandle {
        addr,
        state,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}
