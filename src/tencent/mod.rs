//! The Tencent Cloud side: TC3 signing, credentials, errors, rate limiting and the SSL API client.

pub mod client;
pub(crate) mod coalesce;
pub mod credentials;
pub mod error;
pub mod limiter;
pub mod list;
pub mod lookup;
pub mod observer;
pub mod priority;
pub mod sign;
pub mod sts;

pub use client::{
    CertificateDetail, CertificateExtra, CertificateList, Client, ClientConfig, Download,
};
pub use credentials::Credentials;
pub use error::{ErrorClass, TencentError};
pub use list::{CertificateFilter, CertificateSummary, Tag};
pub use observer::Observer;
