//! The read-mostly checks between passes: quota (what cannot fit), the quick look after a write (why pods
//! were not created), and the periodic health check with its refresh of moving tags.

use super::*;

impl Controller {
    /// `quota_check`, then reports what cannot fit, with the numbers, once per change: in the log,
    /// as a metric, as an Event on the set's DaemonSet (the total on the owner Deployment).
    pub async fn check_quota(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> quota::QuotaCheck {
        let check = match self.cfg.config.clone() {
            Some(config) => quota_check(cluster, &config, owned).await,
            None => quota::QuotaCheck::default(),
        };
        self.metrics.record_quota(&check.shortfalls);
        let texts: Vec<String> = check
            .shortfalls
            .iter()
            .map(ToString::to_string)
            .chain(check.totals.iter().map(ToString::to_string))
            .collect();
        if texts != self.reported.shortfalls {
            for s in &check.shortfalls {
                let text = s.to_string();
                if self.reported.shortfalls.contains(&text) {
                    continue;
                }
                tracing::warn!(set = %s.set, "quota: {text}; its cache pods will not be created");
                self.reported.quota_pending.push(s.clone());
            }
            for t in &check.totals {
                let text = t.to_string();
                if self.reported.shortfalls.contains(&text) {
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
            self.reported.shortfalls = texts;
        }
        // Only shortfalls still current wait for their DaemonSet.
        self.reported.quota_pending.retain(|p| check.shortfalls.contains(p));
        self.post_quota_events(owned).await;
        check
    }

    /// Posts the pending per-set quota Events on the sets' DaemonSets that exist in `live`.
    pub(super) async fn post_quota_events(&mut self, live: &[Arc<DaemonSet>]) {
        for s in std::mem::take(&mut self.reported.quota_pending) {
            match live.iter().find(|d| d.name_any() == s.set) {
                Some(ds) => {
                    let note = format!("{s}; its cache pods will not be created");
                    self.events.on_daemonset(ds, true, "QuotaExceeded", note).await;
                }
                None => self.reported.quota_pending.push(s),
            }
        }
    }

    /// Logs (once per cause) and records as an Event on the DaemonSet why a set's pods were not created.
    async fn report_not_created(&mut self, ds: &DaemonSet, h: &SetHealth) {
        let Some(n) = &h.not_created else {
            self.reported.not_created.remove(&h.set);
            return;
        };
        let gist = health::without_pod_name(&n.message);
        let note = format!(
            "{} of {} nodes have no pod of set {:?}: {} ({}): {gist}",
            h.nodes_without_pod, h.desired, h.set, n.reason, n.cause
        );
        if self.reported.not_created.get(&h.set).map(String::as_str) != Some(gist) {
            tracing::warn!(set = %h.set, cause = %n.cause, "{note}");
            self.reported.not_created.insert(h.set.clone(), gist.to_owned());
        }
        // Same note on the same object: written once per repeat period (the Events type aggregates).
        self.events.on_daemonset(ds, true, "PodsNotCreated", note).await;
    }

    /// Whether a watched DaemonSet now lacks pods on more nodes than before. Only a rise counts: a rollout
    /// making progress (fewer missing) needs no look.
    pub(super) fn missing_pods_changed(&mut self, ds: &DaemonSet) -> bool {
        let missing = ds.status.as_ref().map_or(0, |s| {
            s.desired_number_scheduled
                .saturating_sub(s.current_number_scheduled)
                .max(0)
        });
        let before = self.reported.missing.insert(ds.name_any(), missing).unwrap_or(0);
        missing > before
    }

    /// A quick look right after a write: for sets whose DaemonSet lacks pods, the DaemonSet controller's
    /// reason (quota, Pod Security, LimitRange...) from its Events, reported at once instead of at the next
    /// health check. Returns true while something is still undecided (pods missing without a known reason,
    /// or a status not yet observed), so the caller looks again a little later.
    pub async fn quick_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> bool {
        let Some(config) = self.cfg.config.clone() else {
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
                self.reported.not_created.remove(&set.name);
            }
            healths.push(h);
        }
        self.metrics.record_not_created(&healths);
        undecided
    }

    /// Health check of every set: DaemonSet status plus a paged scan of its pods; then refreshes.
    pub async fn health_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>], refresh: bool) -> Vec<SetHealth> {
        let Some(config) = self.cfg.config.clone() else {
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
                    let note = format!("image {f}");
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
        self.reported.failing = healths.iter().map(|h| (h.set.clone(), h.failing.clone())).collect();
        self.metrics.record_failing(&self.reported.failing);
        self.metrics.record_not_created(&healths);
        healths
    }

    /// The periodic refresh of moving tags: a rolling restart with `patch` (or, with `update`, by a replace
    /// carrying the restart annotation), else (the upstream verbs) delete-then-create of the DaemonSet,
    /// which pulls every image again too.
    async fn refresh(&self, cluster: &Cluster, live: &DaemonSet, desired: &[Desired]) -> Result<DaemonSet, KubeError> {
        let name = live.name_any();
        let strategy = self.platform.access.strategy();
        let at = Timestamp::now().to_string();
        let result = match desired.iter().find(|d| d.name() == name).map(Desired::object) {
            Some(want) if !strategy.apply && strategy.update => cluster.restart_by_replace(want, live, &at).await,
            Some(want) if !strategy.apply => cluster.recreate(want, live).await,
            _ => cluster.restart(&name, &at).await,
        };
        if let Err(e) = &result
            && e.is_forbidden()
        {
            let (verb, group, resource) = e.rbac();
            self.platform.access.forbidden(verb, group, resource);
        }
        result
    }
}

/// Compares the sets' need (requests and limits × images × nodes) with the namespace's ResourceQuotas
/// and LimitRanges. Reads only.
pub(super) async fn quota_check(cluster: &Cluster, config: &Config, owned: &[Arc<DaemonSet>]) -> quota::QuotaCheck {
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
        match status::matching_nodes(cluster, config).await {
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
    count_unsettled_pods(cluster, config, owned, &mut running_of).await;
    match status::quota_check(cluster, config, &nodes_of, &running_of).await {
        Ok(check) => check,
        Err(e @ status::QuotaCheckError::Quota(_)) => {
            tracing::error!(error = %e, "quota check failed");
            quota::QuotaCheck::default()
        }
        Err(status::QuotaCheckError::Kube(e)) if e.is_forbidden() => {
            let (verb, group, resource) = e.rbac();
            cluster.access().forbidden(verb, group, resource);
            quota::QuotaCheck::default()
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read ResourceQuotas/LimitRanges");
            quota::QuotaCheck::default()
        }
    }
}

/// The quota counts a pod from its admission, the DaemonSet status only once the pod is bound to a node and
/// the DaemonSet controller has synced again: in between, a set's own new pods would count as others' usage
/// and a set that fits would be reported as not fitting (seen on a real cluster). For a set whose status
/// shows fewer nodes with a pod than desired, its pods that still count (not Succeeded or Failed) are counted
/// instead, page by page in the partial form, when `list pods` is allowed.
async fn count_unsettled_pods(cluster: &Cluster, config: &Config, owned: &[Arc<DaemonSet>], running_of: &mut [u64]) {
    if !cluster.access().allows("list", "", "pods") {
        return;
    }
    for (i, set) in config.sets.iter().enumerate() {
        let unsettled = owned
            .iter()
            .find(|d| d.name_any() == set.name)
            .and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.current_number_scheduled < s.desired_number_scheduled);
        if !unsettled {
            continue;
        }
        let mut counted = 0u64;
        let visit = |pods: &[health::PodView]| {
            let live = pods.iter().filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            });
            counted += live.count() as u64;
        };
        match cluster.for_each_pod_page(&health::pod_selector(&set.name), visit).await {
            Ok(()) => running_of[i] = running_of[i].max(counted),
            Err(e) => tracing::debug!(set = %set.name, error = %e, "cannot count the set's pods for the quota check"),
        }
    }
}
