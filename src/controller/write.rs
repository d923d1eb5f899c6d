//! Writing a Secret: created only where the gather found none (a create fails when someone else's Secret
//! took the name since), applied server-side where it is ours, deleted only in the version that was read.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt as _};

use super::echoes::OwnWrites;
use crate::error::SyncError;
use crate::secret::{self, FIELD_MANAGER};

/// Writes `desired` where the gather saw `existing` (`None`: no Secret at the name): a create when there
/// was none, a delete and a create when the `type` must change, else a server-side apply. Returns the
/// Secret as stored. Each write is told to `own` (see [`super::echoes`]).
pub async fn write_secret(
    api: &Api<Secret>,
    own: &OwnWrites,
    existing: Option<&Secret>,
    desired: &Secret,
    kept_labels: &[&str],
) -> Result<Secret, SyncError> {
    match existing {
        None => create_secret(api, own, desired, kept_labels).await,
        Some(existing) if existing.type_ != desired.type_ => {
            recreate_secret(api, own, existing, desired, kept_labels).await
        }
        Some(_) => apply_secret(api, own, desired).await,
    }
}

/// Creates `desired`, which the gather found absent. A Secret that appeared since belongs to someone else:
/// `SecretConflict`, and it is left as it is (a forced apply would have taken it over).
pub async fn create_secret(
    api: &Api<Secret>,
    own: &OwnWrites,
    desired: &Secret,
    kept_labels: &[&str],
) -> Result<Secret, SyncError> {
    let core = secret::creation_core(desired, kept_labels);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let write = own.begin(&core);
    let result = api.create(&params, &core).await;
    write.finish(result.as_ref().ok());
    let created = match result {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(SyncError::SecretConflict(format!(
                "Secret {}/{} was created by someone else while the operator was about to write it; it is \
                 left alone: delete or rename it, or annotate it with tencentcert.io/adopt=\"true\" to let \
                 the operator take it over",
                desired.namespace().unwrap_or_default(),
                desired.name_any()
            )));
        }
        Err(err) => return Err(SyncError::kube("creating the Secret")(err)),
    };
    if core == *desired {
        return Ok(created);
    }
    // The optional rest (see `secret::creation_core`). The Secret already serves the certificate.
    apply_secret(api, own, desired).await
}

/// Replaces a Secret of another `type` (immutable) by `desired` under the same name. Called with the new
/// Secret complete (downloaded, derived), so the name is empty only between this delete and the create that
/// follows at once; writing under another name first is no option, as consumers reference this name.
pub async fn recreate_secret(
    api: &Api<Secret>,
    own: &OwnWrites,
    existing: &Secret,
    desired: &Secret,
    kept_labels: &[&str],
) -> Result<Secret, SyncError> {
    delete_exact(api, &existing.metadata).await?;
    create_secret(api, own, desired, kept_labels).await
}

/// Server-side apply of a Secret that is ours (or whose owner consented to adoption). Forced: a field
/// someone else took over (e.g. `kubectl edit` of tls.crt) is taken back.
pub async fn apply_secret(
    api: &Api<Secret>,
    own: &OwnWrites,
    desired: &Secret,
) -> Result<Secret, SyncError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let write = own.begin(desired);
    let result = api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await;
    write.finish(result.as_ref().ok());
    result.map_err(SyncError::kube("writing the Secret"))
}

/// Deletes exactly this version of the Secret (uid and resourceVersion preconditions); gone already is fine.
pub async fn delete_exact(api: &Api<Secret>, meta: &ObjectMeta) -> Result<(), SyncError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    let name = meta.name.clone().unwrap_or_default();
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(SyncError::kube("deleting a Secret")(err)),
    }
}
