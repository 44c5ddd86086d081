//! Tier 2: the whole controller loop (`Controller::run`) in-process against the stateful fake API server
//! of `support::fake_api`: real kube client, watcher and reflector, a real config file with hot reload.
//! Each scenario is bounded in time; figures (requests per pass, reaction times) are printed.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Client, ResourceExt};
use kubernetes_image_puller::controller::{self, Controller, ControllerError, Settings};
use kubernetes_image_puller::labels;
use kubernetes_image_puller::metrics::Metrics;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::fake_api::{Action, FakeApi, Match, Recorded};
use support::{INSTANCE, NS, Vars, config_toml, rendered, set_toml};

/// Generous bound for anything the controller should do "at once" (a repair, a reload).
const SOON: Duration = Duration::from_secs(3);

fn settings(path: &Path) -> Settings {
    support::settings(Some(path))
}

struct Harness {
    api: FakeApi,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ControllerError>>>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    started: Instant,
}

/// A plain config file.
async fn start(text: &str) -> Harness {
    let (api, client) = FakeApi::start();
    start_with(api, client, text).await
}

async fn start_with(api: FakeApi, client: Client, text: &str) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let config = dir.join("config.toml");
    std::fs::write(&config, text).expect("write config");
    launch(api, client, tmp, dir, config).await
}

/// A ConfigMap mounted the kubelet's way: `config.toml -> ..data/config.toml`, `..data -> ..v1`.
async fn start_configmap(text: &str) -> Harness {
    let (api, client) = FakeApi::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/config.toml"), text).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
    let config = dir.join("config.toml");
    launch(api, client, tmp, dir, config).await
}

async fn launch(api: FakeApi, client: Client, tmp: tempfile::TempDir, dir: PathBuf, config: PathBuf) -> Harness {
    let started = Instant::now();
    let support::Booted {
        metrics,
        ready,
        shutdown,
        task,
    } = support::boot(client, settings(&config), Vars::default());
    Harness {
        api,
        _dir: tmp,
        dir,
        config,
        shutdown,
        task: Some(task),
        metrics,
        ready,
        started,
    }
}

impl Harness {
    /// Replaces the file atomically (write aside, rename over), as an editor or `kubectl cp` would.
    fn write_config(&self, text: &str) -> Instant {
        let aside = self.dir.join(".config.toml.tmp");
        std::fs::write(&aside, text).unwrap();
        let at = Instant::now();
        std::fs::rename(&aside, &self.config).unwrap();
        at
    }

    /// The kubelet's ConfigMap update: a new timestamped dir, then `..data` swapped to it by a rename.
    fn swap_configmap(&self, version: &str, text: &str) -> Instant {
        let dir = format!("..{version}");
        std::fs::create_dir(self.dir.join(&dir)).unwrap();
        std::fs::write(self.dir.join(&dir).join("config.toml"), text).unwrap();
        std::os::unix::fs::symlink(&dir, self.dir.join("..data_tmp")).unwrap();
        let at = Instant::now();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        at
    }

    fn ds(&self, name: &str) -> Option<DaemonSet> {
        self.api.daemonset(NS, name)
    }

    fn names(&self) -> Vec<String> {
        self.api.daemonset_names(NS)
    }

    fn image_of(&self, name: &str) -> Option<String> {
        let ds = self.ds(name)?;
        ds.spec?.template.spec?.containers.first()?.image.clone()
    }

    fn count_reason(&self, reason: &str) -> usize {
        self.api.event_reasons().iter().filter(|r| *r == reason).count()
    }

    fn deletes(&self) -> Vec<Recorded> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.is_daemonset_request() && r.method == Method::DELETE)
            .collect()
    }

    fn passes(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    /// Waits until `cond` holds, polling every 10 ms; panics with `what` after `limit`. Returns the wait.
    async fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            if cond(self) {
                return t0.elapsed();
            }
            if t0.elapsed() > limit {
                let log: Vec<String> = self.api.requests().iter().map(ToString::to_string).collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}\nstore: {:?}\nevents: {:?}\nrequests:\n{}",
                    self.names(),
                    self.api.event_reasons(),
                    log.join("\n")
                );
            }
            if let Some(task) = &self.task
                && task.is_finished()
            {
                panic!("the controller stopped while waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the controller; returns how long `run` took to return.
    async fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        self.shutdown.send(true).unwrap();
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("run did not return within 1 s of the shutdown signal")
            .expect("controller task");
        result.expect("run returned an error");
        t0.elapsed()
    }
}

