//! One reconcile of a `TencentCertificate`, in the skeleton of [`crate::skeleton`]: [`gather`] reads the
//! Secret at `secretName`, the keystore passwords and whether the credentials changed since a credentials
//! failure; [`plan`] runs the policy chain ([`crate::policy::decide`]) and turns its decision into a
//! [`Plan`]; [`act`] carries it out (the shared download layer, the writes, the release of a
//! renamed Secret); [`report`] computes the status, publishes events and picks the requeue.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::act::{self, Effects};
use super::cached::CachedCertificate;
use super::{Context, credentials, passwords, report};
use crate::crd::{DeletionPolicy, TencentCertificate, TencentCertificateStatus};
use crate::error::SyncError;
use crate::outputs::{self, Passwords, Previous};
use crate::policy::{self, Decision, DownloadTrigger, Ownership};
use crate::renew::step;
use crate::secret::{
    self, CA_CERT_KEY, CERTIFICATE_ID_ANNOTATION, SecretParams, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY,
};
use crate::skeleton::{self, Inputs, Kind, Outcome};
use crate::status;
use tencent_ssl::bundle::{self, BundleError, CertBundle, CertMetadata};
use tencent_ssl::renewal::order::ClusterSwitch;

/// Errors that stop a reconcile before it can report through status (reading or patching Kubernetes).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("TencentCertificate has no namespace")]
    NoNamespace,
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Leadership ended during the reconcile: it was cancelled, or a write was refused.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl ReconcileError {
    /// Stopped because this replica does not lead: no status, no event, not counted as a failure.
    pub fn not_leader(&self) -> bool {
        match self {
            Self::NotLeader(_) => true,
            Self::Sync(err) => err.not_leader(),
            Self::NoNamespace => false,
        }
    }
}

/// The `TencentCertificate` kind in the skeleton.
pub struct Namespaced;

impl Kind for Namespaced {
    type Resource = TencentCertificate;
    type Context = Context;
    type Gathered = Gathered;
    type Plan = Plan;
    type Effects = Effects;
    type Error = ReconcileError;

    const KIND: &'static str = "TencentCertificate";

    fn shared(ctx: &Context) -> &Context {
        ctx
    }

    fn not_leader(err: &ReconcileError) -> bool {
        err.not_leader()
    }

    fn span(cr: &TencentCertificate) -> tracing::Span {
        tracing::info_span!(
            "reconcile",
            namespace = %cr.namespace().unwrap_or_default(),
            name = %cr.name_any(),
            target = %cr.spec.describe_target()
        )
    }

    async fn gather(
        cr: &TencentCertificate,
        ctx: &Context,
        at: &Inputs,
    ) -> Result<Gathered, ReconcileError> {
        let mut gathered = gather(cr, ctx).await?;
        gathered.renewal_served = gathered
            .serving()
            .map(|(id, _)| id)
            .or_else(|| cr.expected_certificate_id());
        let asked = renewal_asked(cr, &gathered);
        let credentials = async {
            let source = credentials::resolve(&ctx.client, cr, &ctx.defaults).await?;
            let default = matches!(
                credentials::source_for(cr, &ctx.defaults),
                Ok(credentials::CredentialsSource::Default(_)
                    | credentials::CredentialsSource::PodIdentity)
            );
            Ok((ctx.tencent.credentials(&source).await?, default))
        };
        gathered.renewal = step::gather(ctx, &asked, credentials, at.now).await;
        Ok(gathered)
    }

    fn plan(cr: &TencentCertificate, gathered: &Gathered, at: &Inputs) -> Plan {
        plan(cr, gathered, at.now)
    }

    async fn act(
        cr: &TencentCertificate,
        ctx: &Context,
        gathered: &Gathered,
        plan: &Plan,
        at: &Inputs,
    ) -> Result<Effects, ReconcileError> {
        act::act(cr, ctx, gathered, plan, at.now).await
    }

