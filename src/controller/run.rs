//! The loop itself: config changes, the DaemonSet watch, the resync tick and the health tick feed one
//! pass at a time; leadership gates the writes; shutdown ends it promptly.

use super::*;

/// Delay before the next try after a failed pass: 1 s doubling to 1 min.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Longest a pass may take before it is abandoned and retried (an API call that hangs).
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// After a pass that wrote, quick looks at the DaemonSets' Events (each delay after the previous look), so
/// pods the API refuses (quota, Pod Security, LimitRange) are reported within seconds; bounded.
const QUICK_CHECKS: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(3),
    Duration::from_secs(10),
    Duration::from_secs(45),
];

/// Leading-edge debounce of watch events: an event after a quiet spell starts a pass at once (a deleted
/// DaemonSet is restored without waiting); events within this long after a pass (our own apply, a rollout)
/// make one pass at its end.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(100);

/// How often a name taken by a DaemonSet not ours is looked at again. The watch is label-selected and never
/// sees that object go (the upstream process deletes its own on SIGTERM): ours must follow within seconds.
const CONFLICT_RECHECK: Duration = Duration::from_secs(1);

enum Exit {
    Shutdown,
    NamespaceChanged,
    /// The DaemonSet watch stream ended (kube's watcher never ends; rebuilt if it does).
    WatchEnded,
}

impl Controller {
    /// Runs until `shutdown` flips to true. Never returns an error for API trouble: it retries.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ControllerError> {
        let mut config_watch = match &self.settings.config_path {
            Some(path) => Some(reload::watch(path)?),
            None => None,
        };
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        // A file change reloads at once, or at a deadline when it follows a reload closely (a burst is
        // batched); the loops select on it next to shutdown, so a long debounce never delays SIGTERM.
        let mut reload_at = Debounce::default();
        // The ConfigMap first, when it is configured: the mounted file may not have the latest edit yet.
        if !self.first_config_map_read(&mut shutdown).await {
            return Ok(());
        }
        self.reload().await;