fn three_sets() -> String {
    config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml("b", &[("tools", "busybox:1.36")]),
        set_toml("c", &[("cache", "redis:7"), ("db", "postgres:16")]),
    ])
}

fn sets_ab() -> String {
    config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml("b", &[("tools", "busybox:1.36")]),
    ])
}

fn has<'a>(names: &'a [&'a str]) -> impl Fn(&Harness) -> bool + 'a {
    move |h: &Harness| names.iter().all(|n| h.ds(n).is_some())
}

// ---- 1. start and steady state ----

#[tokio::test]
async fn creates_one_daemonset_per_set_then_makes_no_writes() {
    let mut h = start(&three_sets()).await;
    let took = h.wait_for("a, b and c", SOON, has(&["a", "b", "c"])).await;
    println!(
        "figure: start → 3 DaemonSets applied in {:?}",
        h.started.elapsed().max(took)
    );
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    h.wait_for("three Created events", SOON, |h| h.count_reason("Created") == 3)
        .await;
    assert_eq!(h.count_reason("ConfigLoaded"), 1);

    for (want, name) in rendered(&three_sets()).iter().zip(["a", "b", "c"]) {
        let live = h.ds(name).unwrap();
        let l = live.labels();
        assert_eq!(l[labels::MANAGED_BY], labels::MANAGER);
        assert_eq!(l[labels::INSTANCE], INSTANCE);
        assert_eq!(l[labels::SET], name);
        assert!(kubernetes_image_puller::reconcile::contains(&live, want));
    }
    let creates: Vec<Recorded> = h.api.requests().into_iter().filter(Recorded::is_apply).collect();
    assert_eq!(creates.len(), 3, "one apply per set");

    // Steady state: watch events (our own applies, and another tool labelling an object) trigger passes
    // that find nothing to do.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let passes0 = h.passes();
    assert!(
        h.api
            .edit(NS, "b", |v| v["metadata"]["labels"]["team"] = json!("infra"))
    );
    assert!(h.api.edit(NS, "c", |v| v["status"]["numberReady"] = json!(3)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let passes = h.passes() - passes0;
    let requests: Vec<Recorded> = h
        .api
        .requests_since(t0)
        .into_iter()
        .filter(|r| r.is_daemonset_request() && !r.is_watch())
        .collect();
    let writes = h.api.daemonset_writes_since(t0);
    println!(
        "figure: steady state over 1.5 s: {passes} pass(es), {} DaemonSet request(s) ({:.1} per pass), {} write(s)",
        requests.len(),
        requests.len() as f64 / passes.max(1) as f64,
        writes.len()
    );
    assert!(passes >= 1, "the watch events should have triggered a pass");
    assert!(writes.is_empty(), "writes at steady state: {writes:?}");
    assert!(requests.is_empty(), "requests at steady state: {requests:?}");
    assert_eq!(
        h.ds("b").unwrap().labels()["team"],
        "infra",
        "another tool's label is left alone"
    );

    h.stop().await;
}

// ---- 2. repairs ----

#[tokio::test]
async fn repairs_deleted_and_hand_edited_daemonsets() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    let old_uid = h.ds("a").unwrap().uid();

    assert!(h.api.delete(NS, "a"));
    let took = h
        .wait_for("a re-created", Duration::from_secs(1), |h| {
            h.ds("a").is_some_and(|d| d.uid() != old_uid)
        })
        .await;
    println!("figure: deleted DaemonSet re-created in {took:?}");
    h.wait_for("a Repaired event", SOON, |h| h.count_reason("Repaired") == 1)
        .await;

    assert!(h.api.edit(NS, "b", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:hacked");
    }));
    let took = h
        .wait_for("b's image restored", Duration::from_secs(1), |h| {
            h.image_of("b").as_deref() == Some("busybox:1.36")
        })
        .await;
    println!("figure: hand-edited DaemonSet restored in {took:?}");

    // An extra container added by hand is removed too.
    assert!(h.api.edit(NS, "a", |v| {
        v["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "evil:1"}));
    }));
    h.wait_for("a's extra container removed", Duration::from_secs(1), |h| {
        h.ds("a")
            .is_some_and(|d| d.spec.unwrap().template.spec.unwrap().containers.len() == 1)
    })
    .await;
    assert!(h.deletes().is_empty());
    h.stop().await;
}

// ---- 3. config edits ----

#[tokio::test]
async fn config_edits_add_and_remove_sets_and_leave_foreign_objects_alone() {
    let (api, client) = FakeApi::start();
    // Someone else's DaemonSet named like a set we will add, and another puller instance's DaemonSet.
    let mut foreign = rendered(&config_toml(&[set_toml("c", &[("x", "nginx")])])).remove(0);
    foreign.metadata.labels = Some([("app".to_owned(), "theirs".to_owned())].into());
    let foreign = api.create(&foreign);
    let mut other = rendered(&config_toml(&[set_toml("e", &[("x", "nginx")])])).remove(0);
    other
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(labels::INSTANCE.into(), "other-puller".into());
    let other = api.create(&other);

    let mut h = start_with(api, client, &sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    let a_version = h.ds("a").unwrap().resource_version();

    // Add d (and c, whose name is taken).
    let text = config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml("b", &[("tools", "busybox:1.36")]),
        set_toml("c", &[("x", "alpine:3")]),
        set_toml("d", &[("y", "alpine:3")]),
    ]);
    let written = h.write_config(&text);
    h.wait_for("d created", SOON, has(&["d"])).await;
    println!(
        "figure: config write → new DaemonSet applied in {:?}",
        written.elapsed()
    );
    h.wait_for("a Conflict event for c", SOON, |h| h.count_reason("Conflict") >= 1)
        .await;
    assert_eq!(h.metrics.conflicts.get(), 1);

    // Remove b (and c): only b goes.
    let text = config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml("d", &[("y", "alpine:3")]),
    ]);
    let written = h.write_config(&text);
    h.wait_for("b deleted", SOON, |h| h.ds("b").is_none()).await;
    println!(
        "figure: config write → removed set's DaemonSet deleted in {:?}",
        written.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let names = h.names();
    assert_eq!(names, ["a", "c", "d", "e"]);
    assert_eq!(h.ds("a").unwrap().resource_version(), a_version, "a was not rewritten");
    let c = h.ds("c").unwrap();
    assert_eq!(
        c.resource_version(),
        foreign.resource_version(),
        "the foreign c was never touched"
    );
    assert_eq!(c.labels().get("app").map(String::as_str), Some("theirs"));
    assert_eq!(h.ds("e").unwrap().resource_version(), other.resource_version());
    let deletes = h.deletes();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].path.ends_with("/daemonsets/b"));
    let touched_foreign = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.is_daemonset_write() && (r.path.ends_with("/c") || r.path.ends_with("/e")))
        .count();
    assert_eq!(touched_foreign, 0);
    h.stop().await;
}

