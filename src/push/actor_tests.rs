//! Passes of the push policy carried out against the in-process simulator: each pass is gather → decide →
//! act → apply, as the reconcile skeleton will run them, with a simulated clock for waits.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tencent_sim::{self as sim, Account, Binding, DeployFault, SimConfig, SimHandle};
use tencent_ssl::{Client, ClientConfig, Credentials};

use super::*;
use crate::push::policy::{self, Input, Outcome, Refusal, Step, reason};
use crate::push::test_support::{deploying_spec, key_lines, pair, spec, tls_data};
use crate::push::{PreviousPolicy, TencentCertificatePushSpec, TencentCertificatePushStatus};

const SECRET_ID: &str = "AKIDpushACTOR0001";
const SECRET_KEY: &str = "push-actor-secret-key";

struct World {
    sim: SimHandle,
    client: Client,
    credentials: Credentials,
}

async fn world(certificates: &[&str]) -> World {
    let sim = sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: SECRET_ID.into(),
                secret_key: SECRET_KEY.into(),
                token: None,
            }],
            certificates: certificates.iter().map(|c| c.parse().unwrap()).collect(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    World {
        sim,
        client,
        credentials: Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap(),
    }
}

/// One push resource, as the skeleton would hold it between passes.
struct Push {
    namespace: &'static str,
    uid: &'static str,
    spec: TencentCertificatePushSpec,
    status: TencentCertificatePushStatus,
    secret: BTreeMap<String, Vec<u8>>,
    own_credentials: bool,
    now: jiff::Timestamp,
    steps: Vec<Step>,
}

impl Push {
    fn new(spec: TencentCertificatePushSpec, secret: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            namespace: "team-a",
            uid: "uid-team-a-shop",
            spec,
            status: TencentCertificatePushStatus::default(),
            secret,
            own_credentials: true,
            now: jiff::Timestamp::now(),
            steps: Vec::new(),
        }
    }

    /// One pass; `keep` false drops the status change (a crash before the status patch).
    async fn pass_with(&mut self, world: &World, keep: bool) -> Step {
        let pair = policy::read_pair(
            &self.spec.secret_name,
            Some(("kubernetes.io/tls", &self.secret)),
        );
        let input = Input {
            namespace: self.namespace,
            name: "shop",
            uid: self.uid,
            spec: &self.spec,
            status: &self.status,
            pair: pair.as_ref(),
            own_credentials: self.own_credentials,
            now: self.now,
        };
        let lookups = policy::lookups(&input);
        let observed = gather(&world.client, &world.credentials, &lookups)
            .await
            .unwrap();
        let step = policy::decide(&input, &observed);
        let outcome = match &pair {
            Ok(pair) => act(&world.client, &world.credentials, pair, &step)
                .await
                .unwrap(),
            Err(_) => Outcome::Unchanged,
        };
        let status = policy::apply(&input, &outcome);
        if keep {
            self.status = status;
        }
        // The simulated clock: waits pass.
        let after = match &step {
            Step::RecordDeploy { after, .. } => after.unwrap_or_default(),
            Step::Wait { after, .. } => *after,
            _ => Duration::ZERO,
        };
        self.now = self.now + after + Duration::from_secs(1);
        self.steps.push(step.clone());
        step
    }

    async fn pass(&mut self, world: &World) -> Step {
        self.pass_with(world, true).await
    }

    /// Passes until the push rests (in sync, refused, or waiting on something only a person fixes).
    async fn settle(&mut self, world: &World) -> Step {
        for _ in 0..40 {
            let step = self.pass(world).await;
            match &step {
                Step::InSync { .. } | Step::Refuse(_) => return step,
                Step::Wait { reason, .. }
                    if *reason == reason::DEPLOY_FAILED
                        || *reason == reason::PREVIOUS_STILL_BOUND =>
                {
                    return step;
                }
                _ => {}
            }
        }
        panic!("the push never settled: {:#?}", self.steps);
    }
}

fn bind_fixtures(sim: &SimHandle, certificate: &str) {
    for (kind, region, instance) in [
        ("clb", Some("ap-guangzhou"), "lb-shop"),
        ("cdn", None, "shop.example.com"),
    ] {
        sim.state().add_binding(Binding {
            certificate_id: certificate.into(),
            resource_type: kind.into(),
            region: region.map(String::from),
            instance_id: instance.into(),
            domains: vec!["shop.example.com".into()],
        });
    }
}

