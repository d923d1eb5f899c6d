//! What a decided step tells the user (`Ready`'s reason and message) and when the next pass runs.

use std::time::Duration;

use super::policy::{Step, reason};
use super::{DeployResult, TencentCertificatePushStatus};

/// What a pass tells the user through `Ready`, once its step is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Step {
    /// When to run the next pass (`None`: at once, the step changed something to build on).
    pub fn requeue_after(&self) -> Option<Duration> {
        match self {
            Step::Refuse(_) => None,
            Step::RecordDeploy { after, .. } => *after,
            Step::Wait { after, .. } | Step::InSync { after } => Some(*after),
            Step::Upload { .. }
            | Step::Adopt { .. }
            | Step::StartDeploy { .. }
            | Step::RetryDeploy { .. }
            | Step::DeletePrevious { .. } => None,
        }
    }

    /// The `Ready` condition after this step succeeded. A refusal is not ready; a move under way or
    /// failed is not ready either (resources still serve the previous certificate); a previous certificate
    /// still bound is ready (everything asked for moved; only the deletion waits).
    pub fn report(&self, status: &TencentCertificatePushStatus) -> Report {
        let id = status.certificate_id.as_deref().unwrap_or("-");
        let (ready, reason, message) = match self {
            Step::Refuse(refusal) => (false, refusal.reason, refusal.message.clone()),
            Step::Upload { .. } | Step::Adopt { .. } => (
                false,
                reason::PUBLISHED,
                "publishing the Secret's certificate".to_string(),
            ),
            Step::StartDeploy { from, to, .. } => (
                false,
                reason::DEPLOYING,
                format!("moving resources from certificate {from} to {to}"),
            ),
            Step::RecordDeploy {
                finished: true,
                results,
                ..
            } if results.iter().any(|r| r.failed > 0) => {
                (false, reason::DEPLOY_FAILED, deploy_summary(results))
            }
            Step::RecordDeploy { results, .. } => {
                (false, reason::DEPLOYING, deploy_summary(results))
            }
            Step::RetryDeploy { record_id } => (
                false,
                reason::DEPLOYING,
                format!("retrying the failed resources of deploy record {record_id}"),
            ),
            Step::DeletePrevious { certificate_id } => (
                true,
                reason::PUBLISHED,
                format!("published as {id}; deleting the previous certificate {certificate_id}"),
            ),
            Step::Wait {
                reason, message, ..
            } => (
                *reason == reason::PREVIOUS_STILL_BOUND,
                *reason,
                message.clone(),
            ),
            Step::InSync { .. } => (
                true,
                reason::PUBLISHED,
                format!("Tencent Cloud holds the Secret's certificate as {id}"),
            ),
        };
        Report {
            ready,
            reason,
            message,
        }
    }
}

fn deploy_summary(results: &[DeployResult]) -> String {
    results
        .iter()
        .map(|r| {
            let mut text = format!(
                "{}: {} succeeded, {} failed, {} in progress",
                r.resource_type, r.succeeded, r.failed, r.in_progress
            );
            if let Some(message) = r.message.as_deref().filter(|_| r.failed > 0) {
                text.push_str(&format!(" ({message})"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}