// ---- 4. broken configs and ConfigMap updates ----

#[tokio::test]
async fn broken_config_edits_delete_nothing_and_keep_the_last_good_config() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;

    // A syntax error.
    h.write_config("namespace = \"kip-test\"\n[[sets]\nname = \"a\"\n");
    h.wait_for("a ConfigRejected event", SOON, |h| {
        h.count_reason("ConfigRejected") == 1
    })
    .await;
    assert_eq!(h.metrics.config_valid.get(), 0);
    let rejected = h
        .api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "ConfigRejected")
        .unwrap();
    assert_eq!(rejected["type"], "Warning");
    assert_eq!(rejected["regarding"]["name"], "kip-0");
    assert_eq!(rejected["regarding"]["kind"], "Pod");
    assert!(
        rejected["note"]
            .as_str()
            .unwrap()
            .contains("keeping the last good config")
    );

    // The last good config is still enforced: a deletion by someone else is repaired.
    let old_uid = h.ds("a").unwrap().uid();
    assert!(h.api.delete(NS, "a"));
    h.wait_for("a re-created under the last good config", SOON, |h| {
        h.ds("a").is_some_and(|d| d.uid() != old_uid)
    })
    .await;

    // A semantic error: no sets at all (accepting it would prune everything).
    h.write_config(&config_toml(&[]));
    h.wait_for("a second ConfigRejected event", SOON, |h| {
        h.count_reason("ConfigRejected") == 2
    })
    .await;
    // And one that names a bad value.
    h.write_config(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]).replace("quay.io/kip/kip:1", "UPPER CASE"));
    h.wait_for("a third ConfigRejected event", SOON, |h| {
        h.count_reason("ConfigRejected") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.names(), ["a", "b"]);
    assert!(
        h.deletes().is_empty(),
        "deletes after broken configs: {:?}",
        h.deletes()
    );

    // Fixed: b leaves, c comes.
    let text = config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml("c", &[("x", "alpine:3")]),
    ]);
    let written = h.write_config(&text);
    h.wait_for("c created and b deleted", SOON, |h| {
        h.ds("c").is_some() && h.ds("b").is_none()
    })
    .await;
    println!("figure: fixed config write → applied in {:?}", written.elapsed());
    assert_eq!(h.metrics.config_valid.get(), 1);
    assert_eq!(h.deletes().len(), 1);
    h.stop().await;
}

