//! Status subresource, generation, CRDs, finalizers and garbage collection.

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde_json::json;

use crate::common::{
    TencentCertificate, TencentCertificateStatus, api_code, certificate, configmap, meta, secret,
};

#[tokio::test]
async fn status_subresource_isolates_status_and_generation_tracks_spec() {
    let server = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let certs: Api<TencentCertificate> = Api::default_namespaced(server.client());
    let mut cert = certificate("c", "id-1");
    cert.status = Some(TencentCertificateStatus {
        observed_generation: Some(99),
        synced: true,
    });
    let created = certs.create(&PostParams::default(), &cert).await.unwrap();
    assert_eq!(
        created.status, None,
        "status is dropped on create when it is a subresource"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // A status write changes status only: spec and labels in the same body are ignored.
    let status_patch = json!({
        "metadata": {"labels": {"sneaky": "yes"}},
        "spec": {"certificateId": "id-sneaky"},
        "status": {"observedGeneration": 1, "synced": true},
    });
    let after_status = certs
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&status_patch))
        .await
        .unwrap();
    assert_eq!(
        after_status.status,
        Some(TencentCertificateStatus {
            observed_generation: Some(1),
            synced: true
        })
    );
    assert_eq!(after_status.spec.certificate_id, "id-1");
    assert!(after_status.labels().is_empty());
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert_ne!(after_status.resource_version(), created.resource_version());

    // A main-resource write ignores status; a spec change bumps generation, a label change does not.
    let main_patch = json!({"spec": {"certificateId": "id-2"}, "status": {"synced": false}});
    let after_spec = certs
        .patch("c", &PatchParams::default(), &Patch::Merge(&main_patch))
        .await
        .unwrap();
    assert_eq!(after_spec.spec.certificate_id, "id-2");
    assert!(
        after_spec.status.as_ref().unwrap().synced,
        "status kept its value"
    );
    assert_eq!(after_spec.metadata.generation, Some(2));
    let after_label = certs
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(after_label.metadata.generation, Some(2));

    // Server-side apply on /status owns status fields only.
    let applied_status = json!({
        "apiVersion": "tencentcert.io/v1", "kind": "TencentCertificate", "metadata": {"name": "c"},
        "status": {"observedGeneration": 2, "synced": false},
    });
    // The merge patches above made the default manager own status: without force, apply conflicts.
    let (code, _, message) = api_code(
        certs
            .patch_status(
                "c",
                &PatchParams::apply("operator"),
                &Patch::Apply(&applied_status),
            )
            .await,
    );
    assert_eq!(code, 409);
    assert!(message.contains(".status.observedGeneration"), "{message}");
    let applied = certs
        .patch_status(
            "c",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(&applied_status),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.status,
        Some(TencentCertificateStatus {
            observed_generation: Some(2),
            synced: false
        })
    );
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("operator"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));

    // Custom resources need a resourceVersion on PUT, and answer DELETE with the object.
    let mut unconditional = after_label.clone();
    unconditional.metadata.resource_version = None;
    assert_eq!(
        api_code(
            certs
                .replace("c", &PostParams::default(), &unconditional)
                .await
        )
        .0,
        422
    );
    let deleted = certs.delete("c", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        deleted
            .left()
            .expect("custom resources return the deleted object")
            .name_any(),
        "c"
    );
}

#[tokio::test]
async fn a_crd_created_through_the_server_registers_its_resource() {
    let server = FakeApiServer::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    let created = crds
        .create(&PostParams::default(), &TencentCertificate::crd())
        .await
        .unwrap();
    let conditions = created.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    // The CRD declares a status subresource, so the fake now isolates status without builder help.
    let certs: Api<TencentCertificate> = Api::default_namespaced(server.client());
    certs
        .create(&PostParams::default(), &certificate("c", "id"))
        .await
        .unwrap();
    let ignored = certs
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"synced": true}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status, None);
    // The resource is namespaced, as the CRD says: a cluster-scoped address is not found.
    let cluster: Api<TencentCertificate> = Api::all(server.client());
    assert_eq!(api_code(cluster.get("c").await).0, 404);
    // Re-creating the same CRD conflicts, as for any object.
    assert_eq!(
        api_code(
            crds.create(&PostParams::default(), &TencentCertificate::crd())
                .await
        )
        .1,
        "AlreadyExists"
    );
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut cm = configmap("held", &[]);
    cm.metadata.finalizers = Some(vec!["tencentcert.io/cleanup".into()]);
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();

    let answer = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let terminating = answer
        .left()
        .expect("a held object is returned, not a Status");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        terminating.metadata.generation,
        Some(created.metadata.generation.unwrap() + 1)
    );
    assert!(
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // No new finalizers while terminating.
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["tencentcert.io/cleanup", "other/f"]}}));
    assert_eq!(
        api_code(cms.patch("held", &PatchParams::default(), &add).await).0,
        422
    );
    // Deleting again changes nothing.
    let again = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.resource_version(), terminating.resource_version());

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(cms.get("held").await).0, 404);
    assert!(
        server
            .object("", "v1", "configmaps", Some("default"), "held")
            .is_none()
    );
}

