//! The CRD's CEL rules, evaluated offline with kube's client-side CEL validator against the generated
//! schema: an invalid expression would make the API server refuse the CRD, and a wrong one would let bad
//! resources in or keep good ones out.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use tencent_cert_operator::crd::TencentCertificate;

fn schema() -> Value {
    let crd = TencentCertificate::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap()
}

fn object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "tencentcert.io/v1alpha1",
        "kind": "TencentCertificate",
        "metadata": {"name": name, "namespace": "web"},
        "spec": spec,
    })
}

fn errors(name: &str, spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &object(name, spec), None) {
        Ok(()) => Vec::new(),
        Err(errors) => vec![format!("{errors:?}")],
    }
}

#[test]
fn valid_resources_pass_every_rule() {
    for spec in [
        json!({"certificateId": "aBcD1234", "refreshInterval": "1h"}),
        json!({"certificateId": "aBcD1234", "refreshInterval": "1m"}),
        json!({"certificateId": "aBcD1234", "refreshInterval": "90m"}),
        json!({"domain": "shop.example.com", "refreshInterval": "1h"}),
        json!({"domain": "*.example.com", "selector": {"projectId": 3}, "refreshInterval": "2h"}),
        json!({"domain": "example.com", "additionalDomains": ["www.example.com"], "refreshInterval": "1h"}),
    ] {
        assert_eq!(errors("shop", spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn exactly_one_of_certificate_id_and_domain_is_enforced() {
    let both = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "domain": "a.example.com", "refreshInterval": "1h"}),
    );
    assert!(both.iter().any(|e| e.contains("exactly one")), "{both:?}");
    let neither = errors("shop", json!({"refreshInterval": "1h"}));
    assert!(
        neither.iter().any(|e| e.contains("exactly one")),
        "{neither:?}"
    );
}

#[test]
fn a_selector_needs_a_domain() {
    let errs = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "selector": {"projectId": 1}, "refreshInterval": "1h"}),
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("selector applies only with")),
        "{errs:?}"
    );
}

#[test]
fn additional_domains_need_a_domain() {
    let errs = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "additionalDomains": ["www.example.com"], "refreshInterval": "1h"}),
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("additionalDomains applies only with")),
        "{errs:?}"
    );
}

#[test]
fn refresh_intervals_under_a_minute_are_refused() {
    let errs = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "refreshInterval": "30s"}),
    );
    assert!(errs.iter().any(|e| e.contains("at least 1m")), "{errs:?}");
}

#[test]
fn names_longer_than_a_label_value_are_refused() {
    let long = "a".repeat(64);
    let errs = errors(
        &long,
        json!({"certificateId": "aBcD1234", "refreshInterval": "1h"}),
    );
    assert!(
        errs.iter().any(|e| e.contains("at most 63 characters")),
        "{errs:?}"
    );
    assert_eq!(
        errors(
            &"a".repeat(63),
            json!({"certificateId": "aBcD1234", "refreshInterval": "1h"})
        ),
        Vec::<String>::new()
    );
}

#[test]
fn output_rules_refuse_duplicate_formats_and_clashing_certificate_id_keys() {
    let ok = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "refreshInterval": "1h",
               "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}],
               "certificateIdKey": "qcloud_cert_id"}),
    );
    assert_eq!(ok, Vec::<String>::new());
    let twice = errors(
        "shop",
        json!({"certificateId": "aBcD1234", "refreshInterval": "1h",
               "additionalOutputFormats": [{"type": "DER"}, {"type": "DER"}]}),
    );
    assert!(
        twice.iter().any(|e| e.contains("may appear once")),
        "{twice:?}"
    );
    for clash in [
        "tls.crt",
        "tls.key",
        "ca.crt",
        "keystore.p12",
        "truststore.jks",
    ] {
        let errs = errors(
            "shop",
            json!({"certificateId": "aBcD1234", "refreshInterval": "1h", "certificateIdKey": clash}),
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("must not be one of the keys")),
            "{clash}: {errs:?}"
        );
    }
}

