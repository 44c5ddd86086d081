//! Discovery: what this identity may do (SelfSubjectRulesReview) and whether the cluster is OpenShift.

use k8s_openapi::api::authorization::v1::{ResourceRule, SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// What this identity may do in `namespace`: a SelfSubjectRulesReview, which every authenticated user may
/// create. Returns the rules and whether the server says the list may be incomplete.
pub async fn rules_review(client: &Client, namespace: &str) -> Result<(Vec<ResourceRule>, bool), kube::Error> {
    let api: Api<SelfSubjectRulesReview> = Api::all(client.clone());
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_owned()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    let status = answer.status.unwrap_or_default();
    // An evaluation error means some rules could not be read: treat the list as a lower bound.
    let incomplete = status.incomplete || status.evaluation_error.is_some_and(|e| !e.is_empty());
    Ok((status.resource_rules, incomplete))
}

/// OpenShift is recognised by its `route.openshift.io` API group, as upstream does.
pub async fn is_openshift(client: &Client) -> Result<bool, kube::Error> {
    Ok(client
        .list_api_groups()
        .await?
        .groups
        .iter()
        .any(|g| g.name == "route.openshift.io"))
}
