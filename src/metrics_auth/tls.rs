//! HTTPS for the secure metrics server: a certificate from `--metrics-cert-dir` (`tls.crt`, `tls.key`, as
//! a mounted `kubernetes.io/tls` Secret lays them out), or a self-signed one generated at start-up (the
//! scraper then skips verification, as kubebuilder's default ServiceMonitor does). Read once at start-up.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;

/// A client that connects and never finishes its handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; further connections wait to be accepted.
const HANDSHAKES_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path} holds no usable PEM {what}: {detail}")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("cannot generate the self-signed metrics certificate: {0}")]
    Generate(String),
    #[error("the metrics certificate and key do not make a TLS server: {0}")]
    Config(String),
}

/// The server configuration from `dir/tls.crt` and `dir/tls.key`, or a self-signed one.
pub fn server_config(cert_dir: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let (chain, key) = match cert_dir {
        Some(dir) => load(dir)?,
        None => self_signed()?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsSetupError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    // The telemetry router speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load(dir: &Path) -> Result<Identity, TlsSetupError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path)
            .map(|bytes| (path.display().to_string(), bytes))
            .map_err(|e| TlsSetupError::Read {
                path: path.display().to_string(),
                detail: e.kind().to_string(),
            })
    };
    let (cert_path, cert_pem) = read("tls.crt")?;
    let (key_path, key_pem) = read("tls.key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem {
            path: cert_path.clone(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Pem {
            path: cert_path,
            what: "certificate",
            detail: "no CERTIFICATE block".to_string(),
        });
    }
    // The key's parse error names the PEM section, never its content.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsSetupError::Pem {
        path: key_path,
        what: "private key",
        detail: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A fresh ECDSA P-256 key and a certificate for the names a scraper may use.
fn self_signed() -> Result<Identity, TlsSetupError> {
    let mut names = vec![
        "localhost".to_string(),
        "tencent-cert-operator-metrics".to_string(),
    ];
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        names.push(pod);
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    // rcgen serialises keys as PKCS#8.
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    Ok((vec![generated.cert.der().clone()], key))
}

/// A TCP listener that hands axum finished TLS streams. Handshakes run concurrently (bounded, each with a
/// timeout), so one slow or silent client does not hold up the next scrape.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(HANDSHAKES_IN_FLIGHT);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, address) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: wait instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = sender.send((tls, address)).await;
                    }
                    drop(slot);
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
