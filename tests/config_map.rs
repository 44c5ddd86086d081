//! The config read through the API (`--config-map`), against the fake API server running the real loop:
//! - an edit adding a set creates its DaemonSet at once (no debounce, no kubelet sync);
//! - a broken edit leaves a Warning Event on the ConfigMap with the file position and reason, and changes
//!   and deletes nothing; the version in force stays the last good one;
//! - a deleted ConfigMap deletes nothing (one warning); created again, it is read again;
//! - `configmaps` forbidden: runs from the mounted file and says so once, with no (or one) 403;
//! - the chart's Role (resourceNames) grants exactly what the watch needs: no 403;
//! - the mounted file catching up later (or changing on its own) never flips the config back.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::Client;
use kubernetes_image_puller::controller::{self, Controller, Settings};
use kubernetes_image_puller::metrics::Metrics;
use serde_json::{Value, json};
use tokio::time::Instant;

use support::fake_api::{Action, FakeApi, Match};
use support::logs::{LOGGING, Logs};
use support::{NS, Vars, config_toml, set_toml};

/// The chart's default ConfigMap name (what its Role names in resourceNames).
const CM: &str = "k8s-image-puller";
const SOON: Duration = Duration::from_secs(3);

fn one_set() -> String {
    config_toml(&[set_toml("general", &[("nginx", "nginx:1.27")])])
}

fn two_sets() -> String {
    config_toml(&[
        set_toml("general", &[("nginx", "nginx:1.27")]),
        set_toml("gpu", &[("cuda", "nvidia/cuda:12.4.1-base-ubuntu22.04")]),
    ])
}

struct Running {
    api: FakeApi,
    ctl: support::Booted,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
    file: PathBuf,
}

/// The controller with the mounted file holding `file` and `--config-map k8s-image-puller`.
async fn run(api: FakeApi, client: Client, file: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, file).expect("write config");
    let ctl = support::boot_with(client, support::settings(Some(&path)), Vars::default(), |c| {
        c.with_config_map(Some(CM.into()))
    });
    Running {
        api,
        metrics: ctl.metrics.clone(),
        ctl,
        _dir: dir,
        file: path,
    }
}

impl Running {
    async fn stop(self) {
        self.ctl.stop().await;
    }

    /// Replaces the mounted file atomically, as kubelet's sync does.
    fn write_file(&self, text: &str) {
        let aside = self.file.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.file).unwrap();
    }

    fn names(&self) -> Vec<String> {
        self.api.daemonset_names(NS)
    }

    fn config_info(&self) -> Vec<String> {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("kip_config_info{"))
            .map(str::to_owned)
            .collect()
    }
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

/// The chart's Role as `helm template` renders it (CI fails when this fixture is stale).
fn chart_role() -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/rbac/chart-role.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    yaml(&text)["rules"].as_array().expect("rules").clone()
}

fn without_configmaps(rules: Vec<Value>) -> Vec<Value> {
    rules
        .into_iter()
        .filter(|r| r["resources"][0] != "configmaps")
        .collect()
}

#[tokio::test]
async fn an_edit_adding_a_set_creates_its_daemonset_at_once() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    let first = api.put_configmap(NS, CM, &[("config.toml", &one_set())]);
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the first DaemonSet", SOON, || ctl.names() == ["general"]).await;
    assert_eq!(
        ctl.config_info(),
        [format!("kip_config_info{{source=\"configmap\",version=\"{first}\"}} 1")]
    );

    // `kubectl apply` of the edited ConfigMap; the mounted file stays as it was (kubelet has not synced).
    let accepted = Instant::now();
    let version = api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    support::wait_for(&api, "the create of the new set's DaemonSet", SOON, || {
        api.daemonset_writes_since(accepted)
            .iter()
            .any(|r| r.path.ends_with("/daemonsets/gpu") || r.path.ends_with("/daemonsets"))
    })
    .await;
    let create = api
        .daemonset_writes_since(accepted)
        .into_iter()
        .next()
        .expect("a write");
    let took = create.at - accepted;
    println!("ConfigMap edit accepted -> DaemonSet create request: {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    support::wait_for(&api, "both DaemonSets", SOON, || ctl.names() == ["general", "gpu"]).await;
    assert_eq!(
        ctl.config_info(),
        [format!(
            "kip_config_info{{source=\"configmap\",version=\"{version}\"}} 1"
        )]
    );
    // Read by a watch on that one name, never by listing every ConfigMap.
    for r in api.requests().iter().filter(|r| r.path.ends_with("/configmaps")) {
        assert_eq!(
            r.query.get("fieldSelector").map(String::as_str),
            Some("metadata.name=k8s-image-puller"),
            "{r}"
        );
    }
    ctl.stop().await;
}

