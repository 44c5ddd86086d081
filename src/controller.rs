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
use crate::k8s::{Cluster, Events};
use crate::metrics::{KindLabel, Metrics, ResultLabel, VerbLabel};
use crate::reconcile::{self, PassReport};
use crate::reload;
use crate::render::{self, RenderOptions, labels};
use crate::{quota, status};

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

/// Delay before the next try after a failed pass: 1 s doubling to 1 min.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Longest a pass may take before it is abandoned and retried (an API call that hangs).
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// Short wait after a watch event, so a burst of events (our own apply, a rollout) makes one pass.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(100);

pub struct Controller {
    client: Client,
    settings: Settings,
    env: Box<dyn VarSource + Send + Sync>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    events: Events,
    openshift: bool,
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
    /// Listing nodes is optional (cluster-scoped); once forbidden, don't ask again.
    nodes_forbidden: bool,
    /// Our writes, standing in for the watch cache until it catches up.
    overlay: reconcile::Overlay,
    /// Live objects already compared field by field, so steady-state passes skip the JSON comparison.
    verified: reconcile::Verified,
    desired_cache: Option<DesiredCache>,
}

/// The rendered DaemonSets of the config in force, and the owner they were rendered with.
type DesiredCache = (Arc<Config>, Option<OwnerReference>, Arc<Vec<DaemonSet>>);

enum Exit {
    Shutdown,
    NamespaceChanged,
    /// The DaemonSet watch stream ended (kube's watcher never ends; rebuilt if it does).
    WatchEnded,
}

impl Controller {
    pub async fn new(
        client: Client,
        settings: Settings,
        env: Box<dyn VarSource + Send + Sync>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let openshift = crate::k8s::is_openshift(&client).await;
        let events = Events::new(
            client.clone(),
            settings.pod_name.clone(),
            settings.pod_namespace.clone(),
        );
        Self {
            client,
            settings,
            env,
            metrics,
            ready,
            events,
            openshift,
            config: None,
            last_rejection: None,
            owner: None,
            owner_for: None,
            known: HashSet::new(),
            healths: Vec::new(),
            conflicts_seen: HashSet::new(),
            shortfalls_seen: Vec::new(),
            nodes_forbidden: false,
            overlay: reconcile::Overlay::default(),
            verified: reconcile::Verified::default(),
            desired_cache: None,
        }
    }

