//! Each set's health and quota gathered from the cluster through [`Cluster`], for the health check and `status`.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

use crate::config::Config;
use crate::health::{self, FailureTally, NotCreated, NotCreatedTally, SetHealth};
use crate::k8s::{Cluster, KubeError};
use crate::quota::{self, QuotaCheck, QuotaError};
use crate::render::Desired;
use crate::scheduling::node_matches;

#[derive(Debug, thiserror::Error)]
pub enum QuotaCheckError {
    /// Reading the quotas or limit ranges failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
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
    desired: &[Desired],
    owned: &[Arc<DaemonSet>],
) -> Vec<SetHealth> {
    let mut healths = Vec::with_capacity(config.sets.len());
    for (set, want) in config.sets.iter().zip(desired) {
        let live = owned.iter().find(|d| d.name_any() == set.name).map(Arc::as_ref);
        healths.push(gather_set(cluster, &set.name, Some(want.hash()), live).await);
    }
    healths
}

/// One set's health: its DaemonSet's counts, its pods read page by page in the partial form (failing images
/// with the kubelet's reason per node), and why pods were not created. `hash`: the desired spec hash, to
/// tell whether the live object is up to date (None: not asked).
pub async fn gather_set(cluster: &Cluster, set: &str, hash: Option<&str>, live: Option<&DaemonSet>) -> SetHealth {
    let mut h = health::from_daemonset(set, live, hash);
    let Some(ds) = live else { return h };
    // Without `list pods` the health check keeps to the DaemonSet's counts (announced once by Access).
    if cluster.access().allows("list", "", "pods") {
        let mut tally = FailureTally::default();
        match cluster
            .for_each_pod_page(&health::pod_selector(set), |pods| tally.add_pods(pods))
            .await
        {
            Ok(()) => h.failing = tally.finish(),
            Err(e) if e.is_forbidden() => {}
            Err(e) => tracing::warn!(set, error = %e, "cannot list pods for the health check"),
        }
    }
    if h.nodes_without_pod > 0 {
        let why = not_created(cluster, ds).await;
        h.set_not_created(why);
    }
    h
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
                    if node_matches(
                        set,
                        node.metadata.name.as_deref().unwrap_or_default(),
                        node.labels(),
                        taints,
                    ) {
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
pub async fn quota_check(
    cluster: &Cluster,
    config: &Config,
    nodes_of: &[u64],
    running_of: &[u64],
) -> Result<QuotaCheck, QuotaCheckError> {
    let quotas = cluster.resource_quotas().await?;
    let ranges = cluster.limit_ranges().await?;
    let mut check = quota::quota_shortfalls(config, nodes_of, running_of, &quotas)?;
    check.shortfalls.extend(quota::limit_range_violations(config, &ranges)?);
    Ok(check)
}
