//! Where the demo runs: the cluster of the current kubeconfig when one answers, else an API server embedded
//! in this process (the in-process fake of the tests) over HTTPS with a bearer token, with a kubeconfig for
//! it written to a private temporary directory that is removed when the demo stops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_apiserver::{FakeApiServer, TlsIdentity};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::DemoError;

/// The kubeconfig's cluster, user and context name for the embedded server.
pub const CONTEXT_NAME: &str = "tencent-cert-demo";
/// How long a kubeconfig cluster gets to answer before the demo embeds its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which API server to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterChoice {
    /// The kubeconfig's cluster when it answers, else an embedded API server.
    Auto,
    /// Always the embedded API server (even when a cluster is reachable).
    Embedded,
    /// Only the kubeconfig's cluster; fail when it does not answer.
    Kubeconfig,
}

/// The API server the demo talks to.
pub enum Cluster {
    Existing {
        client: kube::Client,
        /// The API server's URL, for the printout.
        url: String,
    },
    Embedded {
        client: kube::Client,
        server: FakeApiServer,
        files: DemoDir,
        /// Why the kubeconfig's cluster was not used (printed so nobody mistakes which one this is).
        reason: String,
    },
}

impl Cluster {
    pub fn client(&self) -> kube::Client {
        match self {
            Cluster::Existing { client, .. } | Cluster::Embedded { client, .. } => client.clone(),
        }
    }
}

/// A private directory removed on drop (also on an error path or a panic unwinding through the demo).
pub struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    pub fn create() -> Result<DemoDir, DemoError> {
        // Not guessable ahead of time, so no one can plant a directory or link at that path first.
        let path = std::env::temp_dir().join(format!(
            "tencent-cert-demo-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&path).map_err(|source| DemoError::Files {
            path: path.clone(),
            source,
        })?;
        Ok(DemoDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Picks and connects to the API server.
pub async fn acquire(choice: ClusterChoice) -> Result<Cluster, DemoError> {
    let probe = match choice {
        ClusterChoice::Embedded => Err("--cluster embedded".to_string()),
        ClusterChoice::Auto | ClusterChoice::Kubeconfig => probe_kubeconfig().await,
    };
    match (probe, choice) {
        (Ok((client, url)), _) => Ok(Cluster::Existing { client, url }),
        (Err(reason), ClusterChoice::Kubeconfig) => Err(DemoError::NoCluster(reason)),
        (Err(reason), _) => embed(reason).await,
    }
}

/// The kubeconfig's (or in-cluster) API server, if it answers in time.
async fn probe_kubeconfig() -> Result<(kube::Client, String), String> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let default_file = std::env::home_dir().map(|h| h.join(".kube").join("config"));
    if !in_cluster
        && std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty())
        && !default_file.as_deref().is_some_and(Path::exists)
    {
        return Err("no KUBECONFIG and no ~/.kube/config".to_string());
    }
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no usable kubeconfig: {e}"))?;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| format!("{url}: {e}"))?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok((client, url)),
        Ok(Err(e)) => Err(format!("{url} did not answer: {e}")),
        Err(_) => Err(format!("{url} did not answer within {PROBE_TIMEOUT:?}")),
    }
}

async fn embed(reason: String) -> Result<Cluster, DemoError> {
    let files = DemoDir::create()?;
    let identity = loopback_identity().map_err(|e| DemoError::Embedded(e.to_string()))?;
    let server = FakeApiServer::builder()
        .tls(identity)
        .bearer_token(random_token()?)
        .try_start()
        .await
        .map_err(DemoError::Embedded)?;
    // The namespaces every cluster starts with (`kubectl get namespaces`; the demo's resources go to `default`).
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        server
            .create(
                "",
                "v1",
                "namespaces",
                None,
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .map_err(|e| DemoError::Embedded(format!("namespace {namespace}: {}", e.message)))?;
    }
    let kubeconfig = files.kubeconfig();
    server
        .write_kubeconfig_named(&kubeconfig, CONTEXT_NAME)
        .map_err(|source| DemoError::Files {
            path: kubeconfig.clone(),
            source,
        })?;
    // Through the written file, as kubectl will: a broken kubeconfig fails here, not in the user's shell.
    let client = client_from(&kubeconfig).await?;
    Ok(Cluster::Embedded {
        client,
        server,
        files,
        reason,
    })
}

async fn client_from(path: &Path) -> Result<kube::Client, DemoError> {
    let broken =
        |e: &dyn std::fmt::Display| DemoError::Embedded(format!("{}: {e}", path.display()));
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| broken(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| broken(&e))?;
    kube::Client::try_from(config).map_err(|e| broken(&e))
}

/// 32 random bytes, hex: the only credential of the embedded server.
fn random_token() -> Result<String, DemoError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DemoError::Embedded("no system randomness for the API token".into()))?;
    Ok(hex::encode(bytes))
}

/// A CA made for this run and a certificate for `127.0.0.1`/`localhost` signed by it. The CA's key is
/// dropped at once, so nothing else can ever be signed by it.
fn loopback_identity() -> Result<TlsIdentity, rcgen::Error> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(
        DnType::CommonName,
        "tencent-cert-operator demo API server CA",
    );
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "tencent-cert-operator demo API server");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(TlsIdentity {
        cert_chain_pem: server_cert.pem(),
        key_pem: server_key.serialize_pem(),
        ca_pem: ca_cert.pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_dir_is_private_and_removed_on_drop() {
        let dir = DemoDir::create().unwrap();
        let path = dir.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        drop(dir);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn embedded_server_needs_the_token_and_serves_tls() {
        let Cluster::Embedded {
            client,
            server,
            files,
            ..
        } = embed("test".into()).await.unwrap()
        else {
            unreachable!("embed always embeds")
        };
        assert!(server.url().starts_with("https://127.0.0.1:"));
        client.apiserver_version().await.unwrap();
        let text = std::fs::read_to_string(files.kubeconfig()).unwrap();
        assert!(text.contains("certificate-authority-data"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(files.kubeconfig())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same server without the token: 401.
        let kubeconfig = Kubeconfig::read_from(files.kubeconfig()).unwrap();
        let mut tokenless =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        tokenless.auth_info.token = None;
        let anonymous = kube::Client::try_from(tokenless).unwrap();
        let err = anonymous.apiserver_version().await.unwrap_err();
        assert!(
            err.to_string().contains("401") || err.to_string().contains("Unauthorized"),
            "{err}"
        );
    }
}