/// Started with a broken file: nothing is listed, watched or written until a valid config arrives.
#[tokio::test]
async fn broken_config_at_start_waits_for_a_good_one() {
    let mut h = start("namespace = \"kip-test\"\nsets = 5\n").await;
    h.wait_for("ConfigRejected", SOON, |h| h.count_reason("ConfigRejected") == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.api.requests().iter().all(|r| !r.is_daemonset_request()));
    assert!(!h.ready.load(Ordering::Relaxed));
    let written = h.write_config(&sets_ab());
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    println!("figure: first valid config → applied in {:?}", written.elapsed());
    h.stop().await;
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let mut h = start_configmap(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;

    let written = h.swap_configmap("v2", &three_sets());
    h.wait_for("c created after the ..data swap", SOON, has(&["c"])).await;
    println!(
        "figure: ConfigMap swap → new DaemonSet applied in {:?}",
        written.elapsed()
    );

    // A broken ConfigMap version changes nothing; the next good one applies.
    h.swap_configmap("v3", "not toml at all [");
    h.wait_for("ConfigRejected", SOON, |h| h.count_reason("ConfigRejected") == 1)
        .await;
    h.swap_configmap("v4", &config_toml(&[set_toml("a", &[("web", "nginx:1.26")])]));
    h.wait_for("a updated, b and c gone", SOON, |h| {
        h.image_of("a").as_deref() == Some("nginx:1.26") && h.names() == ["a"]
    })
    .await;
    assert_eq!(h.count_reason("Updated"), 1);
    h.stop().await;
}

// ---- 5. faults ----

#[tokio::test]
async fn apply_errors_are_retried_and_nothing_is_deleted() {
    let (api, client) = FakeApi::start();
    api.inject(Match::Apply, Action::Status(409), 1);
    api.inject(Match::Apply, Action::Status(500), 1);
    let mut h = start_with(api, client, &sets_ab()).await;

    h.wait_for("the failing applies", SOON, |h| {
        h.api.requests().iter().filter(|r| r.is_apply()).count() >= 2
    })
    .await;
    assert!(h.names().is_empty());
    assert!(!h.ready.load(Ordering::Relaxed), "not ready before a clean pass");
    // A slow API on the retry.
    h.api.inject(Match::Apply, Action::Delay(Duration::from_millis(300)), 1);
    let took = h
        .wait_for("a and b after the retry", Duration::from_secs(5), has(&["a", "b"]))
        .await;
    println!("figure: converged {took:?} after two failed applies (409, 500)");
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    assert!(h.deletes().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn dropped_watch_is_resumed() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;

    // The watch is cut; a deletion right after must still be seen once the watcher resumes.
    h.api.drop_watches();
    let uid_a = h.ds("a").unwrap().uid();
    assert!(h.api.delete(NS, "a"));
    let took = h
        .wait_for("a re-created after the watch was cut", Duration::from_secs(5), |h| {
            h.ds("a").is_some_and(|d| d.uid() != uid_a)
        })
        .await;
    println!("figure: repair across a dropped watch took {took:?}");

    assert!(h.deletes().is_empty(), "{:?}", h.deletes());
    h.stop().await;
}

/// The real server answers a watch from a compacted resourceVersion with an `ERROR` event (410): the
/// watcher lists again, and the list shows the hand edit made meanwhile. (Bounded by the watcher's
/// jittered backoff: two errors, under 5 s.)
#[tokio::test]
async fn expired_watch_lists_again() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    h.api.inject(Match::Watch, Action::WatchGone, 1);
    h.api.drop_watches();
    assert!(h.api.edit(NS, "b", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:hacked");
    }));
    let took = h
        .wait_for("b restored after a 410 on the watch", Duration::from_secs(7), |h| {
            h.image_of("b").as_deref() == Some("busybox:1.36")
        })
        .await;
    println!("figure: repair across an expired watch took {took:?}");
    let lists = h
        .api
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path.ends_with("/daemonsets") && !r.is_watch())
        .count();
    assert_eq!(lists, 2, "the expired watch makes the watcher list again");
    assert!(h.deletes().is_empty(), "{:?}", h.deletes());
    h.stop().await;
}