    async fn report(
        cr: &TencentCertificate,
        ctx: &Context,
        gathered: &Gathered,
        plan: &Plan,
        effects: Effects,
        at: &Inputs,
    ) -> Result<Outcome, ReconcileError> {
        report::report(cr, ctx, gathered, plan, effects, at).await
    }
}

/// Reconciles one `TencentCertificate` (the controller's reconcile function).
pub async fn reconcile(
    cr: Arc<TencentCertificate>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    skeleton::reconcile::<Namespaced>(cr, ctx).await
}

/// [`reconcile`] of a resource from the controller's cache: the API type is made for the reconcile only,
/// the cache keeps the slimmer projection.
pub async fn reconcile_cached(
    cr: Arc<CachedCertificate>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    reconcile(Arc::new(cr.to_resource()), ctx).await
}

/// Requeue after errors that kept the reconcile from reporting through status.
pub fn error_policy(
    _cr: Arc<CachedCertificate>,
    _err: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    skeleton::retry_after_error()
}

/// What a reconcile read before deciding: owned values, nothing written.
pub struct Gathered {
    pub namespace: String,
    pub previous: TencentCertificateStatus,
    /// The Secret at `secretName`, whoever's it is.
    pub existing: Option<Secret>,
    /// Its data read back as a bundle, when it is ours and has `tls.crt` and `tls.key`.
    pub serving_bundle: Option<Result<CertBundle, BundleError>>,
    /// The keystore passwords: a reconcile that cannot read them writes nothing (no Secret without the
    /// keystores it should have, no keystores under an old password) and reports why.
    pub passwords: Result<Passwords, SyncError>,
    /// The Secret as the spec wants it from the certificate it already holds (when ours and usable).
    pub desired_from_serving: Option<Secret>,
    /// The credentials Secret changed since the credentials failure of the last attempt.
    pub credentials_changed: bool,
    /// The last attempt failed for want of a keystore password, and the passwords read fine now.
    pub keystore_password_fixed: bool,
    /// The certificate the renewal step looks at: the one served, else the one the spec resolves to.
    pub renewal_served: Option<String>,
    /// What the renewal step read (`spec.renewal`).
    pub renewal: step::Gathered,
    /// The cluster's switch (`--renewal-applications`), as the context had it.
    pub renewal_switch: ClusterSwitch,
}

/// What the renewal step knows from the resource and what was gathered.
pub fn renewal_asked<'a>(cr: &'a TencentCertificate, gathered: &'a Gathered) -> step::Asked<'a> {
    step::Asked {
        spec: cr.spec.renewal.as_ref(),
        previous: gathered.previous.renewal.as_ref(),
        served_id: gathered.renewal_served.as_deref(),
        not_after: gathered
            .previous
            .not_after
            .as_deref()
            .and_then(|t| t.parse().ok()),
        generation: cr.metadata.generation.unwrap_or_default(),
    }
}

impl Gathered {
    /// The certificate id and metadata the Secret serves, if it is ours and usable.
    pub fn serving(&self) -> Option<(String, CertMetadata)> {
        match (&self.existing, &self.serving_bundle) {
            (Some(existing), Some(Ok(bundle))) => {
                serving_certificate_id(existing).map(|id| (id, bundle.meta.clone()))
            }
            _ => None,
        }
    }
}

