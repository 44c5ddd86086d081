//! Pure node matching: whether a set's DaemonSet pods may run on a node, from its labels and taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::config::ImageSet;

/// Whether a DaemonSet pod of `set` can run on a node with these labels and taints. DaemonSet pods
/// tolerate the `node.kubernetes.io/*` condition taints automatically; other NoSchedule/NoExecute taints
/// need a toleration.
pub fn node_matches(set: &ImageSet, node_labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
    let selected = set.node_selector.iter().all(|(k, v)| node_labels.get(k) == Some(v));
    let tolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .all(|t| set.tolerations.iter().any(|tol| tolerates(tol, t)));
    selected && tolerated
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
}
