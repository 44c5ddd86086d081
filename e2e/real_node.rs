//! On the harness's real node (kubelet + containerd, images from the loopback registry): the release binary
//! keeps a set's cache there with this project's image (the init container copies kip-sleep, the sleepers
//! run, the node's runtime lists the images), and that a replaced cache pod starts from disk in a registry outage.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::ListParams;

use super::*;
use harness::{Process, REAL_NODE, REAL_NODE_LABEL, REAL_NODE_TAINT};

/// The harness's own images (e2e/cluster/images.sh).
pub(super) fn image(name: &str) -> String {
    format!("{}/kip-e2e/{name}", harness::registry().expect("registry"))
}

/// A set on the real node only: one moving tag and one digest-pinned image.
fn real_node_config(namespace: &str, pinned: &str) -> String {
    format!(
        r#"namespace = "{namespace}"
caching_interval_hours = 1
kip_image = "{kip}"

[[sets]]
name = "real"
node_selector = {{ "{REAL_NODE_LABEL}" = "real" }}
tolerations = [{{ key = "{REAL_NODE_TAINT}", operator = "Exists", effect = "NoSchedule" }}]
images = {{ busybox = "{busybox}", tools = "{pinned}" }}
"#,
        kip = image("kubernetes-image-puller:e2e"),
        busybox = image("busybox:1"),
    )
}

/// The set's cache pod on the real node, if any.
pub(super) async fn cache_pod(client: &Client, namespace: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGER);
    pods.list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(REAL_NODE))
}

pub(super) fn statuses(pod: &Pod) -> Vec<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

