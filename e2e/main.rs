//! End-to-end tests against a real Kubernetes API server: the cluster of the current `KUBECONFIG` context,
//! usually the harness of `e2e/cluster/up.sh --real-node` (kube-apiserver, controller-manager, scheduler, kwok's
//! simulated nodes, a real kubelet with containerd, a loopback registry). Without a reachable cluster each
//! test prints why and passes as skipped, unless `KIP_E2E_REQUIRE_CLUSTER=1` (CI), where that is a failure.
//! Run them one at a time (`--test-threads=1`): some stop and start the harness's components.
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
use kubernetes_image_puller::labels;
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::render::{self, RenderOptions};
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

/// In CI a missing cluster or real node is a failure, not a skip.
fn cluster_required() -> bool {
    std::env::var("KIP_E2E_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

fn skip_or_fail(why: &str) {
    assert!(!cluster_required(), "e2e: {why} (KIP_E2E_REQUIRE_CLUSTER=1)");
    println!("e2e skipped: {why}");
}

macro_rules! client_or_skip {
    () => {
        match cluster().await {
            Ok(c) => c,
            Err(why) => {
                skip_or_fail(&why);
                return;
            }
        }
    };
}

/// A client, and the real node Ready; else skip (or fail in CI).
macro_rules! real_node_or_skip {
    () => {{
        let client = client_or_skip!();
        if let Err(why) = harness::real_node(&client).await {
            skip_or_fail(&why);
            return;
        }
        client
    }};
}

// After the macros: the modules use them.
mod config_map;
mod harness;
mod monitoring;
mod process;
mod real_node;
mod refresh;
mod warm_gate;
mod webhook;

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

async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_for(what, WAIT, check).await;
}

/// Polls `check` every 200 ms; returns how long it took, panics after `limit`.
async fn wait_until_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
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
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let controller = Controller::new(
        client.clone(),
        settings,
        Box::new(Env),
        Arc::new(Metrics::default()),
        ready,
    );
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

/// What a write of ours would change on a DaemonSet: generation, labels, annotations, spec, and the
/// managedFields entries of our field managers. The status (and so the resourceVersion) is the DaemonSet
/// controller's to write.
fn what_we_could_change(ds: &DaemonSet) -> serde_json::Value {
    let ours: Vec<_> = ds
        .managed_fields()
        .iter()
        .filter(|m| {
            m.manager.as_deref().is_some_and(|n| {
                n == kubernetes_image_puller::k8s::FIELD_MANAGER || n == kubernetes_image_puller::k8s::REFRESH_MANAGER
            })
        })
        .cloned()
        .collect();
    serde_json::json!({
        "generation": ds.metadata.generation,
        "labels": ds.metadata.labels,
        "annotations": ds.metadata.annotations,
        "spec": ds.spec,
        "ourManagedFields": ours,
    })
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
    // Not the resourceVersion: the DaemonSet controller writes the object's status.
    let foreign_before = what_we_could_change(&get(&api, "foreign").await.unwrap());

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

    // 3. Steady state: no writes. Not the resourceVersion: the DaemonSet controller writes the status as
    // the cache pods start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady = what_we_could_change(&get(&api, "general").await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        what_we_could_change(&get(&api, "general").await.unwrap()),
        steady,
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
    assert_eq!(
        what_we_could_change(&f),
        foreign_before,
        "the foreign DaemonSet was changed"
    );
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
    assert_eq!(
        what_we_could_change(&get(&api, "foreign").await.unwrap()),
        foreign_before
    );

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

/// Process-free variables: the env-var config of the Che operator, without touching the test's environment.
struct Vars(Vec<(&'static str, String)>);

impl kubernetes_image_puller::config::VarSource for Vars {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
    }
    fn label(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// The ConfigMap the Che image-puller operator writes, for `images`.
fn operator_env(namespace: &str, images: &str) -> Vars {
    let kip = kip_image().unwrap_or_else(|| "quay.io/eclipse/kubernetes-image-puller:next".into());
    Vars(vec![
        ("IMAGES", images.to_owned()),
        ("DAEMONSET_NAME", "kubernetes-image-puller".into()),
        ("DEPLOYMENT_NAME", "kubernetes-image-puller".into()),
        ("NAMESPACE", namespace.to_owned()),
        ("CACHING_INTERVAL_HOURS", "1".into()),
        ("CACHING_MEMORY_REQUEST", "10Mi".into()),
        ("CACHING_MEMORY_LIMIT", "20Mi".into()),
        ("CACHING_CPU_REQUEST", ".05".into()),
        ("CACHING_CPU_LIMIT", ".2".into()),
        ("NODE_SELECTOR", "{}".into()),
        ("IMAGE_PULL_SECRETS", String::new()),
        ("AFFINITY", "{}".into()),
        ("TOLERATIONS", "[]".into()),
        ("KIP_IMAGE", kip),
    ])
}

/// A ServiceAccount bound to the upstream Role (daemonsets create, delete, get, list, watch; deployments
/// get: what the upstream chart, template and the Che operator grant), and a client using its token.
async fn upstream_identity(admin: &Client, namespace: &str) -> Client {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let name = "kip-upstream";
    let pp = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    accounts.create(&pp, &sa).await.expect("create ServiceAccount");
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["create", "delete", "get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
        ]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&pp, &role)
        .await
        .expect("create Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&pp, &binding)
        .await
        .expect("create RoleBinding");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &pp, &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token")
        .token;
    // Same server and CA as the admin context; only the credentials change.
    let mut config = kube::Config::infer().await.expect("kube config");
    config.auth_info = serde_json::from_value(serde_json::json!({"token": token})).expect("AuthInfo");
    config.default_namespace = namespace.to_owned();
    let client = Client::try_from(config).expect("client with the ServiceAccount token");
    // RBAC bindings take effect at once, but wait until the identity can read its DaemonSets.
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    wait_until("the ServiceAccount may list DaemonSets", || async {
        api.list(&Default::default()).await.is_ok()
    })
    .await;
    client
}

async fn start_env_controller(client: &Client, env: Vars, namespace: &str) -> (Running, Arc<Metrics>) {
    let settings = Settings {
        config_path: None,
        reload_debounce: Duration::from_millis(100),
        resync: Duration::from_secs(300),
        leader_elect: false,
        pod_name: None,
        pod_namespace: Some(namespace.to_owned()),
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    };
    let metrics = Arc::new(Metrics::default());
    let controller = Controller::new(
        client.clone(),
        settings,
        Box::new(env),
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        controller.run(rx).await.expect("controller run");
    });
    (Running { stop, task }, metrics)
}

fn container_count(ds: &DaemonSet) -> usize {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map_or(0, |s| s.containers.len())
}

/// Nothing refused and the upstream verbs' strategy in force, from the controller's own metrics.
fn assert_no_forbidden(metrics: &Metrics) {
    let text = metrics.encode();
    assert!(!text.contains("kind=\"forbidden\""), "a call was refused:\n{text}");
    assert!(
        text.contains("kip_write_strategy{strategy=\"delete-then-create\"} 1"),
        "{text}"
    );
}

/// The controller as a ServiceAccount bound to the upstream Role alone, with the operator's env: the
/// DaemonSet is made and kept (create, delete-then-create), a new process applies one more image, and
/// SIGTERM leaves the DaemonSet in place. Nothing is ever refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_role_service_account_keeps_the_daemonset() {
    let admin = client_or_skip!();
    let ns = TempNamespace::new(&admin, "kip-e2e-upstream").await;
    let client = upstream_identity(&admin, &ns.name).await;
    let api: Api<DaemonSet> = Api::namespaced(admin.clone(), &ns.name);
    let name = "kubernetes-image-puller";
    let two = "che-code=registry.k8s.io/pause:3.10;base-developer-image=registry.k8s.io/pause:3.9";
    let three = "che-code=registry.k8s.io/pause:3.10;base-developer-image=registry.k8s.io/pause:3.9;udi=registry.k8s.io/pause:3.8";

    let started = Instant::now();
    let (running, metrics) = start_env_controller(&client, operator_env(&ns.name, two), &ns.name).await;
    wait_until("DaemonSet created", || async { get(&api, name).await.is_some() }).await;
    println!("upstream Role: DaemonSet exists {:?} after start", started.elapsed());
    let ds = get(&api, name).await.unwrap();
    assert_eq!(container_count(&ds), 2);
    assert_eq!(
        ds.labels().get(labels::MANAGED_BY).map(String::as_str),
        Some(labels::MANAGER)
    );

    if kip_image().is_some() {
        wait_until("cache pods ready", || async {
            get(&api, name)
                .await
                .and_then(|d| d.status)
                .is_some_and(|s| s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled)
        })
        .await;
    }

    // Deleted by someone: back.
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    wait_until("DaemonSet back", || async {
        get(&api, name).await.is_some_and(|d| d.uid() != ds.uid())
    })
    .await;
    println!("upstream Role: deleted DaemonSet back after {:?}", deleted.elapsed());
    assert_no_forbidden(&metrics);
    running.stop().await;
    assert!(get(&api, name).await.is_some(), "stopping deleted the DaemonSet");

    // A new process with one more image (the operator rolled the Deployment): applied by delete-then-create.
    let before = get(&api, name).await.unwrap().uid();
    let started = Instant::now();
    let (running, metrics) = start_env_controller(&client, operator_env(&ns.name, three), &ns.name).await;
    wait_until("third image applied", || async {
        get(&api, name).await.is_some_and(|d| container_count(&d) == 3)
    })
    .await;
    println!(
        "upstream Role: one more image applied {:?} after the new process started",
        started.elapsed()
    );
    assert_ne!(get(&api, name).await.unwrap().uid(), before);
    assert_no_forbidden(&metrics);
    running.stop().await;
    assert!(get(&api, name).await.is_some(), "stopping deleted the DaemonSet");
    drop(ns);
}