fn owned_by<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner
        .controller_owner_ref(&())
        .expect("owner has name and uid")
}

#[tokio::test]
async fn garbage_collection_cascades_to_dependents() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &configmap("owner", &[]))
        .await
        .unwrap();
    let other = cms
        .create(&PostParams::default(), &configmap("other-owner", &[]))
        .await
        .unwrap();

    let mut child = secret("child", "Opaque", &[]);
    child.metadata.owner_references = Some(vec![owned_by(&owner)]);
    let child = secrets
        .create(&PostParams::default(), &child)
        .await
        .unwrap();
    let mut grandchild = configmap("grandchild", &[]);
    grandchild.metadata.owner_references = Some(vec![owned_by(&child)]);
    cms.create(&PostParams::default(), &grandchild)
        .await
        .unwrap();
    let mut shared = secret("shared", "Opaque", &[]);
    let mut second = owned_by(&other);
    second.controller = None;
    shared.metadata.owner_references = Some(vec![owned_by(&owner), second]);
    secrets
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    let mut unrelated = secret("unrelated", "Opaque", &[]);
    unrelated.metadata.labels = Some([("keep".to_string(), "me".to_string())].into());
    secrets
        .create(&PostParams::default(), &unrelated)
        .await
        .unwrap();

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    server.wait_for_gc().await;

    assert!(
        server
            .object("", "v1", "secrets", Some("default"), "child")
            .is_none()
    );
    assert!(
        server
            .object("", "v1", "configmaps", Some("default"), "grandchild")
            .is_none(),
        "cascades"
    );
    let shared = server
        .object("", "v1", "secrets", Some("default"), "shared")
        .expect("still has an owner");
    let refs = shared["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["name"], "other-owner");
    assert!(
        server
            .object("", "v1", "secrets", Some("default"), "unrelated")
            .is_some()
    );

    // An owner reference that never resolved (wrong uid) is collected too, as the real GC does.
    let mut dangling = secret("dangling", "Opaque", &[]);
    let mut bogus = owned_by(&other);
    bogus.uid = "00000000-0000-4000-8000-000000000000".into();
    dangling.metadata.owner_references = Some(vec![bogus]);
    secrets
        .create(&PostParams::default(), &dangling)
        .await
        .unwrap();
    server.wait_for_gc().await;
    assert!(
        server
            .object("", "v1", "secrets", Some("default"), "dangling")
            .is_none()
    );

    // A namespace's deletion removes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("doomed"),
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let in_doomed: Api<ConfigMap> = Api::namespaced(client, "doomed");
    in_doomed
        .create(&PostParams::default(), &configmap("inside", &[]))
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    server.wait_for_gc().await;
    assert!(
        server
            .objects("", "v1", "configmaps", Some("doomed"))
            .is_empty()
    );
}

#[tokio::test]
async fn without_garbage_collection_or_with_orphan_propagation_dependents_stay() {
    let server = FakeApiServer::builder()
        .garbage_collection(false)
        .start()
        .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let owner = cms
        .create(&PostParams::default(), &configmap("owner", &[]))
        .await
        .unwrap();
    let mut dependent = configmap("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![owned_by(&owner)]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    server.wait_for_gc().await;
    assert!(
        server
            .object("", "v1", "configmaps", Some("default"), "dependent")
            .is_some()
    );

    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let owner = cms
        .create(&PostParams::default(), &configmap("owner", &[]))
        .await
        .unwrap();
    dependent.metadata.owner_references = Some(vec![owned_by(&owner)]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    cms.delete("owner", &orphan).await.unwrap();
    server.wait_for_gc().await;
    let kept = server
        .object("", "v1", "configmaps", Some("default"), "dependent")
        .expect("orphaned, not deleted");
    assert!(
        kept["metadata"].get("ownerReferences").is_none(),
        "orphaning removes the reference"
    );
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    use std::sync::Arc;

    let server = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let certs: Api<TencentCertificate> = Api::default_namespaced(server.client());
    certs
        .create(&PostParams::default(), &certificate("f", "id"))
        .await
        .unwrap();
    let name = "tencentcert.io/cleanup";
    // An infallible reconciler that reports which branch ran.
    let run = |obj: TencentCertificate| {
        let certs = certs.clone();
        async move {
            let mut seen = None;
            finalizer(&certs, name, Arc::new(obj), |event| {
                seen = Some(matches!(event, Finalizer::Cleanup(_)));
                async { Ok::<_, std::convert::Infallible>(Action::await_change()) }
            })
            .await
            .unwrap();
            seen
        }
    };

    // First pass adds the finalizer (JSON patch: test-for-null, then add) without reconciling.
    assert_eq!(run(certs.get("f").await.unwrap()).await, None);
    assert_eq!(
        certs.get("f").await.unwrap().finalizers(),
        [name.to_string()]
    );
    assert_eq!(
        run(certs.get("f").await.unwrap()).await,
        Some(false),
        "then it reconciles"
    );

    certs.delete("f", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        run(certs.get("f").await.unwrap()).await,
        Some(true),
        "deletion runs cleanup"
    );
    assert_eq!(
        api_code(certs.get("f").await).0,
        404,
        "removing the last finalizer completes the deletion"
    );
}
