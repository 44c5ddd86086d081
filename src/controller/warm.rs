//! The warm gate (`[warm_gate]`): a step reads the nodes and the sets' cache pods page by page into compact
//! records (`warmth`), decides about each node, and writes what changed within the node-write budget: the
//! `kubernetes-image-puller/ImagesCached` condition when its status changes, the startup taint's removal
//! once a node is warm or timed out. A step runs shortly after DaemonSet watch events (a node joined, a
//! cache pod turned ready), every few seconds while nodes are cold or writes wait for the budget, and at
//! each resync. Nothing about nodes or pods is kept between steps but the summary `status` shows.

use std::collections::HashMap;

use tokio::time::Instant;

use super::*;
use crate::config::WarmGate;
use crate::metrics::SetLabel;
use crate::warmth::{self, CachePod, NodeRecord, TaintAction, Verdict, WarmSummary};

/// Delay between a DaemonSet watch event and the warm step it plans: events of a burst make one step, and the
/// condition follows a cache pod's Ready within the 2 s (seen at 2.2 s with 2 s here, on the harness).
pub(super) const WARM_SETTLE: Duration = Duration::from_millis(500);
/// Delay between steps while nodes are cold (their cache pods become ready without a write of ours).
pub(super) const WARM_TICK: Duration = Duration::from_secs(5);

/// What a warm step found: a verdict per node a set selects, and the nodes carrying our condition that no set
/// selects any more (a label or a set changed): their condition is removed.
#[derive(Debug, Default)]
pub struct Survey {
    pub verdicts: Vec<Verdict>,
    pub unselected: Vec<String>,
}

/// Reads every node and the sets' cache pods and decides about each node a set selects. Read-only (shared
/// with `status`). `sets_since`: each set's DaemonSet creation, in config order, when known.
pub async fn survey(
    cluster: &Cluster,
    config: &Config,
    sets_since: &[Option<Timestamp>],
    gate: &WarmGate,
    now: Timestamp,
) -> Result<Survey, crate::k8s::nodes::NodeCallError> {
    let mut records: Vec<NodeRecord> = Vec::new();
    let mut unselected: Vec<String> = Vec::new();
    cluster
        .for_each_warm_node_page(|page| {
            for n in page {
                let written = n
                    .condition(warmth::CONDITION_TYPE)
                    .map(|(status, since)| warmth::Written {
                        status,
                        since,
                        reason: n
                            .condition_reason(warmth::CONDITION_TYPE)
                            .unwrap_or_default()
                            .to_owned(),
                    });
                let facts = warmth::NodeFacts {
                    name: n.name(),
                    labels: n.labels(),
                    taints: n.taints(),
                    created: n.created(),
                    ready: n.condition("Ready"),
                };
                let ours = written.is_some();
                match warmth::record(facts, written, &config.sets, gate) {
                    Some(r) => records.push(r),
                    None if ours => unselected.push(n.name().to_owned()),
                    None => {}
                }
            }
        })
        .await?;
    let index: HashMap<String, usize> = records.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
    let mut pods: Vec<Vec<(usize, CachePod)>> = vec![Vec::new(); records.len()];
    for (i, set) in config.sets.iter().enumerate() {
        let visit = |page: &[health::PodView]| {
            for p in page {
                if let Some((node, pod)) = warmth::cache_pod_of(p, &set.images)
                    && let Some(&r) = index.get(&node)
                {
                    pods[r].push((i, pod));
                }
            }
        };
        if let Err(e) = cluster.for_each_pod_page(&health::pod_selector(&set.name), visit).await {
            // Without the set's pods every node it selects reads as cold: better no verdict than a wrong one.
            return Err(crate::k8s::nodes::NodeCallError {
                verb: "list",
                resource: "pods",
                name: String::new(),
                source: match e {
                    KubeError::List { source, .. } | KubeError::DaemonSet { source, .. } => source,
                },
            });
        }
    }
    let names: Vec<&str> = config.sets.iter().map(|s| s.name.as_str()).collect();
    let verdicts = records
        .iter()
        .zip(&pods)
        .map(|(r, p)| warmth::evaluate(r, &names, sets_since, p, gate, now))
        .collect();
    Ok(Survey { verdicts, unselected })
}