/// Reads the Secret, the keystore passwords and the credentials version (after a credentials failure).
pub async fn gather(cr: &TencentCertificate, ctx: &Context) -> Result<Gathered, ReconcileError> {
    let namespace = cr.namespace().ok_or(ReconcileError::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = cr.status.clone().unwrap_or_default();
    let existing = secrets
        .get_opt(&cr.secret_name())
        .await
        .map_err(SyncError::kube("reading the Secret"))?;
    let serving_bundle = existing
        .as_ref()
        .filter(|e| policy::ownership(cr, Some(e)) == Ownership::Ours)
        .and_then(read_secret_bundle);
    let passwords = passwords::read(&ctx.client, &namespace, &cr.spec.outputs).await;
    let desired_from_serving = match (&serving_bundle, &passwords) {
        (Some(Ok(bundle)), Ok(passwords)) => {
            // Metadata repairs re-apply what the Secret holds, under the certificate ID it holds.
            let serving_id = existing
                .as_ref()
                .and_then(serving_certificate_id)
                .or_else(|| cr.expected_certificate_id())
                .unwrap_or_default();
            desired_secret(
                cr,
                &namespace,
                &serving_id,
                bundle,
                passwords,
                existing.as_ref(),
            )
            .ok()
        }
        _ => None,
    };
    let keystore_password_fixed = passwords.is_ok()
        && previous
            .condition(status::CONDITION_SYNCED)
            .is_some_and(|c| c.status == "False" && c.reason == outputs::REASON_KEYSTORE_PASSWORD);
    let credentials_changed = match ctx.credentials_failure(&cr.uid().unwrap_or_default()) {
        Some(at_failure) => {
            credentials::secret_version(&ctx.client, cr, &ctx.defaults).await != at_failure
        }
        None => false,
    };
    Ok(Gathered {
        namespace,
        previous,
        existing,
        serving_bundle,
        passwords,
        desired_from_serving,
        credentials_changed,
        keystore_password_fixed,
        renewal_served: None,
        renewal: step::Gathered::Idle,
        renewal_switch: ctx.renewal.switch,
    })
}

/// What a reconcile will do, and the policy decision it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    pub step: Step,
    /// The renewal step's decision (`spec.renewal`).
    pub renewal: step::Plan,
}

/// The one step a reconcile carries out (the release of a renamed Secret follows any of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Up to date, or waiting for the retry time of a failed attempt.
    Nothing,
    /// The Secret at the name is someone else's: touch nothing, report the conflict.
    Conflict(String),
    /// Something is due but the keystore passwords cannot be read: write nothing, the attempt fails
    /// with the passwords' error.
    PasswordsUnusable,
    /// Re-apply the Secret from its own certificate ([`Gathered::desired_from_serving`]).
    Repair,
    /// Obtain the certificate through the shared download layer and write it.
    Download(DownloadTrigger),
}

/// The decision of the policy chain over what was gathered, the step it asks for, and the renewal
/// step's decision. An issued renewal not served yet is downloaded when nothing else is due (the
/// following then serves it: one write, one `Renewed`).
pub fn plan(cr: &TencentCertificate, gathered: &Gathered, now: jiff::Timestamp) -> Plan {
    let renewal = step::plan(
        &renewal_asked(cr, gathered),
        &gathered.renewal,
        gathered.renewal_switch,
        now,
    );
    let mut plan = policy_plan(cr, gathered, now);
    if plan.step == Step::Nothing
        && plan.decision == Decision::UpToDate
        && let Some(order_id) = renewal.issued_order(gathered.renewal_served.as_deref())
    {
        plan.step = Step::Download(DownloadTrigger::RenewalIssued {
            order_id: order_id.to_string(),
        });
    }
    Plan { renewal, ..plan }
}

/// The policy chain's decision and step, before the renewal step.
fn policy_plan(cr: &TencentCertificate, gathered: &Gathered, now: jiff::Timestamp) -> Plan {
    let decision = policy::decide(&policy::Observed {
        cr,
        existing: gathered.existing.as_ref(),
        serving: gathered.serving_bundle.as_ref(),
        desired_from_serving: gathered.desired_from_serving.as_ref(),
        credentials_changed: gathered.credentials_changed,
        keystore_password_fixed: gathered.keystore_password_fixed,
        now,
    });
    let step = match &decision {
        Decision::Conflict(message) => Step::Conflict(message.clone()),
        Decision::AwaitingRetry => Step::Nothing,
        // Whatever else is due, nothing is written without the keystore passwords.
        Decision::UpToDate | Decision::RepairMetadata | Decision::Download(_)
            if gathered.passwords.is_err() =>
        {
            Step::PasswordsUnusable
        }
        Decision::UpToDate => Step::Nothing,
        Decision::RepairMetadata
            if gathered.existing.is_some() && gathered.desired_from_serving.is_some() =>
        {
            Step::Repair
        }
        Decision::RepairMetadata => Step::Nothing,
        Decision::Download(trigger) => Step::Download(trigger.clone()),
    };
    Plan {
        decision,
        step,
        renewal: step::Plan::Idle,
    }
}

