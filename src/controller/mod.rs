//! The controller: one level-triggered loop over the whole config.
//!
//! A pass is triggered by a config change (file watch, SIGHUP, the ConfigMap through the API), a change to a
//! DaemonSet this instance owns (label-selected watch), or the resync tick; each pass compares every set's
//! desired DaemonSet with the live one (by spec hash; the object is built when a write or a field comparison
//! needs it), applies what differs and prunes owned orphans. A per-object `Controller<DaemonSet>` is not
//! used: it only requeues objects it already has, so it could never create the DaemonSet of a newly added set.
//! Every `caching_interval_hours` the health check lists each set's pods (paged), reports stuck images, and
//! refreshes moving tags with a rolling restart. Failures are retried with backoff; nothing is deleted
//! because of an error, and the DaemonSets stay in place when the process stops.
//!
//! Rooms: `trigger` turns every source into a `Trigger`; `run` has one handler per trigger;
//! `state` holds the memory in four parts; `pass` and `checks` are the work; `config_map` the API config
//! source; `once` the one-shot `status` and `run --once`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::config::{self, Config, VarSource};
use crate::health::{self, SetHealth};
use crate::k8s::{Cluster, Events, KubeError};
use crate::labels;
use crate::metrics::{KindLabel, Metrics, ResultLabel, VerbLabel};
use crate::rbac::{Access, Feature};
use crate::reconcile::{self, PassReport};
use crate::render::{self, Desired, RenderOptions};
use crate::{quota, status};

mod checks;
mod config_map;
mod looks;
mod once;
mod pass;
mod refresh;
mod run;
mod state;
mod trigger;
mod warm;

pub use config_map::ConfigVersion;
pub use once::{OnceReport, StatusError, StatusReport, run_once, status};
use state::{InForce, Memory, Platform, Reported};
pub use warm::survey;

/// Longest wait for the SelfSubjectRulesReview; without an answer calls are tried and 403s teach the rest.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for API discovery (OpenShift or not), tried at each pass until answered.
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
    /// How long a set's DaemonSet may show unready pods before its pods are looked at for failing images
    /// (normal pulls are not reported); the look repeats with backoff while the set stays unready.
    pub failure_settle: Duration,
    /// Registry hosts asked over plain HTTP by the digest check (`PLAIN_HTTP_REGISTRIES`, comma-separated,
    /// e.g. a registry on loopback); all others over HTTPS.
    pub plain_http_registries: Vec<String>,
}

/// The default [`Settings::failure_settle`]: a usual pull of a cached-size image is over by then.
pub const FAILURE_SETTLE: Duration = Duration::from_secs(15);

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
            failure_settle: FAILURE_SETTLE,
            plain_http_registries: plain_http_registries(),
        }
    }
}