/// A `MakeWriter` keeping every log line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_secret_published_then_rotated_three_times_moves_clb_and_cdn_each_time() {
    let log = Captured::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let world = world(&["console1:domain=shop.example.com"]).await;
    bind_fixtures(&world.sim, "console1");
    let mut pairs = vec![pair(90)];
    let mut push = Push::new(
        deploying_spec(Some("console1"), PreviousPolicy::Delete),
        tls_data(&pairs[0]),
    );
    assert!(matches!(push.settle(&world).await, Step::InSync { .. }));
    let state = world.sim.state();
    let first = push.status.certificate_id.clone().unwrap();
    assert_eq!(state.bindings_of(&first).len(), 2);
    // The console certificate was named by the spec, not uploaded here: kept.
    assert!(state.certificate("console1").is_some());
    assert_eq!(world.sim.stats().count("UploadCertificate", "Success"), 1);

    let mut previous = first;
    for rotation in 1..=3 {
        pairs.push(pair(90));
        push.secret = tls_data(&pairs[rotation]);
        assert!(matches!(push.settle(&world).await, Step::InSync { .. }));
        let current = push.status.certificate_id.clone().unwrap();
        assert_ne!(current, previous);
        assert_eq!(state.bindings_of(&current).len(), 2, "rotation {rotation}");
        assert!(state.bindings_of(&previous).is_empty());
        // Uploaded here, moved off, unbound: deleted.
        assert!(
            state.certificate(&previous).is_none(),
            "rotation {rotation}"
        );
        let deploy = push.status.deploy.as_ref().unwrap();
        assert!(deploy.finished && deploy.previous_deleted);
        assert_eq!(
            deploy
                .results
                .iter()
                .map(|r| (r.resource_type.as_str(), r.succeeded, r.failed))
                .collect::<Vec<_>>(),
            vec![("clb", 1, 0), ("cdn", 1, 0)]
        );
        previous = current;
    }
    assert_eq!(world.sim.stats().count("UploadCertificate", "Success"), 4);

    // Unchanged Secret: a refresh makes no Tencent call at all.
    world.sim.state().reset_stats();
    assert!(matches!(push.pass(&world).await, Step::InSync { .. }));
    assert_eq!(world.sim.stats().requests, 0);

    // No key in logs (client and simulator), steps or status.
    let printed = format!(
        "{}\n{:?}\n{}",
        String::from_utf8_lossy(&log.0.lock().unwrap()),
        push.steps,
        serde_json::to_string(&push.status).unwrap()
    );
    assert!(printed.contains("uploading the Secret"), "no log captured");
    assert!(!printed.contains("PRIVATE KEY"));
    for issued in &pairs {
        for line in key_lines(&issued.key_pem) {
            assert!(!printed.contains(&line), "key material in the output");
        }
    }
}

#[tokio::test]
async fn a_crash_right_after_the_upload_does_not_upload_twice() {
    let world = world(&[]).await;
    let mut push = Push::new(spec(), tls_data(&pair(90)));
    // Pass 1 looks for an earlier upload (none) and uploads; its status patch is lost.
    let step = push.pass_with(&world, false).await;
    assert!(matches!(step, Step::Upload { .. }), "{step:?}");
    assert_eq!(push.status, TencentCertificatePushStatus::default());
    let uploaded = world.sim.state().uploaded_certificates();
    assert_eq!(uploaded.len(), 1);
    // The restarted pass finds it by its tags.
    let step = push.pass(&world).await;
    assert_eq!(
        step,
        Step::Adopt {
            certificate_id: uploaded[0].id.clone()
        }
    );
    assert_eq!(
        push.status.certificate_id.as_deref(),
        Some(uploaded[0].id.as_str())
    );
    assert!(matches!(push.settle(&world).await, Step::InSync { .. }));
    assert_eq!(world.sim.stats().action_total("UploadCertificate"), 1);
    assert_eq!(world.sim.state().uploaded_certificates().len(), 1);
}