/// `name: running | waiting (reason) | terminated (reason, exit)` per container, for messages.
pub(super) fn describe(pod: &Pod) -> String {
    statuses(pod)
        .iter()
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let what = if state.running.is_some() {
                "running".to_owned()
            } else if let Some(w) = state.waiting {
                format!("waiting ({})", w.reason.unwrap_or_default())
            } else if let Some(t) = state.terminated {
                format!("terminated ({}, exit {})", t.reason.unwrap_or_default(), t.exit_code)
            } else {
                "unknown".to_owned()
            };
            format!("{}: {what}, restarts {}", c.name, c.restart_count)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Restarts the registry when dropped, so a failing test leaves the harness whole.
pub(super) struct RegistryStopped;

impl RegistryStopped {
    pub(super) fn new() -> Self {
        harness::ctl("stop", "registry");
        RegistryStopped
    }
}

impl Drop for RegistryStopped {
    fn drop(&mut self) {
        harness::ctl("start", "registry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_runs_on_the_real_node_and_a_registry_outage_today() {
    let client = real_node_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-real").await;
    let dir = tempfile::tempdir().unwrap();
    let pinned = format!(
        "{}@{}",
        image("tools"),
        harness::registry_digest("kip-e2e/tools", "1").await
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, real_node_config(&ns.name, &pinned)).unwrap();
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");

    // 1. The release binary, as the chart runs it, makes the set's DaemonSet; the cache pod turns Ready.
    let started = Instant::now();
    let mut controller = Process::start(
        dir.path(),
        "controller",
        &["run"],
        &[
            ("KUBECONFIG", kubeconfig),
            ("CONFIG_FILE", config.display().to_string()),
        ],
    );
    harness::wait_daemonset_ready(&client, &ns.name, "real", 1, Duration::from_secs(120)).await;
    println!(
        "real node: cache pod Ready {:?} after the controller started",
        started.elapsed()
    );
    assert!(controller.running(), "controller exited:\n{}", controller.output());

    let pod = cache_pod(&client, &ns.name)
        .await
        .expect("a cache pod on the real node");
    let status = pod.status.clone().unwrap();
    // The init container copied kip-sleep out of this project's image, and exited 0.
    let init = &status.init_container_statuses.clone().expect("init container status")[0];
    assert_eq!(init.image, image("kubernetes-image-puller:e2e"), "{init:?}");
    let copied = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("init terminated");
    assert_eq!(copied.exit_code, 0, "{copied:?}");
    // Every cache container runs the copied sleeper.
    let containers = statuses(&pod);
    assert_eq!(containers.len(), 2, "{}", describe(&pod));
    for c in &containers {
        assert!(
            c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()),
            "{}",
            describe(&pod)
        );
        assert_eq!(c.restart_count, 0, "{}", describe(&pod));
    }
    let command = &pod.spec.as_ref().unwrap().containers[0].command;
    println!("real node: cache containers run {command:?}: {}", describe(&pod));

    // The node's runtime holds every image: the sleeper image, the moving tag and the digest.
    let on_node = harness::node_images();
    for wanted in [image("kubernetes-image-puller:e2e"), image("busybox:1"), pinned.clone()] {
        assert!(on_node.contains(&wanted), "{wanted} not on the node: {on_node:?}");
    }

    // 2. Baseline of the registry-outage issue: the registry stopped, the cache pod deleted.
    let outage = RegistryStopped::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete(&pod.name_any(), &DeleteParams::default().grace_period(1))
        .await
        .expect("delete the cache pod");
    let deleted = Instant::now();
    let old_uid = pod.uid();
    // The replacement's containers settle within a kubelet pull attempt or two.
    let mut replacement = None;
    while deleted.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        replacement = cache_pod(&client, &ns.name).await.filter(|p| p.uid() != old_uid);
        let settled = replacement.as_ref().is_some_and(|p| {
            statuses(p).len() == 2
                && statuses(p).iter().all(|c| {
                    c.state.as_ref().is_some_and(|s| s.waiting.is_none())
                        || c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            .is_some_and(|r| r.contains("ImagePull"))
                })
        });
        if settled && deleted.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let replacement = replacement.expect("the DaemonSet controller replaced the cache pod");
    println!(
        "real node, registry stopped, cache pod replaced, {:?} later: {}",
        deleted.elapsed(),
        describe(&replacement)
    );
    let by_name = |n: &str| statuses(&replacement).into_iter().find(|c| c.name == n).expect(n);
    // The digest-pinned image (IfNotPresent) starts from the node's disk without the registry.
    assert!(
        by_name("tools").state.as_ref().is_some_and(|s| s.running.is_some()),
        "the pinned image did not start from disk: {}",
        describe(&replacement)
    );
    // The moving tag too (refresh digest, the default: IfNotPresent); it was pulled Always before.
    assert!(
        by_name("busybox").state.as_ref().is_some_and(|s| s.running.is_some()),
        "the moving tag did not start from disk: {}",
        describe(&replacement)
    );

    // The registry back: the cache recovers by itself.
    drop(outage);
    harness::wait_daemonset_ready(&client, &ns.name, "real", 1, Duration::from_secs(90)).await;
    println!(
        "registry back: cache pod Ready {:?} after the pod was deleted",
        deleted.elapsed()
    );
    let status = controller.terminate();
    assert!(status.success(), "controller exit {status}:\n{}", controller.output());
    drop(ns);
}

/// The manifest `repo:reference` on the loopback registry, as served (OCI).
pub(super) fn registry_manifest(repo: &str, reference: &str) -> serde_json::Value {
    let registry = harness::registry().expect("registry");
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!("http://{registry}/v2/{repo}/manifests/{reference}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("manifest {repo}:{reference}: {e}"))
}

/// Pushes `manifest` as `repo:tag` (its blobs are in `repo` already); returns its digest.
pub(super) fn put_registry_manifest(repo: &str, tag: &str, manifest: &serde_json::Value) -> String {
    let registry = harness::registry().expect("registry");
    let out = std::process::Command::new("curl")
        .args([
            "-sfi",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
        ])
        .args(["--data-binary", &manifest.to_string()])
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .output()
        .expect("curl");
    harness::content_digest(&out.stdout)
        .unwrap_or_else(|| panic!("push {repo}:{tag}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn delete_registry_manifest(repo: &str, digest: &str) {
    let registry = harness::registry().expect("registry");
    let status = std::process::Command::new("curl")
        .args(["-sf", "-X", "DELETE"])
        .arg(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
        .status()
        .expect("curl");
    assert!(status.success(), "delete {repo}@{digest}");
}

/// The waiting reason of container `name` in `pod`, if it waits.
fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    statuses(pod)
        .into_iter()
        .find(|c| c.name == name)
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.reason)
}

/// An image made unpullable (gone from the registry and from the node) and its cache pod replaced: the
/// running controller names the image, the node and the kubelet's reason in `kip_image_failing_nodes` and a
/// log line within a minute of the first ErrImagePull, not at the next hourly health check; the image
/// pushed back and the pod Ready again, both clear within a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_is_named_within_a_minute_and_cleared_when_it_is_back() {
    let client = real_node_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-fail").await;
    let dir = tempfile::tempdir().unwrap();
    // A manifest of its own (busybox's blobs, an annotation of this run): deleting it removes no other tag.
    let repo = "kip-e2e/busybox";
    let nonce = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_second());
    let mut manifest = registry_manifest(repo, "1");
    manifest["annotations"]["kip-e2e.nonce"] = serde_json::Value::String(nonce.clone());
    let tag = format!("vanishing-{nonce}");
    let digest = put_registry_manifest(repo, &tag, &manifest);
    let vanishing = format!("{}:{tag}", image("busybox"));
    let config = dir.path().join("config.toml");
    let text = format!(
        r#"namespace = "{ns}"
kip_image = "{kip}"

[[sets]]
name = "vanish"
node_selector = {{ "{REAL_NODE_LABEL}" = "real" }}
tolerations = [{{ key = "{REAL_NODE_TAINT}", operator = "Exists", effect = "NoSchedule" }}]
images = {{ v = "{vanishing}" }}
"#,
        ns = ns.name,
        kip = image("kubernetes-image-puller:e2e"),
    );
    std::fs::write(&config, text).unwrap();
    let env = [
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
    ];
    let controller = Process::start(dir.path(), "controller", &["run"], &env);
    harness::wait_daemonset_ready(&client, &ns.name, "vanish", 1, Duration::from_secs(120)).await;

    // Unpullable: gone from the registry and from the node's runtime; the cache pod replaced.
    delete_registry_manifest(repo, &digest);
    harness::remove_node_image(&vanishing);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let old = cache_pod(&client, &ns.name).await.expect("the cache pod");
    pods.delete(&old.name_any(), &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    let deleted = Instant::now();
    let pulled_wrong = loop {
        let reason = cache_pod(&client, &ns.name)
            .await
            .filter(|p| p.uid() != old.uid())
            .and_then(|p| waiting_reason(&p, "v"));
        if let Some(r) = reason.filter(|r| r == "ErrImagePull" || r == "ImagePullBackOff") {
            break r;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "no ErrImagePull within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first_error = Instant::now();
    let series = format!("kip_image_failing_nodes{{set=\"vanish\",image=\"{vanishing}\"}}");
    wait_until_for("the failing image in the metrics", Duration::from_secs(60), || async {
        harness::sample(&controller.metrics().await, &series).is_some_and(|v| v >= 1.0)
    })
    .await;
    let named = first_error.elapsed();
    let output = controller.output();
    let line = output
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&vanishing) && l.contains(REAL_NODE) && l.contains("ImagePull"))
        .unwrap_or_else(|| panic!("no log line names {vanishing}, {REAL_NODE} and the reason:\n{output}"));
    println!(
        "failing image: {} seen by the test, in the metrics {named:?} later; log: {line}",
        pulled_wrong
    );

    // Back: pushed again, the pod replaced so it pulls now (not at the kubelet's next back-off retry).
    put_registry_manifest(repo, &tag, &manifest);
    let failing = cache_pod(&client, &ns.name).await.expect("the failing cache pod");
    pods.delete(&failing.name_any(), &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    harness::wait_daemonset_ready(&client, &ns.name, "vanish", 1, Duration::from_secs(120)).await;
    let ready = Instant::now();
    wait_until_for("the failing image cleared", Duration::from_secs(60), || async {
        let text = controller.metrics().await;
        !text.is_empty() && harness::sample(&text, &series).is_none_or(|v| v == 0.0)
    })
    .await;
    println!("image back: cleared {:?} after the pod turned Ready", ready.elapsed());
    delete_registry_manifest(repo, &digest);
    drop(controller);
    drop(ns);
}
