//! Prometheus metrics (prefix `kip_`): per set node and image counts, reconcile and reload outcomes.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::health::{FailingImage, SetHealth};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabel {
    pub set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabel {
    pub set: String,
    pub image: String,
}

/// A set's pods that could not be created, by the class of the API's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotCreatedLabel {
    pub set: String,
    pub reason: String,
}

/// A set that does not fit a ResourceQuota key or LimitRange bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabel {
    pub set: String,
    pub resource: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabel {
    pub verb: String,
    /// `resource.group` (`pods` for the core group).
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrategyLabel {
    pub strategy: String,
}

/// An image whose registry could not say its digest, by the class of failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryFailLabel {
    pub set: String,
    pub image: String,
    /// timeout, unauthorized, not_found, server, unreachable, other.
    pub reason: String,
}

/// The config in force: `configmap` with its resourceVersion, or `file`/`env` with a content hash.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigInfoLabel {
    pub source: String,
    pub version: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub nodes_desired: Family<SetLabel, Gauge>,
    pub nodes_ready: Family<SetLabel, Gauge>,
    pub nodes_updated: Family<SetLabel, Gauge>,
    pub images: Family<SetLabel, Gauge>,
    pub image_failing_nodes: Family<ImageLabel, Gauge>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<KindLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub api_writes: Family<VerbLabel, Counter>,
    pub conflicts: Gauge,
    pub quota_shortfalls: Gauge,
    pub reloads: Family<ResultLabel, Counter>,
    pub config_valid: Gauge,
    pub last_good_config: Gauge<f64, AtomicU64>,
    pub permission_denied: Family<PermissionLabel, Gauge>,
    pub write_strategy: Family<StrategyLabel, Gauge>,
    pub nodes_without_pod: Family<NotCreatedLabel, Gauge>,
    pub quota_needed: Family<QuotaLabel, Gauge<f64, AtomicU64>>,
    pub quota_available: Family<QuotaLabel, Gauge<f64, AtomicU64>>,
    pub config_info: Family<ConfigInfoLabel, Gauge>,
    pub image_stale_nodes: Family<ImageLabel, Gauge>,
    pub registry_check_failed: Family<RegistryFailLabel, Gauge>,
    pub refreshed_nodes: Family<SetLabel, Counter>,
    pub refresh_failures: Family<SetLabel, Counter>,
    /// Warm gate: seconds from a node's Ready transition to the set's cache pod Ready there.
    pub node_warm_seconds: Family<SetLabel, Histogram, fn() -> Histogram>,
    /// Warm gate: nodes the set selects whose cache pod is not Ready yet.
    pub cold_nodes: Family<SetLabel, Gauge>,
    /// Warm gate: startup taints removed at the timeout with the set's images still missing.
    pub warm_timeouts: Family<SetLabel, Counter>,
}

