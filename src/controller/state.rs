//! The controller's memory, in four small parts that change for different reasons.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::ConfigVersion;
use super::config_map::ApiConfig;
use crate::config::Config;
use crate::health::FailingImage;
use crate::quota;
use crate::rbac::Access;
use crate::reconcile::{Overlay, Verified};
use crate::render::Desired;

/// The config in force and where it came from.
#[derive(Default)]
pub(super) struct InForce {
    /// The last good config; stays in force while a broken edit is rejected.
    pub config: Option<Arc<Config>>,
    /// Its version (ConfigMap resourceVersion or content hash).
    pub version: Option<ConfigVersion>,
    /// The last rejection, so the same broken file is reported once, not at every re-read.
    pub rejected: Option<String>,
    /// The config read through the API (`--config-map`), and whether it is the source.
    pub api: ApiConfig,
}

/// What the cluster is and allows, as far as this process has learned.
pub(super) struct Platform {
    /// What this identity may do in the namespace; decides the write strategy and the optional features.
    pub access: Arc<Access>,
    /// Ask the API server again what this identity may do (at start, after a new 403, failed review).
    pub review_due: bool,
    /// Whether the cluster is OpenShift (the SCC then assigns user ids); None until the API answered.
    pub openshift: Option<bool>,
    pub owner: Option<OwnerReference>,
    /// (namespace, deployment) the owner was looked up for; transient lookup errors leave it unset.
    pub owner_for: Option<(String, String)>,
}

impl Platform {
    pub fn new(access: Arc<Access>) -> Self {
        Self {
            access,
            review_due: true,
            openshift: None,
            owner: None,
            owner_for: None,
        }
    }
}

/// The desired sets of the config in force, with the owner and platform they were rendered for.
pub(super) type DesiredCache = (Arc<Config>, Option<OwnerReference>, bool, Arc<Vec<Desired>>);

/// What the passes remember between them; all of it is forgotten when the namespace changes.
#[derive(Default)]
pub(super) struct Memory {
    /// Sets applied before by this process: re-creating one of them is a repair.
    pub known: HashSet<String>,
    /// Our writes, standing in for the watch cache until it catches up.
    pub overlay: Overlay,
    /// Live objects already compared field by field, so steady-state passes skip the JSON comparison.
    pub verified: Verified,
    pub desired: Option<DesiredCache>,
}

/// What has been reported already, so each finding is announced once per change, not at every pass.
#[derive(Default)]
pub(super) struct Reported {
    /// Conflicts (names taken by DaemonSets not ours).
    pub conflicts: HashSet<String>,
    /// Quota shortfalls, as their texts.
    pub shortfalls: Vec<String>,
    /// Per-set quota shortfalls whose Event waits for the set's DaemonSet to exist (a set being created).
    pub quota_pending: Vec<quota::Shortfall>,
    /// Per set, the pod-creation failure last logged (without the generated pod name).
    pub not_created: HashMap<String, String>,
    /// Per DaemonSet, the nodes without a pod its status last showed, to notice a new shortage.
    pub missing: HashMap<String, i32>,
    /// Per set, its images failing at the last look or health check: the `kip_image_failing_nodes` series.
    pub failing: BTreeMap<String, Vec<FailingImage>>,
    /// Per (set, image): the reason of its registry failure, reported once per change.
    pub registry_failures: BTreeMap<(String, String), String>,
    /// Per set: the nodes refreshed and the registry digest each image was refreshed to (see
    /// `freshness::Tally::add_pods`).
    pub refreshed_to: BTreeMap<String, crate::freshness::Refreshed>,
    /// Per set: its pull Secrets' payloads, read once per digest check interval.
    pub pull_secrets: BTreeMap<String, Vec<Vec<u8>>>,
    /// The warm gate's last step: warm nodes counted, cold ones listed (None: off or not run yet).
    pub warm: Option<crate::warmth::WarmSummary>,
}
