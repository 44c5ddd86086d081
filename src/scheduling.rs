//! Pure node matching: whether a set's DaemonSet pods may run on a node, from its name, labels and taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

use crate::config::ImageSet;

/// Whether a DaemonSet pod of `set` can run on a node with this name, labels and taints: its node selector,
/// its required node affinity (what the DaemonSet controller and the scheduler apply; preferred terms do not
/// exclude a node), and its tolerations. DaemonSet pods tolerate the `node.kubernetes.io/*` condition taints
/// automatically; other NoSchedule/NoExecute taints need a toleration.
pub fn node_matches(set: &ImageSet, node_name: &str, node_labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
    let selected = set.node_selector.iter().all(|(k, v)| node_labels.get(k) == Some(v))
        && required_affinity_matches(set.affinity.as_ref(), node_name, node_labels);
    let tolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .all(|t| set.tolerations.iter().any(|tol| tolerates(tol, t)));
    selected && tolerated
}

/// `requiredDuringSchedulingIgnoredDuringExecution` of a node affinity: the terms are ORed; a term's
/// expressions and fields are ANDed; an empty term matches no node (k8s.io/component-helpers nodeaffinity).
fn required_affinity_matches(affinity: Option<&Affinity>, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(required) = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node_name, labels))
}

fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // `metadata.name` is the only field a node selector may use.
            r.key == "metadata.name" && requirement_matches(r, Some(node_name))
        })
}

/// One requirement against a label's value (None: the node lacks the label).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (value.and_then(number), values.first().and_then(|x| number(x))) {
            (Some(v), Some(bound)) if r.operator == "Gt" => v > bound,
            (Some(v), Some(bound)) => v < bound,
            _ => false,
        },
        _ => false,
    }
}

/// The Kubernetes toleration-matches-taint rule.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = tol.key.as_deref().unwrap_or("");
    let exists = tol.operator.as_deref() == Some("Exists");
    let key_ok = if key.is_empty() { exists } else { key == taint.key };
    let value_ok = exists || tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_rules() {
        let gpu = taint("nvidia.com/gpu", Some("true"), "NoSchedule");
        assert!(tolerates(
            &tol(Some("nvidia.com/gpu"), "Exists", None, Some("NoSchedule")),
            &gpu
        ));
        assert!(tolerates(
            &tol(Some("nvidia.com/gpu"), "Equal", Some("true"), None),
            &gpu
        ));
        assert!(!tolerates(
            &tol(Some("nvidia.com/gpu"), "Equal", Some("false"), None),
            &gpu
        ));
        assert!(!tolerates(
            &tol(Some("nvidia.com/gpu"), "Exists", None, Some("NoExecute")),
            &gpu
        ));
        assert!(tolerates(&tol(None, "Exists", None, None), &gpu));
        assert!(!tolerates(&tol(Some("other"), "Exists", None, None), &gpu));
    }

    fn affinity(terms: serde_json::Value) -> ImageSet {
        let affinity: Affinity = serde_json::from_value(serde_json::json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }))
        .unwrap();
        ImageSet {
            name: "a".into(),
            affinity: Some(affinity),
            ..ImageSet::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn required_node_affinity_is_applied_like_the_scheduler() {
        use serde_json::json;
        let gpu = labels(&[("accelerator", "a100"), ("cores", "64")]);
        let plain = labels(&[("cores", "8")]);
        let matches = |set: &ImageSet, name: &str, l: &BTreeMap<String, String>| node_matches(set, name, l, &[]);
        let in_ = affinity(
            json!([{"matchExpressions": [{"key": "accelerator", "operator": "In", "values": ["a100", "h100"]}]}]),
        );
        assert!(matches(&in_, "n1", &gpu));
        assert!(!matches(&in_, "n1", &plain));
        let not_in =
            affinity(json!([{"matchExpressions": [{"key": "accelerator", "operator": "NotIn", "values": ["a100"]}]}]));
        assert!(!matches(&not_in, "n1", &gpu));
        assert!(matches(&not_in, "n1", &plain), "NotIn matches a node without the label");
        let gt = affinity(json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["16"]}]}]));
        assert!(matches(&gt, "n1", &gpu));
        assert!(!matches(&gt, "n1", &plain));
        let absent = affinity(json!([{"matchExpressions": [{"key": "accelerator", "operator": "DoesNotExist"}]}]));
        assert!(matches(&absent, "n1", &plain) && !matches(&absent, "n1", &gpu));
        // Terms are ORed; expressions within a term ANDed; fields name the node.
        let either = affinity(json!([
            {"matchExpressions": [{"key": "accelerator", "operator": "Exists"},
                                  {"key": "cores", "operator": "Lt", "values": ["32"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}
        ]));
        assert!(!matches(&either, "n1", &gpu), "64 cores is not < 32");
        assert!(matches(&either, "n7", &plain), "the second term names the node");
        assert!(
            !matches(&affinity(json!([{}])), "n1", &gpu),
            "an empty term matches no node"
        );
        assert!(!matches(&affinity(json!([])), "n1", &gpu), "no term matches no node");
        // Preferred terms never exclude a node.
        let preferred: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}}))
        .unwrap();
        let set = ImageSet {
            affinity: Some(preferred),
            ..ImageSet::default()
        };
        assert!(matches(&set, "n1", &plain));
    }
}