    /// Re-reads the config. Returns true when a new valid config took effect.
    pub async fn reload(&mut self) -> bool {
        match config::load(self.settings.config_path.as_deref(), self.env.as_ref()) {
            Ok(new) => {
                self.metrics.config_valid.set(1);
                self.last_rejection = None;
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
                tracing::info!(namespace = %new.namespace, sets = ?sets, "config loaded");
                if let Some(old) = &self.config {
                    for gone in old.sets.iter().filter(|o| !new.sets.iter().any(|n| n.name == o.name)) {
                        self.metrics.forget_set(&gone.name);
                    }
                }
                let note = format!("config with {} set(s) in force: {}", sets.len(), sets.join(", "));
                self.config = Some(Arc::new(new));
                self.events.on_self(false, "ConfigLoaded", note).await;
                true
            }
            Err(e) => {
                self.metrics.config_valid.set(0);
                let text = e.to_string();
                if self.last_rejection.as_deref() == Some(&text) {
                    return false;
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
                false
            }
        }
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
        if let Some((c, owner, rendered)) = &self.desired_cache
            && Arc::ptr_eq(c, &config)
            && *owner == self.owner
        {
            return rendered.clone();
        }
        let options = RenderOptions {
            openshift: self.openshift,
            owner: self.owner.clone(),
        };
        let rendered = Arc::new(render::render(&config, &options));
        self.desired_cache = Some((config, self.owner.clone(), rendered.clone()));
        rendered
    }

    /// One pass against `owned` (the watch cache, or a fresh list in `--once`).
    pub async fn pass(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> PassReport {
        let started = Instant::now();
        self.resolve_owner(cluster).await;
        let desired = self.desired();
        let instance = self.instance();
        // About to write: check first that the namespace's quota and limits have room for the pods.
        let writing = desired.iter().any(|d| {
            owned
                .iter()
                .find(|l| l.name_any() == d.name_any())
                .and_then(|l| reconcile::spec_hash_of(l))
                != reconcile::spec_hash_of(d)
        });
        if writing {
            self.check_quota(cluster, owned).await;
        }
        let report =
            reconcile::reconcile_cached(cluster, &desired, owned, &instance, &self.known, &mut self.verified).await;
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
        self.announce(&report).await;
        self.conflicts_seen = report.conflicts.iter().map(|(name, _)| name.clone()).collect();
        if report.errors.is_empty() {
            self.ready.store(true, Ordering::Relaxed);
        }
        report
    }

    async fn announce(&self, report: &PassReport) {
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
    /// and LimitRanges, and reports what cannot fit, with the numbers, once per change.
    pub async fn check_quota(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> Vec<quota::Shortfall> {
        let Some(config) = self.config.clone() else {
            return Vec::new();
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
        if unknown && !self.nodes_forbidden {
            match status::matching_nodes(cluster, &config).await {
                Ok(counts) => {
                    for (i, set) in config.sets.iter().enumerate() {
                        if status_of(&set.name).is_none() {
                            nodes_of[i] = counts[i];
                        }
                    }
                }
                Err(e) => {
                    self.nodes_forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                    tracing::info!(error = %e, "cannot count nodes for new sets; their quota check waits for their DaemonSet");
                }
            }
        }
        let shortfalls = match status::quota_shortfalls(cluster, &config, &nodes_of, &running_of).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read ResourceQuotas/LimitRanges");
                return Vec::new();
            }
        };
        self.metrics.quota_shortfalls.set(shortfalls.len() as i64);
        let texts: Vec<String> = shortfalls.iter().map(ToString::to_string).collect();
        if texts != self.shortfalls_seen {
            for text in texts.iter().filter(|t| !self.shortfalls_seen.contains(t)) {
                tracing::warn!("quota: {text}; some cache pods will not be created");
                self.events
                    .on_self(
                        true,
                        "QuotaExceeded",
                        format!("{text}; some cache pods will not be created"),
                    )
                    .await;
            }
            self.shortfalls_seen = texts;
        }
        shortfalls
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
                for f in &h.failing {
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
                    match cluster.restart(&set.name, &Timestamp::now().to_string()).await {
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
        self.healths = healths.clone();
        healths
    }

    /// Runs until `shutdown` flips to true. Never returns an error for API trouble: it retries.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ControllerError> {
        let mut config_watch = match &self.settings.config_path {
            Some(path) => Some(reload::watch(path)?),
            None => None,
        };
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        self.reload().await;

        loop {
            // Without a valid config there is nothing to do but wait for one.
            let Some(namespace) = self.config.as_ref().map(|c| c.namespace.clone()) else {
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    Some(()) = recv(&mut config_watch) => {
                        tokio::time::sleep(self.settings.reload_debounce).await;
                        self.reload().await;
                    }
                    Some(()) = hup(&mut hangup) => { self.reload().await; }
                }
                continue;
            };
            match self
                .run_in(&namespace, &mut shutdown, &mut config_watch, &mut hangup)
                .await?
            {
                Exit::Shutdown => return Ok(()),
                Exit::WatchEnded => tracing::warn!("DaemonSet watch ended; starting it again"),
                Exit::NamespaceChanged => {
                    tracing::warn!(old = %namespace, "namespace changed: DaemonSets in the old namespace are left in place");
                    self.known.clear();
                    self.owner_for = None;
                    self.overlay = reconcile::Overlay::default();
                    self.verified = reconcile::Verified::default();
                }
            }
        }
    }

    async fn run_in(
        &mut self,
        namespace: &str,
        shutdown: &mut watch::Receiver<bool>,
        config_watch: &mut Option<reload::ConfigWatch>,
        hangup: &mut Option<tokio::signal::unix::Signal>,
    ) -> Result<Exit, ControllerError> {
        let cluster = Cluster::new(self.client.clone(), namespace);
        let instance = self.instance();
        let (store, writer) = reflector::store::<DaemonSet>();
        let selector = labels::owned_selector(&instance);
        let stream = reflector::reflector(
            writer,
            watcher(
                cluster.daemonsets().clone(),
                watcher::Config::default().labels(&selector),
            )
            .modify(|ds| ds.managed_fields_mut().clear())
            .default_backoff(),
        );
        let mut stream = std::pin::pin!(stream);
        let (mut leader, _always_leader) = self.leadership(namespace, &instance).await?;

        let mut synced = false;
        let mut due: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        let mut resync = tokio::time::interval(self.settings.resync);
        let mut interval = self.interval();
        let mut health_tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), interval);

        loop {
            let is_leader = *leader.borrow();
            // A standby replica with a valid config is ready: it takes over the moment it gets the Lease.
            if !is_leader && self.config.is_some() {
                self.ready.store(true, Ordering::Relaxed);
            }
            let sleep_until = due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                Ok(()) = leader.changed() => {
                    let now_leader = *leader.borrow();
                    tracing::info!(leader = now_leader, "leadership changed");
                    if now_leader { due = Some(tokio::time::Instant::now()); }
                }
                Some(()) = recv(config_watch) => {
                    tokio::time::sleep(self.settings.reload_debounce).await;
                    if let Some(rx) = config_watch.as_mut() { while rx.changes.try_recv().is_ok() {} }
                    if self.reload().await {
                        if self.config.as_ref().map(|c| c.namespace.as_str()) != Some(namespace) || self.instance() != instance {
                            return Ok(Exit::NamespaceChanged);
                        }
                        due = Some(tokio::time::Instant::now());
                        failures = 0;
                        if self.interval() != interval {
                            interval = self.interval();
                            health_tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                        }
                    }
                }
                Some(()) = hup(hangup) => {
                    tracing::info!("SIGHUP: re-reading the config");
                    if self.reload().await {
                        if self.config.as_ref().map(|c| c.namespace.as_str()) != Some(namespace) || self.instance() != instance {
                            return Ok(Exit::NamespaceChanged);
                        }
                        due = Some(tokio::time::Instant::now());
                    }
                }
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => {
                        synced = true;
                        self.overlay.clear();
                        due = Some(tokio::time::Instant::now());
                    }
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                    Some(Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj))) => {
                        self.overlay.observe(&obj);
                        if synced && due.is_none() { due = Some(tokio::time::Instant::now() + EVENT_DEBOUNCE); }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "DaemonSet watch failed; restarting it with backoff"),
                    None => return Ok(Exit::WatchEnded),
                },
                _ = tokio::time::sleep_until(sleep_until), if due.is_some() && synced && is_leader => {
                    due = None;
                    let owned = self.overlay.view(store.state());
                    let report = tokio::select! {
                        _ = shutdown.changed() => return Ok(Exit::Shutdown),
                        r = tokio::time::timeout(PASS_TIMEOUT, self.pass(&cluster, &owned)) => r,
                    };
                    let Ok(report) = report else {
                        // A hung API call: drop the pass (its writes are idempotent) and retry with backoff.
                        failures += 1;
                        tracing::warn!(timeout = ?PASS_TIMEOUT, "pass timed out; will retry");
                        self.metrics.reconcile_errors.get_or_create(&KindLabel { kind: "timeout".into() }).inc();
                        due = Some(tokio::time::Instant::now() + backoff(failures));
                        continue;
                    };
                    self.overlay.record(&owned, &report);
                    self.publish_health_from_store(&store);
                    if report.errors.is_empty() {
                        failures = 0;
                        tracing::debug!("pass: {}", report.summary());
                    } else {
                        failures += 1;
                        let wait = backoff(failures);
                        tracing::warn!(retry_in = ?wait, "pass: {}", report.summary());
                        due = Some(tokio::time::Instant::now() + wait);
                    }
                }
                _ = resync.tick() => { if synced { due.get_or_insert_with(tokio::time::Instant::now); } }
                _ = health_tick.tick(), if synced && is_leader => {
                    let owned = store.state();
                    tokio::select! {
                        _ = shutdown.changed() => return Ok(Exit::Shutdown),
                        r = tokio::time::timeout(PASS_TIMEOUT * 5, self.health_check(&cluster, &owned, true)) => {
                            if r.is_err() { tracing::warn!("health check timed out; next one at the next interval"); }
                        }
                    }
                }
            }
        }
    }

    /// Node counts from the watch cache after each pass (no API call); pod-level detail waits for the
    /// health check.
    fn publish_health_from_store(&self, store: &Store<DaemonSet>) {
        let Some(config) = &self.config else { return };
        let owned = store.state();
        for set in &config.sets {
            let live = owned.iter().find(|d| d.name_any() == set.name);
            let h = health::from_daemonset(&set.name, live.map(Arc::as_ref), None);
            self.metrics.record_health(&h, set.images.len());
        }
    }

    /// A receiver that is always true without leader election (the caller keeps the returned sender so
    /// `changed()` stays pending); with it, true while this replica holds the Lease.
    async fn leadership(
        &self,
        namespace: &str,
        instance: &str,
    ) -> Result<(watch::Receiver<bool>, Option<watch::Sender<bool>>), ControllerError> {
        if !self.settings.leader_elect {
            let (tx, rx) = watch::channel(true);
            return Ok((rx, Some(tx)));
        }
        let identity = self
            .settings
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("kip-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(self.client.clone(), format!("{instance}-leader"))
            .with_namespace(namespace)
            .with_identity(identity)
            .build()
            .await?;
        let (rx, _task) = manager.watch().await;
        Ok((rx, None))
    }
}

