//! The API server's rules for an `affinity`, so that `check` refuses what apply would. Each rule cites the
//! Kubernetes function it follows (pkg/apis/core/validation/validation.go unless said otherwise).

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, PreferredSchedulingTerm,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::resolve::{FieldPath, FieldProblem, Seg, key};
use super::rules::{is_dns_label, is_label_key, label_value_problem, q};

const NODE_OPERATORS: &str = "In, NotIn, Exists, DoesNotExist, Gt or Lt";
const SELECTOR_OPERATORS: &str = "In, NotIn, Exists or DoesNotExist";

struct Walk<'a> {
    path: FieldPath,
    out: &'a mut Vec<FieldProblem>,
}

impl Walk<'_> {
    fn report(&mut self, field: &str, message: String) {
        let mut path = self.path.clone();
        if !field.is_empty() {
            path.push(key(field));
        }
        self.out.push(FieldProblem { path, message });
    }

    /// Runs `f` one level down (`field`, then `[index]` when given).
    fn at(&mut self, field: &str, index: Option<usize>, f: impl FnOnce(&mut Self)) {
        let depth = self.path.len();
        self.path.push(key(field));
        if let Some(i) = index {
            self.path.push(Seg::Index(i));
        }
        f(self);
        self.path.truncate(depth);
    }

    /// `ValidateLabelName` (a qualified name), as used for label keys and topology keys.
    fn label_key(&mut self, field: &str, k: &str) {
        if !is_label_key(k) {
            self.report(
                field,
                format!(
                    "{} is not a valid label key: an optional DNS subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    q(k)
                ),
            );
        }
    }

    /// `validatePreferredSchedulingTerms`, `validateWeightedPodAffinityTerms`: weight in 1..=100.
    fn weight(&mut self, weight: i32) {
        if !(1..=100).contains(&weight) {
            self.report("weight", format!("weight {weight} is out of range: use 1 to 100"));
        }
    }

    /// `ValidateNodeSelectorTerm`.
    fn node_term(&mut self, term: &NodeSelectorTerm) {
        for (i, r) in term.match_expressions.iter().flatten().enumerate() {
            self.at("matchExpressions", Some(i), |w| w.node_requirement(r));
        }
        for (i, r) in term.match_fields.iter().flatten().enumerate() {
            self.at("matchFields", Some(i), |w| w.node_field_requirement(r));
        }
    }

    /// `ValidateNodeSelectorRequirement`.
    fn node_requirement(&mut self, r: &NodeSelectorRequirement) {
        self.operator(&r.operator, r.values.as_deref().unwrap_or_default(), true);
        self.label_key("key", &r.key);
    }

    /// The operator and how many values it takes, as node selectors (`numeric`: Gt and Lt too) and label
    /// selectors share them.
    fn operator(&mut self, operator: &str, values: &[String], numeric: bool) {
        match operator {
            "In" | "NotIn" if values.is_empty() => {
                self.report("values", format!("operator {operator} needs at least one value"))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                self.report("values", format!("operator {operator} takes no values"))
            }
            // The scheduler reads the value as a whole number, but the API only counts it: so does this.
            "Gt" | "Lt" if numeric && values.len() != 1 => self.report(
                "values",
                format!("operator {operator} takes exactly one value (a whole number)"),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            "Gt" | "Lt" if numeric => {}
            other => {
                let allowed = if numeric { NODE_OPERATORS } else { SELECTOR_OPERATORS };
                self.report(
                    "operator",
                    format!("operator {} is not supported: use {allowed}", q(other)),
                )
            }
        }
    }

    /// `validateNodeFieldSelectorRequirement`: only `metadata.name`, with In or NotIn and one value.
    fn node_field_requirement(&mut self, r: &NodeSelectorRequirement) {
        if r.key != "metadata.name" {
            self.report(
                "key",
                format!(
                    "{} is not a supported field: matchFields takes only \"metadata.name\"",
                    q(&r.key)
                ),
            );
        }
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if r.values.as_ref().is_none_or(|v| v.len() != 1) {
                    self.report("values", "matchFields takes exactly one value".into());
                }
            }
            other => self.report(
                "operator",
                format!("operator {} is not supported in matchFields: use In or NotIn", q(other)),
            ),
        }
    }

    /// `ValidateLabelSelector` (apimachinery pkg/apis/meta/v1/validation).
    fn label_selector(&mut self, s: &LabelSelector) {
        for (k, v) in s.match_labels.iter().flatten() {
            self.at("matchLabels", None, |w| {
                w.label_key("", k);
                if let Some(why) = label_value_problem(v) {
                    w.report("", format!("value {} of {} {why}", q(v), q(k)));
                }
            });
        }
        for (i, r) in s.match_expressions.iter().flatten().enumerate() {
            self.at("matchExpressions", Some(i), |w| {
                let values = r.values.as_deref().unwrap_or_default();
                w.operator(&r.operator, values, false);
                w.label_key("key", &r.key);
                for v in values {
                    if let Some(why) = label_value_problem(v) {
                        w.report("values", format!("{} {why}", q(v)));
                    }
                }
            });
        }
    }

    /// `validatePodAffinityTerm`: a topology key is required and is a label key.
    fn pod_term(&mut self, t: &PodAffinityTerm) {
        if t.topology_key.is_empty() {
            self.report(
                "topologyKey",
                "topologyKey is required, e.g. \"kubernetes.io/hostname\"".into(),
            );
        } else {
            self.label_key("topologyKey", &t.topology_key);
        }
        if let Some(s) = &t.label_selector {
            self.at("labelSelector", None, |w| w.label_selector(s));
        }
        if let Some(s) = &t.namespace_selector {
            self.at("namespaceSelector", None, |w| w.label_selector(s));
        }
        for n in t.namespaces.iter().flatten() {
            if !is_dns_label(n) {
                self.report("namespaces", format!("{} is not a valid namespace name", q(n)));
            }
        }
        for k in t.match_label_keys.iter().flatten() {
            self.label_key("matchLabelKeys", k);
        }
        for k in t.mismatch_label_keys.iter().flatten() {
            self.label_key("mismatchLabelKeys", k);
        }
    }

    fn pod_terms(&mut self, required: Option<&Vec<PodAffinityTerm>>, preferred: Option<&Vec<WeightedPodAffinityTerm>>) {
        for (i, t) in required.into_iter().flatten().enumerate() {
            self.at("requiredDuringSchedulingIgnoredDuringExecution", Some(i), |w| {
                w.pod_term(t)
            });
        }
        for (i, t) in preferred.into_iter().flatten().enumerate() {
            self.at("preferredDuringSchedulingIgnoredDuringExecution", Some(i), |w| {
                w.weight(t.weight);
                w.at("podAffinityTerm", None, |w| w.pod_term(&t.pod_affinity_term));
            });
        }
    }
}

