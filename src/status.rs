//! Gathering each set's health from the cluster (DaemonSet status, a paged scan of its pods, matching nodes,
//! quota) — shared by the controller's health check and the `status` command.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Taint};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::config::{Config, ImageSet};
use crate::health::{self, FailureTally, NotCreated, NotCreatedTally, SetHealth};
use crate::k8s::Cluster;
use crate::quota::{self, QuotaCheck, QuotaError};
use crate::reconcile;

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("list {what} in {namespace}: {source}")]
    List {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Quota(#[from] QuotaError),
}

/// Why the DaemonSet's missing pods were not created: its newest FailedCreate/FailedPlacement Event since
/// its last change (paged list of its Warning Events). None without such an Event, or when not allowed.
pub async fn not_created(cluster: &Cluster, ds: &DaemonSet) -> Option<NotCreated> {
    // Without `list events` the missing-pod counts still come from the DaemonSet status; only the reason is
    // unknown (announced once by Access).
    if !cluster.access().allows("list", "", "events") {
        return None;
    }
    let mut tally = NotCreatedTally::new(health::last_change(ds));
    let selector = health::daemonset_events_selector(ds);
    match cluster
        .for_each_event_page(&selector, |page| tally.add_events(page))
        .await
    {
        Ok(()) => tally.finish(),
        Err(e) if e.is_forbidden() => {
            cluster.access().forbidden("list", "", "events");
            None
        }
        Err(e) => {
            tracing::warn!(daemonset = %ds.name_any(), error = %e, "cannot list the DaemonSet's Events");
            None
        }
    }
}

/// Health of every set: counts from the DaemonSet, failures from its pods (one page at a time), and the
/// reason pods could not be created from its Events.
pub async fn gather(
    cluster: &Cluster,
    config: &Config,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
) -> Vec<SetHealth> {
    let mut healths = Vec::with_capacity(config.sets.len());
    for (set, want) in config.sets.iter().zip(desired) {
        let live = owned.iter().find(|d| d.name_any() == set.name).map(Arc::as_ref);
        let mut h = health::from_daemonset(&set.name, live, reconcile::spec_hash_of(want));
        if let Some(ds) = live {
            // Without `list pods` the health check keeps to the DaemonSet's counts (announced once by Access).
            if cluster.access().allows("list", "", "pods") {
                let mut tally = FailureTally::default();
                match cluster
                    .for_each_pod_page(&health::pod_selector(&set.name), |pods| tally.add_pods(pods))
                    .await
                {
                    Ok(()) => h.failing = tally.finish(),
                    Err(e) if e.is_forbidden() => {}
                    Err(e) => tracing::warn!(set = %set.name, error = %e, "cannot list pods for the health check"),
                }
            }
            if h.nodes_without_pod > 0 {
                let why = not_created(cluster, ds).await;
                h.set_not_created(why);
            }
        }
        healths.push(h);
    }
    healths
}

/// Whether a DaemonSet pod of `set` can run on a node with these labels and taints. DaemonSet pods
/// tolerate the `node.kubernetes.io/*` condition taints automatically; other NoSchedule/NoExecute taints
/// need a toleration.
pub fn node_matches(
    set: &ImageSet,
    node_labels: &std::collections::BTreeMap<String, String>,
    taints: &[Taint],
) -> bool {
    let selected = set.node_selector.iter().all(|(k, v)| node_labels.get(k) == Some(v));
    let tolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .all(|t| set.tolerations.iter().any(|tol| tolerates(tol, t)));
    selected && tolerated
}

/// The Kubernetes toleration-matches-taint rule.
pub fn tolerates(tol: &k8s_openapi::api::core::v1::Toleration, taint: &Taint) -> bool {
    let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = tol.key.as_deref().unwrap_or("");
    let exists = tol.operator.as_deref() == Some("Exists");
    let key_ok = if key.is_empty() { exists } else { key == taint.key };
    let value_ok = exists || tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
    effect_ok && key_ok && value_ok
}

/// Counts, per set, the nodes its pods can run on, reading nodes one small page at a time (labels and
/// taints only). Needs cluster-wide `list nodes`; an error (e.g. forbidden) is returned for the caller to report.
pub async fn matching_nodes(cluster: &Cluster, config: &Config) -> Result<Vec<u64>, kube::Error> {
    let mut counts = vec![0u64; config.sets.len()];
    cluster
        .for_each_node_page(|nodes| {
            for node in nodes {
                let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
                for (count, set) in counts.iter_mut().zip(&config.sets) {
                    if node_matches(set, node.labels(), taints) {
                        *count += 1;
                    }
                }
            }
        })
        .await?;
    Ok(counts)
}

/// Compares what the sets need with the namespace's ResourceQuotas and LimitRanges. `nodes_of` gives the
/// nodes each set runs (or will run) on; `running_of` the nodes it already has pods on (already counted
/// in the quota's usage).
pub async fn quota_shortfalls(
    cluster: &Cluster,
    config: &Config,
    nodes_of: &[u64],
    running_of: &[u64],
) -> Result<QuotaCheck, GatherError> {
    let list_error = |what: &'static str| {
        let namespace = cluster.namespace().to_owned();
        move |source| GatherError::List {
            what,
            namespace,
            source,
        }
    };
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let ranges: Api<LimitRange> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let quotas = quotas
        .list(&ListParams::default())
        .await
        .map_err(list_error("resourcequotas"))?
        .items;
    let ranges = ranges
        .list(&ListParams::default())
        .await
        .map_err(list_error("limitranges"))?
        .items;
    let mut check = quota::quota_shortfalls(config, nodes_of, running_of, &quotas)?;
    check.shortfalls.extend(quota::limit_range_violations(config, &ranges)?);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Toleration;

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