impl Controller {
    /// The node-write budget: `per_second` writes on average, `burst` at once (the default suits a real
    /// cluster; tests may go faster).
    pub fn with_warm_write_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.warm_budget = warmth::WriteBudget::new(per_second, burst);
        self
    }

    /// One warm step. Returns when the next one is due (None: only after a DaemonSet event or the resync).
    /// `owned`: the DaemonSets of the watch cache (when each set's appeared).
    pub(super) async fn warm_step(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> Option<Instant> {
        let config = self.cfg.config.clone()?;
        let access = cluster.access().clone();
        access.set_feature(Feature::WarmGate, config.warm_gate.is_some());
        access.set_feature(
            Feature::WarmGateTaint,
            config.warm_gate.as_ref().is_some_and(|g| g.taint.is_some()),
        );
        let Some(gate) = config.warm_gate.clone() else {
            self.reported.warm = None;
            self.metrics.cold_nodes.clear();
            return None;
        };
        if !access.feature_on(Feature::WarmGate) {
            // Announced once by `access`; tried again after the next health check's review.
            self.reported.warm = None;
            return None;
        }
        let sets_since: Vec<Option<Timestamp>> = config
            .sets
            .iter()
            .map(|set| {
                let live = owned
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(set.name.as_str()));
                live.and_then(|d| d.metadata.creation_timestamp.as_ref()).map(|t| t.0)
            })
            .collect();
        let Survey { verdicts, unselected } = match survey(cluster, &config, &sets_since, &gate, Timestamp::now()).await
        {
            Ok(v) => v,
            Err(e) => {
                if !e.is_forbidden() {
                    tracing::warn!(error = %e, "warm gate: cannot read nodes or cache pods; trying again shortly");
                }
                return Some(Instant::now() + WARM_TICK);
            }
        };
        let mut cold_per_set: HashMap<&str, i64> = config.sets.iter().map(|s| (s.name.as_str(), 0)).collect();
        let mut waiting = false;
        let mut deadline: Option<Timestamp> = None;
        for v in &verdicts {
            for (set, state) in &v.sets {
                if !matches!(state, warmth::SetOnNode::Ready { .. })
                    && let Some(n) = cold_per_set.get_mut(set.as_str())
                {
                    *n += 1;
                }
            }
            if let Some(condition) = &v.write {
                if !access.allows("patch", "", "nodes/status") {
                    continue;
                }
                if !self.warm_budget.take(std::time::Instant::now()) {
                    waiting = true;
                    continue;
                }
                self.write_condition(cluster, v, condition).await;
            }
            match &v.taint {
                TaintAction::Keep { until } => deadline = Some(deadline.map_or(*until, |d| d.min(*until))),
                TaintAction::Remove {
                    timed_out,
                    current,
                    remaining,
                } if access.feature_on(Feature::WarmGateTaint) => {
                    if !self.warm_budget.take(std::time::Instant::now()) {
                        waiting = true;
                        continue;
                    }
                    self.remove_taint(cluster, &gate, v, *timed_out, current, remaining)
                        .await;
                }
                _ => {}
            }
        }
        for node in &unselected {
            if !access.allows("patch", "", "nodes/status") {
                break;
            }
            if !self.warm_budget.take(std::time::Instant::now()) {
                waiting = true;
                break;
            }
            match cluster.remove_node_condition(node).await {
                Ok(()) => {
                    self.count_node_write("patch-node-status");
                    tracing::info!(node = %node, "warm gate: no set selects the node any more; its condition removed");
                }
                Err(e) if e.is_forbidden() || e.is_stale() => {}
                Err(e) => tracing::warn!(node = %node, error = %e, "warm gate: cannot remove the condition"),
            }
        }
        for (set, n) in &cold_per_set {
            let label = SetLabel { set: (*set).to_owned() };
            self.metrics.cold_nodes.get_or_create(&label).set(*n);
            // Exported from 0, so that `increase()` sees a set's first timeout (the alert).
            let _ = self.metrics.warm_timeouts.get_or_create(&label);
        }
        let summary = warmth::summarize(&verdicts, Timestamp::now());
        let any_cold = !summary.cold.is_empty();
        self.reported.warm = Some(summary);
        let now = Instant::now();
        let mut next = if waiting {
            Some(
                now + self
                    .warm_budget
                    .wait(std::time::Instant::now())
                    .max(Duration::from_millis(50)),
            )
        } else if any_cold {
            Some(now + WARM_TICK)
        } else {
            None
        };
        if let Some(at) = deadline {
            let wait = at.duration_since(Timestamp::now()).as_secs().max(0) as u64;
            let at = now + Duration::from_secs(wait);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    async fn write_condition(&mut self, cluster: &Cluster, v: &Verdict, condition: &warmth::Condition) {
        match cluster.patch_node_condition(&v.node, condition).await {
            Ok(()) => {
                self.count_node_write("patch-node-status");
                if condition.status {
                    tracing::info!(node = %v.node, "warm gate: node warm: {}", condition.message);
                } else {
                    tracing::debug!(node = %v.node, "warm gate: node cold: {}", condition.message);
                }
                for (set, seconds) in &v.warmed {
                    self.metrics
                        .node_warm_seconds
                        .get_or_create(&SetLabel { set: set.clone() })
                        .observe(*seconds);
                }
            }
            Err(e) if e.is_forbidden() => {}
            Err(e) if e.is_stale() => tracing::debug!(error = %e, "warm gate: node changed or gone; next step"),
            Err(e) => tracing::warn!(error = %e, "warm gate: cannot write the node condition; next step"),
        }
    }

    async fn remove_taint(
        &mut self,
        cluster: &Cluster,
        gate: &WarmGate,
        v: &Verdict,
        timed_out: bool,
        current: &[k8s_openapi::api::core::v1::Taint],
        remaining: &[k8s_openapi::api::core::v1::Taint],
    ) {
        let key = gate.taint.as_deref().unwrap_or_default();
        match cluster.remove_node_taint(&v.node, current, remaining).await {
            Ok(()) => {
                self.count_node_write("patch-node");
                if timed_out {
                    let missing = warmth::message(&v.sets, Timestamp::now());
                    let note = format!(
                        "startup taint {key} removed after the warm gate's timeout ({}) with images still missing: {missing}",
                        jiff::SignedDuration::try_from(gate.timeout).unwrap_or_default()
                    );
                    tracing::warn!(node = %v.node, "warm gate: {note}");
                    let namespace = cluster.namespace().to_owned();
                    for (set, state) in &v.sets {
                        if !matches!(state, warmth::SetOnNode::Ready { .. }) {
                            self.metrics
                                .warm_timeouts
                                .get_or_create(&SetLabel { set: set.clone() })
                                .inc();
                            self.events
                                .on_node(&v.node, set, &namespace, true, "WarmGateTimeout", note.clone())
                                .await;
                        }
                    }
                } else {
                    tracing::info!(node = %v.node, taint = key, "warm gate: node warm, startup taint removed");
                }
            }
            Err(e) if e.is_forbidden() => {}
            Err(e) if e.is_stale() => {
                tracing::debug!(error = %e, "warm gate: node taints changed or node gone; next step")
            }
            Err(e) => tracing::warn!(error = %e, "warm gate: cannot remove the startup taint; next step"),
        }
    }

    fn count_node_write(&self, verb: &str) {
        self.metrics
            .api_writes
            .get_or_create(&VerbLabel { verb: verb.into() })
            .inc();
    }

    /// The summary of the last warm step (None: the gate is off or has not run).
    pub fn warm_summary(&self) -> Option<&WarmSummary> {
        self.reported.warm.as_ref()
    }
}
