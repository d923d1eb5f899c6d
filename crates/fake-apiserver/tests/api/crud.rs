//! CRUD, optimistic concurrency, selectors, patch types, validation, faults and client plumbing.

use axum::http;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event as Note, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::common::{api_code, configmap, meta, secret};

#[tokio::test]
async fn create_get_replace_delete_with_optimistic_concurrency() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());

    let created = secrets
        .create(
            &PostParams::default(),
            &secret("s", "Opaque", &[("k", "v1")]),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let (code, reason, _) = api_code(
        secrets
            .create(&PostParams::default(), &secret("s", "Opaque", &[]))
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let mut fresh = secrets.get("s").await.unwrap();
    fresh
        .data
        .as_mut()
        .unwrap()
        .insert("k".into(), k8s_openapi::ByteString(b"v2".to_vec()));
    let replaced = secrets
        .replace("s", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "every write bumps the global resourceVersion");

    // `fresh` still carries the old resourceVersion: the second writer loses.
    let (code, reason, message) =
        api_code(secrets.replace("s", &PostParams::default(), &fresh).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    let stored = server
        .object("", "v1", "secrets", Some("default"), "s")
        .unwrap();
    assert_eq!(stored["data"]["k"], "djI=");
    assert_eq!(stored["metadata"]["resourceVersion"], rv2.to_string());

    let answer = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    let status = answer
        .right()
        .expect("built-in resources answer a Status on immediate deletion");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let (code, reason, message) = api_code(secrets.get("s").await);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (404, "NotFound", "secrets \"s\" not found")
    );
    assert!(
        server
            .object("", "v1", "secrets", Some("default"), "s")
            .is_none()
    );
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_and_page() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let labelled = [
        ("a", "web", Some("front")),
        ("b", "web", Some("back")),
        ("c", "db", None),
        ("d", "db", Some("x")),
    ];
    for (name, app, tier) in labelled {
        let mut cm = configmap(name, &[]);
        let mut labels = std::collections::BTreeMap::from([("app".to_string(), app.to_string())]);
        if let Some(t) = tier {
            labels.insert("tier".into(), t.into());
        }
        cm.metadata.labels = Some(labels);
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let other_ns: Api<ConfigMap> = Api::namespaced(server.client(), "other");
    other_ns
        .create(&PostParams::default(), &configmap("z", &[]))
        .await
        .unwrap();

    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(cms.list(&select("app=web")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(cms.list(&select("app!=web")).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(
        names(cms.list(&select("tier in (front,x)")).await.unwrap()),
        ["a", "d"]
    );
    assert_eq!(
        names(cms.list(&select("tier notin (front,x)")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(names(cms.list(&select("!tier")).await.unwrap()), ["c"]);
    assert_eq!(
        names(cms.list(&select("app=db,tier")).await.unwrap()),
        ["d"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let all: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(
        names(all.list(&ListParams::default()).await.unwrap()),
        ["a", "b", "c", "d", "z"]
    );

    let (code, _, _) = api_code(cms.list(&select("app in (web")).await);
    assert_eq!(code, 400, "malformed selectors are a 400");

    // Pages of two with continue tokens; the list carries the store's resourceVersion.
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(first.clone()), ["a", "b"]);
    assert_eq!(
        first.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    let token = first.metadata.continue_.clone().expect("more pages");
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(second.clone()), ["c", "d"]);
    assert!(
        second
            .metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn merge_strategic_and_json_patches() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &configmap("p", &[("a", "1"), ("b", "2")]),
    )
    .await
    .unwrap();

    let merged = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("b".into(), "2".into()), ("c".into(), "3".into())]
    );
    let strategic = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.labels().get("x").map(String::as_str), Some("y"));

    // kube only builds JSON patches with its `jsonpatch` feature; send one by hand.
    let json_patch = |ops: Value| {
        http::Request::patch("/api/v1/namespaces/default/configmaps/p")
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let patched: ConfigMap = client
        .request(json_patch(json!([
            {"op": "test", "path": "/data/b", "value": "2"},
            {"op": "replace", "path": "/data/b", "value": "20"},
            {"op": "add", "path": "/data/d", "value": "4"},
            {"op": "remove", "path": "/data/c"},
        ])))
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap().into_iter().collect::<Vec<_>>(),
        [("b".into(), "20".into()), ("d".into(), "4".into())]
    );
    let failed = client
        .request::<ConfigMap>(json_patch(
            json!([{"op": "test", "path": "/data/b", "value": "nope"}]),
        ))
        .await;
    assert_eq!(api_code(failed).0, 422);

    // A merge patch carrying a stale resourceVersion is an optimistic-concurrency precondition.
    let stale = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"e": "5"}})),
        )
        .await;
    assert_eq!(api_code(stale).1, "Conflict");
    assert_eq!(server.request_count("PATCH", "configmaps"), 5);
}

#[tokio::test]
async fn secret_immutability_and_validation_match_the_real_server() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &secret("opaque", "Opaque", &[("tls.crt", "c"), ("tls.key", "k")]),
        )
        .await
        .unwrap();

    let retype = secrets
        .patch(
            "opaque",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await;
    let (code, reason, message) = api_code(retype);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("field is immutable"), "{message}");

    let mut frozen = secret("frozen", "Opaque", &[("a", "1")]);
    frozen.immutable = Some(true);
    secrets
        .create(&PostParams::default(), &frozen)
        .await
        .unwrap();
    let change = secrets
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "Mg=="}})),
        )
        .await;
    assert_eq!(api_code(change).0, 422);
    let labels_ok = secrets
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await;
    assert!(
        labels_ok.is_ok(),
        "metadata of an immutable Secret can still change"
    );

    let incomplete = secrets
        .create(
            &PostParams::default(),
            &secret("tls", "kubernetes.io/tls", &[("tls.crt", "c")]),
        )
        .await;
    let (code, _, message) = api_code(incomplete);
    assert_eq!(code, 422);
    assert!(message.contains("data[tls.key]"), "{message}");

    // stringData is write-only: folded into data.
    let mut sd = secret("sd", "Opaque", &[]);
    sd.string_data = Some([("plain".to_string(), "text".to_string())].into());
    let created = secrets.create(&PostParams::default(), &sd).await.unwrap();
    assert_eq!(created.data.unwrap()["plain"].0, b"text");
    assert!(created.string_data.is_none());

    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let (code, _, _) = api_code(
        cms.create(&PostParams::default(), &configmap("Upper_Case", &[]))
            .await,
    );
    assert_eq!(code, 422, "object names must be RFC 1123 subdomains");
    let mut bad_label = configmap("ok", &[]);
    bad_label.metadata.labels = Some([("app".to_string(), "-bad-".to_string())].into());
    assert_eq!(
        api_code(cms.create(&PostParams::default(), &bad_label).await).0,
        422
    );

    let mut generated = configmap("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let made = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(
        made.name_any().starts_with("gen-") && made.name_any().len() == 9,
        "{}",
        made.name_any()
    );
}

