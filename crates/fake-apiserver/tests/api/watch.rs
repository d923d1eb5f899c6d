//! Watches: kube's `watcher`/`metadata_watcher` and raw watch streams.

use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::common::{configmap, secret, within};

/// Names in a watcher event, tagged by kind.
fn describe<K: Resource>(event: &Event<K>) -> String {
    match event {
        Event::Init => "Init".into(),
        Event::InitApply(o) => format!(
            "InitApply({})",
            o.meta().name.as_deref().unwrap_or_default()
        ),
        Event::InitDone => "InitDone".into(),
        Event::Apply(o) => format!("Apply({})", o.meta().name.as_deref().unwrap_or_default()),
        Event::Delete(o) => format!("Delete({})", o.meta().name.as_deref().unwrap_or_default()),
    }
}

#[tokio::test]
async fn watcher_receives_added_modified_and_deleted() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(&PostParams::default(), &configmap("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        within("a watcher event", events.try_next())
            .await
            .unwrap()
            .unwrap()
    };

    assert_eq!(describe(&next().await), "Init");
    assert_eq!(describe(&next().await), "InitApply(before)");
    assert_eq!(describe(&next().await), "InitDone");

    cms.create(&PostParams::default(), &configmap("live", &[("k", "1")]))
        .await
        .unwrap();
    assert_eq!(describe(&next().await), "Apply(live)");
    cms.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    match next().await {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "2"),
        other => panic!("expected the modification, got {}", describe(&other)),
    }
    cms.delete("live", &DeleteParams::default()).await.unwrap();
    assert_eq!(describe(&next().await), "Delete(live)");
}