#[tokio::test]
async fn absent_api_then_converges() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;

    // The API is away for a second; meanwhile b is deleted, a is hand-edited, and a config edit adds c,
    // so the pass it triggers fails on the absent API.
    h.api.away_for(Duration::from_secs(1));
    let uid_b = h.ds("b").unwrap().uid();
    assert!(h.api.delete(NS, "b"));
    assert!(h.api.edit(NS, "a", |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hacked");
    }));
    h.write_config(&three_sets());
    h.wait_for("a request refused", SOON, |h| {
        h.api.requests().iter().any(|r| r.status == 0)
    })
    .await;
    let took = h
        .wait_for("convergence after the API came back", Duration::from_secs(8), |h| {
            h.ds("b").is_some_and(|d| d.uid() != uid_b)
                && h.image_of("a").as_deref() == Some("nginx:1.25")
                && h.ds("c").is_some()
        })
        .await;
    let refused = h.api.requests().iter().filter(|r| r.status == 0).count();
    println!("figure: converged {took:?} after a 1 s API outage ({refused} request(s) refused)");
    assert!(h.deletes().is_empty(), "{:?}", h.deletes());
    assert!(h.task.as_ref().is_some_and(|t| !t.is_finished()));
    h.stop().await;
}

/// A namespace change moves the puller: the DaemonSets are created in the new namespace, and the old ones
/// are left in place (never deleted by a config change of namespace).
#[tokio::test]
async fn namespace_change_starts_over_in_the_new_namespace() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    h.write_config(&sets_ab().replace(NS, "kip-other"));
    h.wait_for("a and b in kip-other", SOON, |h| {
        h.api.daemonset_names("kip-other") == ["a", "b"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.names(), ["a", "b"], "the old namespace's DaemonSets stay");
    assert!(h.deletes().is_empty());
    let watches: Vec<String> = h
        .api
        .requests()
        .iter()
        .filter(|r| r.is_watch())
        .map(|r| r.path.clone())
        .collect();
    assert!(
        watches.iter().any(|p| p.contains("/namespaces/kip-other/")),
        "{watches:?}"
    );
    h.stop().await;
}

// ---- 6. shutdown ----

#[tokio::test]
async fn shutdown_returns_promptly_and_leaves_daemonsets_in_place() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    let took = h.stop().await;
    println!("figure: run returned {took:?} after the shutdown signal");
    assert!(took < Duration::from_secs(1));
    assert_eq!(h.names(), ["a", "b"]);
    assert!(h.deletes().is_empty());
}

