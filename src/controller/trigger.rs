//! The sources the loop waits on, each turned into one [`Trigger`]: the `select!`s here only translate, the
//! handlers in `run` decide. Deadlines (the reload debounce, a pass due, the next quick check) are sources
//! too, so no handler ever sleeps.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::Stream;
use tokio::signal::unix::Signal;
use tokio::time::{Instant, Interval};

use super::config_map::{self, Update};
use super::*;
use crate::watch::ConfigWatch;

/// Everything the loop reacts to.
pub(super) enum Trigger {
    Shutdown,
    /// Any config source: handled by the one config handler.
    Config(ConfigEvent),
    /// This replica got (true) or lost the Lease.
    Leadership(bool),
    /// An event of the owned-DaemonSet watch (boxed: a DaemonSet is large next to the other triggers).
    Watch(Box<Result<watcher::Event<DaemonSet>, watcher::Error>>),
    /// The DaemonSet watch stream ended (kube's watcher never ends; rebuilt if it does).
    WatchEnded,
    /// A pass is due (config change, watch event, retry after a failure, leadership, resync).
    PassDue,
    /// The next quick look at why pods are missing.
    QuickCheckDue,
    Resync,
    /// Time to look whether a name taken by another's DaemonSet is free again.
    ConflictRecheck,
    /// A set unready since the settling delay: its pods are looked at for failing images.
    LookDue,
    /// The digest check of `refresh = "digest"` sets: a new interval, or the next step of refreshes going.
    DigestCheckDue,
    /// A warm gate step: node conditions and startup taints (see `warm`).
    WarmDue,
    HealthTick,
}

/// Where a possible config change came from.
pub(super) enum ConfigEvent {
    /// The watched file or directory changed.
    File,
    /// The end of a reload debounce window.
    DebounceEnded,
    Hangup,
    ConfigMap(Box<Update>),
}

/// Config-file reload timing: a pending batched reload, and the end of the window after the last reload
/// that took effect.
#[derive(Default)]
pub(super) struct Debounce {
    pub at: Option<Instant>,
    pub quiet_until: Option<Instant>,
}

/// The config sources that live as long as the process: the file watch, SIGHUP and the debounce deadline.
pub(super) struct ConfigSources {
    file: Option<ConfigWatch>,
    hangup: Option<Signal>,
    pub debounce: Debounce,
}

impl ConfigSources {
    pub fn new(settings: &Settings) -> Result<Self, ControllerError> {
        let file = match &settings.config_path {
            Some(path) => Some(crate::watch::watch(path)?),
            None => None,
        };
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        Ok(Self {
            file,
            hangup,
            debounce: Debounce::default(),
        })
    }

    /// Drops change signals that arrived during the debounce: the reload about to happen reads them all.
    pub fn drain(&mut self) {
        if let Some(w) = self.file.as_mut() {
            while w.changes.try_recv().is_ok() {}
        }
    }

    /// The next config event; the ConfigMap watch (`config_map`) is owned by the controller's state.
    async fn next(&mut self, config_map: &mut Option<config_map::Watch>) -> ConfigEvent {
        tokio::select! {
            () = file_changed(&mut self.file) => ConfigEvent::File,
            () = until(self.debounce.at) => ConfigEvent::DebounceEnded,
            // A ConfigMap edit is one atomic event: applied at once, no debounce.
            update = config_map_update(config_map) => ConfigEvent::ConfigMap(Box::new(update)),
            () = hangup(&mut self.hangup) => ConfigEvent::Hangup,
        }
    }
}

/// Waits for a trigger while no config is in force: only shutdown and the config sources.
pub(super) async fn next_idle(
    sources: &mut ConfigSources,
    config_map: &mut Option<config_map::Watch>,
    shutdown: &mut watch::Receiver<bool>,
) -> Trigger {
    tokio::select! {
        biased;
        _ = shutdown.changed() => Trigger::Shutdown,
        event = sources.next(config_map) => Trigger::Config(event),
    }
}

type DaemonSetEvents = Pin<Box<dyn Stream<Item = Result<watcher::Event<DaemonSet>, watcher::Error>> + Send>>;

/// One namespace's sources and loop timing: the owned-DaemonSet watch and its cache, leadership, the
/// deadlines and ticks. Rebuilt when the namespace or instance changes or the watch ends.
pub(super) struct Session {
    pub namespace: String,
    pub instance: String,
    pub cluster: Cluster,
    pub store: Store<DaemonSet>,
    stream: DaemonSetEvents,
    leader: watch::Receiver<bool>,
    /// Held without leader election, so `leader.changed()` stays pending.
    _always_leader: Option<watch::Sender<bool>>,
    /// The watch has listed once: passes may run.
    pub synced: bool,
    /// When the next pass runs.
    pub due: Option<Instant>,
    /// The next quick check after a write, and its index in the quick-check delays.
    pub quick: Option<(Instant, usize)>,
    /// Per set whose DaemonSet showed unready pods: the looks at its pods (see `looks`).
    pub looks: BTreeMap<String, super::looks::Look>,
    /// Failed passes in a row, for the backoff.
    pub failures: u32,
    /// When the last pass ended: watch events right after it are batched, later ones act at once.
    pub passed_at: Option<Instant>,
    /// The next digest check that asks the registry again (every `refresh_check_interval`).
    pub digest_fresh_at: Instant,
    /// The next step of refreshes in progress (the registry's answers of this interval reused).
    pub digest_step_at: Option<Instant>,
    /// The next warm gate step (after DaemonSet events, while nodes are cold, at resync).
    pub warm_at: Option<Instant>,
    resync: Interval,
    pub health_tick: Interval,
    conflict_tick: Interval,
}

