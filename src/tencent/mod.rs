//! The Tencent Cloud side: TC3 signing, credentials, errors, rate limiting and the SSL API client.

pub mod client;
pub mod credentials;
pub mod error;
pub mod limiter;
pub mod observer;
pub mod sign;

pub use client::{CertificateDetail, Client, ClientConfig, Download};
pub use credentials::Credentials;
pub use error::{ErrorClass, TencentError};
pub use observer::Observer;