/// `PLAIN_HTTP_REGISTRIES`: registry hosts (as in image references, `127.0.0.1:5000`) asked over HTTP.
pub fn plain_http_registries() -> Vec<String> {
    std::env::var("PLAIN_HTTP_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The resolver of the digest check for `settings`.
fn resolver_for(plain_http_registries: Vec<String>) -> Arc<crate::registry::Resolver> {
    Arc::new(crate::registry::Resolver::new(crate::registry::ResolverConfig {
        insecure_registries: plain_http_registries,
        ..crate::registry::ResolverConfig::default()
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

/// The controller: its dependencies, and its memory in four small parts.
pub struct Controller {
    client: Client,
    settings: Settings,
    env: Box<dyn VarSource + Send + Sync>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    events: Events,
    cfg: InForce,
    platform: Platform,
    memory: Memory,
    reported: Reported,
    /// The digest check's registry client (its answers kept until the next check).
    resolver: Arc<crate::registry::Resolver>,
    /// The warm gate's node-write budget (condition and taint patches).
    warm_budget: crate::warmth::WriteBudget,
}

impl Controller {
    /// Makes no API call: what the cluster is and allows is asked when the loop (or a one-shot) starts.
    pub fn new(
        client: Client,
        settings: Settings,
        env: Box<dyn VarSource + Send + Sync>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> Self {
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
        let resolver = resolver_for(settings.plain_http_registries.clone());
        Self {
            resolver,
            warm_budget: crate::warmth::WriteBudget::default(),
            client,
            settings,
            env,
            metrics,
            ready,
            events,
            cfg: InForce::default(),
            platform: Platform::new(access),
            memory: Memory::default(),
            reported: Reported::default(),
        }
    }

    /// Re-reads the config file (or env). Returns true when a new valid config took effect. Ignored while
    /// the ConfigMap read through the API is the source and a config is in force (see `config_map`).
    pub async fn reload(&mut self) -> bool {
        if self.cfg.api.live && self.cfg.config.is_some() {
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
        self.cfg.rejected = None;
        // Also for an edit that changes nothing (a comment): the version shown is the one read last.
        self.set_in_force(version.clone());
        if self.cfg.config.as_deref() == Some(&new) {
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
        if let Some(old) = &self.cfg.config {
            for gone in old.sets.iter().filter(|o| !new.sets.iter().any(|n| n.name == o.name)) {
                self.metrics.forget_set(&gone.name);
            }
        }
        if self.platform.review_due {
            // Before the first Event: whether Events may be written at all.
            self.review_permissions(&new.namespace).await;
        }
        let note = format!(
            "config with {} set(s) in force ({version}): {}",
            sets.len(),
            sets.join(", ")
        );
        self.cfg.config = Some(Arc::new(new));
        self.events.on_self(false, "ConfigLoaded", note).await;
        true
    }

    /// A rejected config: the last good one stays in force; each distinct rejection is reported once.
    async fn reject(&mut self, text: String) {
        self.metrics.config_valid.set(0);
        if self.cfg.rejected.as_deref() == Some(&text) {
            return;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel {
                result: "failed".into(),
            })
            .inc();
        let keeping = if self.cfg.config.is_some() {
            "keeping the last good config"
        } else {
            "no config in force"
        };
        tracing::error!(error = %text, "config rejected; {keeping}, nothing deleted");
        self.events
            .on_self(true, "ConfigRejected", format!("{text}\n({keeping})"))
            .await;
        self.cfg.rejected = Some(text);
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600 * u64::from(self.cfg.config.as_ref().map_or(1, |c| c.caching_interval_hours)))
    }

    fn instance(&self) -> String {
        self.cfg
            .config
            .as_deref()
            .map_or_else(|| labels::MANAGER.to_owned(), |c| render::instance(c).to_owned())
    }

    async fn resolve_owner(&mut self, cluster: &Cluster) {
        let Some(config) = self.cfg.config.clone() else { return };
        let Some(deployment) = config.deployment_name.clone() else {
            self.platform.owner = None;
            return;
        };
        let key = (cluster.namespace().to_owned(), deployment.clone());
        if self.platform.owner_for.as_ref() == Some(&key) {
            return;
        }
        match cluster.owner_reference(&deployment).await {
            Ok(owner) => {
                if owner.is_none() {
                    tracing::warn!(%deployment, namespace = cluster.namespace(), "own Deployment not found: DaemonSets get no owner and outlive an uninstall");
                }
                self.platform.owner = owner;
                self.platform.owner_for = Some(key);
                self.events.set_owner(self.platform.owner.as_ref(), cluster.namespace());
            }
            Err(kube::Error::Api(s)) if s.code < 500 => {
                tracing::warn!(%deployment, error = %s, "cannot read own Deployment: DaemonSets get no owner");
                self.platform.owner = None;
                self.platform.owner_for = Some(key);
            }
            Err(e) => tracing::warn!(%deployment, error = %e, "cannot read own Deployment yet; will retry"),
        }
    }

    /// The sets the config in force wants, hashed once per config (and owner), not per pass; each object
    /// is built when a pass first needs it, then kept with the config.
    pub fn desired(&mut self) -> Arc<Vec<Desired>> {
        let Some(config) = self.cfg.config.clone() else {
            return Arc::default();
        };
        let openshift = self.platform.openshift.unwrap_or(false);
        if let Some((c, owner, on_openshift, rendered)) = &self.memory.desired
            && Arc::ptr_eq(c, &config)
            && *owner == self.platform.owner
            && *on_openshift == openshift
        {
            return rendered.clone();
        }
        if self
            .memory
            .desired
            .as_ref()
            .is_some_and(|(_, owner, _, _)| *owner != self.platform.owner)
        {
            // The owner reference is not part of the spec hash: objects verified against the old owner
            // must be compared field by field again, so the new owner is applied.
            self.memory.verified = reconcile::Verified::default();
        }
        let options = RenderOptions {
            openshift,
            owner: self.platform.owner.clone(),
        };
        let rendered = Arc::new(render::desired(&config, &options));
        self.memory.desired = Some((config, self.platform.owner.clone(), openshift, rendered.clone()));
        rendered
    }

    /// The cluster API of `namespace`, sharing this controller's knowledge of its permissions.
    pub fn cluster(&self, namespace: &str) -> Cluster {
        Cluster::with_access(self.client.clone(), namespace, self.platform.access.clone())
    }

    /// Asks the API server what this identity may do in `namespace`; without an answer every call is tried
    /// and 403s teach the rest, and the review is tried again at the next pass.
    pub async fn review_permissions(&mut self, namespace: &str) {
        match ask_permissions(&self.client, &self.platform.access, namespace).await {
            Ok(()) => self.platform.review_due = false,
            Err(e) => {
                if !self.platform.review_due {
                    tracing::info!(error = %e, "cannot ask what this identity may do; trying calls and learning from refusals");
                }
                self.platform.review_due = true;
            }
        }
    }

    /// Tells OpenShift from Kubernetes until the API has answered once (not in `new`, which makes no API
    /// call).
    async fn discover_platform(&mut self) {
        if self.platform.openshift.is_none() {
            self.platform.openshift = detect_openshift(&self.client).await;
        }
    }

    /// A 403 on a DaemonSet call: that verb is off until the next review, which is due at once.
    fn learn_from(&mut self, errors: &[KubeError]) {
        for e in errors.iter().filter(|e| e.is_forbidden()) {
            let (verb, group, resource) = e.rbac();
            if self.platform.access.forbidden(verb, group, resource) {
                self.platform.review_due = true;
            }
        }
    }
}

/// Asks the API server what this identity may do in `namespace` (a SelfSubjectRulesReview, allowed to
/// everyone) and teaches `access` the answer. Bounded: a hung API server must not hold up a pass.
async fn ask_permissions(client: &Client, access: &Access, namespace: &str) -> Result<(), kube::Error> {
    let review = tokio::time::timeout(REVIEW_TIMEOUT, crate::k8s::rules_review(client, namespace)).await;
    let (rules, incomplete) =
        review.unwrap_or_else(|_| Err(kube::Error::Service("the SelfSubjectRulesReview timed out".into())))?;
    access.learn(rules, incomplete);
    Ok(())
}

/// Whether the cluster is OpenShift (the SCC then assigns user ids); None, said in the log, while the API
/// does not answer. Bounded: a hung API server must not hold up a pass for long.
async fn detect_openshift(client: &Client) -> Option<bool> {
    match tokio::time::timeout(OPENSHIFT_DETECTION_TIMEOUT, crate::k8s::is_openshift(client)).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list API groups yet; will tell OpenShift from Kubernetes later");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?OPENSHIFT_DETECTION_TIMEOUT, "listing API groups timed out; will tell OpenShift from Kubernetes later");
            None
        }
    }
}
