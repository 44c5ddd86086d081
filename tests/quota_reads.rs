//! The quota check's reads go through `Cluster` (tier 1, the request verifier): one list of ResourceQuotas,
//! one of LimitRanges, and a refusal is a `KubeError::List` naming what could not be listed.

mod support;

use http::Method;
use kubernetes_image_puller::k8s::KubeError;
use kubernetes_image_puller::status::{QuotaCheckError, quota_check};
use serde_json::json;
use support::verifier::{mock_cluster, respond, status};
use support::{NS, load};

fn config() -> kubernetes_image_puller::config::Config {
    load(&format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n\
         [[sets]]\nname = \"wide\"\nimages = {{ a = \"quay.io/x/a:1\" }}\n"
    ))
}

#[tokio::test]
async fn quotas_and_limit_ranges_are_listed_in_the_namespace_and_compared() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let config = config();
    let server = async {
        let (seen, send) = verifier
            .expect(Method::GET, &format!("/api/v1/namespaces/{NS}/resourcequotas"))
            .await;
        assert_eq!(seen.q("limit"), None, "a namespace holds a few quotas: one request");
        respond(
            send,
            200,
            &json!({"kind": "ResourceQuotaList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "tight", "namespace": NS},
                "spec": {"hard": {"pods": "1"}}, "status": {"hard": {"pods": "1"}, "used": {"pods": "0"}},
            }]}),
        );
        let (_, send) = verifier
            .expect(Method::GET, &format!("/api/v1/namespaces/{NS}/limitranges"))
            .await;
        respond(
            send,
            200,
            &json!({"kind": "LimitRangeList", "apiVersion": "v1", "metadata": {}, "items": []}),
        );
        verifier
    };
    // Three nodes wanted, none running yet: three pods against a quota of one.
    let (check, mut verifier) = tokio::join!(quota_check(&cluster, &config, &[3], &[0]), server);
    verifier.assert_idle();
    let check = check.expect("both lists answered");
    assert_eq!(check.shortfalls.len(), 1, "{check:?}");
    let s = &check.shortfalls[0];
    assert_eq!(
        (s.set.as_str(), s.resource.as_str(), s.source.as_str()),
        ("wide", "pods", "ResourceQuota/tight")
    );
}

#[tokio::test]
async fn a_refused_quota_list_is_a_list_error_naming_the_resource_and_stops_there() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let config = config();
    let server = async {
        let (_, send) = verifier
            .expect(Method::GET, &format!("/api/v1/namespaces/{NS}/resourcequotas"))
            .await;
        respond(send, 403, &status(403, "Forbidden", "cannot list resourcequotas"));
        verifier
    };
    let (check, mut verifier) = tokio::join!(quota_check(&cluster, &config, &[3], &[0]), server);
    verifier.assert_idle();
    let Err(QuotaCheckError::Kube(e)) = check else {
        panic!("expected a KubeError, got {check:?}");
    };
    assert!(e.is_forbidden(), "{e}");
    assert_eq!(e.rbac(), ("list", "", "resourcequotas"));
    assert!(matches!(&e, KubeError::List { what: "resourcequotas", namespace, .. } if namespace == NS));
    assert!(
        e.to_string().starts_with(&format!("list resourcequotas in {NS}: ")),
        "{e}"
    );
}