#[tokio::test]
async fn a_broken_edit_leaves_an_event_on_the_configmap_and_changes_nothing() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    let good = api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    let ctl = run(api.clone(), client, &two_sets()).await;
    support::wait_for(&api, "both DaemonSets", SOON, || ctl.names() == ["general", "gpu"]).await;

    // Line 7 of the edit misspells node_selector.
    let broken = format!(
        "{}node_selecter = {{ \"kubernetes.io/os\" = \"linux\" }}\n",
        config_toml(&[set_toml("general", &[("nginx", "nginx:1.27")])])
    );
    let line = broken.lines().position(|l| l.starts_with("node_selecter")).unwrap() + 1;
    let edited = Instant::now();
    api.put_configmap(NS, CM, &[("config.toml", &broken)]);
    let took = support::wait_for(&api, "a Warning Event on the ConfigMap", Duration::from_secs(1), || {
        !api.configmap_events(CM).is_empty()
    })
    .await;
    println!("broken edit -> Event on the ConfigMap: {took:?}");
    let events = api.configmap_events(CM);
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ConfigRejected");
    assert_eq!(event["regarding"]["namespace"], NS);
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("configmap/{CM}:config.toml:{line}:1")),
        "no file position in {note:?}"
    );
    assert!(
        note.contains("node_selecter") && note.contains("did you mean `node_selector`?"),
        "{note}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        api.daemonset_writes_since(edited).is_empty(),
        "nothing changed or deleted"
    );
    assert_eq!(ctl.names(), ["general", "gpu"]);
    assert_eq!(
        ctl.config_info(),
        [format!("kip_config_info{{source=\"configmap\",version=\"{good}\"}} 1")],
        "the version in force is still the last good one"
    );
    let metrics = ctl.metrics.encode();
    assert!(metrics.contains("kip_config_valid 0"), "{metrics}");
    assert!(
        metrics.contains("kip_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert_eq!(logs.count("config rejected"), 1, "{}", logs.text());
    ctl.stop().await;
}

#[tokio::test]
async fn a_deleted_configmap_deletes_nothing_and_is_read_again_when_back() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    let ctl = run(api.clone(), client, &two_sets()).await;
    support::wait_for(&api, "both DaemonSets", SOON, || ctl.names() == ["general", "gpu"]).await;

    let deleted = Instant::now();
    assert!(api.delete_configmap(NS, CM));
    support::wait_for(&api, "the warning", SOON, || {
        logs.count("ConfigMap k8s-image-puller deleted") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.daemonset_writes_since(deleted).is_empty(), "nothing deleted");
    assert_eq!(ctl.names(), ["general", "gpu"]);
    assert_eq!(logs.count("keeping the config in force, nothing deleted"), 1);

    // Created again (with one set less): read again, and the removed set's DaemonSet is pruned.
    api.put_configmap(NS, CM, &[("config.toml", &one_set())]);
    support::wait_for(&api, "the set removed", SOON, || ctl.names() == ["general"]).await;
    ctl.stop().await;
}

#[tokio::test]
async fn upstream_keys_in_the_configmap_are_read_with_the_same_rules() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.put_configmap(
        NS,
        CM,
        &[
            ("IMAGES", "nginx=nginx:1.27;redis=redis:7"),
            ("DAEMONSET_NAME", "puller"),
            ("NAMESPACE", NS),
        ],
    );
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the upstream DaemonSet", SOON, || ctl.names() == ["puller"]).await;
    // A bad IMAGES entry names the key of the ConfigMap.
    api.put_configmap(
        NS,
        CM,
        &[("IMAGES", "nginx"), ("DAEMONSET_NAME", "puller"), ("NAMESPACE", NS)],
    );
    support::wait_for(&api, "the Event", SOON, || !api.configmap_events(CM).is_empty()).await;
    let note = api.configmap_events(CM)[0]["note"].as_str().unwrap().to_owned();
    assert!(note.contains("configmap/k8s-image-puller:IMAGES"), "{note}");
    assert_eq!(ctl.names(), ["puller"]);
    ctl.stop().await;
}

