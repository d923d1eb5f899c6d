//! Server-side apply: creation, removal of dropped fields, conflicts, force and shared ownership.

use fake_apiserver::FakeApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

use crate::common::{api_code, within};

fn tls_secret(labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls", "labels": labels, "annotations": {"tencentcert.io/id": "abc"}},
        "type": "Opaque",
        "data": data,
    })
}

#[tokio::test]
async fn apply_creates_and_reapply_removes_dropped_labels_and_data_keys() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PatchParams::apply("tencent-cert-operator");
    let full = tls_secret(
        json!({"a": "1", "b": "2"}),
        json!({"k1": "MQ==", "k2": "Mg=="}),
    );
    let created = secrets
        .patch("tls", &pp, &Patch::Apply(&full))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managed = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("tencent-cert-operator"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let trimmed = tls_secret(json!({"a": "1"}), json!({"k1": "MQ=="}));
    let after = secrets
        .patch("tls", &pp, &Patch::Apply(&trimmed))
        .await
        .unwrap();
    assert_eq!(after.labels().keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        after.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["k1"]
    );
    assert_eq!(after.annotations()["tencentcert.io/id"], "abc");
}

#[tokio::test]
async fn fields_owned_by_other_managers_survive_a_reapply() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PatchParams::apply("operator");
    let config = tls_secret(json!({"a": "1"}), json!({"k1": "MQ=="}));
    secrets
        .patch("tls", &pp, &Patch::Apply(&config))
        .await
        .unwrap();

    // Someone else adds a label and a data key with an ordinary patch.
    let by_user = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    secrets
        .patch(
            "tls",
            &by_user,
            &Patch::Merge(
                json!({"metadata": {"labels": {"user": "x"}}, "data": {"extra": "eA=="}}),
            ),
        )
        .await
        .unwrap();
    let reapplied = secrets
        .patch("tls", &pp, &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(
        reapplied.labels().get("user").map(String::as_str),
        Some("x")
    );
    assert!(reapplied.data.as_ref().unwrap().contains_key("extra"));
    let managers: Vec<(String, String)> = reapplied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert!(
        managers.contains(&("kubectl-edit".into(), "Update".into())),
        "{managers:?}"
    );

    // The operator now drops label "a": it goes, but the user's label stays.
    let without_a = tls_secret(json!({}), json!({"k1": "MQ=="}));
    let after = secrets
        .patch("tls", &pp, &Patch::Apply(&without_a))
        .await
        .unwrap();
    assert_eq!(after.labels().keys().collect::<Vec<_>>(), ["user"]);
}

#[tokio::test]
async fn conflicting_managers_get_409_unless_forced() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"k": v}});
    cms.patch(
        "shared",
        &PatchParams::apply("alpha"),
        &Patch::Apply(cm("1")),
    )
    .await
    .unwrap();

    // The same value is no conflict: both own the field then.
    cms.patch(
        "shared",
        &PatchParams::apply("beta"),
        &Patch::Apply(cm("1")),
    )
    .await
    .unwrap();
    let (code, reason, message) = api_code(
        cms.patch(
            "shared",
            &PatchParams::apply("gamma"),
            &Patch::Apply(cm("2")),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("conflicts with \"alpha\"") && message.contains("conflicts with \"beta\""),
        "{message}"
    );
    assert!(message.contains(".data.k"), "{message}");
    assert_eq!(
        server
            .object("", "v1", "configmaps", Some("default"), "shared")
            .unwrap()["data"]["k"],
        "1"
    );

    let forced = cms
        .patch(
            "shared",
            &PatchParams::apply("gamma").force(),
            &Patch::Apply(cm("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "2");
    // Forcing took ownership: alpha's next apply of its old value conflicts with gamma now.
    let (code, _, message) = api_code(
        cms.patch(
            "shared",
            &PatchParams::apply("alpha"),
            &Patch::Apply(cm("1")),
        )
        .await,
    );
    assert_eq!(code, 409);
    assert!(message.contains("conflict with \"gamma\""), "{message}");
    // And alpha, no longer owning data.k, dropping it from its config leaves gamma's value alone.
    let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "labels": {"by": "alpha"}}});
    let kept = cms
        .patch("shared", &PatchParams::apply("alpha"), &Patch::Apply(bare))
        .await
        .unwrap();
    assert_eq!(kept.data.unwrap()["k"], "2");
}

#[tokio::test]
async fn a_noop_reapply_writes_nothing() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same"}, "data": {"k": "v"}});
    let pp = PatchParams::apply("operator");
    let first = cms
        .patch("same", &pp, &Patch::Apply(&config))
        .await
        .unwrap();
    let rv = first.resource_version().unwrap();
    let second = cms
        .patch("same", &pp, &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(
        second.resource_version().unwrap(),
        rv,
        "an unchanged apply keeps the resourceVersion"
    );

    // No watch event either: the only event after `rv` is the real change below.
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch("same", &pp, &Patch::Apply(&config))
        .await
        .unwrap();
    cms.patch("same", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same"}, "data": {"k": "w"}})))
        .await
        .unwrap();
    match within("the modification", stream.try_next()).await.unwrap() {
        Some(WatchEvent::Modified(cm)) => assert_eq!(cm.data.unwrap()["k"], "w"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}