        loop {
            // Without POD_NAMESPACE the ConfigMap's namespace is the config's: known once one is loaded.
            self.ensure_config_map_watch().await;
            // Without a valid config there is nothing to do but wait for one.
            let Some(namespace) = self.config.as_ref().map(|c| c.namespace.clone()) else {
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    Some(()) = recv(&mut config_watch) => { self.file_changed(&mut reload_at).await; }
                    () = until(reload_at.at) => { self.reload_now(&mut reload_at, &mut config_watch).await; }
                    Some(()) = hup(&mut hangup) => { self.reload().await; }
                    Some(update) = config_map::next(&mut self.api.watch) => { self.on_config_map(update).await; }
                }
                continue;
            };
            match self
                .run_in(
                    &namespace,
                    &mut shutdown,
                    &mut config_watch,
                    &mut hangup,
                    &mut reload_at,
                )
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
        reload_at: &mut Debounce,
    ) -> Result<Exit, ControllerError> {
        let cluster = self.cluster(namespace);
        let instance = self.instance();
        self.review_permissions(namespace).await;
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
        let (mut leader, _always_leader) = self.leadership(namespace, &instance);

        let mut synced = false;
        let mut due: Option<tokio::time::Instant> = None;
        // The next quick check after a write, and its index in QUICK_CHECKS.
        let mut quick: Option<(tokio::time::Instant, usize)> = None;
        let mut failures = 0u32;
        // When the last pass ended: watch events right after it are batched, later ones act at once.
        let mut passed_at: Option<tokio::time::Instant> = None;
        let mut resync = tokio::time::interval(self.settings.resync);
        let mut health_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), self.interval());
        let mut conflict_tick = tokio::time::interval(CONFLICT_RECHECK);
        conflict_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let is_leader = *leader.borrow();
            // A standby replica with a valid config is ready: it takes over the moment it gets the Lease.
            if !is_leader && self.config.is_some() {
                self.ready.store(true, Ordering::Relaxed);
            }
            let sleep_until = due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let quick_at = quick.map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600), |(t, _)| t);
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(Exit::Shutdown),
                Ok(()) = leader.changed() => {
                    let now_leader = *leader.borrow();
                    tracing::info!(leader = now_leader, "leadership changed");
                    if now_leader { due = Some(tokio::time::Instant::now()); }
                }
                Some(()) = recv(config_watch) => {
                    if self.file_changed(reload_at).await
                        && let Some(exit) = self.new_config(namespace, &instance, &mut due, &mut failures, &mut health_tick)
                    {
                        return Ok(exit);
                    }
                }
                () = until(reload_at.at) => {
                    if self.reload_now(reload_at, config_watch).await
                        && let Some(exit) = self.new_config(namespace, &instance, &mut due, &mut failures, &mut health_tick)
                    {
                        return Ok(exit);
                    }
                }
                // A ConfigMap edit is one atomic event: applied at once, no debounce.
                Some(update) = config_map::next(&mut self.api.watch) => {
                    if self.on_config_map(update).await
                        && let Some(exit) = self.new_config(namespace, &instance, &mut due, &mut failures, &mut health_tick)
                    {
                        return Ok(exit);
                    }
                }
                Some(()) = hup(hangup) => {
                    tracing::info!("SIGHUP: re-reading the config");
                    if self.reload().await
                        && let Some(exit) = self.new_config(namespace, &instance, &mut due, &mut failures, &mut health_tick)
                    {
                        return Ok(exit);
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
                        if synced && due.is_none() {
                            let now = tokio::time::Instant::now();
                            due = Some(passed_at.map_or(now, |t| (t + EVENT_DEBOUNCE).max(now)));
                        }
                        // Pods missing anew without a write of ours (a new node, a quota taken by others): one look.
                        if self.missing_pods_changed(&obj) && quick.is_none() {
                            quick = Some((tokio::time::Instant::now() + QUICK_CHECKS[0], QUICK_CHECKS.len() - 1));
                        }
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
                    passed_at = Some(tokio::time::Instant::now());
                    self.overlay.record(&owned, &report);
                    self.publish_health_from_store(&store);
                    if report.writes > 0 {
                        quick = Some((tokio::time::Instant::now() + QUICK_CHECKS[0], 0));
                    }
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
                _ = tokio::time::sleep_until(quick_at), if quick.is_some() && synced && is_leader => {
                    let step = quick.take().map_or(0, |(_, i)| i);
                    let owned = self.overlay.view(store.state());
                    let undecided = tokio::select! {
                        _ = shutdown.changed() => return Ok(Exit::Shutdown),
                        r = tokio::time::timeout(PASS_TIMEOUT, self.quick_check(&cluster, &owned)) => r.unwrap_or(true),
                    };
                    if undecided && let Some(wait) = QUICK_CHECKS.get(step + 1) {
                        quick = Some((tokio::time::Instant::now() + *wait, step + 1));
                    }
                }
                _ = resync.tick() => { if synced { due.get_or_insert_with(tokio::time::Instant::now); } }
                _ = conflict_tick.tick(), if synced && is_leader && due.is_none() && !self.conflicts_seen.is_empty() => {
                    if self.conflict_cleared(&cluster, &instance).await {
                        tracing::info!("a conflicting DaemonSet is gone or ours now; reconciling");
                        due = Some(tokio::time::Instant::now());
                    }
                }
                _ = health_tick.tick(), if synced && is_leader => {
                    // Optional features turned off by a missing permission are tried again here, not in a loop.
                    self.access.retry();
                    self.review_permissions(namespace).await;
                    self.ensure_config_map_watch().await;
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

    /// A config that just took effect, whichever way it was read (file watch or SIGHUP): leave the loop when
    /// its namespace or instance changed; else a pass at once, a clean retry count, and the health tick
    /// re-armed when `caching_interval_hours` changed.
    fn new_config(
        &self,
        namespace: &str,
        instance: &str,
        due: &mut Option<tokio::time::Instant>,
        failures: &mut u32,
        health_tick: &mut tokio::time::Interval,
    ) -> Option<Exit> {
        if self.config.as_ref().map(|c| c.namespace.as_str()) != Some(namespace) || self.instance() != instance {
            return Some(Exit::NamespaceChanged);
        }
        let now = tokio::time::Instant::now();
        *due = Some(now);
        *failures = 0;
        let interval = self.interval();
        if health_tick.period() != interval {
            tracing::info!(interval = ?interval, "health check interval changed; next check one interval from now");
            *health_tick = tokio::time::interval_at(now + interval, interval);
        }
        None
    }

    /// A config-file event. After a quiet spell the file is read at once (the kubelet's `..data` swap is
    /// atomic: its one event suffices); within the debounce after a reload that took effect, or while the
    /// file does not parse (an editor mid-write, reported only if it stays so), one reload at the end of
    /// the window batches the burst. Returns true when a new config took effect.
    async fn file_changed(&mut self, debounce: &mut Debounce) -> bool {
        if debounce.at.is_some() {
            return false;
        }
        let now = tokio::time::Instant::now();
        let window = self.settings.reload_debounce;
        match debounce.quiet_until.filter(|&t| t > now) {
            Some(until) => debounce.at = Some(until),
            // An unparsable file gets the window to be completed before it is reported.
            None if config::load(self.settings.config_path.as_deref(), self.env.as_ref()).is_err() => {
                debounce.at = Some(now + window);
            }
            None => {
                if self.reload().await {
                    debounce.quiet_until = Some(tokio::time::Instant::now() + window);
                    return true;
                }
            }
        }
        false
    }

    /// The batched reload at the end of a debounce window. Returns true when a new config took effect.
    async fn reload_now(&mut self, debounce: &mut Debounce, config_watch: &mut Option<reload::ConfigWatch>) -> bool {
        debounce.at = None;
        drain(config_watch);
        let changed = self.reload().await;
        if changed {
            debounce.quiet_until = Some(tokio::time::Instant::now() + self.settings.reload_debounce);
        }
        changed
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

    /// Whether a name this instance wants and found taken by another's DaemonSet is free again (or ours):
    /// one GET per conflicting name.
    async fn conflict_cleared(&self, cluster: &Cluster, instance: &str) -> bool {
        for name in &self.conflicts_seen {
            match cluster.get(name).await {
                Ok(None) => return true,
                Ok(Some(ds)) if reconcile::is_owned(&ds, instance) => return true,
                Ok(Some(_)) => {}
                Err(e) => tracing::debug!(daemonset = %name, error = %e, "cannot look at a conflicting DaemonSet"),
            }
        }
        false
    }

    /// A receiver that is always true without leader election (the caller keeps the returned sender so
    /// `changed()` stays pending); with it, true while this replica holds the Lease. The Lease manager is
    /// built and watched in a task that retries with backoff while the API is unreachable or refuses:
    /// meanwhile this replica is a standby (false) and /healthz stays up. The task ends, releasing the
    /// Lease, when the receiver is dropped.
    fn leadership(&self, namespace: &str, instance: &str) -> (watch::Receiver<bool>, Option<watch::Sender<bool>>) {
        if !self.settings.leader_elect {
            let (tx, rx) = watch::channel(true);
            return (rx, Some(tx));
        }
        let identity = self
            .settings
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("kip-{}", std::process::id()));
        let (tx, rx) = watch::channel(false);
        let client = self.client.clone();
        let (namespace, lease) = (namespace.to_owned(), format!("{instance}-leader"));
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), lease.clone())
                    .with_namespace(namespace.clone())
                    .with_identity(identity.clone())
                    .build();
                let manager = tokio::select! {
                    _ = tx.closed() => return,
                    m = built => m,
                };
                let manager = match manager {
                    Ok(m) => m,
                    Err(e) => {
                        failures += 1;
                        let wait = backoff(failures);
                        tracing::warn!(error = %e, retry_in = ?wait, "leader election: cannot reach the Lease; standby until it can");
                        tokio::select! {
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                };
                failures = 0;
                let (mut lease_rx, task) = manager.watch().await;
                let _ = tx.send(*lease_rx.borrow());
                loop {
                    tokio::select! {
                        _ = tx.closed() => {
                            // Dropping the receiver makes the manager release the Lease; wait briefly for it.
                            drop(lease_rx);
                            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                            return;
                        }
                        changed = lease_rx.changed() => match changed {
                            Ok(()) => { let _ = tx.send(*lease_rx.borrow()); }
                            Err(_) => {
                                // The manager's task ended: step down and build a new one.
                                tracing::warn!("leader election: the Lease manager stopped; starting it again");
                                let _ = tx.send(false);
                                break;
                            }
                        }
                    }
                }
            }
        });
        (rx, None)
    }
}

/// Config-file reload timing: a pending batched reload, and the end of the window after the last reload
/// that took effect.
#[derive(Default)]
struct Debounce {
    at: Option<tokio::time::Instant>,
    quiet_until: Option<tokio::time::Instant>,
}

async fn recv(watch: &mut Option<reload::ConfigWatch>) -> Option<()> {
    match watch {
        Some(w) => w.changes.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drops change signals that arrived during the debounce: the reload about to happen reads them all.
fn drain(watch: &mut Option<reload::ConfigWatch>) {
    if let Some(rx) = watch.as_mut() {
        while rx.changes.try_recv().is_ok() {}
    }
}

async fn hup(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