/// The chart's Role without the configmaps rule: the review says so, the controller runs from the file,
/// says so once, and never even asks for the ConfigMap.
#[tokio::test]
async fn configmaps_forbidden_runs_from_the_mounted_file_and_says_so_once() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    api.authorize(without_configmaps(chart_role()), vec![], NS, "k8s-image-puller");
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the file's DaemonSet", SOON, || ctl.names() == ["general"]).await;
    // The file is the source: its edits apply (after the debounce).
    ctl.write_file(&two_sets());
    support::wait_for(&api, "the file's edit", SOON, || ctl.names() == ["general", "gpu"]).await;
    let info = ctl.config_info();
    assert_eq!(info.len(), 1);
    assert!(
        info[0].starts_with("kip_config_info{source=\"file\",version=\"sha256:"),
        "{info:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.stop().await;

    assert_eq!(
        logs.count("cannot read ConfigMap k8s-image-puller through the API"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("running from the mounted file"), 1);
    assert!(
        ctl_configmap_requests(&api).is_empty(),
        "asked anyway: {:?}",
        ctl_configmap_requests(&api)
    );
    assert!(api.forbidden_requests().is_empty(), "{:?}", api.forbidden_requests());
}

/// The same without a rules review: the first list is refused, once; then the file, said once.
#[tokio::test]
async fn configmaps_forbidden_without_a_review_costs_one_403() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    api.authorize(without_configmaps(chart_role()), vec![], NS, "k8s-image-puller");
    api.inject(Match::RulesReview, Action::Status(503), u32::MAX);
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the file's DaemonSet", SOON, || ctl.names() == ["general"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.stop().await;
    let denied: Vec<String> = api
        .forbidden_requests()
        .iter()
        .filter(|r| r.path.contains("/configmaps"))
        .map(ToString::to_string)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(logs.count("running from the mounted file"), 1, "{}", logs.text());
}

/// Under the chart's Role (configmaps get, list, watch on this name only) nothing is refused.
#[tokio::test]
async fn the_chart_role_by_resource_name_grants_the_watch() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.authorize(chart_role(), vec![], NS, "k8s-image-puller");
    let rule = chart_role()
        .into_iter()
        .find(|r| r["resources"][0] == "configmaps")
        .expect("a configmaps rule in the chart's Role");
    assert_eq!(rule["resourceNames"], json!([CM]));
    api.put_configmap(NS, CM, &[("config.toml", &one_set())]);
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the DaemonSet", SOON, || ctl.names() == ["general"]).await;
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    support::wait_for(&api, "the edit", SOON, || ctl.names() == ["general", "gpu"]).await;
    assert!(!ctl_configmap_requests(&api).is_empty());
    ctl.stop().await;
    assert!(api.forbidden_requests().is_empty(), "{:?}", api.forbidden_requests());
}

/// Rule: while the ConfigMap is the source, file changes are ignored. The file lagging behind (an older
/// version), catching up (the same version), or differing does not flip the config.
#[tokio::test]
async fn the_file_catching_up_later_does_not_flip_the_config() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    let version = api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    // The mounted file is the older version (kubelet has not synced yet): the ConfigMap wins at start.
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the ConfigMap's DaemonSets", SOON, || {
        ctl.names() == ["general", "gpu"]
    })
    .await;
    let since = Instant::now();
    // The file catches up, and then changes to something else: neither flips the config.
    ctl.write_file(&two_sets());
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.write_file(&one_set());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        api.daemonset_writes_since(since).is_empty(),
        "a file change flipped the config"
    );
    assert_eq!(ctl.names(), ["general", "gpu"]);
    assert_eq!(
        ctl.config_info(),
        [format!(
            "kip_config_info{{source=\"configmap\",version=\"{version}\"}} 1"
        )]
    );
    ctl.stop().await;
}

/// The API away at start: the mounted file is in force meanwhile; the ConfigMap takes over once read.
#[tokio::test]
async fn the_api_away_at_start_runs_from_the_file_until_the_configmap_is_read() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    // Only the ConfigMap requests fail for a while (refused connections): the DaemonSets can be written.
    api.configmaps_away_for(Duration::from_secs(3));
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the file's DaemonSet", SOON, || ctl.names() == ["general"]).await;
    support::wait_for(&api, "the ConfigMap's sets", Duration::from_secs(10), || {
        ctl.names() == ["general", "gpu"]
    })
    .await;
    ctl.stop().await;
}

fn ctl_configmap_requests(api: &FakeApi) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.path.contains("/configmaps"))
        .map(ToString::to_string)
        .collect()
}

