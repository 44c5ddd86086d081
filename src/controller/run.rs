//! The loop itself: every source becomes a [`Trigger`] (see `trigger`), and each trigger has one handler
//! here. Config changes from every source go through one handler; leadership gates the writes; shutdown
//! ends the loop promptly, also in the middle of a pass or a check.

use std::future::Future;

use tokio::time::Instant;

use super::trigger::{ConfigEvent, ConfigSources, Session, Trigger, leadership, next_idle};
use super::*;

/// Delay before the next try after a failed pass: 1 s doubling to 1 min.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Longest a pass may take before it is abandoned and retried (an API call that hangs).
pub(super) const PASS_TIMEOUT: Duration = Duration::from_secs(60);

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
pub(super) const CONFLICT_RECHECK: Duration = Duration::from_secs(1);

/// Whether the loop goes on after a trigger.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Controller {
    /// Runs until `shutdown` flips to true. Never returns an error for API trouble: it retries.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ControllerError> {
        let mut sources = ConfigSources::new(&self.settings)?;
        // The ConfigMap first, when it is configured: the mounted file may not have the latest edit yet.
        if !self.first_config_map_read(&mut shutdown).await {
            return Ok(());
        }
        self.reload().await;
        let mut session: Option<Session> = None;
        loop {
            if session.is_none() {
                // Without POD_NAMESPACE the ConfigMap's namespace is the config's: known once one is loaded.
                self.ensure_config_map_watch().await;
                session = self.start_session().await;
            }
            let trigger = match session.as_mut() {
                // Without a valid config there is nothing to do but wait for one.
                None => next_idle(&mut sources, &mut self.cfg.api.watch, &mut shutdown).await,
                Some(s) => {
                    // A standby replica with a valid config is ready: it takes over the moment it gets the Lease.
                    if !s.is_leader() {
                        self.ready.store(true, Ordering::Relaxed);
                    }
                    let conflicts = !self.reported.conflicts.is_empty();
                    s.next(&mut sources, &mut self.cfg.api.watch, &mut shutdown, conflicts)
                        .await
                }
            };
            if self.handle(trigger, &mut sources, &mut session, &mut shutdown).await == Flow::Stop {
                return Ok(());
            }
        }
    }

    /// The session of the config's namespace: platform and permissions asked, the DaemonSet watch and
    /// leadership started.
    async fn start_session(&mut self) -> Option<Session> {
        let namespace = self.cfg.config.as_ref()?.namespace.clone();
        let instance = self.instance();
        // The platform decides how DaemonSets are rendered: asked before the first pass needs it.
        self.discover_platform().await;
        self.review_permissions(&namespace).await;
        let leadership = leadership(&self.client, &self.settings, &namespace, &instance);
        let cluster = self.cluster(&namespace);
        Some(Session::start(
            cluster,
            instance,
            leadership,
            self.settings.resync,
            self.interval(),
        ))
    }

    async fn handle(
        &mut self,
        trigger: Trigger,
        sources: &mut ConfigSources,
        session: &mut Option<Session>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Flow {
        match trigger {
            Trigger::Shutdown => Flow::Stop,
            Trigger::Config(event) => {
                if self.on_config_event(event, sources).await {
                    self.config_changed(session);
                }
                Flow::Continue
            }
            Trigger::WatchEnded => {
                tracing::warn!("DaemonSet watch ended; starting it again");
                *session = None;
                Flow::Continue
            }
            // The other triggers come from a session.
            trigger => match session.as_mut() {
                Some(s) => self.handle_in(trigger, s, shutdown).await,
                None => Flow::Continue,
            },
        }
    }

    /// The triggers of a session's own sources.
    async fn handle_in(&mut self, trigger: Trigger, s: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Flow {
        match trigger {
            Trigger::Leadership(leader) => {
                tracing::info!(leader, "leadership changed");
                if leader {
                    s.due = Some(Instant::now());
                }
            }
            Trigger::Watch(event) => self.on_watch_event(s, *event),
            Trigger::PassDue => return self.on_pass_due(s, shutdown).await,
            Trigger::QuickCheckDue => return self.on_quick_check_due(s, shutdown).await,
            Trigger::Resync => {
                if s.synced {
                    s.due.get_or_insert_with(Instant::now);
                    s.warm_at.get_or_insert_with(Instant::now);
                }
            }
            Trigger::ConflictRecheck => {
                if self.conflict_cleared(&s.cluster, &s.instance).await {
                    tracing::info!("a conflicting DaemonSet is gone or ours now; reconciling");
                    s.due = Some(Instant::now());
                }
            }
            Trigger::HealthTick => return self.on_health_tick(s, shutdown).await,
            Trigger::DigestCheckDue => return self.on_digest_check_due(s, shutdown).await,
            Trigger::WarmDue => {
                s.warm_at = None;
                let owned = s.store.state();
                let step = tokio::time::timeout(PASS_TIMEOUT * 2, self.warm_step(&s.cluster, &owned));
                match unless_shutdown(shutdown, step).await {
                    None => return Flow::Stop,
                    Some(Ok(next)) => s.warm_at = next,
                    Some(Err(_)) => {
                        tracing::warn!("warm gate step timed out; trying again shortly");
                        s.warm_at = Some(Instant::now() + super::warm::WARM_TICK);
                    }
                }
            }
            Trigger::LookDue => {
                let look = self.on_look_due(s);
                if unless_shutdown(shutdown, look).await.is_none() {
                    return Flow::Stop;
                }
            }
            // Handled in `handle`.
            Trigger::Shutdown | Trigger::Config(_) | Trigger::WatchEnded => {}
        }
        Flow::Continue
    }

    /// The one config handler, whatever the source. Returns true when a new config took effect.
    async fn on_config_event(&mut self, event: ConfigEvent, sources: &mut ConfigSources) -> bool {
        match event {
            ConfigEvent::File => self.file_changed(sources).await,
            ConfigEvent::DebounceEnded => self.reload_now(sources).await,
            ConfigEvent::Hangup => {
                tracing::info!("SIGHUP: re-reading the config");
                self.reload().await
            }
            ConfigEvent::ConfigMap(update) => self.on_config_map(*update).await,
        }
    }

    /// A config that just took effect: a new session when its namespace or instance changed; else a pass at
    /// once, a clean retry count, and the health tick re-armed when `caching_interval_hours` changed.
    fn config_changed(&mut self, session: &mut Option<Session>) {
        let Some(s) = session.as_mut() else { return };
        if self.cfg.config.as_ref().map(|c| c.namespace.as_str()) != Some(s.namespace.as_str())
            || self.instance() != s.instance
        {
            tracing::warn!(old = %s.namespace, "namespace changed: DaemonSets in the old namespace are left in place");
            self.memory = state::Memory::default();
            self.platform.owner_for = None;
            *session = None;
            return;
        }
        let now = Instant::now();
        s.due = Some(now);
        s.failures = 0;
        // After the pass (the cache pods may gain the startup taint's toleration).
        s.warm_at = Some(now + super::warm::WARM_SETTLE);
        if let Some(c) = self.cfg.config.as_ref() {
            let next = now + c.refresh_check_interval;
            if next < s.digest_fresh_at {
                s.digest_fresh_at = next;
            }
        }
        let interval = self.interval();
        if s.health_tick.period() != interval {
            tracing::info!(interval = ?interval, "health check interval changed; next check one interval from now");
            s.health_tick = tokio::time::interval_at(now + interval, interval);
        }
    }

    fn on_watch_event(&mut self, s: &mut Session, event: Result<watcher::Event<DaemonSet>, watcher::Error>) {
        match event {
            Ok(watcher::Event::InitDone) => {
                s.synced = true;
                self.memory.overlay.clear();
                s.due = Some(Instant::now());
                s.warm_at
                    .get_or_insert_with(|| Instant::now() + super::warm::WARM_SETTLE);
            }
            Ok(watcher::Event::Init) => {}
            // A set already unready when the watch (re)starts gets its look too.
            Ok(watcher::Event::InitApply(obj)) => self.plan_look(s, &obj, false),
            Ok(watcher::Event::Apply(obj)) => self.on_daemonset_changed(s, &obj, false),
            Ok(watcher::Event::Delete(obj)) => self.on_daemonset_changed(s, &obj, true),
            Err(e) => tracing::warn!(error = %e, "DaemonSet watch failed; restarting it with backoff"),
        }
    }

    /// An owned DaemonSet changed or went: a pass soon, and the looks at why its pods are missing or unready.
    fn on_daemonset_changed(&mut self, s: &mut Session, obj: &DaemonSet, deleted: bool) {
        self.memory.overlay.observe(obj);
        // A node joined or a cache pod turned ready (the DaemonSet's status counts them): a warm step soon;
        // a burst of events makes one step.
        if s.synced {
            let settle = Instant::now() + super::warm::WARM_SETTLE;
            s.warm_at = Some(s.warm_at.map_or(settle, |t| t.min(settle)));
        }
        if s.synced && s.due.is_none() {
            let now = Instant::now();
            s.due = Some(s.passed_at.map_or(now, |t| (t + EVENT_DEBOUNCE).max(now)));
        }
        // Pods missing anew without a write of ours (a new node, a quota taken by others): one look.
        if self.missing_pods_changed(obj) && s.quick.is_none() {
            s.quick = Some((Instant::now() + QUICK_CHECKS[0], QUICK_CHECKS.len() - 1));
        }
        // Pods unready: which image fails, and why, after the settling delay (not at the health check).
        self.plan_look(s, obj, deleted);
    }

    async fn on_pass_due(&mut self, s: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Flow {
        s.due = None;
        let owned = self.memory.overlay.view(s.store.state());
        let Some(report) = unless_shutdown(
            shutdown,
            tokio::time::timeout(PASS_TIMEOUT, self.pass(&s.cluster, &owned)),
        )
        .await
        else {
            return Flow::Stop;
        };
        let Ok(report) = report else {
            // A hung API call: drop the pass (its writes are idempotent) and retry with backoff.
            s.failures += 1;
            tracing::warn!(timeout = ?PASS_TIMEOUT, "pass timed out; will retry");
            self.metrics
                .reconcile_errors
                .get_or_create(&KindLabel { kind: "timeout".into() })
                .inc();
            s.due = Some(Instant::now() + backoff(s.failures));
            return Flow::Continue;
        };
        s.passed_at = Some(Instant::now());
        self.memory.overlay.record(&owned, &report);
        self.publish_health_from_store(&s.store);
        if report.writes > 0 {
            s.quick = Some((Instant::now() + QUICK_CHECKS[0], 0));
        }
        if report.errors.is_empty() {
            s.failures = 0;
            tracing::debug!("pass: {}", report.summary());
        } else {
            s.failures += 1;
            let wait = backoff(s.failures);
            tracing::warn!(retry_in = ?wait, "pass: {}", report.summary());
            s.due = Some(Instant::now() + wait);
        }
        Flow::Continue
    }

    async fn on_quick_check_due(&mut self, s: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Flow {
        let step = s.quick.take().map_or(0, |(_, i)| i);
        let owned = self.memory.overlay.view(s.store.state());
        let check = tokio::time::timeout(PASS_TIMEOUT, self.quick_check(&s.cluster, &owned));
        let Some(undecided) = unless_shutdown(shutdown, check).await else {
            return Flow::Stop;
        };
        if undecided.unwrap_or(true)
            && let Some(wait) = QUICK_CHECKS.get(step + 1)
        {
            s.quick = Some((Instant::now() + *wait, step + 1));
        }
        Flow::Continue
    }

    /// A digest check: a fresh one (the registry asked again) once per `refresh_check_interval`, and a step
    /// every few seconds while refreshes are going.
    async fn on_digest_check_due(&mut self, s: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Flow {
        let now = Instant::now();
        let fresh = now >= s.digest_fresh_at;
        if fresh {
            let interval = self
                .cfg
                .config
                .as_ref()
                .map_or(config::DEFAULT_REFRESH_CHECK_INTERVAL, |c| c.refresh_check_interval);
            s.digest_fresh_at = now + interval;
        }
        s.digest_step_at = None;
        let owned = s.store.state();
        let check = tokio::time::timeout(PASS_TIMEOUT * 2, self.digest_check(&s.cluster, &owned, fresh));
        match unless_shutdown(shutdown, check).await {
            None => return Flow::Stop,
            Some(Err(_)) => tracing::warn!("digest check timed out; next one at the next interval"),
            Some(Ok(true)) => s.digest_step_at = Some(Instant::now() + super::refresh::REFRESH_STEP),
            Some(Ok(false)) => {}
        }
        Flow::Continue
    }

    async fn on_health_tick(&mut self, s: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Flow {
        // Optional features turned off by a missing permission are tried again here, not in a loop.
        self.platform.access.retry();
        self.review_permissions(&s.namespace).await;
        self.ensure_config_map_watch().await;
        let owned = s.store.state();
        let check = tokio::time::timeout(PASS_TIMEOUT * 5, self.health_check(&s.cluster, &owned, true));
        match unless_shutdown(shutdown, check).await {
            None => Flow::Stop,
            Some(Err(_)) => {
                tracing::warn!("health check timed out; next one at the next interval");
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
        }
    }

    /// A config-file event. After a quiet spell the file is read at once (the kubelet's `..data` swap is
    /// atomic: its one event suffices); within the debounce after a reload that took effect, or while the
    /// file does not parse (an editor mid-write, reported only if it stays so), one reload at the end of
    /// the window batches the burst. Returns true when a new config took effect.
    async fn file_changed(&mut self, sources: &mut ConfigSources) -> bool {
        let debounce = &mut sources.debounce;
        if debounce.at.is_some() {
            return false;
        }
        let now = Instant::now();
        let window = self.settings.reload_debounce;
        match debounce.quiet_until.filter(|&t| t > now) {
            Some(until) => debounce.at = Some(until),
            // An unparsable file gets the window to be completed before it is reported.
            None if config::load(self.settings.config_path.as_deref(), self.env.as_ref()).is_err() => {
                debounce.at = Some(now + window);
            }
            None => {
                if self.reload().await {
                    debounce.quiet_until = Some(Instant::now() + window);
                    return true;
                }
            }
        }
        false
    }

    /// The batched reload at the end of a debounce window. Returns true when a new config took effect.
    async fn reload_now(&mut self, sources: &mut ConfigSources) -> bool {
        sources.debounce.at = None;
        sources.drain();
        let changed = self.reload().await;
        if changed {
            sources.debounce.quiet_until = Some(Instant::now() + self.settings.reload_debounce);
        }
        changed
    }

    /// Node counts from the watch cache after each pass (no API call); pod-level detail waits for the
    /// health check.
    fn publish_health_from_store(&self, store: &Store<DaemonSet>) {
        let Some(config) = &self.cfg.config else { return };
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
        for name in &self.reported.conflicts {
            match cluster.get(name).await {
                Ok(None) => return true,
                Ok(Some(ds)) if reconcile::is_owned(&ds, instance) => return true,
                Ok(Some(_)) => {}
                Err(e) => tracing::debug!(daemonset = %name, error = %e, "cannot look at a conflicting DaemonSet"),
            }
        }
        false
    }
}

/// `work`, unless shutdown comes first (None): a long pass or check never delays SIGTERM.
async fn unless_shutdown<T>(shutdown: &mut watch::Receiver<bool>, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = shutdown.changed() => None,
        done = work => Some(done),
    }
}