impl Session {
    /// Starts the watch of the DaemonSets labelled as `instance`'s in `cluster`'s namespace, and leadership.
    pub fn start(
        cluster: Cluster,
        instance: String,
        leadership: (watch::Receiver<bool>, Option<watch::Sender<bool>>),
        resync: Duration,
        health_interval: Duration,
    ) -> Self {
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
        let mut conflict_tick = tokio::time::interval(super::run::CONFLICT_RECHECK);
        conflict_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            namespace: cluster.namespace().to_owned(),
            instance,
            cluster,
            store,
            stream: Box::pin(stream),
            leader: leadership.0,
            _always_leader: leadership.1,
            synced: false,
            due: None,
            quick: None,
            looks: BTreeMap::new(),
            failures: 0,
            passed_at: None,
            digest_fresh_at: Instant::now() + super::refresh::FIRST_DIGEST_CHECK,
            digest_step_at: None,
            warm_at: None,
            resync: tokio::time::interval(resync),
            // The first health check a minute after start, then every interval.
            health_tick: tokio::time::interval_at(Instant::now() + Duration::from_secs(60), health_interval),
            conflict_tick,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// The next trigger of this session or of the config sources. `conflicts`: some name is taken by
    /// another's DaemonSet (the conflict recheck runs only then).
    pub async fn next(
        &mut self,
        sources: &mut ConfigSources,
        config_map: &mut Option<config_map::Watch>,
        shutdown: &mut watch::Receiver<bool>,
        conflicts: bool,
    ) -> Trigger {
        let acting = self.synced && self.is_leader();
        let pass_at = self.due.filter(|_| acting);
        let quick_at = self.quick.map(|(at, _)| at).filter(|_| acting);
        let look_at = self.looks.values().filter_map(|l| l.next).min().filter(|_| acting);
        let recheck = acting && self.due.is_none() && conflicts;
        let digest_at = Some(
            self.digest_step_at
                .map_or(self.digest_fresh_at, |t| t.min(self.digest_fresh_at)),
        )
        .filter(|_| acting);
        let warm_at = self.warm_at.filter(|_| acting);
        tokio::select! {
            biased;
            _ = shutdown.changed() => Trigger::Shutdown,
            Ok(()) = self.leader.changed() => Trigger::Leadership(*self.leader.borrow()),
            event = sources.next(config_map) => Trigger::Config(event),
            event = self.stream.next() => event.map_or(Trigger::WatchEnded, |e| Trigger::Watch(Box::new(e))),
            () = until(pass_at) => Trigger::PassDue,
            () = until(quick_at) => Trigger::QuickCheckDue,
            () = until(look_at) => Trigger::LookDue,
            () = until(digest_at) => Trigger::DigestCheckDue,
            () = until(warm_at) => Trigger::WarmDue,
            _ = self.resync.tick() => Trigger::Resync,
            _ = self.conflict_tick.tick(), if recheck => Trigger::ConflictRecheck,
            _ = self.health_tick.tick(), if acting => Trigger::HealthTick,
        }
    }
}

/// A receiver that is always true without leader election (the caller keeps the returned sender so
/// `changed()` stays pending); with it, true while this replica holds the Lease. The Lease manager is
/// built and watched in a task that retries with backoff while the API is unreachable or refuses:
/// meanwhile this replica is a standby (false) and /healthz stays up. The task ends, releasing the
/// Lease, when the receiver is dropped.
pub(super) fn leadership(
    client: &Client,
    settings: &Settings,
    namespace: &str,
    instance: &str,
) -> (watch::Receiver<bool>, Option<watch::Sender<bool>>) {
    if !settings.leader_elect {
        let (tx, rx) = watch::channel(true);
        return (rx, Some(tx));
    }
    let identity = settings
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("kip-{}", std::process::id()));
    let (tx, rx) = watch::channel(false);
    let client = client.clone();
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
                    let wait = super::run::backoff(failures);
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

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next change signal of the file watch; never without a (live) watch.
async fn file_changed(watch: &mut Option<ConfigWatch>) {
    let signal = match watch {
        Some(w) => w.changes.recv().await,
        None => None,
    };
    if signal.is_none() {
        std::future::pending::<()>().await;
    }
}

async fn config_map_update(watch: &mut Option<config_map::Watch>) -> Update {
    match config_map::next(watch).await {
        Some(update) => update,
        None => std::future::pending().await,
    }
}

async fn hangup(signal: &mut Option<Signal>) {
    let received = match signal {
        Some(s) => s.recv().await,
        None => None,
    };
    if received.is_none() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_settings() -> Settings {
        Settings {
            config_path: None,
            reload_debounce: Duration::from_millis(200),
            resync: Duration::from_secs(300),
            leader_elect: false,
            pod_name: None,
            pod_namespace: None,
            failure_settle: super::FAILURE_SETTLE,
            plain_http_registries: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_debounce_deadline_is_a_source_and_shutdown_comes_first() {
        let mut sources = ConfigSources::new(&env_settings()).unwrap();
        let (stop, mut shutdown) = watch::channel(false);
        let t0 = Instant::now();
        sources.debounce.at = Some(t0 + Duration::from_millis(200));
        let trigger = next_idle(&mut sources, &mut None, &mut shutdown).await;
        assert!(matches!(trigger, Trigger::Config(ConfigEvent::DebounceEnded)));
        assert_eq!(t0.elapsed(), Duration::from_millis(200), "at the deadline, not before");
        // With both ready, shutdown wins: SIGTERM is never queued behind a reload.
        stop.send(true).unwrap();
        assert!(matches!(
            next_idle(&mut sources, &mut None, &mut shutdown).await,
            Trigger::Shutdown
        ));
    }
}