#[test]
fn config_map_name_from_the_flag_or_the_env_and_bad_names_are_refused() {
    use clap::Parser;
    use kubernetes_image_puller::cli::Cli;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    };
    let cli = Cli::parse_from(["kip"]);
    assert_eq!(cli.config_map.resolve(env(&[])).unwrap(), None);
    assert_eq!(cli.config_map.resolve(env(&[("CONFIG_MAP_NAME", "")])).unwrap(), None);
    assert_eq!(
        cli.config_map
            .resolve(env(&[("CONFIG_MAP_NAME", "k8s-image-puller")]))
            .unwrap(),
        Some("k8s-image-puller".to_owned())
    );
    let err = cli
        .config_map
        .resolve(env(&[("CONFIG_MAP_NAME", "My_Config")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid environment variable CONFIG_MAP_NAME=\"My_Config\": expected a ConfigMap name"),
        "{err}"
    );
    // The flag wins over the variable.
    let cli = Cli::parse_from(["kip", "run", "--config-map", "puller.config"]);
    assert_eq!(
        cli.config_map.resolve(env(&[("CONFIG_MAP_NAME", "other")])).unwrap(),
        Some("puller.config".to_owned())
    );
    let err = Cli::try_parse_from(["kip", "run", "--config-map", "Bad"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a ConfigMap name"), "{err}");
}

/// Offline commands never read CONFIG_MAP_NAME: a bad value does not break `check`.
#[test]
fn offline_commands_ignore_config_map_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, one_set()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubernetes-image-puller"))
        .args(["check", "--config"])
        .arg(&path)
        .env("CONFIG_MAP_NAME", "Not A Name")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A ConfigMap already broken at start: the file (the version before the edit) is the last good config;
/// the fixed edit then takes over, and the file catching up later does not flip it back.
#[tokio::test]
async fn a_configmap_broken_at_start_keeps_the_file_as_the_last_good_config() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    let broken = format!("{}node_selecter = {{}}\n", one_set());
    api.put_configmap(NS, CM, &[("config.toml", &broken)]);
    let ctl = run(api.clone(), client, &one_set()).await;
    support::wait_for(&api, "the file's DaemonSet", SOON, || ctl.names() == ["general"]).await;
    support::wait_for(&api, "the Event on the ConfigMap", SOON, || {
        api.configmap_events(CM).len() == 1
    })
    .await;
    let info = ctl.config_info();
    assert!(info[0].contains("source=\"file\""), "{info:?}");
    let fixed = api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    support::wait_for(&api, "the fixed edit", SOON, || ctl.names() == ["general", "gpu"]).await;
    assert_eq!(
        ctl.config_info(),
        [format!("kip_config_info{{source=\"configmap\",version=\"{fixed}\"}} 1")]
    );
    let since = Instant::now();
    ctl.write_file(&broken);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.write_file(&one_set());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.daemonset_writes_since(since).is_empty());
    ctl.stop().await;
}

/// `status` (table and JSON) names the config version it was made with.
#[tokio::test]
async fn status_shows_the_config_version() {
    let _serial = LOGGING.lock().await;
    let (_api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, one_set()).unwrap();
    let report = controller::status(client.clone(), Some(&path), &Vars::default())
        .await
        .expect("status");
    let version = report.config.clone().expect("a version");
    assert_eq!(version.source, "file");
    assert!(
        version.version.starts_with("sha256:") && version.version.len() == 19,
        "{version:?}"
    );
    let table = kubernetes_image_puller::commands::status::table(&report);
    assert!(
        table.contains(&format!("config: file version {}", version.version)),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["config"], json!({"source": "file", "version": version.version}));
    // Another content, another version.
    std::fs::write(&path, two_sets()).unwrap();
    let again = controller::status(client, Some(&path), &Vars::default())
        .await
        .expect("status")
        .config
        .unwrap();
    assert_ne!(again.version, version.version);
}

/// `run --once` reads the ConfigMap with one GET (allowed by the chart's Role by name), no watch.
#[tokio::test]
async fn once_reads_the_configmap_with_one_get() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.authorize(chart_role(), vec![], NS, "k8s-image-puller");
    api.put_configmap(NS, CM, &[("config.toml", &two_sets())]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, one_set()).unwrap();
    let settings = Settings {
        config_path: Some(path),
        reload_debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
        leader_elect: false,
        pod_name: None,
        pod_namespace: Some(NS.into()),
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    };
    let controller = Controller::new(
        client,
        settings,
        Box::new(Vars::default()),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .with_config_map(Some(CM.into()));
    assert!(kubernetes_image_puller::controller::run_once(controller).await.ok());
    assert_eq!(api.daemonset_names(NS), ["general", "gpu"]);
    let reads = ctl_configmap_requests(&api);
    assert_eq!(
        reads,
        [format!("GET /api/v1/namespaces/{NS}/configmaps/{CM} {{}} -> 200")]
    );
    assert!(api.forbidden_requests().is_empty(), "{:?}", api.forbidden_requests());
}