fn cluster_errors(spec: Value) -> Vec<String> {
    let crd = tencent_cert_operator::cluster::crd::ClusterTencentCertificate::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap();
    let object = json!({
        "apiVersion": "tencentcert.io/v1alpha1",
        "kind": "ClusterTencentCertificate",
        "metadata": {"name": "wildcard"},
        "spec": spec,
    });
    match Validator::new().validate(&schema, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => vec![format!("{errors:?}")],
    }
}

#[test]
fn cluster_certificates_need_a_target_and_take_no_keystores() {
    let good = json!({"certificateId": "aBcD1234", "secretName": "wildcard-tls", "refreshInterval": "1h",
        "namespaceSelector": {"matchLabels": {"tls": "wildcard"}}, "certificateIdKey": "qcloud_cert_id",
        "additionalOutputFormats": [{"type": "CombinedPEM"}]});
    assert_eq!(cluster_errors(good.clone()), Vec::<String>::new());

    let mut no_target = good.clone();
    no_target
        .as_object_mut()
        .unwrap()
        .remove("namespaceSelector");
    let e = cluster_errors(no_target);
    assert!(e.iter().any(|e| e.contains("namespaceSelector")), "{e:?}");
    let mut names_only = good.clone();
    names_only
        .as_object_mut()
        .unwrap()
        .remove("namespaceSelector");
    names_only["namespaces"] = json!(["shop"]);
    assert_eq!(cluster_errors(names_only), Vec::<String>::new());

    let mut keystores = good.clone();
    keystores["keystores"] =
        json!({"jks": {"create": true, "passwordSecretRef": {"name": "p", "key": "k"}}});
    let e = cluster_errors(keystores);
    assert!(
        e.iter()
            .any(|e| e.contains("keystores is for TencentCertificate only")),
        "{e:?}"
    );

    let mut both = good;
    both["domain"] = json!("*.example.com");
    let e = cluster_errors(both);
    assert!(e.iter().any(|e| e.contains("exactly one")), "{e:?}");
}

#[test]
fn applying_for_renewals_needs_the_following_on_both_kinds() {
    let renewal = json!({"apply": "Free", "daysBefore": 20, "validation": "DNS"});
    for follow in [json!(true), Value::Null] {
        let mut spec =
            json!({"certificateId": "aBcD1234", "refreshInterval": "1h", "renewal": renewal});
        if !follow.is_null() {
            spec["followRenewals"] = follow.clone();
        }
        assert_eq!(errors("shop", spec.clone()), Vec::<String>::new(), "{spec}");
        let mut cluster = spec.clone();
        cluster["secretName"] = json!("shop-tls");
        cluster["namespaces"] = json!(["web"]);
        assert_eq!(
            cluster_errors(cluster.clone()),
            Vec::<String>::new(),
            "{cluster}"
        );
    }
    let unfollowed = json!({"certificateId": "aBcD1234", "refreshInterval": "1h", "followRenewals": false, "renewal": renewal});
    let errs = errors("shop", unfollowed.clone());
    assert!(
        errs.iter()
            .any(|e| e.contains("needs followRenewals: true")),
        "{errs:?}"
    );
    let mut cluster = unfollowed;
    cluster["secretName"] = json!("shop-tls");
    cluster["namespaces"] = json!(["web"]);
    let errs = cluster_errors(cluster);
    assert!(
        errs.iter()
            .any(|e| e.contains("needs followRenewals: true")),
        "{errs:?}"
    );
    // Renewal off (the default `Never`) asks nothing of the following.
    assert_eq!(
        errors(
            "shop",
            json!({"certificateId": "aBcD1234", "refreshInterval": "1h", "followRenewals": false, "renewal": {"apply": "Never"}})
        ),
        Vec::<String>::new()
    );
}
