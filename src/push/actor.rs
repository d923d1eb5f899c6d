//! The I/O of a `TencentCertificatePush` pass against Tencent: [`gather`] reads what [`policy::lookups`]
//! asks for, [`act`] carries out the step [`policy::decide`] chose. Thin: every decision is in `policy`.
//! The private key leaves only inside `UploadCertificate`'s body (see `tencent_ssl::publish`).

use std::time::Duration;

use tencent_ssl::bundle::CertBundle;
use tencent_ssl::publish::UploadRequest;
use tencent_ssl::{CertificateFilter, Client, Credentials, TencentError};

use super::policy::{Lookups, Observed, Outcome, Step};

/// Bind-resource results are polled this often, this many times, before the pass gives up for now.
const BIND_POLLS: u32 = 3;
const BIND_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reads what `lookups` asks for (nothing at all for a push in sync).
pub async fn gather(
    client: &Client,
    credentials: &Credentials,
    lookups: &Lookups,
) -> Result<Observed, TencentError> {
    let mut observed = Observed::default();
    if let Some(tags) = &lookups.tagged {
        let filter = CertificateFilter {
            tags: tags.clone(),
            ..CertificateFilter::default()
        };
        // Never a cached scan: the question is whether an upload happened a moment ago.
        let found = client
            .describe_certificates_within(credentials, &filter, Duration::ZERO)
            .await?;
        observed.tagged = Some(found.iter().map(|c| c.certificate_id.clone()).collect());
    }
    if let Some(id) = &lookups.previous_tags {
        let filter = CertificateFilter {
            cert_ids: vec![id.clone()],
            ..CertificateFilter::default()
        };
        let found = client
            .describe_certificates_within(credentials, &filter, Duration::ZERO)
            .await?;
        observed.previous_tags = Some(
            found
                .iter()
                .find(|c| &c.certificate_id == id)
                .map(|c| c.tags.clone()),
        );
    }
    if let Some(record) = lookups.deploy_record {
        observed.deploy = Some(client.deploy_progress(credentials, record).await?);
    }
    if let Some(id) = &lookups.bound {
        observed.bound = client
            .bound_resources(credentials, id, BIND_POLLS, BIND_POLL_INTERVAL)
            .await?;
    }
    Ok(observed)
}

/// Carries out `step` for the Secret's `pair`.
// long: one short arm per `Step` variant, each a single Tencent call and its outcome.
pub async fn act(
    client: &Client,
    credentials: &Credentials,
    pair: &CertBundle,
    step: &Step,
) -> Result<Outcome, TencentError> {
    tracing::debug!(?step, "push step");
    match step {
        Step::Upload {
            alias,
            project_id,
            tags,
        } => {
            let request = UploadRequest {
                chain_pem: &pair.chain_pem,
                key_pem: &pair.key_pem,
                alias,
                project_id: *project_id,
                tags,
            };
            tracing::info!(
                ?request,
                "uploading the Secret's certificate to Tencent Cloud"
            );
            let uploaded = client.upload_certificate(credentials, &request).await?;
            Ok(Outcome::Published {
                certificate_id: uploaded.certificate_id,
                uploaded: !uploaded.repeat,
            })
        }
        Step::Adopt { certificate_id } => Ok(Outcome::Published {
            certificate_id: certificate_id.clone(),
            uploaded: false,
        }),
        Step::StartDeploy { from, to, targets } => {
            match client
                .update_certificate_instance(credentials, from, to, targets)
                .await
            {
                Ok(started) => Ok(Outcome::DeployStarted {
                    record_id: started.record_id,
                }),
                Err(err)
                    if err.code() == Some("FailedOperation.CertificateDeployInstanceEmpty") =>
                {
                    Ok(Outcome::NothingToDeploy)
                }
                Err(err) => Err(err),
            }
        }
        Step::RecordDeploy {
            results, finished, ..
        } => Ok(Outcome::DeployRecorded {
            results: results.clone(),
            finished: *finished,
        }),
        Step::RetryDeploy { record_id } => {
            match client.retry_deploy_record(credentials, *record_id).await {
                // Nothing failed any more (retried elsewhere): polling shows where it stands.
                Ok(()) => Ok(Outcome::DeployRetried),
                Err(err)
                    if err.code()
                        == Some("FailedOperation.CertificateDeployRetryStatusInvalid") =>
                {
                    Ok(Outcome::DeployRetried)
                }
                Err(err) => Err(err),
            }
        }
        Step::DeletePrevious { certificate_id } => {
            match client.delete_certificate(credentials, certificate_id).await {
                Ok(_) => Ok(Outcome::PreviousDeleted),
                // Deleted before a crash: done.
                Err(err) if err.code() == Some("FailedOperation.CertificateNotFound") => {
                    Ok(Outcome::PreviousDeleted)
                }
                Err(err) => Err(err),
            }
        }
        Step::Refuse(_) | Step::Wait { .. } | Step::InSync { .. } => Ok(Outcome::Unchanged),
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
