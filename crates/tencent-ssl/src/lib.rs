//! A client for Tencent Cloud SSL Certificate Service (API version 2019-12-05), with no Kubernetes in it.
//!
//! Tencent publishes no Rust SDK. This crate carries what a program needs to fetch its certificates from
//! Tencent Cloud and use them:
//!
//! - [`sign`]: TC3-HMAC-SHA256 request signing, checked against vectors made by Tencent's official SDK;
//! - [`Credentials`]: a SecretId/SecretKey pair (and STS token), never printed; [`sts`] assumes roles
//!   (`AssumeRole`, `AssumeRoleWithWebIdentity`) and refreshes temporary credentials;
//! - [`Client`]: `DownloadCertificate`, `DescribeCertificateDetail` and `DescribeCertificates`, with retries,
//!   coalescing of identical downloads, batched lookups ([`lookup`]) and a rate limiter ([`limiter`]) that shares
//!   Tencent's per-account budget fairly between credentials and by urgency ([`priority`]);
//! - [`publish`]: `UploadCertificate`, the resources bound to a certificate, `UpdateCertificateInstance` and
//!   its deploy records, `DeleteCertificate`;
//! - [`TencentError`] and [`ErrorClass`]: Tencent's error codes sorted into what a caller does about them
//!   (retry, fix the credentials, fix the certificate id, …);
//! - [`bundle`]: the certificate chain and private key inside the ZIP that `DownloadCertificate` returns, found
//!   by content (the ZIP layouts differ by era and server type), checked (key matches leaf, chain order, expiry);
//! - [`renewal`]: the rules for following a certificate to the renewal Tencent issued for it, and for
//!   applying for the renewal of a free certificate ([`renewal::order`]);
//! - [`apply`]: `ApplyCertificate` (free certificates and their renewals), never sent twice for one order.
//!
//! # Signing a request
//!
//! ```
//! use tencent_ssl::sign::{RequestToSign, sign};
//!
//! let body = br#"{"CertificateId":"aBcD1234"}"#;
//! let signed = sign(
//!     "my-secret-key",
//!     "ssl",
//!     1_700_000_000,
//!     &RequestToSign {
//!         method: "POST",
//!         query: "",
//!         headers: &[("Content-Type", "application/json"), ("Host", "ssl.tencentcloudapi.com")],
//!         payload: body,
//!     },
//! );
//! assert_eq!(signed.credential_scope, "2023-11-14/ssl/tc3_request");
//! assert!(signed
//!     .authorization("AKIDexample")
//!     .starts_with("TC3-HMAC-SHA256 Credential=AKIDexample/2023-11-14/ssl/tc3_request, SignedHeaders=content-type;host, Signature="));
//! ```
//!
//! # Downloading a certificate
//!
//! ```no_run
//! use tencent_ssl::{Client, ClientConfig, Credentials, bundle};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(ClientConfig::default())?; // https://ssl.tencentcloudapi.com
//! let credentials = Credentials::from_env()?; // TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY
//! let download = client.download_certificate(&credentials, "aBcD1234").await?;
//! let bundle = bundle::extract(&download.zip)?;
//! std::fs::write("tls.crt", &bundle.chain_pem)?;
//! std::fs::write("tls.key", &bundle.key_pem)?;
//! println!("valid until {}", bundle.meta.not_after);
//! # Ok(())
//! # }
//! ```
//!
//! Errors say what to do: a [`TencentError`]'s [`class`](TencentError::class) tells a retryable fault
//! (`FailedOperation.NetworkError`, rate limits, 5xx) from one that needs a person.
//!
//! ```
//! use tencent_ssl::{ErrorClass, TencentError};
//!
//! let error = TencentError::Api {
//!     action: "DownloadCertificate".into(),
//!     code: "AuthFailure.SecretIdNotFound".into(),
//!     message: "The SecretId is not found.".into(),
//!     request_id: "req-1".into(),
//! };
//! assert_eq!(error.class(), ErrorClass::Credentials);
//! assert_eq!(error.reason(), "AuthFailed");
//!
//! let network = TencentError::Api {
//!     action: "DownloadCertificate".into(),
//!     code: "FailedOperation.NetworkError".into(),
//!     message: "network error".into(),
//!     request_id: "req-2".into(),
//! };
//! assert_eq!(network.class(), ErrorClass::Transient);
//! ```

pub mod apply;
pub mod bundle;
pub mod client;
pub mod coalesce;
pub mod credentials;
pub mod error;
pub mod limiter;
pub mod list;
pub mod lookup;
pub mod observer;
pub mod priority;
pub mod publish;
pub mod renewal;
pub mod sign;
pub mod sts;

pub use client::{
    CertificateDetail, CertificateExtra, CertificateList, Client, ClientConfig, Download,
};
pub use credentials::Credentials;
pub use error::{ErrorClass, TencentError};
pub use list::{CertificateFilter, CertificateSummary, Tag};
pub use observer::Observer;