/// The Secret's data read back as a bundle; `None` when `tls.crt` or `tls.key` is absent.
pub fn read_secret_bundle(secret: &Secret) -> Option<Result<CertBundle, BundleError>> {
    let data = secret.data.as_ref()?;
    let crt = data.get(TLS_CERT_KEY)?;
    let key = data.get(TLS_PRIVATE_KEY_KEY)?;
    let mut entries: Vec<(&str, &[u8])> =
        vec![(TLS_CERT_KEY, &crt.0), (TLS_PRIVATE_KEY_KEY, &key.0)];
    if let Some(ca) = data.get(CA_CERT_KEY) {
        entries.push((CA_CERT_KEY, &ca.0));
    }
    Some(bundle::from_pem_entries(&entries))
}

pub fn secret_params(
    cr: &TencentCertificate,
    namespace: &str,
    certificate_id: &str,
) -> SecretParams {
    let template = cr.spec.secret_template.clone().unwrap_or_default();
    SecretParams {
        namespace: namespace.to_string(),
        name: cr.secret_name(),
        certificate_name: cr.name_any(),
        certificate_id: certificate_id.to_string(),
        owner: match cr.spec.deletion_policy {
            DeletionPolicy::Delete => cr.controller_owner_ref(&()),
            DeletionPolicy::Retain => None,
        },
        template_labels: template.labels,
        template_annotations: template.annotations,
        include_ca: cr.spec.include_ca,
        outputs: outputs::Derived::default(),
    }
}

/// The Secret for `bundle` under `certificate_id`, with the outputs the spec asks for. `existing` is the
/// Secret as it is: its keystores are kept when nothing they are made from changed.
pub fn desired_secret(
    cr: &TencentCertificate,
    namespace: &str,
    certificate_id: &str,
    bundle: &CertBundle,
    passwords: &Passwords,
    existing: Option<&Secret>,
) -> Result<Secret, outputs::OutputError> {
    let mut params = secret_params(cr, namespace, certificate_id);
    params.outputs = outputs::derive(
        bundle,
        certificate_id,
        &cr.spec.outputs,
        cr.spec.include_ca,
        passwords,
        Previous::of(existing),
    )?;
    Ok(secret::desired(&params, bundle))
}