async fn recv(watch: &mut Option<reload::ConfigWatch>) -> Option<()> {
    match watch {
        Some(w) => w.changes.recv().await,
        None => std::future::pending().await,
    }
}

async fn hup(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// What `status` prints: every set's health and the quota shortfalls.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub namespace: String,
    pub sets: Vec<SetHealth>,
    pub shortfalls: Vec<quota::Shortfall>,
}

impl StatusReport {
    pub fn is_healthy(&self) -> bool {
        self.shortfalls.is_empty() && self.sets.iter().all(SetHealth::is_healthy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Kube(#[from] crate::k8s::KubeError),
}

impl Controller {
    /// The `status` command: reads the cluster, writes nothing.
    pub async fn status(&mut self) -> Result<StatusReport, StatusError> {
        let config = Arc::new(config::load(self.settings.config_path.as_deref(), self.env.as_ref())?);
        self.config = Some(config.clone());
        let cluster = Cluster::new(self.client.clone(), &config.namespace);
        let owned: Vec<Arc<DaemonSet>> = cluster
            .list_owned(&self.instance())
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        self.resolve_owner(&cluster).await;
        let desired = self.desired();
        let sets = status::gather(&cluster, &config, &desired, &owned).await;
        let shortfalls = self.check_quota(&cluster, &owned).await;
        Ok(StatusReport {
            namespace: config.namespace.clone(),
            sets,
            shortfalls,
        })
    }
}

/// `--once`: load, one pass against a fresh list, a health summary, and an exit status.
pub async fn run_once(mut controller: Controller) -> bool {
    controller.reload().await;
    let Some(config) = controller.config.clone() else {
        return false;
    };
    let cluster = Cluster::new(controller.client.clone(), &config.namespace);
    let owned = match cluster.list_owned(&controller.instance()).await {
        Ok(list) => list.into_iter().map(Arc::new).collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list DaemonSets");
            return false;
        }
    };
    let report = controller.pass(&cluster, &owned).await;
    println!("{}", report.summary());
    for e in &report.errors {
        println!("error: {e}");
    }
    for (_, why) in &report.conflicts {
        println!("conflict: {why}");
    }
    for h in controller.health_check(&cluster, &report.live, false).await {
        println!("{}", h.summary());
    }
    report.is_clean()
}
