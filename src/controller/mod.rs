//! The controller: one level-triggered loop over the whole config.
//!
//! A pass is triggered by a config change (file watch, SIGHUP), a change to a DaemonSet this instance owns
//! (label-selected watch), or the resync tick; each pass renders every desired DaemonSet, applies what
//! differs and prunes owned orphans. A per-object `Controller<DaemonSet>` is not used: it only requeues
//! objects it already has, so it could never create the DaemonSet of a newly added set.
//! Every `caching_interval_hours` the health check lists each set's pods (paged), reports stuck images, and
//! refreshes moving tags with a rolling restart. Failures are retried with backoff; nothing is deleted
//! because of an error, and the DaemonSets stay in place when the process stops.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::config::{self, Config, VarSource};
use crate::health::{self, SetHealth};
use crate::k8s::{Cluster, Events, KubeError};
use crate::metrics::{KindLabel, Metrics, ResultLabel, VerbLabel};
use crate::rbac::{Access, Feature};
use crate::reconcile::{self, PassReport};
use crate::reload;
use crate::render::{self, RenderOptions, labels};
use crate::{quota, status};

mod config_map;
mod once;
mod run;

pub use config_map::ConfigVersion;
pub use once::{StatusError, StatusReport, run_once};

/// Longest wait for the SelfSubjectRulesReview; without an answer calls are tried and 403s teach the rest.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for API discovery (OpenShift or not) when the controller starts.
const OPENSHIFT_DETECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How the controller runs; filled from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: Option<PathBuf>,
    pub reload_debounce: Duration,
    /// Full pass even without events, to catch anything a watch missed.
    pub resync: Duration,
    pub leader_elect: bool,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Settings {
    pub fn from_env(config_path: Option<PathBuf>, reload_debounce: Duration, leader_elect: bool) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            config_path,
            reload_debounce,
            resync: Duration::from_secs(300),
            leader_elect,
            pod_name: var("POD_NAME"),
            pod_namespace: var("POD_NAMESPACE"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Reload(#[from] reload::ReloadError),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

pub struct Controller {
    client: Client,
    settings: Settings,
    env: Box<dyn VarSource + Send + Sync>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    events: Events,
    /// What this identity may do in the namespace; decides the write strategy and the optional features.
    access: Arc<Access>,
    /// Ask the API server again what this identity may do (at start, after a new 403, failed review).
    review_due: bool,
    /// Whether the cluster is OpenShift (the SCC then assigns user ids); None until the API answered.
    openshift: Option<bool>,
    /// The last good config; stays in force while a broken edit is rejected.
    config: Option<Arc<Config>>,
    /// The last rejection, so the same broken file is reported once, not at every re-read.
    last_rejection: Option<String>,
    owner: Option<OwnerReference>,
    /// (namespace, deployment) the owner was looked up for; transient lookup errors leave it unset.
    owner_for: Option<(String, String)>,
    /// Sets applied before by this process: re-creating one of them is a repair.
    known: HashSet<String>,
    healths: Vec<SetHealth>,
    /// Conflicts already reported; each is announced once, not at every pass.
    conflicts_seen: HashSet<String>,
    /// Quota shortfalls last reported, so each is announced once.
    shortfalls_seen: Vec<String>,
    /// Per-set quota shortfalls whose Event waits for the set's DaemonSet to exist (a set being created).
    quota_pending: Vec<quota::Shortfall>,
    /// Per set, the pod-creation failure last logged (without the generated pod name), so each is logged once.
    not_created_seen: std::collections::HashMap<String, String>,
    /// Per DaemonSet, the nodes without a pod its status last showed, to notice a new shortage.
    missing_seen: std::collections::HashMap<String, i32>,
    /// Our writes, standing in for the watch cache until it catches up.
    overlay: reconcile::Overlay,
    /// Live objects already compared field by field, so steady-state passes skip the JSON comparison.
    verified: reconcile::Verified,
    desired_cache: Option<DesiredCache>,
    /// The config read through the API (`--config-map`), and which source is in force.
    api: config_map::ApiConfig,
    /// The version of the config in force (ConfigMap resourceVersion or content hash).
    in_force: Option<ConfigVersion>,
}

/// The rendered DaemonSets of the config in force, with the owner and platform they were rendered for.
type DesiredCache = (Arc<Config>, Option<OwnerReference>, bool, Arc<Vec<DaemonSet>>);

impl Controller {
    pub async fn new(
        client: Client,
        settings: Settings,
        env: Box<dyn VarSource + Send + Sync>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        // Bounded: a hung API server must not hold up startup (or SIGTERM); each pass retries until known.
        let openshift = match tokio::time::timeout(OPENSHIFT_DETECTION_TIMEOUT, crate::k8s::is_openshift(&client)).await
        {
            Ok(Ok(found)) => Some(found),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list API groups yet; will tell OpenShift from Kubernetes later");
                None
            }
            Err(_) => {
                tracing::warn!(timeout = ?OPENSHIFT_DETECTION_TIMEOUT, "listing API groups timed out; will tell OpenShift from Kubernetes later");
                None
            }
        };
        let access = Arc::new(Access::new(
            Access::default_features(settings.leader_elect),
            metrics.permission_denied.clone(),
            metrics.write_strategy.clone(),
        ));
        let events = Events::new(
            client.clone(),
            settings.pod_name.clone(),
            settings.pod_namespace.clone(),
        )
        .with_access(access.clone());
        Self {
            client,
            settings,
            env,
            metrics,
            ready,
            events,
            access,
            review_due: true,
            openshift,
            config: None,
            last_rejection: None,
            owner: None,
            owner_for: None,
            known: HashSet::new(),
            healths: Vec::new(),
            conflicts_seen: HashSet::new(),
            shortfalls_seen: Vec::new(),
            quota_pending: Vec::new(),
            not_created_seen: Default::default(),
            missing_seen: Default::default(),
            overlay: reconcile::Overlay::default(),
            verified: reconcile::Verified::default(),
            desired_cache: None,
            api: config_map::ApiConfig::default(),
            in_force: None,
        }
    }

    /// Re-reads the config file (or env). Returns true when a new valid config took effect. Ignored while
    /// the ConfigMap read through the API is the source and a config is in force (see `config_map`).
    pub async fn reload(&mut self) -> bool {
        if self.api.live && self.config.is_some() {
            tracing::debug!("config file changed or re-read: ignored, the ConfigMap read through the API is in force");
            return false;
        }
        let loaded = config::load(self.settings.config_path.as_deref(), self.env.as_ref());
        let version = config_map::file_version(self.settings.config_path.as_deref(), self.env.as_ref());
        self.take(loaded, version, None).await
    }

    /// A valid config: in force from now on (unless it equals the one in force).
    async fn accept(&mut self, new: Config, version: ConfigVersion) -> bool {
        self.metrics.config_valid.set(1);
        self.last_rejection = None;
        // Also for an edit that changes nothing (a comment): the version shown is the one read last.
        self.set_in_force(version.clone());
        if self.config.as_deref() == Some(&new) {
            return false;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "ok".into() })
            .inc();
        self.metrics
            .last_good_config
            .set(Timestamp::now().as_millisecond() as f64 / 1000.0);
        let sets: Vec<&str> = new.sets.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(namespace = %new.namespace, sets = ?sets, %version, "config loaded");
        if let Some(old) = &self.config {
            for gone in old.sets.iter().filter(|o| !new.sets.iter().any(|n| n.name == o.name)) {
                self.metrics.forget_set(&gone.name);
            }
        }
        if self.review_due {
            // Before the first Event: whether Events may be written at all.
            self.review_permissions(&new.namespace).await;
        }
        let note = format!(
            "config with {} set(s) in force ({version}): {}",
            sets.len(),
            sets.join(", ")
        );
        self.config = Some(Arc::new(new));
        self.events.on_self(false, "ConfigLoaded", note).await;
        true
    }

    /// A rejected config: the last good one stays in force; each distinct rejection is reported once.
    async fn reject(&mut self, text: String) {
        self.metrics.config_valid.set(0);
        if self.last_rejection.as_deref() == Some(&text) {
            return;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel {
                result: "failed".into(),
            })
            .inc();
        let keeping = if self.config.is_some() {
            "keeping the last good config"
        } else {
            "no config in force"
        };
        tracing::error!(error = %text, "config rejected; {keeping}, nothing deleted");
        self.events
            .on_self(true, "ConfigRejected", format!("{text}\n({keeping})"))
            .await;
        self.last_rejection = Some(text);
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600 * u64::from(self.config.as_ref().map_or(1, |c| c.caching_interval_hours)))
    }

    fn instance(&self) -> String {
        self.config
            .as_deref()
            .map_or_else(|| labels::MANAGER.to_owned(), |c| render::instance(c).to_owned())
    }

    async fn resolve_owner(&mut self, cluster: &Cluster) {
        let Some(config) = self.config.clone() else { return };
        let Some(deployment) = config.deployment_name.clone() else {
            self.owner = None;
            return;
        };
        let key = (cluster.namespace().to_owned(), deployment.clone());
        if self.owner_for.as_ref() == Some(&key) {
            return;
        }
        match cluster.owner_reference(&deployment).await {
            Ok(owner) => {
                if owner.is_none() {
                    tracing::warn!(%deployment, namespace = cluster.namespace(), "own Deployment not found: DaemonSets get no owner and outlive an uninstall");
                }
                self.owner = owner;
                self.owner_for = Some(key);
                self.events.set_owner(self.owner.as_ref(), cluster.namespace());
            }
            Err(kube::Error::Api(s)) if s.code < 500 => {
                tracing::warn!(%deployment, error = %s, "cannot read own Deployment: DaemonSets get no owner");
                self.owner = None;
                self.owner_for = Some(key);
            }
            Err(e) => tracing::warn!(%deployment, error = %e, "cannot read own Deployment yet; will retry"),
        }
    }

    /// The DaemonSets the config in force wants, rendered once per config (and owner), not per pass.
    pub fn desired(&mut self) -> Arc<Vec<DaemonSet>> {
        let Some(config) = self.config.clone() else {
            return Arc::default();
        };
        let openshift = self.openshift.unwrap_or(false);
        if let Some((c, owner, on_openshift, rendered)) = &self.desired_cache
            && Arc::ptr_eq(c, &config)
            && *owner == self.owner
            && *on_openshift == openshift
        {
            return rendered.clone();
        }
        if self
            .desired_cache
            .as_ref()
            .is_some_and(|(_, owner, _, _)| *owner != self.owner)
        {
            // The owner reference is not part of the spec hash: objects verified against the old owner
            // must be compared field by field again, so the new owner is applied.
            self.verified = reconcile::Verified::default();
        }
        let options = RenderOptions {
            openshift,
            owner: self.owner.clone(),
        };
        let rendered = Arc::new(render::render(&config, &options));
        self.desired_cache = Some((config, self.owner.clone(), openshift, rendered.clone()));
        rendered
    }

    /// The cluster API of `namespace`, sharing this controller's knowledge of its permissions.
    pub fn cluster(&self, namespace: &str) -> Cluster {
        Cluster::with_access(self.client.clone(), namespace, self.access.clone())
    }

    /// Asks the API server what this identity may do in `namespace` (a SelfSubjectRulesReview, allowed to
    /// everyone). Without an answer every call is tried and 403s teach the rest; the review is tried again
    /// at the next pass.
    pub async fn review_permissions(&mut self, namespace: &str) {
        // Bounded: a hung API server must not hold up the first pass; an unanswered review is retried.
        let review = tokio::time::timeout(REVIEW_TIMEOUT, crate::k8s::rules_review(&self.client, namespace)).await;
        let review =
            review.unwrap_or_else(|_| Err(kube::Error::Service("the SelfSubjectRulesReview timed out".into())));
        match review {
            Ok((rules, incomplete)) => {
                self.access.learn(rules, incomplete);
                self.review_due = false;
            }
            Err(e) => {
                if !self.review_due {
                    tracing::info!(error = %e, "cannot ask what this identity may do; trying calls and learning from refusals");
                }
                self.review_due = true;
            }
        }
    }

    /// A 403 on a DaemonSet call: that verb is off until the next review, which is due at once.
    fn learn_from(&mut self, errors: &[KubeError]) {
        for e in errors.iter().filter(|e| e.is_forbidden()) {
            let (verb, group, resource) = e.rbac();
            if self.access.forbidden(verb, group, resource) {
                self.review_due = true;
            }
        }
    }

    /// One pass against `owned` (the watch cache, or a fresh list in `--once`).
    pub async fn pass(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> PassReport {
        let started = Instant::now();
        if self.review_due {
            self.review_permissions(cluster.namespace()).await;
        }
        if self.openshift.is_none() {
            self.openshift = crate::k8s::is_openshift(cluster.client()).await.ok();
        }
        self.resolve_owner(cluster).await;
        let desired = self.desired();
        let instance = self.instance();
        let writing = desired.iter().any(|d| {
            owned
                .iter()
                .find(|l| l.name_any() == d.name_any())
                .and_then(|l| reconcile::spec_hash_of(l))
                != reconcile::spec_hash_of(d)
        });
        let strategy = self.access.strategy();
        let report = reconcile::reconcile_with(
            cluster,
            &desired,
            owned,
            &instance,
            &self.known,
            &mut self.verified,
            strategy,
        )
        .await;
        self.learn_from(&report.errors);
        self.metrics.reconciles.inc();
        self.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
        self.metrics
            .api_writes
            .get_or_create(&VerbLabel {
                verb: "reconcile".into(),
            })
            .inc_by(u64::from(report.writes));
        self.metrics.conflicts.set(report.conflicts.len() as i64);
        for e in &report.errors {
            self.metrics
                .reconcile_errors
                .get_or_create(&KindLabel { kind: e.kind().into() })
                .inc();
            tracing::warn!(error = %e, "reconcile error; will retry");
        }
        self.known.extend(report.live.iter().map(|d| d.name_any()));
        // After the writes, not before: counting a new set's nodes (paged over the whole cluster) must never
        // delay a create or a repair. Checked against the objects as they were before this pass (a DaemonSet
        // just created has a zero status until the DaemonSet controller sees it); its Event is posted below.
        if writing {
            self.check_quota(cluster, owned).await;
        }
        self.announce(&report).await;
        self.conflicts_seen = report.conflicts.iter().map(|(name, _)| name.clone()).collect();
        if report.errors.is_empty() {
            self.ready.store(true, Ordering::Relaxed);
        }
        report
    }

    async fn announce(&mut self, report: &PassReport) {
        // Quota Events of sets whose DaemonSet this pass created.
        self.post_quota_events(&report.live).await;
        let find = |name: &str| report.live.iter().find(|d| d.name_any() == name);
        for (list, reason, verb) in [
            (&report.created, "Created", "created"),
            (&report.updated, "Updated", "updated to the current config"),
            (
                &report.repaired,
                "Repaired",
                "restored to the config after it was deleted or edited",
            ),
        ] {
            for name in list {
                tracing::info!(daemonset = %name, "{verb}");
                if let Some(ds) = find(name) {
                    self.events
                        .on_daemonset(ds, false, reason, format!("DaemonSet {name} {verb}"))
                        .await;
                }
            }
        }
        for name in &report.deleted {
            tracing::info!(daemonset = %name, "deleted: its set left the config");
            self.events
                .on_self(
                    false,
                    "Deleted",
                    format!("DaemonSet {name} deleted: its set left the config"),
                )
                .await;
        }
        for (name, why) in report
            .conflicts
            .iter()
            .filter(|(name, _)| !self.conflicts_seen.contains(name))
        {
            tracing::warn!(daemonset = %name, "{why}");
            self.events.on_self(true, "Conflict", why.clone()).await;
        }
    }

    /// Compares the sets' need (requests and limits × images × nodes) with the namespace's ResourceQuotas
    /// and LimitRanges. Reads only.
    pub async fn quota_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> quota::QuotaCheck {
        let Some(config) = self.config.clone() else {
            return quota::QuotaCheck::default();
        };
        let status_of = |name: &str| {
            owned
                .iter()
                .find(|d| d.name_any() == name)
                .and_then(|d| d.status.clone())
        };
        let mut nodes_of: Vec<u64> = Vec::with_capacity(config.sets.len());
        let mut running_of: Vec<u64> = Vec::with_capacity(config.sets.len());
        let mut unknown = false;
        for set in &config.sets {
            let s = status_of(&set.name);
            unknown |= s.is_none();
            nodes_of.push(s.as_ref().map_or(0, |s| s.desired_number_scheduled.max(0) as u64));
            running_of.push(s.as_ref().map_or(0, |s| s.current_number_scheduled.max(0) as u64));
        }
        // New sets have no DaemonSet status yet: count the nodes they will run on, if allowed to.
        if unknown && cluster.access().allows("list", "", "nodes") {
            match status::matching_nodes(cluster, &config).await {
                Ok(counts) => {
                    for (i, set) in config.sets.iter().enumerate() {
                        if status_of(&set.name).is_none() {
                            nodes_of[i] = counts[i];
                        }
                    }
                }
                Err(e) => {
                    if crate::k8s::is_forbidden(&e) {
                        cluster.access().forbidden("list", "", "nodes");
                    } else {
                        tracing::info!(error = %e, "cannot count nodes for new sets; their quota check waits for their DaemonSet");
                    }
                }
            }
        }
        if !cluster.access().feature_on(Feature::QuotaCheck) {
            return quota::QuotaCheck::default();
        }
        match status::quota_shortfalls(cluster, &config, &nodes_of, &running_of).await {
            Ok(check) => check,
            Err(e @ status::GatherError::Quota(_)) => {
                tracing::error!(error = %e, "quota check failed");
                quota::QuotaCheck::default()
            }
            Err(status::GatherError::List { what, source, .. }) if crate::k8s::is_forbidden(&source) => {
                cluster.access().forbidden("list", "", what);
                quota::QuotaCheck::default()
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read ResourceQuotas/LimitRanges");
                quota::QuotaCheck::default()
            }
        }
    }

    /// [`Self::quota_check`], then reports what cannot fit, with the numbers, once per change: in the log,
    /// as a metric, as an Event on the set's DaemonSet (the total on the owner Deployment).
    pub async fn check_quota(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> quota::QuotaCheck {
        let check = self.quota_check(cluster, owned).await;
        self.metrics.record_quota(&check.shortfalls);
        let texts: Vec<String> = check
            .shortfalls
            .iter()
            .map(ToString::to_string)
            .chain(check.totals.iter().map(ToString::to_string))
            .collect();
        if texts != self.shortfalls_seen {
            for s in &check.shortfalls {
                let text = s.to_string();
                if self.shortfalls_seen.contains(&text) {
                    continue;
                }
                tracing::warn!(set = %s.set, "quota: {text}; its cache pods will not be created");
                self.quota_pending.push(s.clone());
            }
            for t in &check.totals {
                let text = t.to_string();
                if self.shortfalls_seen.contains(&text) {
                    continue;
                }
                let sets: Vec<&str> = check
                    .shortfalls
                    .iter()
                    .filter(|s| s.source == t.source && s.resource == t.resource)
                    .map(|s| s.set.as_str())
                    .collect();
                let note = format!("quota: {text}; not fitting: {}", sets.join(", "));
                tracing::warn!("{note}");
                self.events.on_config(true, "QuotaExceeded", note).await;
            }
            self.shortfalls_seen = texts;
        }
        // Only shortfalls still current wait for their DaemonSet.
        self.quota_pending.retain(|p| check.shortfalls.contains(p));
        self.post_quota_events(owned).await;
        check
    }

    /// Posts the pending per-set quota Events on the sets' DaemonSets that exist in `live`.
    async fn post_quota_events(&mut self, live: &[Arc<DaemonSet>]) {
        for s in std::mem::take(&mut self.quota_pending) {
            match live.iter().find(|d| d.name_any() == s.set) {
                Some(ds) => {
                    let note = format!("{s}; its cache pods will not be created");
                    self.events.on_daemonset(ds, true, "QuotaExceeded", note).await;
                }
                None => self.quota_pending.push(s),
            }
        }
    }

    /// Logs (once per cause) and records as an Event on the DaemonSet why a set's pods were not created.
    async fn report_not_created(&mut self, ds: &DaemonSet, h: &SetHealth) {
        let Some(n) = &h.not_created else {
            self.not_created_seen.remove(&h.set);
            return;
        };
        let gist = health::without_pod_name(&n.message);
        let note = format!(
            "{} of {} nodes have no pod of set {:?}: {} ({}): {gist}",
            h.nodes_without_pod, h.desired, h.set, n.reason, n.cause
        );
        if self.not_created_seen.get(&h.set).map(String::as_str) != Some(gist) {
            tracing::warn!(set = %h.set, cause = %n.cause, "{note}");
            self.not_created_seen.insert(h.set.clone(), gist.to_owned());
        }
        // Same note on the same object: written once per repeat period (the Events type aggregates).
        self.events.on_daemonset(ds, true, "PodsNotCreated", note).await;
    }

    /// Whether a watched DaemonSet now lacks pods on more nodes than before. Only a rise counts: a rollout
    /// making progress (fewer missing) needs no look.
    fn missing_pods_changed(&mut self, ds: &DaemonSet) -> bool {
        let missing = ds.status.as_ref().map_or(0, |s| {
            s.desired_number_scheduled
                .saturating_sub(s.current_number_scheduled)
                .max(0)
        });
        let before = self.missing_seen.insert(ds.name_any(), missing).unwrap_or(0);
        missing > before
    }

    /// A quick look right after a write: for sets whose DaemonSet lacks pods, the DaemonSet controller's
    /// reason (quota, Pod Security, LimitRange...) from its Events, reported at once instead of at the next
    /// health check. Returns true while something is still undecided (pods missing without a known reason,
    /// or a status not yet observed), so the caller looks again a little later.
    pub async fn quick_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> bool {
        let Some(config) = self.config.clone() else {
            return false;
        };
        // A new set's node count may only now be known (from its DaemonSet status, when nodes cannot be
        // listed): its quota shortfall is reported now, not at the next health check.
        self.check_quota(cluster, owned).await;
        let mut undecided = false;
        let mut healths = Vec::with_capacity(config.sets.len());
        for set in &config.sets {
            let Some(ds) = owned.iter().find(|d| d.name_any() == set.name) else {
                continue;
            };
            let mut h = health::from_daemonset(&set.name, Some(ds), None);
            let observed = ds.status.as_ref().and_then(|s| s.observed_generation);
            undecided |= observed < ds.metadata.generation;
            if h.nodes_without_pod > 0 {
                let why = status::not_created(cluster, ds).await;
                undecided |= why.is_none() && cluster.access().allows("list", "", "events");
                h.set_not_created(why);
                self.report_not_created(ds, &h).await;
            } else {
                self.not_created_seen.remove(&set.name);
            }
            healths.push(h);
        }
        self.metrics.record_not_created(&healths);
        undecided
    }

    /// Health check of every set: DaemonSet status plus a paged scan of its pods; then refreshes.
    pub async fn health_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>], refresh: bool) -> Vec<SetHealth> {
        let Some(config) = self.config.clone() else {
            return Vec::new();
        };
        let desired = self.desired();
        let healths = status::gather(cluster, &config, &desired, owned).await;
        self.check_quota(cluster, owned).await;
        for (set, h) in config.sets.iter().zip(&healths) {
            let live = owned.iter().find(|d| d.name_any() == set.name).map(Arc::as_ref);
            tracing::info!("{}", h.summary());
            self.metrics.record_health(h, set.images.len());
            if let Some(ds) = live {
                self.report_not_created(ds, h).await;
                for f in h.failing.iter().filter(|f| !f.image.is_empty()) {
                    let note = format!(
                        "image {} ({}) fails on {} node(s), e.g. {}: {} {}",
                        f.image,
                        f.container,
                        f.node_count,
                        f.nodes.join(", "),
                        f.reason,
                        f.message
                    );
                    self.events.on_daemonset(ds, true, "ImageNotCached", note).await;
                }
                if refresh && health::refresh_due(set, ds, h, Timestamp::now(), config.caching_interval_hours) {
                    match self.refresh(cluster, ds, &desired).await {
                        Ok(_) => {
                            self.metrics
                                .api_writes
                                .get_or_create(&VerbLabel { verb: "restart".into() })
                                .inc();
                            tracing::info!(set = %set.name, "rolling restart to pull moving tags again");
                            let note = "rolling restart so that moving tags are pulled again".to_owned();
                            self.events.on_daemonset(ds, false, "Refreshed", note).await;
                        }
                        Err(e) => {
                            tracing::warn!(set = %set.name, error = %e, "refresh failed; will retry next interval")
                        }
                    }
                }
            }
        }
        self.metrics.record_failures(&healths);
        self.metrics.record_not_created(&healths);
        self.healths = healths.clone();
        healths
    }
}

impl Controller {
    /// The periodic refresh of moving tags: a rolling restart with `patch` (or, with `update`, by a replace
    /// carrying the restart annotation), else (the upstream verbs) delete-then-create of the DaemonSet,
    /// which pulls every image again too.
    async fn refresh(
        &self,
        cluster: &Cluster,
        live: &DaemonSet,
        desired: &[DaemonSet],
    ) -> Result<DaemonSet, KubeError> {
        let name = live.name_any();
        let strategy = self.access.strategy();
        let at = Timestamp::now().to_string();
        let result = match desired.iter().find(|d| d.name_any() == name) {
            Some(want) if !strategy.apply && strategy.update => cluster.restart_by_replace(want, live, &at).await,
            Some(want) if !strategy.apply => cluster.recreate(want, live).await,
            _ => cluster.restart(&name, &at).await,
        };
        if let Err(e) = &result
            && e.is_forbidden()
        {
            let (verb, group, resource) = e.rbac();
            self.access.forbidden(verb, group, resource);
        }
        result
    }
}