/// The certificate id the Secret's annotation says it holds.
pub(crate) fn serving_certificate_id(existing: &Secret) -> Option<String> {
    existing
        .metadata
        .annotations
        .as_ref()?
        .get(CERTIFICATE_ID_ANNOTATION)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TencentCertificateSpec;
    use crate::secret::TLS_SECRET_TYPE;

    fn now() -> jiff::Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn cr(generation: i64) -> TencentCertificate {
        let mut cr = TencentCertificate::new(
            "shop",
            serde_json::from_value::<TencentCertificateSpec>(
                serde_json::json!({"certificateId": "aBcD1234"}),
            )
            .unwrap(),
        );
        cr.metadata.namespace = Some("web".into());
        cr.metadata.uid = Some("uid-1".into());
        cr.metadata.generation = Some(generation);
        cr.status = Some(TencentCertificateStatus {
            observed_generation: Some(1),
            next_sync_time: Some("2099-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        cr
    }

    fn secret(labels: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("shop".into());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.metadata.annotations = Some(
            [(
                CERTIFICATE_ID_ANNOTATION.to_string(),
                "aBcD1234".to_string(),
            )]
            .into(),
        );
        s.type_ = Some(TLS_SECRET_TYPE.into());
        s
    }

    fn gathered(existing: Option<Secret>, passwords_ok: bool) -> Gathered {
        Gathered {
            namespace: "web".into(),
            previous: TencentCertificateStatus::default(),
            existing,
            serving_bundle: None,
            passwords: if passwords_ok {
                Ok(Passwords::default())
            } else {
                Err(SyncError::Outputs(outputs::OutputError::PasswordNotFound {
                    secret: "keystore-pass".into(),
                    key: "password".into(),
                    why: "the Secret does not exist".into(),
                }))
            },
            desired_from_serving: None,
            credentials_changed: false,
            keystore_password_fixed: false,
            renewal_served: None,
            renewal: step::Gathered::Idle,
            renewal_switch: ClusterSwitch::default(),
        }
    }

    #[test]
    fn a_missing_secret_is_planned_as_a_download() {
        let plan = plan(&cr(1), &gathered(None, true), now());
        assert_eq!(plan.step, Step::Download(DownloadTrigger::SecretMissing));
    }

    #[test]
    fn nothing_is_written_without_the_keystore_passwords_but_a_conflict_still_is_told() {
        let missing = plan(&cr(1), &gathered(None, false), now());
        assert_eq!(
            missing.decision,
            Decision::Download(DownloadTrigger::SecretMissing)
        );
        assert_eq!(missing.step, Step::PasswordsUnusable);
        let foreign = plan(
            &cr(1),
            &gathered(Some(secret(&[("app", "other")])), false),
            now(),
        );
        assert!(
            matches!(foreign.step, Step::Conflict(ref m) if m.contains("tencentcert.io/adopt"))
        );
    }

    #[test]
    fn a_metadata_repair_needs_the_secret_rebuilt_from_what_it_serves() {
        // Ours but unreadable data: the policy downloads; with no rebuilt Secret a repair is nothing.
        let ours = secret(&[(crate::secret::CERTIFICATE_NAME_LABEL, "shop")]);
        let plan_of = |g: &Gathered| plan(&cr(1), g, now());
        assert!(matches!(
            plan_of(&gathered(Some(ours.clone()), true)).step,
            Step::Download(DownloadTrigger::SecretDataInvalid(_))
        ));
        let mut due_repair = gathered(Some(ours), true);
        due_repair.serving_bundle = Some(Ok(sample_bundle()));
        // The rebuilt Secret differs from the one there (no data): a repair, planned as such only
        // because there is a rebuilt Secret to apply.
        let mut desired = secret(&[(crate::secret::CERTIFICATE_NAME_LABEL, "shop")]);
        desired
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "a".into());
        due_repair.desired_from_serving = Some(desired);
        let repaired = plan_of(&due_repair);
        assert_eq!(repaired.decision, Decision::RepairMetadata);
        assert_eq!(repaired.step, Step::Repair);
    }

    #[test]
    fn a_spec_change_is_downloaded_even_during_a_backoff() {
        let mut backing_off = gathered(None, true);
        backing_off.previous.failures = 3;
        let plan = plan(&cr(2), &backing_off, now());
        assert_eq!(plan.step, Step::Download(DownloadTrigger::SpecChanged));
    }

    fn sample_bundle() -> CertBundle {
        CertBundle {
            chain_pem: String::new(),
            key_pem: String::new(),
            ca_pem: None,
            meta: CertMetadata {
                not_before: "2029-01-01T00:00:00Z".parse().unwrap(),
                not_after: "2031-01-01T00:00:00Z".parse().unwrap(),
                serial_hex: "01".into(),
                fingerprint_sha256: "ff".into(),
                subject_cn: None,
                dns_names: vec![],
                ip_addresses: vec![],
                issuer_cn: None,
                key_algorithm: tencent_ssl::bundle::KeyAlgorithm::EcdsaP256,
            },
        }
    }
}