#[tokio::test]
async fn malformed_requests_get_status_errors_not_crashes() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let send = |method: &str, path: &str, content_type: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let cases = [
        (
            send(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                "{not json",
            ),
            400,
        ),
        (
            send(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                "[1,2]",
            ),
            400,
        ),
        (
            send(
                "GET",
                "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
                "",
                "",
            ),
            400,
        ),
        (
            send(
                "GET",
                "/api/v1/namespaces/default/configmaps?fieldSelector=spec.x%3D1",
                "",
                "",
            ),
            400,
        ),
        (
            send(
                "GET",
                "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
                "",
                "",
            ),
            400,
        ),
        (send("GET", "/no/such/path", "", ""), 404),
        (
            send(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/x",
                "text/plain",
                "{}",
            ),
            415,
        ),
        (
            send(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/x",
                "application/apply-patch+yaml",
                "{}",
            ),
            422,
        ),
        (
            send(
                "PUT",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                "{}",
            ),
            405,
        ),
        (send("GET", "/api/v1/configmaps/cluster-path", "", ""), 404),
    ];
    for (request, want) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (code, reason, _) = api_code(client.request::<Value>(request).await);
        assert_eq!(code, want, "{what} ({reason})");
    }
    // An absurd watch timeout is capped, not a clock overflow: the watch starts normally.
    let huge = send(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=18446744073709551615",
        "",
        "",
    );
    let response = client
        .send(huge.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    drop(response);
    // Still serving.
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");
}

#[tokio::test]
async fn fail_next_injects_errors_and_request_count_counts_them() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(&PostParams::default(), &secret("f", "Opaque", &[]))
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"metadata": {"labels": {"n": "1"}}}));

    server.fail_next("PATCH", "secrets", 409, 1);
    let (code, reason, _) = api_code(secrets.patch("f", &PatchParams::default(), &patch).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        server
            .object("", "v1", "secrets", Some("default"), "f")
            .unwrap()["metadata"]
            .get("labels")
            .is_none()
    );
    secrets
        .patch("f", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(server.request_count("PATCH", "secrets"), 2);

    // kube retries 503 by itself: two injected failures cost two extra requests, not an error.
    server.fail_next("GET", "secrets", 503, 2);
    secrets.get("f").await.unwrap();
    assert_eq!(server.request_count("get", "secrets"), 3);

    server.fail_next("DELETE", "*", 500, 1);
    assert_eq!(
        api_code(secrets.delete("f", &DeleteParams::default()).await).0,
        500
    );
    let recorded = server.requests();
    let last = recorded.last().unwrap();
    assert_eq!(
        (
            last.method.as_str(),
            last.plural.as_str(),
            last.name.as_deref()
        ),
        ("DELETE", "secrets", Some("f"))
    );
    assert_eq!(last.namespace.as_deref(), Some("default"));
}