/// Buckets of the time to warm: 1 s to about 68 min.
fn warm_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Registers each `field => name, help;` row: a table instead of one five-line call per metric.
macro_rules! register {
    ($registry:ident, $m:ident; $($field:ident => $name:literal, $help:literal;)+) => {
        $( $registry.register($name, $help, $m.$field.clone()); )+
    };
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kip");
        let m = Self {
            nodes_desired: Family::default(),
            nodes_ready: Family::default(),
            nodes_updated: Family::default(),
            images: Family::default(),
            image_failing_nodes: Family::default(),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            api_writes: Family::default(),
            conflicts: Gauge::default(),
            quota_shortfalls: Gauge::default(),
            reloads: Family::default(),
            config_valid: Gauge::default(),
            last_good_config: Gauge::default(),
            permission_denied: Family::default(),
            write_strategy: Family::default(),
            nodes_without_pod: Family::default(),
            quota_needed: Family::default(),
            quota_available: Family::default(),
            config_info: Family::default(),
            image_stale_nodes: Family::default(),
            registry_check_failed: Family::default(),
            refreshed_nodes: Family::default(),
            refresh_failures: Family::default(),
            node_warm_seconds: Family::new_with_constructor(warm_histogram),
            cold_nodes: Family::default(),
            warm_timeouts: Family::default(),
            registry: Registry::default(),
        };
        // One row per metric: field => name (after the `kip_` prefix), help.
        register! { registry, m;
            nodes_desired => "set_nodes_desired", "Nodes that should run the set's cache pod";
            nodes_ready => "set_nodes_ready", "Nodes whose cache pod is ready (every image cached)";
            nodes_updated => "set_nodes_updated", "Nodes running the current pod template";
            images => "set_images", "Images in the set";
            image_failing_nodes => "image_failing_nodes", "Nodes where the image fails to pull or run";
            reconciles => "reconciles", "Reconcile passes";
            reconcile_errors => "reconcile_errors", "API errors during reconcile passes";
            reconcile_duration => "reconcile_duration_seconds", "Duration of reconcile passes";
            api_writes => "api_writes", "Write calls to the API server";
            conflicts => "conflicts", "Sets whose DaemonSet name is taken by an object not ours";
            reloads => "config_reloads", "Config loads by result (ok, failed)";
            config_valid => "config_valid", "1 when the latest config read is valid, 0 when it was rejected";
            last_good_config => "config_last_good_timestamp_seconds", "Unix time of the last config accepted";
            permission_denied => "permission_denied", "1 per verb and resource this identity lacks (the feature using it is off)";
            write_strategy => "write_strategy", "1 for the DaemonSet write strategy in force (server-side-apply, update, delete-then-create)";
            nodes_without_pod => "set_nodes_without_pod", "Nodes lacking the set's pod (desired - scheduled), by the API's reason: quota, pod_security, limit_range, webhook, forbidden, placement, other, unknown";
            quota_shortfalls => "quota_shortfalls", "Sets not fitting a ResourceQuota key or LimitRange bound";
            quota_needed => "quota_shortfall_needed", "What a set that does not fit needs (bytes, cores or pods)";
            quota_available => "quota_shortfall_available", "What is free for that set (quota) or the bound it breaks (LimitRange), in the same unit";
            image_stale_nodes => "image_stale_nodes", "Nodes whose cache runs another digest of the image than the registry's (refresh digest; refreshed next)";
            registry_check_failed => "registry_check_failed", "1 per image whose registry could not say its digest at the last check, by reason: timeout, unauthorized, not_found, server, unreachable, other (the nodes keep their cache)";
            refreshed_nodes => "refreshed_nodes", "Cache pods replaced after their node pulled a changed tag (refresh digest)";
            refresh_failures => "refresh_failures", "Refresh pods that failed to pull (tried again at the next check)";
            node_warm_seconds => "node_warm_seconds", "Warm gate: seconds from a node's Ready transition to the set's cache pod Ready on it (nodes that joined)";
            cold_nodes => "cold_nodes", "Warm gate: nodes the set selects whose cache pod is not Ready (the images still coming)";
            warm_timeouts => "warm_gate_timeouts", "Warm gate: startup taints removed at the timeout while the set's images were still missing";
            config_info => "config_info", "1 for the config version in force: source (configmap, file, env) and version (the ConfigMap's resourceVersion or a content hash)";
        }
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn record_health(&self, health: &SetHealth, images: usize) {
        let l = SetLabel {
            set: health.set.clone(),
        };
        self.nodes_desired.get_or_create(&l).set(i64::from(health.desired));
        self.nodes_ready.get_or_create(&l).set(i64::from(health.ready));
        self.nodes_updated.get_or_create(&l).set(i64::from(health.updated));
        self.images.get_or_create(&l).set(images as i64);
    }

    /// Replaces the failing-image series with `failing` (per set, its failing images; images that
    /// recovered and sets not listed drop out).
    pub fn record_failing(&self, failing: &BTreeMap<String, Vec<FailingImage>>) {
        self.image_failing_nodes.clear();
        for (set, images) in failing {
            // Entries without an image are pods never created: counted by `set_nodes_without_pod`.
            for f in images.iter().filter(|f| !f.image.is_empty()) {
                let l = ImageLabel {
                    set: set.clone(),
                    image: f.image.clone(),
                };
                self.image_failing_nodes.get_or_create(&l).set(f.node_count as i64);
            }
        }
    }

    /// Replaces the missing-pod series: one per set lacking pods, labelled with the reason's class.
    pub fn record_not_created(&self, healths: &[SetHealth]) {
        self.nodes_without_pod.clear();
        for h in healths.iter().filter(|h| h.nodes_without_pod > 0) {
            let reason = h.not_created.as_ref().map_or("unknown", |n| n.cause.as_str());
            let l = NotCreatedLabel {
                set: h.set.clone(),
                reason: reason.into(),
            };
            self.nodes_without_pod
                .get_or_create(&l)
                .set(i64::from(h.nodes_without_pod));
        }
    }

    /// Replaces the quota series with the current shortfalls (the figures of the log and the Events).
    pub fn record_quota(&self, shortfalls: &[crate::quota::Shortfall]) {
        self.quota_shortfalls.set(shortfalls.len() as i64);
        self.quota_needed.clear();
        self.quota_available.clear();
        for s in shortfalls {
            let l = QuotaLabel {
                set: s.set.clone(),
                resource: s.resource.clone(),
                source: s.source.clone(),
            };
            self.quota_needed.get_or_create(&l).set(s.needed_value);
            self.quota_available.get_or_create(&l).set(s.available_value);
        }
    }

    /// Replaces the digest-check series with the last check's lines (images that left drop out).
    pub fn record_freshness(&self, lines: &[crate::freshness::ImageFreshness]) {
        self.image_stale_nodes.clear();
        self.registry_check_failed.clear();
        for l in lines {
            if let crate::freshness::Freshness::Pinned = l.freshness {
                continue;
            }
            let stale = match l.freshness {
                crate::freshness::Freshness::Stale { stale_nodes, .. } => i64::from(stale_nodes),
                _ => 0,
            };
            let image = ImageLabel {
                set: l.set.clone(),
                image: l.image.clone(),
            };
            self.image_stale_nodes.get_or_create(&image).set(stale);
            if let Some(reason) = l.failure_reason() {
                let label = RegistryFailLabel {
                    set: l.set.clone(),
                    image: l.image.clone(),
                    reason: reason.to_owned(),
                };
                self.registry_check_failed.get_or_create(&label).set(1);
            }
        }
    }

    /// Forgets sets that left the config.
    pub fn forget_set(&self, set: &str) {
        let l = SetLabel { set: set.into() };
        for family in [
            &self.nodes_desired,
            &self.nodes_ready,
            &self.nodes_updated,
            &self.images,
            &self.cold_nodes,
        ] {
            family.remove(&l);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
