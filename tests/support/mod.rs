//! The one home of the integration tests' fixtures: the VarSource double, configs and repository files
//! (`configs`), `boot()` for a running controller, the tower-test verifier (tier 1) and the stateful fake
//! API server (tier 2).
#![allow(dead_code)] // each test crate uses its own subset

pub mod configs;
pub mod fake_api;
pub mod logs;
pub mod verifier;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use configs::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use kubernetes_image_puller::config::{Config, VarSource};
use kubernetes_image_puller::controller::{Controller, ControllerError, Settings};
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::render::{self, RenderOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Namespace of every test config.
pub const NS: &str = "kip-test";
/// The instance label value of a config without `deployment_name`.
pub const INSTANCE: &str = "kubernetes-image-puller";

/// A VarSource with only the given variables: tests never depend on the process environment. Clones share
/// the variables, so a test can change what a running controller reads (then send SIGHUP).
#[derive(Debug, Default, Clone)]
pub struct Vars(Arc<Mutex<HashMap<String, String>>>);

impl Vars {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        let map = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self(Arc::new(Mutex::new(map)))
    }

    pub fn none() -> Self {
        Self::default()
    }

    /// Sets a variable for every clone.
    pub fn set(&self, name: &str, value: &str) {
        self.0.lock().unwrap().insert(name.into(), value.into());
    }
}

impl VarSource for Vars {
    /// As the trait asks: an empty value counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// The settings most tests run with: the file at `config_path` (None: the variables), a 50 ms reload
/// debounce, no resync within a test, no leader election, and pod `kip-0` in [`NS`].
pub fn settings(config_path: Option<&Path>) -> Settings {
    Settings {
        config_path: config_path.map(Path::to_path_buf),
        reload_debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
        leader_elect: false,
        pod_name: Some("kip-0".into()),
        pod_namespace: Some(NS.into()),
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    }
}

/// A controller running in a task, with what tests look at.
pub struct Booted {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), ControllerError>>,
}

impl Booted {
    /// Stops the loop and waits (3 s at most) for it to end cleanly.
    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the controller stops within 3 s")
            .expect("the controller task does not panic")
            .expect("the controller ends without an error");
    }
}

/// Starts the controller loop against `client` with `settings` and `env`.
/// Settings of a controller in env-var mode (no config file, so SIGHUP is the only reload), outside a pod.
pub fn env_var_settings() -> Settings {
    Settings {
        reload_debounce: Duration::from_millis(10),
        pod_name: None,
        pod_namespace: None,
        ..settings(None)
    }
}

pub fn boot(client: kube::Client, settings: Settings, env: Vars) -> Booted {
    boot_with(client, settings, env, |c| c)
}

/// [`boot`], with the controller adjusted first (e.g. `with_config_map`).
pub fn boot_with(
    client: kube::Client,
    settings: Settings,
    env: Vars,
    adjust: impl FnOnce(Controller) -> Controller,
) -> Booted {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let controller = adjust(Controller::new(
        client,
        settings,
        Box::new(env),
        metrics.clone(),
        ready.clone(),
    ));
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(rx));
    Booted {
        metrics,
        ready,
        shutdown,
        task,
    }
}

/// One `[[sets]]` entry: name and `(container, image)` pairs.
pub fn set_toml(name: &str, images: &[(&str, &str)]) -> String {
    let images: Vec<String> = images.iter().map(|(c, i)| format!("{c} = \"{i}\"")).collect();
    format!("[[sets]]\nname = \"{name}\"\nimages = {{ {} }}\n", images.join(", "))
}

/// A whole config file in namespace [`NS`] with the given sets (from [`set_toml`]).
pub fn config_toml(sets: &[String]) -> String {
    format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n{}",
        sets.join("\n")
    )
}

pub fn load(text: &str) -> Config {
    load_ok(text)
}

/// What the controller would apply for `text` (plain Kubernetes, no owner).
pub fn rendered(text: &str) -> Vec<DaemonSet> {
    render::render(&load(text), &RenderOptions::default())
}

pub fn arcs(list: &[DaemonSet]) -> Vec<Arc<DaemonSet>> {
    list.iter().cloned().map(Arc::new).collect()
}

/// `a=b&c=d` with percent-decoding (and `+` as space), as the API server reads a query string.
pub fn parse_query(query: &str) -> std::collections::BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `cond` holds, polling every 5 ms; after `limit` panics naming `what` and listing the requests
/// the fake API server received. Returns how long it took.
pub async fn wait_for(
    api: &fake_api::FakeApi,
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let t0 = tokio::time::Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        if t0.elapsed() > limit {
            let log: Vec<String> = api.requests().iter().map(ToString::to_string).collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\nrequests:\n{}",
                log.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The image of the first cache container of DaemonSet `name` in the test namespace.
pub fn first_image(api: &fake_api::FakeApi, name: &str) -> Option<String> {
    let ds = api.daemonset(NS, name)?;
    ds.spec?.template.spec?.containers.first()?.image.clone()
}

/// A kubeconfig in `dir` whose one context points at `server` (a fake API server's URL) with a token.
pub fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    path
}
