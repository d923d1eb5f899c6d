//! HTTPS for the fake API server: kubectl sends a bearer token only over TLS, so the demo's server, which
//! kubectl talks to, serves HTTPS with a certificate the written kubeconfig trusts.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// A client that connects and never completes its handshake must not hold up the next connection longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// The server's certificate chain and key, and the CA a client must trust (all PEM).
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The CA certificates in DER, as `kube::Config::root_cert` takes them.
    pub fn ca_der(&self) -> Result<Vec<Vec<u8>>, String> {
        CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()).map_err(|e| format!("CA PEM: {e}")))
            .collect()
    }
}

pub fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| format!("key PEM: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("certificate and key: {e}"))?;
    // The router speaks HTTP/1.1 only; offering h2 would make Go clients (kubectl) try it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that hands axum TLS streams. Handshakes run one at a time, bounded by a timeout: enough
/// for a demo or a test, where a handful of clients connect.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, address),
                // A failed or abandoned handshake concerns that client only.
                Ok(Err(_)) | Err(_) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