#[tokio::test]
async fn shutdown_interrupts_a_slow_pass() {
    let mut h = start(&sets_ab()).await;
    h.wait_for("a and b", SOON, has(&["a", "b"])).await;
    h.wait_for("ready", SOON, |h| h.ready.load(Ordering::Relaxed)).await;
    h.api.inject(Match::Apply, Action::Delay(Duration::from_secs(30)), 1);
    h.write_config(&three_sets());
    h.wait_for("the slow apply in flight", SOON, |h| {
        h.api.requests().iter().any(|r| r.is_apply() && r.path.ends_with("/c"))
            || h.api
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("/daemonsets/c"))
                .count()
                >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = h.stop().await;
    println!("figure: run returned {took:?} after the shutdown signal during a 30 s apply");
    assert!(h.ds("a").is_some() && h.ds("b").is_some());
    assert!(h.deletes().is_empty());
}

// ---- health check and refresh ----

fn cache_pod(set: &str, i: usize, failing: bool) -> serde_json::Value {
    let state = if failing {
        json!({"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}})
    } else {
        json!({"running": {}})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{set}-{i}"), "namespace": NS,
                     "labels": {labels::NAME: labels::CACHE_NAME, labels::SET: set}},
        "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "web", "image": "nginx:1.25"}]},
        "status": {"containerStatuses": [{"name": "web", "image": "nginx:1.25", "imageID": "",
                   "ready": !failing, "restartCount": 0, "state": state}]},
    })
}

/// `health_check` pages through the pods (600 > one page of 500), reports the stuck image, and restarts
/// a set whose moving tags are due for a refresh; the restart is not drift for the next pass.
#[tokio::test]
async fn health_check_pages_pods_reports_failures_and_refreshes() {
    let (api, client) = FakeApi::start();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let pinned = "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(
        &path,
        config_toml(&[
            // The upstream refresh: a rolling restart each interval.
            format!("{}refresh = \"interval\"\n", set_toml("a", &[("web", "nginx:1.25")])),
            set_toml("p", &[("db", pinned)]),
        ]),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut controller = Controller::new(
        client.clone(),
        settings(&path),
        Box::new(Vars::default()),
        metrics,
        Arc::new(AtomicBool::new(false)),
    );
    assert!(controller.reload().await);
    let cluster = kubernetes_image_puller::k8s::Cluster::new(client, NS);
    let report = controller.pass(&cluster, &[]).await;
    assert_eq!(report.created, ["a", "p"]);

    // Both sets fully rolled out, created two hours ago.
    for name in ["a", "p"] {
        assert!(api.edit(NS, name, |v| {
            v["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
            v["status"] = json!({"currentNumberScheduled": 600, "desiredNumberScheduled": 600, "numberMisscheduled": 0,
                                 "numberReady": 600, "updatedNumberScheduled": 600, "observedGeneration": 1});
        }));
    }
    api.add_pods(NS, (0..600).map(|i| cache_pod("p", i, i % 200 == 7)));
    api.add_pods(NS, (0..3).map(|i| cache_pod("a", i, false)));
    let owned: Vec<Arc<DaemonSet>> = cluster
        .list_owned(INSTANCE)
        .await
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();

    let t0 = Instant::now();
    let healths = tokio::time::timeout(SOON, controller.health_check(&cluster, &owned, true))
        .await
        .expect("health check timed out");
    let pages: Vec<Recorded> = api
        .requests_since(t0)
        .into_iter()
        .filter(|r| r.path.ends_with("/pods"))
        .collect();
    println!(
        "figure: health check of 603 pods took {:?} in {} pod page(s)",
        t0.elapsed(),
        pages.len()
    );
    let page = kubernetes_image_puller::k8s::POD_PAGE;
    assert!(pages.iter().all(|r| r.query.get("limit") == Some(&page.to_string())));
    assert_eq!(
        pages.len(),
        1 + 600usize.div_ceil(page as usize),
        "a: one page; p: 600 pods in pages of {page}"
    );
    let p = healths.iter().find(|h| h.set == "p").unwrap();
    assert_eq!(p.failing.len(), 1, "{p:?}");
    assert_eq!(p.failing[0].node_count, 3);
    assert_eq!(p.failing[0].reason, "ImagePullBackOff");
    assert!(healths.iter().find(|h| h.set == "a").unwrap().failing.is_empty());
    assert!(api.event_reasons().contains(&"ImageNotCached".to_owned()));

    // a (moving tag, due) is restarted by a merge patch of the refresh manager; p (pinned, failing) is not.
    let restarts: Vec<Recorded> = api
        .requests_since(t0)
        .into_iter()
        .filter(|r| r.method == Method::PATCH && r.path.contains("/daemonsets/"))
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(restarts[0].path.ends_with("/daemonsets/a"));
    assert_eq!(
        restarts[0].query.get("fieldManager").map(String::as_str),
        Some("kubernetes-image-puller-refresh")
    );
    let a = api.daemonset(NS, "a").unwrap();
    let annotations = a
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone();
    assert!(annotations.unwrap_or_default().contains_key(labels::RESTARTED_AT));
    assert!(api.event_reasons().contains(&"Refreshed".to_owned()));

    // Not due again right after; and the restart annotation is not drift for a pass.
    let owned: Vec<Arc<DaemonSet>> = cluster
        .list_owned(INSTANCE)
        .await
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let t1 = Instant::now();
    controller.health_check(&cluster, &owned, true).await;
    let report = controller.pass(&cluster, &owned).await;
    assert_eq!(report.unchanged, ["a", "p"]);
    let writes = api.daemonset_writes_since(t1);
    assert!(writes.is_empty(), "{writes:?}");
}

// ---- --once ----

#[tokio::test]
async fn run_once_applies_and_reports() {
    let (api, client) = FakeApi::start();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let text = format!("deployment_name = \"kip\"\n{}", sets_ab());
    std::fs::write(&path, &text).unwrap();
    let controller = Controller::new(
        client,
        settings(&path),
        Box::new(Vars::default()),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    );
    let ok = tokio::time::timeout(Duration::from_secs(5), controller::run_once(controller))
        .await
        .expect("run_once timed out")
        .ok();
    assert!(ok);
    let a = api.daemonset(NS, "a").unwrap();
    assert_eq!(
        a.labels()[labels::INSTANCE],
        "kip",
        "instance label is the deployment name"
    );
    assert!(
        a.owner_references().is_empty(),
        "no owner when the Deployment is not found"
    );
    let paths: Vec<String> = api
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        paths.contains(&format!("GET /apis/apps/v1/namespaces/{NS}/deployments/kip")),
        "{paths:?}"
    );
}

/// Two replicas with leader election against one API: exactly one takes the Lease and writes; the other
/// stands by, ready (it would take over), and makes no pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_only_one_replica_writes() {
    let text = config_toml(&[set_toml("a", &[("main", "quay.io/kip/a:1")])]);
    let (api, client) = FakeApi::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let mut replicas = Vec::new();
    for pod in ["kip-0", "kip-1"] {
        let settings = Settings {
            leader_elect: true,
            pod_name: Some(pod.into()),
            ..settings(&config)
        };
        let b = support::boot(client.clone(), settings, Vars::default());
        replicas.push((b.shutdown, b.task, b.metrics, b.ready));
    }
    let t0 = Instant::now();
    while api.daemonset(NS, "a").is_none() {
        assert!(t0.elapsed() < SOON, "no replica applied the config");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let both run a while: status changes and resyncs must not make the standby act.
    for i in 0..5 {
        api.edit(NS, "a", |ds| {
            ds["status"] = json!({"numberReady": i, "desiredNumberScheduled": 5})
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let passes: Vec<u64> = replicas.iter().map(|(_, _, m, _)| m.reconciles.get()).collect();
    println!("leader election: passes per replica {passes:?}");
    assert_eq!(
        passes.iter().filter(|p| **p > 0).count(),
        1,
        "exactly one replica reconciles: {passes:?}"
    );
    assert!(
        replicas.iter().all(|(_, _, _, ready)| ready.load(Ordering::Relaxed)),
        "both replicas ready"
    );
    let applies = api.requests().iter().filter(|r| r.is_apply()).count();
    assert_eq!(applies, 1, "one apply in all");
    for (stop, task, _, _) in replicas {
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// On OpenShift (told by its `route.openshift.io` API group, as upstream does) the SCC assigns user and
/// group ids, so the cache pods set none; on plain Kubernetes they run as 65532.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_is_detected_and_leaves_ids_to_the_scc() {
    for openshift in [true, false] {
        let (api, client) = FakeApi::start();
        api.set_openshift(openshift);
        let h = start_with(
            api,
            client,
            &config_toml(&[set_toml("a", &[("main", "quay.io/kip/a:1")])]),
        )
        .await;
        h.wait_for("a created", SOON, |h| h.api.daemonset(NS, "a").is_some())
            .await;
        let ds = h.api.daemonset(NS, "a").unwrap();
        let pod = ds.spec.unwrap().template.spec.unwrap();
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        let expected = (!openshift).then_some(65532);
        assert_eq!(security.run_as_user, expected, "openshift={openshift}");
        assert_eq!(security.fs_group, expected, "openshift={openshift}");
    }
}