/// Every problem of `affinity` (written at `base`), with the path of the field concerned.
pub fn check(affinity: &Affinity, base: FieldPath, out: &mut Vec<FieldProblem>) {
    let mut w = Walk { path: base, out };
    if let Some(node) = &affinity.node_affinity {
        w.at("nodeAffinity", None, |w| {
            if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
                w.at("requiredDuringSchedulingIgnoredDuringExecution", None, |w| {
                    // `ValidateNodeSelector`.
                    if required.node_selector_terms.is_empty() {
                        w.report("nodeSelectorTerms", "must have at least one node selector term".into());
                    }
                    for (i, t) in required.node_selector_terms.iter().enumerate() {
                        w.at("nodeSelectorTerms", Some(i), |w| w.node_term(t));
                    }
                });
            }
            let preferred: &[PreferredSchedulingTerm] = node
                .preferred_during_scheduling_ignored_during_execution
                .as_deref()
                .unwrap_or_default();
            for (i, t) in preferred.iter().enumerate() {
                w.at("preferredDuringSchedulingIgnoredDuringExecution", Some(i), |w| {
                    w.weight(t.weight);
                    w.at("preference", None, |w| w.node_term(&t.preference));
                });
            }
        });
    }
    if let Some(pod) = &affinity.pod_affinity {
        w.at("podAffinity", None, |w| {
            w.pod_terms(
                pod.required_during_scheduling_ignored_during_execution.as_ref(),
                pod.preferred_during_scheduling_ignored_during_execution.as_ref(),
            );
        });
    }
    if let Some(pod) = &affinity.pod_anti_affinity {
        w.at("podAntiAffinity", None, |w| {
            w.pod_terms(
                pod.required_during_scheduling_ignored_during_execution.as_ref(),
                pod.preferred_during_scheduling_ignored_during_execution.as_ref(),
            );
        });
    }
}