#[tokio::test]
async fn kubeconfig_from_write_kubeconfig_loads_and_works() {
    let server = FakeApiServer::start().await;
    let path = std::env::temp_dir().join(format!(
        "fake-apiserver-kubeconfig-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &configmap("via-kubeconfig", &[("k", "v")]),
    )
    .await
    .unwrap();
    assert_eq!(
        server
            .object("", "v1", "configmaps", Some("default"), "via-kubeconfig")
            .unwrap()["data"]["k"],
        "v"
    );
    assert_eq!(client.apiserver_version().await.unwrap().minor, "33");
}

#[tokio::test]
async fn events_recorder_and_lease_concurrency_work_through_the_generic_store() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = cms
        .create(&PostParams::default(), &configmap("subject", &[]))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-controller".into(),
            instance: None,
        },
    );
    let note = Note {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("ok".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&note, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&note, &cm.object_ref(&())).await.unwrap();
    let events = server.objects("events.k8s.io", "v1", "events", Some("default"));
    assert_eq!(
        events.len(),
        1,
        "the second publish patches the same event into a series"
    );
    assert_eq!(events[0]["reason"], "Synced");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(events[0]["regarding"]["name"], "subject");
    assert_eq!(server.request_count("POST", "events"), 1);
    assert_eq!(server.request_count("PATCH", "events"), 1);
    // As kube-apiserver: a note over 1024 bytes (or a reason over 128) refuses the whole event.
    let sized = |reason: String, note: String| Note {
        type_: EventType::Normal,
        reason,
        note: Some(note),
        action: "Sync".into(),
        secondary: None,
    };
    for long in [
        sized("Long".into(), "n".repeat(1025)),
        sized("R".repeat(129), "ok".into()),
    ] {
        let err = recorder.publish(&long, &cm.object_ref(&())).await;
        assert!(
            matches!(err, Err(kube::Error::Api(ref s)) if s.code == 422),
            "{err:?}"
        );
    }
    let fits = sized("Fits".into(), "n".repeat(1024));
    recorder.publish(&fits, &cm.object_ref(&())).await.unwrap();

    // Leader election: two candidates race to update one Lease; the stale one gets 409.
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease = Lease {
        metadata: meta("leader"),
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut by_b = held.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &by_b)
        .await
        .unwrap();
    let mut by_c = held;
    by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        api_code(
            leases
                .replace("leader", &PostParams::default(), &by_c)
                .await
        )
        .1,
        "Conflict"
    );
    assert_eq!(
        leases
            .get("leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn metadata_only_get_and_list_answer_partial_object_metadata() {
    let server = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &secret("m", "Opaque", &[("k", "v")]),
        )
        .await
        .unwrap();

    let one = secrets.get_metadata("m").await.unwrap();
    assert_eq!(one.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    assert_eq!(one.types.as_ref().unwrap().api_version, "meta.k8s.io/v1");
    assert_eq!(one.metadata.name.as_deref(), Some("m"));
    let list = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );

    let accept = server
        .requests()
        .iter()
        .filter_map(|r| r.accept.clone())
        .collect::<Vec<_>>();
    assert!(
        accept
            .contains(&"application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1".to_string())
    );
    assert!(
        accept.contains(
            &"application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1".to_string()
        )
    );
}

#[tokio::test]
async fn store_is_inspectable_and_seedable_without_http() {
    let server = FakeApiServer::start().await;
    let seeded = server
        .create(
            "",
            "v1",
            "configmaps",
            Some("ns1"),
            json!({"metadata": {"name": "seed"}, "data": {"a": "b"}}),
        )
        .unwrap();
    assert_eq!(seeded["kind"], "ConfigMap");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "ns1");
    assert_eq!(cms.get("seed").await.unwrap().data.unwrap()["a"], "b");
    assert_eq!(server.objects("", "v1", "configmaps", None).len(), 1);
    assert!(
        server
            .objects("", "v1", "configmaps", Some("ns2"))
            .is_empty()
    );
    assert_eq!(ConfigMap::kind(&()), "ConfigMap");
}