#[tokio::test]
async fn a_failing_deploy_is_reported_per_resource_type_and_retried() {
    let world = world(&["console1:domain=shop.example.com"]).await;
    bind_fixtures(&world.sim, "console1");
    world.sim.state().add_deploy_fault(DeployFault {
        resource_type: "cdn".into(),
        region: None,
        remaining: Some(2),
        error_msg: "domain is offline".into(),
    });
    let mut push = Push::new(
        deploying_spec(Some("console1"), PreviousPolicy::Keep),
        tls_data(&pair(90)),
    );
    assert!(matches!(push.settle(&world).await, Step::InSync { .. }));
    // On the way: cdn reported failed with Tencent's message while clb succeeded, then retried twice.
    let reported = push.steps.iter().any(|step| {
        matches!(step, Step::RecordDeploy { results, .. }
            if results.iter().any(|r| r.resource_type == "cdn" && r.failed == 1
                && r.message.as_deref() == Some("domain is offline"))
            && results.iter().any(|r| r.resource_type == "clb" && r.succeeded == 1))
    });
    assert!(reported, "{:#?}", push.steps);
    let retries = push
        .steps
        .iter()
        .filter(|s| matches!(s, Step::RetryDeploy { .. }))
        .count();
    assert_eq!(retries, 2);
    let deploy = push.status.deploy.as_ref().unwrap();
    assert_eq!(deploy.retries, 2);
    assert!(
        deploy
            .results
            .iter()
            .all(|r| r.failed == 0 && r.succeeded == 1)
    );
    let current = push.status.certificate_id.clone().unwrap();
    assert_eq!(world.sim.state().bindings_of(&current).len(), 2);
    assert_eq!(
        world
            .sim
            .stats()
            .count("UpdateCertificateRecordRetry", "Success"),
        2
    );
}

#[tokio::test]
async fn an_expired_pair_is_refused_with_a_reason_and_nothing_is_uploaded() {
    let world = world(&[]).await;
    let mut push = Push::new(spec(), tls_data(&pair(-2)));
    match push.settle(&world).await {
        Step::Refuse(Refusal { reason, message }) => {
            assert_eq!(reason, reason::CERTIFICATE_EXPIRED);
            assert!(message.contains("shop-tls"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.sim.stats().requests, 0);
    assert!(world.sim.state().uploaded_certificates().is_empty());
}

#[tokio::test]
async fn a_tenant_cannot_move_or_delete_certificates_it_did_not_upload() {
    let world = world(&["console1:domain=shop.example.com"]).await;
    // Team B publishes; its certificate carries B's uid.
    let mut theirs = Push::new(spec(), tls_data(&pair(90)));
    theirs.namespace = "team-b";
    theirs.uid = "uid-team-b";
    theirs.settle(&world).await;
    let victim = theirs.status.certificate_id.clone().unwrap();
    bind_fixtures(&world.sim, &victim);

    // Team A, under the default credentials, names B's certificate as the source: refused, no call.
    world.sim.state().reset_stats();
    let mut ours = Push::new(
        deploying_spec(Some(&victim), PreviousPolicy::Delete),
        tls_data(&pair(90)),
    );
    ours.own_credentials = false;
    // A's own certificate is uploaded; the move is refused.
    let rest = ours.settle(&world).await;
    assert!(
        matches!(
            rest,
            Step::Refuse(Refusal {
                reason: reason::DEPLOY_SOURCE_NOT_ALLOWED,
                ..
            })
        ),
        "{rest:?}"
    );
    // A status claiming B's certificate as A's previous one (a forged or stale status): refused too.
    let mut forged = Push::new(
        deploying_spec(None, PreviousPolicy::Delete),
        ours.secret.clone(),
    );
    forged.status = ours.status.clone();
    forged.status.previous_certificate_id = Some(victim.clone());
    let rest = forged.settle(&world).await;
    assert!(
        matches!(
            rest,
            Step::Refuse(Refusal {
                reason: reason::PREVIOUS_NOT_OURS,
                ..
            })
        ),
        "{rest:?}"
    );
    assert_eq!(world.sim.state().bindings_of(&victim).len(), 2);
    assert!(world.sim.state().certificate(&victim).is_some());
    assert_eq!(
        world.sim.stats().action_total("UpdateCertificateInstance"),
        0
    );
    assert_eq!(world.sim.stats().action_total("DeleteCertificate"), 0);
}
