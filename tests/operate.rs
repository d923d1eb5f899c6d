//! Operating the operator (issue 16): the chart's Grafana dashboard and alert rules against the metrics a
//! running operator really exports, and the `status` / `renew` commands (and the `kubectl-tcert` plugin name)
//! against it. One `run --demo` process, the in-process fake API server and the demo manifests of
//! `examples/demo/` (Ready, KeyMissing and Expired resources): no cluster needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tencent_cert_operator::crd::TencentCertificate;

const WAIT: Duration = Duration::from_secs(60);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_tencent-cert-operator");

// ---------------------------------------------------------------------------------------------------------
// The scrape: family -> label names seen on its samples.

#[derive(Debug, Default)]
struct Scrape {
    /// Family name (as in `# TYPE`) -> its type.
    families: BTreeMap<String, String>,
    /// Sample name (with `_bucket`/`_sum`/`_count`/`_total` as exposed) -> label names over all its samples.
    samples: BTreeMap<String, BTreeSet<String>>,
}

fn parse_scrape(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            scrape.families.insert(name.into(), kind.into());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let labels = scrape.samples.entry(name.into()).or_default();
        if line[name_end..].starts_with('{') {
            // name="value",... with escaped quotes inside values.
            let mut rest = &line[name_end + 1..];
            while let Some(eq) = rest.find("=\"") {
                labels.insert(rest[..eq].trim_start_matches(',').to_string());
                let mut chars = rest[eq + 2..].char_indices();
                let mut end = 0;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                rest = &rest[eq + 2 + end + 1..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
    }
    scrape
}

impl Scrape {
    /// The label names of a metric as PromQL names it, or why it is not exported.
    fn labels_of(&self, metric: &str) -> Result<&BTreeSet<String>, String> {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| metric.strip_suffix(suffix))
            .filter(|base| self.families.get(*base).is_some_and(|k| k == "histogram"))
            .or_else(|| {
                metric
                    .strip_suffix("_total")
                    .filter(|b| self.families.get(*b).is_some_and(|k| k == "counter"))
            })
            .unwrap_or(metric);
        if !self.families.contains_key(family) {
            return Err(format!("{metric}: no such metric family in /metrics"));
        }
        self.samples.get(metric).ok_or_else(|| {
            format!("{metric}: family {family} is exported but has no {metric} samples yet")
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// What a PromQL expression references: metric names with their matcher labels, and grouping labels.

#[derive(Debug, Default, PartialEq)]
struct Refs {
    metrics: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Operators and aggregations (`sum by (x) (...)` is not followed by its parenthesis).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// A small PromQL scanner: enough to find every metric and label name, not a parser (promtool parses the
/// same queries in packaging-checks).
fn references(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let ident = |j: usize| {
        let mut k = j;
        while k < chars.len()
            && (chars[k].is_ascii_alphanumeric() || chars[k] == '_' || chars[k] == ':')
        {
            k += 1;
        }
        (chars[j..k].iter().collect::<String>(), k)
    };
    let skip_string = |j: usize| {
        let quote = chars[j];
        let mut k = j + 1;
        while k < chars.len() && chars[k] != quote {
            if chars[k] == '\\' {
                k += 1;
            }
            k += 1;
        }
        k + 1
    };
    let label_list = |j: usize, out: &mut Vec<String>| {
        // j at '(' or '{'; labels up to the closing bracket, skipping matcher values.
        let close = if chars[j] == '(' { ')' } else { '}' };
        let mut k = j + 1;
        let mut expect_name = true;
        while k < chars.len() && chars[k] != close {
            let c = chars[k];
            if c == '"' || c == '\'' || c == '`' {
                k = skip_string(k);
            } else if c == ',' {
                expect_name = true;
                k += 1;
            } else if (c.is_ascii_alphabetic() || c == '_') && expect_name {
                let (name, next) = ident(k);
                out.push(name);
                expect_name = false;
                k = next;
            } else {
                k += 1;
            }
        }
        k + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let (word, next) = ident(i);
            let after = skip_ws(next);
            let opens = chars.get(after).copied();
            if GROUPING.contains(&word.as_str()) && opens == Some('(') {
                i = label_list(after, &mut refs.grouping);
            } else if opens == Some('(')
                || KEYWORDS.contains(&word.as_str())
                || word.chars().all(|c| c.is_ascii_digit())
            {
                i = next; // a function or an operator keyword
            } else {
                let mut matchers = Vec::new();
                i = if opens == Some('{') {
                    label_list(after, &mut matchers)
                } else {
                    next
                };
                refs.metrics.push((word, matchers));
            }
        } else if c.is_ascii_digit() || c == '.' {
            // numbers, including 1e3 and durations such as 5m outside brackets
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    refs
}

#[test]
fn the_scanner_finds_metrics_matchers_and_grouping() {
    let refs = references(
        r#"histogram_quantile(0.95, sum by (action, le) (rate(x_seconds_bucket{action!="a,b", code=~"R.*"}[5m]))) / on(action) group_left(code) y_total or vector(0) > 1e3"#,
    );
    assert_eq!(
        refs.metrics,
        vec![
            (
                "x_seconds_bucket".to_string(),
                vec!["action".to_string(), "code".to_string()]
            ),
            ("y_total".to_string(), vec![]),
        ]
    );
    assert_eq!(refs.grouping, ["action", "le", "action", "code"]);
}

/// Every metric and label a query uses must be in the scrape; `legend` labels must come out of the query.
fn check_query(
    where_: &str,
    expr: &str,
    legend: &str,
    scrape: &Scrape,
    problems: &mut Vec<String>,
) {
    let refs = references(expr);
    if refs.metrics.is_empty() {
        problems.push(format!("{where_}: no metric in {expr}"));
    }
    let mut available = BTreeSet::new();
    for (metric, matchers) in &refs.metrics {
        match scrape.labels_of(metric) {
            Ok(labels) => {
                available.extend(labels.iter().cloned());
                for label in matchers {
                    if !labels.contains(label) {
                        problems.push(format!(
                            "{where_}: {metric} has no label {label:?} (has {labels:?})"
                        ));
                    }
                }
            }
            Err(why) => problems.push(format!("{where_}: {why}")),
        }
    }
    for label in &refs.grouping {
        if !available.contains(label) {
            problems.push(format!(
                "{where_}: groups by {label:?}, which none of its metrics has"
            ));
        }
    }
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").map_or(rest.len(), |e| start + e);
        let label = rest[start + 2..end].trim();
        let out = if refs.grouping.is_empty() {
            available.contains(label)
        } else {
            refs.grouping.iter().any(|g| g == label)
        };
        if !out {
            problems.push(format!(
                "{where_}: legend uses {label:?}, which the query does not return"
            ));
        }
        rest = &rest[end.min(rest.len())..];
        if rest.len() >= 2 {
            rest = &rest[2..];
        }
    }
}

fn dashboard_queries() -> Vec<(String, String, String)> {
    let path = format!("{ROOT}/charts/tencent-cert-operator/dashboards/tencent-cert-operator.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            queries.push((
                format!(
                    "panel {:?} {}",
                    panel["title"].as_str().unwrap(),
                    target["refId"].as_str().unwrap()
                ),
                target["expr"].as_str().unwrap().to_string(),
                if legend == "__auto" {
                    String::new()
                } else {
                    legend.to_string()
                },
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            // label_values(METRIC, LABEL) reads LABEL of METRIC.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap();
            let (metric, label) = inner.split_once(',').unwrap();
            queries.push((
                format!("variable {}", variable["name"].as_str().unwrap()),
                metric.trim().to_string(),
                format!("{{{{{}}}}}", label.trim()),
            ));
        }
    }
    queries
}

/// The alert expressions of the chart's PrometheusRule template; template actions (thresholds) become 1.
fn alert_expressions() -> Vec<(String, String)> {
    let template = std::fs::read_to_string(format!(
        "{ROOT}/charts/tencent-cert-operator/templates/prometheusrule.yaml"
    ))
    .unwrap();
    let mut alert = String::new();
    let mut out = Vec::new();
    for line in template.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_string();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            let mut expr = expr.to_string();
            while let Some(start) = expr.find("{{") {
                let end = expr[start..].find("}}").unwrap() + start + 2;
                expr.replace_range(start..end, "1");
            }
            out.push((alert.clone(), expr));
        }
    }
    assert_eq!(out.len(), 9, "{out:?}");
    out
}

/// The input series of the promtool tests: (metric, label names).
fn alert_test_series() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/alerts/rules.test.yaml")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- series: '"))
        .map(|s| {
            let refs = references(s.trim_end_matches('\''));
            refs.metrics.into_iter().next().unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The running operator.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn apply_demo(client: &kube::Client) {
    for file in ["credentials.yaml", "certificates.yaml"] {
        let text = std::fs::read_to_string(format!("{ROOT}/examples/demo/{file}")).unwrap();
        for document in text.split("\n---").filter(|d| d.contains("kind:")) {
            let object: serde_json::Value = serde_saphyr::from_str(document).unwrap();
            match object["kind"].as_str() {
                Some("Secret") => {
                    let secret: Secret = serde_json::from_value(object).unwrap();
                    let name = secret.metadata.name.clone().unwrap();
                    Api::<Secret>::namespaced(client.clone(), "default")
                        .patch(
                            &name,
                            &PatchParams::apply("kubectl").force(),
                            &Patch::Apply(&secret),
                        )
                        .await
                        .unwrap();
                }
                Some("TencentCertificate") => {
                    let cr: TencentCertificate = serde_json::from_value(object).unwrap();
                    Api::<TencentCertificate>::namespaced(client.clone(), "default")
                        .create(&PostParams::default(), &cr)
                        .await
                        .unwrap();
                }
                other => panic!("unexpected kind {other:?} in {file}"),
            }
        }
    }
}

async fn wait_reason(crs: &Api<TencentCertificate>, name: &str, reason: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cr = crs.get(name).await.unwrap();
        let current = cr
            .status
            .as_ref()
            .and_then(|s| s.condition("Ready"))
            .map(|c| c.reason.clone());
        if current.as_deref() == Some(reason) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: Ready reason {current:?}, want {reason}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cli(kubeconfig: &Path, program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn dashboard_alerts_and_status_against_a_running_operator() {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let dir = std::env::temp_dir().join(format!("tco-operate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let port = free_port();
    let mut operator = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = api.client();
    apply_demo(&client).await;
    let crs: Api<TencentCertificate> = Api::namespaced(client.clone(), "default");
    for (name, reason) in [
        ("demo-shop", "Ready"),
        ("demo-api", "Ready"),
        ("demo-no-key", "KeyMissing"),
        ("demo-expired", "Expired"),
    ] {
        wait_reason(&crs, name, reason).await;
    }

    // --- The dashboard and the alert rules against a real scrape.
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = parse_scrape(&text);
    let mut problems = Vec::new();
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    for (where_, expr, legend) in &queries {
        check_query(where_, expr, legend, &scrape, &mut problems);
    }
    for (alert, expr) in alert_expressions() {
        let mut found = Vec::new();
        check_query(&format!("alert {alert}"), &expr, "", &scrape, &mut found);
        // The renewal gauges have series only while a resource's order waits or is due; the demo has
        // none (its certificates are far from their window). Their labels are checked by the telemetry
        // unit test `renewal_gauges_are_per_resource`.
        found.retain(|p| !(p.contains("tencentcert_renewal_") && p.contains("has no")));
        problems.extend(found);
    }
    // The promtool tests' input series: the operator's names and labels, plus the labels Prometheus adds.
    let target_labels = ["job", "instance", "pod", "namespace"];
    for (metric, labels) in alert_test_series() {
        match scrape.labels_of(&metric) {
            Ok(exported) => {
                for label in labels
                    .iter()
                    .filter(|l| !exported.contains(*l) && !target_labels.contains(&l.as_str()))
                {
                    problems.push(format!(
                        "tests/alerts series {metric}: the operator exports no label {label:?}"
                    ));
                }
                for label in exported.iter().filter(|l| !labels.contains(l)) {
                    problems.push(format!(
                        "tests/alerts series {metric}: lacks the exported label {label:?}"
                    ));
                }
            }
            // The renewal gauges have no series in the demo (see above).
            Err(why) if metric.starts_with("tencentcert_renewal_") && why.contains("has no") => {}
            Err(why) => problems.push(format!("tests/alerts: {why}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nscrape:\n{text}",
        problems.join("\n")
    );
    eprintln!(
        "dashboard: {} queries, alerts: 9 expressions, checked against {} exported series names",
        queries.len(),
        scrape.samples.len()
    );
    // A negative control: a misspelt metric and label are caught.
    let mut caught = Vec::new();
    check_query(
        "control",
        r#"sum by (reasons) (tencentcert_certificate_ready{nmespace="x"}) + tencentcert_nope"#,
        "{{reasons}}",
        &scrape,
        &mut caught,
    );
    assert_eq!(caught.len(), 3, "{caught:#?}");
    let mut caught = Vec::new();
    check_query(
        "control",
        "sum by (reason) (tencentcert_certificate_ready)",
        "{{action}}",
        &scrape,
        &mut caught,
    );
    assert_eq!(caught.len(), 1, "{caught:#?}");

    // --- status: the three demo cases, as text and JSON, and through the plugin name.
    let (ok, out, err) = cli(
        &kubeconfig,
        Path::new(BIN),
        &["status", "-n", "default", "demo-shop", "-o", "json"],
    )
    .await;
    assert!(ok, "{err}");
    let views: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shop = &views[0];
    assert_eq!(shop["ready"], "True");
    assert!(
        shop["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{shop:#}"
    );
    assert_eq!(
        shop["secret"]["certificate"]["subject"],
        "CN=shop.demo.test"
    );
    assert_eq!(shop["secret"]["certificate"]["privateKeyMatches"], true);
    assert!(!out.contains("PRIVATE KEY"));

    let plugin = dir.join("kubectl-tcert");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let (ok, out, err) = cli(&kubeconfig, &plugin, &["status"]).await;
    assert!(ok, "{err}");
    for expected in [
        "TencentCertificate default/demo-expired: Ready=False (Expired)",
        "TencentCertificate default/demo-no-key: Ready=False (KeyMissing)",
        "TencentCertificate default/demo-shop: Ready=True (Ready)",
        "has no private key",
        "FAIL secret        Secret demo-no-key does not exist",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    let (_, help, _) = cli(&kubeconfig, &plugin, &["--help"]).await;
    assert!(
        help.contains("kubectl tcert") && !help.contains("sim"),
        "{help}"
    );
    let (ok, _, err) = cli(&kubeconfig, Path::new(BIN), &["status", "nope"]).await;
    assert!(
        !ok && err.contains("TencentCertificate default/nope not found"),
        "{err}"
    );

    // --- renew: one resource, then all of the namespace; the operator acts on the annotation.
    let (ok, out, err) = cli(&kubeconfig, Path::new(BIN), &["renew", "demo-api"]).await;
    assert!(
        ok && out.starts_with("tencentcertificate default/demo-api: refresh requested at "),
        "{out}{err}"
    );
    let requested = out.trim().rsplit(' ').next().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cr = crs.get("demo-api").await.unwrap();
        if cr.status.and_then(|s| s.last_refresh_request).as_deref() == Some(requested.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator did not act on renew"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, err) = cli(&kubeconfig, &plugin, &["renew", "--all", "-o", "json"]).await;
    assert!(ok, "{err}");
    let renewed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewed.as_array().unwrap().len(), 4, "{out}");
    let (ok, _, err) = cli(&kubeconfig, Path::new(BIN), &["renew"]).await;
    assert!(!ok && err.contains("required"), "{err}");

    let _ = operator.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
