//! End-to-end tests against a real Kubernetes API server: the cluster of the current `KUBECONFIG` context
//! (kind, k3s, a real one). Without a reachable cluster each test prints why and passes as skipped.
//!
//! Each test makes its own namespace enforcing Pod Security "restricted", runs the controller in-process
//! against it with a temp config file, edits the file and the cluster, checks the cluster, and deletes the
//! namespace. With `KIP_E2E_IMAGE` set to an image of this project that the nodes can pull (run-e2e.sh
//! loads it into kind), the cache pods must also become ready.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use kubernetes_image_puller::config::{Env, load};
use kubernetes_image_puller::controller::{Controller, Settings};
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::render::{self, RenderOptions, labels};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

/// A client for the current context, or the reason there is none.
async fn cluster() -> Result<Client, String> {
    if std::env::var_os("KUBECONFIG").is_none() && !Path::new(&format!("{}/.kube/config", env_home())).exists() {
        return Err("no KUBECONFIG and no ~/.kube/config".into());
    }
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no usable kube context: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("API server did not answer: {e}")),
        Err(_) => Err("API server did not answer within 5 s".into()),
    }
}

fn env_home() -> String {
    std::env::var("HOME").unwrap_or_default()
}

macro_rules! client_or_skip {
    () => {
        match cluster().await {
            Ok(c) => c,
            Err(why) => {
                println!("e2e skipped: {why}");
                return;
            }
        }
    };
}

// After the macro: the module uses `client_or_skip!`.
mod config_map;

/// A namespace enforcing Pod Security "restricted", deleted on drop.
struct TempNamespace {
    client: Client,
    name: String,
}

impl TempNamespace {
    async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", std::process::id() % 100_000);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"
            }}
        }))
        .unwrap();
        let api: Api<Namespace> = Api::all(client.clone());
        let _ = api.delete(&name, &DeleteParams::default()).await;
        wait_until("old namespace gone", || async {
            api.get_opt(&name).await.ok().flatten().is_none()
        })
        .await;
        api.create(&PostParams::default(), &ns).await.expect("create namespace");
        // Pods (even a dry run) are refused until the namespace's default ServiceAccount exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_until("default ServiceAccount", || async {
            accounts.get_opt("default").await.ok().flatten().is_some()
        })
        .await;
        Self {
            client: client.clone(),
            name,
        }
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let client = self.client.clone();
        let name = self.name.clone();
        // Best effort: the namespace's deletion takes its DaemonSets with it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let api: Api<Namespace> = Api::all(client);
                let _ = api.delete(&name, &DeleteParams::default()).await;
            });
        })
        .join();
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {WAIT:?} waiting for: {what}");
}

fn kip_image() -> Option<String> {
    std::env::var("KIP_E2E_IMAGE").ok().filter(|s| !s.is_empty())
}

fn config_text(namespace: &str, sets: &[(&str, &str)]) -> String {
    let mut text = format!("namespace = \"{namespace}\"\ncaching_interval_hours = 1\n");
    if let Some(image) = kip_image() {
        text.push_str(&format!("kip_image = \"{image}\"\n"));
    }
    for (name, image) in sets {
        text.push_str(&format!(
            "\n[[sets]]\nname = \"{name}\"\nimages = {{ main = \"{image}\" }}\n"
        ));
    }
    text
}

fn write_config(path: &Path, text: &str) {
    // Write-then-rename, as editors and the kubelet do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_controller(client: &Client, config: PathBuf, namespace: &str) -> Running {
    let settings = Settings {
        config_path: Some(config),
        reload_debounce: Duration::from_millis(100),
        resync: Duration::from_secs(300),
        leader_elect: false,
        pod_name: None,
        pod_namespace: Some(namespace.to_owned()),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let controller = Controller::new(
        client.clone(),
        settings,
        Box::new(Env),
        Arc::new(Metrics::default()),
        ready,
    )
    .await;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        controller.run(rx).await.expect("controller run");
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("controller stops promptly")
            .unwrap();
    }
}

async fn get(api: &Api<DaemonSet>, name: &str) -> Option<DaemonSet> {
    api.get_opt(name).await.expect("get daemonset")
}