#[tokio::test]
async fn selector_watch_sees_objects_enter_and_leave_the_selection() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut events = watcher(cms.clone(), watcher::Config::default().labels("app=web")).boxed();
    let mut next = async || {
        within("a watcher event", events.try_next())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(describe(&next().await), "Init");
    assert_eq!(describe(&next().await), "InitDone");

    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    cms.create(&PostParams::default(), &configmap("outside", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("inside", &[]))
        .await
        .unwrap();
    cms.patch("inside", &PatchParams::default(), &label(Some("web")))
        .await
        .unwrap();
    // The unlabelled creations were filtered out: the first event is "inside" entering the selection.
    assert_eq!(describe(&next().await), "Apply(inside)");
    cms.patch("outside", &PatchParams::default(), &label(Some("web")))
        .await
        .unwrap();
    assert_eq!(describe(&next().await), "Apply(outside)");
    cms.patch("inside", &PatchParams::default(), &label(Some("db")))
        .await
        .unwrap();
    assert_eq!(
        describe(&next().await),
        "Delete(inside)",
        "leaving the selection reads as a deletion"
    );
}

/// Drives a metadata watch through its initial list, creates a Secret and checks the event it yields.
async fn expect_partial_metadata<S>(server: &FakeApiServer, namespace: &str, name: &str, events: S)
where
    S: futures::Stream<Item = Result<Event<PartialObjectMeta<Secret>>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut next = async || {
        within("a metadata event", events.try_next())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(describe(&next().await), "Init");
    assert_eq!(describe(&next().await), "InitDone");
    let secrets: Api<Secret> = Api::namespaced(server.client(), namespace);
    secrets
        .create(
            &PostParams::default(),
            &secret(name, "Opaque", &[("k", "v")]),
        )
        .await
        .unwrap();
    match next().await {
        Event::Apply(partial) => {
            let types = partial
                .types
                .expect("PartialObjectMetadata carries its type");
            assert_eq!(
                (types.kind.as_str(), types.api_version.as_str()),
                ("PartialObjectMetadata", "meta.k8s.io/v1")
            );
            assert_eq!(partial.metadata.name.as_deref(), Some(name));
            assert!(partial.metadata.uid.is_some());
        }
        other => panic!("expected Apply, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn metadata_watchers_receive_partial_object_metadata() {
    let server = FakeApiServer::start().await;
    // kube 5 deprecates `metadata_watcher` in favour of `watcher` over `Api<PartialObjectMeta<K>>`;
    // operators may use either, so both are exercised.
    #[allow(deprecated)]
    let old_style = kube::runtime::metadata_watcher(
        Api::<Secret>::default_namespaced(server.client()),
        watcher::Config::default(),
    );
    expect_partial_metadata(&server, "default", "first", old_style).await;
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "elsewhere");
    expect_partial_metadata(
        &server,
        "elsewhere",
        "second",
        watcher(api, watcher::Config::default()),
    )
    .await;

    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("watch=true"))
        .collect();
    assert_eq!(watches.len(), 2);
    for w in watches {
        assert_eq!(
            w.accept.as_deref(),
            Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        );
    }
}

#[tokio::test]
async fn watch_resumes_from_history_and_expires_old_versions() {
    let server = FakeApiServer::builder().history_limit(3).start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let first = cms
        .create(&PostParams::default(), &configmap("c0", &[]))
        .await
        .unwrap();
    let first_rv = first.resource_version().unwrap();
    for n in 1..3 {
        cms.create(&PostParams::default(), &configmap(&format!("c{n}"), &[]))
            .await
            .unwrap();
    }
    // Resuming at c0's version replays what came after it, in order.
    let replay = cms
        .watch(&WatchParams::default().timeout(1), &first_rv)
        .await
        .unwrap();
    let names: Vec<String> = within("the replayed history", replay.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Added(cm) => Some(cm.name_any()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["c1", "c2"]);

    // Three more writes push c0's version out of the retained history.
    for n in 3..6 {
        cms.create(&PostParams::default(), &configmap(&format!("c{n}"), &[]))
            .await
            .unwrap();
    }
    let mut expired = cms
        .watch(&WatchParams::default(), &first_rv)
        .await
        .unwrap()
        .boxed();
    match within("the expiry event", expired.try_next())
        .await
        .unwrap()
    {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        within("the end of the expired watch", expired.try_next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(&PostParams::default(), &configmap("existing", &[]))
        .await
        .unwrap();
    let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut next = async || {
        within("a streaming-list event", events.try_next())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(describe(&next().await), "Init");
    assert_eq!(describe(&next().await), "InitApply(existing)");
    assert_eq!(
        describe(&next().await),
        "InitDone",
        "the initial-events-end bookmark ends the initial list"
    );
    cms.create(&PostParams::default(), &configmap("later", &[]))
        .await
        .unwrap();
    assert_eq!(describe(&next().await), "Apply(later)");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.query.contains("sendInitialEvents=true"))
    );
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version_and_timeouts_end_watches() {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = cms
        .create(&PostParams::default(), &configmap("a", &[]))
        .await
        .unwrap();
    let rv = created.resource_version().unwrap();
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    // Another resource's write moves the global version; the bookmark reports it.
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(&PostParams::default(), &secret("s", "Opaque", &[]))
        .await
        .unwrap();
    let latest = server.resource_version().to_string();
    // Bookmarks tick on their own schedule; on a slow machine one may precede the write. They never go
    // backwards and soon carry the latest version.
    let mut last_seen = 0u64;
    within("a bookmark with the latest version", async {
        loop {
            match stream.try_next().await.unwrap() {
                Some(WatchEvent::Bookmark(b)) => {
                    assert_eq!(b.types.kind, "ConfigMap");
                    let rv: u64 = b.metadata.resource_version.parse().unwrap();
                    assert!(rv >= last_seen, "bookmarks are monotonic");
                    last_seen = rv;
                    if b.metadata.resource_version == latest {
                        return;
                    }
                }
                other => panic!("expected only bookmarks, got {other:?}"),
            }
        }
    })
    .await;

    let timed = cms
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .unwrap();
    let events = within("the watch to time out", timed.try_collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn dropping_the_server_ends_watches_and_refuses_requests() {
    let server = FakeApiServer::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let stream = cms.watch(&WatchParams::default(), "0").await.unwrap();
    drop(server);
    let ended = within("the watch to end", stream.collect::<Vec<_>>()).await;
    assert!(
        ended.iter().all(|e| e.is_err()),
        "no events after the drop: {ended:?}"
    );
    let after = within(
        "a request to the dropped server",
        cms.list(&Default::default()),
    )
    .await;
    assert!(after.is_err(), "the server no longer answers");
}