/// The main journey: create, steady state, repair, edit, reject a broken file, prune, conflicts, shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_keeps_daemonsets_in_line_with_the_config() {
    let client = client_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let image = "registry.k8s.io/pause:3.10";
    write_config(&path, &config_text(&ns.name, &[("general", image)]));
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);

    // A same-named DaemonSet that is not ours must never be touched.
    let foreign: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "foreign", "labels": {"app": "foreign"}},
        "spec": {
            "selector": {"matchLabels": {"app": "foreign"}},
            "template": {"metadata": {"labels": {"app": "foreign"}}, "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": image, "securityContext": {
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign daemonset");
    let foreign_rv = get(&api, "foreign").await.unwrap().resource_version();

    let running = start_controller(&client, path.clone(), &ns.name).await;

    // 1. Created, labelled, applied by our field manager.
    wait_until("general created", || async { get(&api, "general").await.is_some() }).await;
    let ds = get(&api, "general").await.unwrap();
    assert_eq!(
        ds.labels().get(labels::MANAGED_BY).map(String::as_str),
        Some(labels::MANAGER)
    );
    assert!(ds.annotations().contains_key(labels::SPEC_HASH));
    assert!(ds.managed_fields().iter().any(|m| m.manager.as_deref() == Some("kubernetes-image-puller")
        && m.operation.as_deref() == Some("Apply")));

    // 2. The pod template passes Pod Security "restricted" admission (server-side dry run of a pod).
    let template = ds.spec.clone().unwrap().template;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("admission-check".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &pod,
    )
    .await
    .expect("restricted admission accepts the cache pod");

    // 3. Steady state: no writes (the resourceVersion stays).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rv = get(&api, "general").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        get(&api, "general").await.unwrap().resource_version(),
        rv,
        "a write happened at steady state"
    );

    // 4. Deleted by someone: re-created.
    let uid = ds.uid();
    api.delete("general", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    wait_until("general re-created", || async {
        get(&api, "general").await.is_some_and(|d| d.uid() != uid)
    })
    .await;
    println!("re-created {:?} after delete", started.elapsed());

    // 5. Hand edit of the image: restored.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}}});
    api.patch(
        "general",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(&patch),
    )
    .await
    .unwrap();
    wait_until("hand edit undone", || async {
        get(&api, "general")
            .await
            .and_then(|d| d.spec)
            .is_some_and(|s| s.template.spec.unwrap().containers[0].image.as_deref() == Some(image))
    })
    .await;

    // 6. Config edit: a second set appears; its name colliding with the foreign object is a conflict.
    write_config(
        &path,
        &config_text(&ns.name, &[("general", image), ("second", image), ("foreign", image)]),
    );
    let started = Instant::now();
    wait_until("second created", || async { get(&api, "second").await.is_some() }).await;
    println!("config change applied in {:?}", started.elapsed());
    let f = get(&api, "foreign").await.unwrap();
    assert_eq!(f.resource_version(), foreign_rv, "the foreign DaemonSet was changed");
    assert!(!f.labels().contains_key(labels::MANAGED_BY));

    // 7. A broken edit deletes nothing and the last good config stays in force (repairs continue).
    write_config(&path, "namespace = \"oops\nsets = [");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get(&api, "second").await.is_some(),
        "a broken config deleted a DaemonSet"
    );
    api.delete("second", &DeleteParams::default()).await.unwrap();
    wait_until("second repaired under the last good config", || async {
        get(&api, "second").await.is_some()
    })
    .await;

    // 8. Removing a set prunes its DaemonSet only.
    write_config(&path, &config_text(&ns.name, &[("general", image)]));
    wait_until("second pruned", || async { get(&api, "second").await.is_none() }).await;
    assert!(get(&api, "general").await.is_some());
    assert_eq!(get(&api, "foreign").await.unwrap().resource_version(), foreign_rv);

    // 9. With this project's image available, every node's cache pod becomes ready.
    if kip_image().is_some() {
        wait_until("cache pods ready", || async {
            get(&api, "general")
                .await
                .and_then(|d| d.status)
                .is_some_and(|s| s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled)
        })
        .await;
    } else {
        println!("KIP_E2E_IMAGE unset: not waiting for cache pods to run");
    }

    // 10. Shutdown leaves the DaemonSets in place.
    running.stop().await;
    assert!(get(&api, "general").await.is_some(), "shutdown deleted a DaemonSet");
    drop(ns);
}

/// What `render` prints is accepted by the real API server as it is (server-side dry run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_daemonsets_are_accepted_by_the_api_server() {
    let client = client_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-render").await;
    for file in ["config/default.toml", "config/gpu-pools.toml"] {
        let mut config = load(Some(Path::new(file)), &Env).expect("shipped config loads");
        config.namespace = ns.name.clone();
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
        for ds in render::render(&config, &RenderOptions::default()) {
            api.create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &ds,
            )
            .await
            .unwrap_or_else(|e| panic!("{file}: {} rejected: {e}", ds.name_any()));
        }
    }
    drop(ns);
}
