//! The warm gate against a real API server: kwok nodes of this test's own (never the harness's nodes or the
//! real node) join carrying the startup taint; each gets the `kubernetes-image-puller/ImagesCached` condition
//! through the real `nodes/status` strategic-merge patch (kwok's own conditions stay) and loses the taint
//! through the real JSON patch once its cache pod (simulated by kwok) is Ready. Another taint on the node stays.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};

use super::*;

const TAINT: &str = "kubernetes-image-puller/cold";
const KWOK_TAINT: &str = "kwok.x-k8s.io/node";

/// This test's nodes, deleted on drop.
struct TempNodes {
    client: Client,
    names: Vec<String>,
}

impl Drop for TempNodes {
    fn drop(&mut self) {
        let client = self.client.clone();
        let names = self.names.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let api: Api<Node> = Api::all(client);
                for n in names {
                    let _ = api.delete(&n, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

fn condition_of(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kubernetes_image_puller::warmth::CONDITION_TYPE)
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_warm_gate_condition_and_taint_on_own_kwok_nodes() {
    let client = client_or_skip!();
    let ns = TempNamespace::new(&client, "kip-warm").await;
    let id = format!("{}", std::process::id() % 100_000);
    let names: Vec<String> = (0..3).map(|i| format!("kip-warm-{id}-{i}")).collect();
    let nodes = TempNodes {
        client: client.clone(),
        names: names.clone(),
    };
    let api: Api<Node> = Api::all(client.clone());
    for name in &nodes.names {
        let _ = api.delete(name, &DeleteParams::default()).await;
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kip-warm": id, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            },
            "spec": {"taints": [
                {"key": KWOK_TAINT, "value": "fake", "effect": "NoSchedule"},
                {"key": TAINT, "effect": "NoSchedule"}
            ]},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &node).await.expect("create node");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut text = format!(
        "namespace = \"{}\"\n\n[warm_gate]\ntaint = \"{TAINT}\"\ntimeout = \"10m\"\n",
        ns.name
    );
    if let Some(image) = kip_image() {
        text = format!("kip_image = \"{image}\"\n{text}");
    }
    text.push_str(&format!(
        "\n[[sets]]\nname = \"warm\"\nnode_selector = {{ kip-warm = \"{id}\" }}\n\
         tolerations = [{{ key = \"{KWOK_TAINT}\", operator = \"Exists\", effect = \"NoSchedule\" }}]\n\
         images = {{ main = \"busybox:1.36\" }}\n"
    ));
    write_config(&path, &text);
    let running = start_controller(&client, path, &ns.name).await;
    let took = wait_until_for("every own node warm and untainted", Duration::from_secs(90), || async {
        let mut all = true;
        for name in &names {
            let node = api.get(name).await.expect("get node");
            let warm = condition_of(&node).is_some_and(|(status, _)| status == "True");
            all &= warm && !taint_keys(&node).iter().any(|k| k == TAINT);
        }
        all
    })
    .await;
    println!("warm gate: 3 kwok nodes warm and untainted {took:?} after the controller started");
    for name in &names {
        let node = api.get(name).await.unwrap();
        let (_, message) = condition_of(&node).unwrap();
        assert_eq!(message, "warm: ok");
        assert_eq!(taint_keys(&node), [KWOK_TAINT], "only the startup taint removed");
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
            "kwok's Ready condition stays beside ours: {conditions:?}"
        );
    }
    // The harness's own nodes are not ours to touch.
    for node in api.list(&Default::default()).await.unwrap().items {
        if !names.contains(&node.name_any()) {
            assert!(condition_of(&node).is_none(), "{} got a condition", node.name_any());
        }
    }
    running.stop().await;
    drop(nodes);
}

/// Removes the startup taint from the real node when dropped, so a failing test leaves the harness whole.
struct RealNodeTainted {
    client: Client,
}

impl RealNodeTainted {
    async fn new(client: &Client) -> RealNodeTainted {
        let nodes: Api<Node> = Api::all(client.clone());
        let patch = serde_json::json!([{"op": "add", "path": "/spec/taints/-",
                                        "value": {"key": TAINT, "effect": "NoSchedule"}}]);
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        nodes
            .patch(
                harness::REAL_NODE,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Json::<()>(patch),
            )
            .await
            .expect("taint the real node");
        RealNodeTainted { client: client.clone() }
    }
}

impl Drop for RealNodeTainted {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let nodes: Api<Node> = Api::all(client);
                if let Ok(node) = nodes.get(harness::REAL_NODE).await {
                    let keep: Vec<_> = node
                        .spec
                        .and_then(|s| s.taints)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.key != TAINT)
                        .collect();
                    let patch = serde_json::json!({"spec": {"taints": keep}});
                    let _ = nodes
                        .patch(
                            harness::REAL_NODE,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&patch),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

/// Removes the gate's condition from the real node (an earlier run's: the controller writes only on a change).
async fn forget_condition(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"status": {"conditions": [
        {"type": kubernetes_image_puller::warmth::CONDITION_TYPE, "$patch": "delete"}]}});
    nodes
        .patch_status(
            harness::REAL_NODE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .expect("remove the condition");
}

/// The real node's Ready condition as if it had just turned Ready (kubelet keeps a condition's
/// lastTransitionTime while its status stays the same): a node that "joined" now, for the timeout.
async fn mark_real_node_ready_now(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get_status(harness::REAL_NODE).await.unwrap();
    let mut conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
    }
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    nodes
        .patch_status(
            harness::REAL_NODE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .expect("patch the real node's Ready transition");
}

fn ready_since(conditions: Option<&Vec<k8s_openapi::api::core::v1::PodCondition>>) -> Option<jiff::Timestamp> {
    conditions?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// On the harness's real node, registered (here: patched) with the startup taint: a workload without the
/// toleration stays Pending until the cache pod is Ready, then starts from the image the cache pulled (kubelet:
/// "already present", no pull of it reaches the registry); the condition turns True within 2 s of the cache
/// pod's Ready, and the time-to-warm sample is the measured interval. Then, with the registry stopped and a
/// node that just turned Ready, the taint goes at the timeout with a Warning Event.
// A CI trial on a fresh harness once saw the controller write "warm: no cache pod yet" before the scheduler
// had bound the cache pod, and keep that message while pulling (only a status change was written). The
// controller now waits `NO_POD_GRACE` for a pod that is on the way, and writes again when the reason changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_node_takes_work_only_once_warm_and_the_timeout_frees_it_in_an_outage() {
    use super::real_node::{RegistryStopped, image};
    use super::refresh::{push_own_tag, warnings};
    use harness::{Process, REAL_NODE, REAL_NODE_LABEL, REAL_NODE_TAINT};

    let client = real_node_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-warm").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = "kip-e2e/busybox";
    let nonce = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_second());
    let tag = format!("warm-{nonce}");
    push_own_tag(repo, &tag, &format!("{nonce}-warm"));
    let warm_image = format!("{}:{tag}", image("busybox"));
    let config = dir.path().join("config.toml");
    let write_config = |set: &str, images: &str, timeout: &str| {
        std::fs::write(
            &config,
            format!(
                r#"namespace = "{ns}"
kip_image = "{kip}"

[warm_gate]
taint = "{TAINT}"
timeout = "{timeout}"

[[sets]]
name = "{set}"
refresh = "never"
node_selector = {{ "{REAL_NODE_LABEL}" = "real" }}
tolerations = [{{ key = "{REAL_NODE_TAINT}", operator = "Exists", effect = "NoSchedule" }}]
images = {{ {images} }}
"#,
                ns = ns.name,
                kip = image("kubernetes-image-puller:e2e"),
            ),
        )
        .unwrap();
    };
    write_config("warm", &format!("w = \"{warm_image}\""), "5m");
    forget_condition(&client).await;
    let tainted = RealNodeTainted::new(&client).await;
    // A node that joins now: the timeout counts from its Ready transition.
    mark_real_node_ready_now(&client).await;

    // A workload using the cached image, tolerating the harness's taint but not the startup one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let workload: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "workload"},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "real"},
            "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "w", "image": warm_image, "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/busybox", "sleep", "3600"],
                            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &workload).await.unwrap();

    // The registry away at first: the cache pod cannot pull, the node stays cold (condition False).
    let outage = RegistryStopped::new();
    let env = [
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
    ];
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);
    let nodes: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    let cold_message = loop {
        let node = nodes.get(REAL_NODE).await.unwrap();
        // (An earlier run's condition may still be there: the one about this test's set is awaited.)
        if let Some((status, message)) = condition_of(&node).filter(|(s, m)| s == "False" && m.contains("warm: w")) {
            break format!("{status}: {message}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no False condition:\n{}",
            controller.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("registry away: the real node's condition is {cold_message}");
    assert!(cold_message.contains("warm: w"), "{cold_message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = pods.get("workload").await.unwrap();
    assert!(
        w.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(),
        "the workload was scheduled onto a cold node"
    );
    assert!(taint_keys(&nodes.get(REAL_NODE).await.unwrap()).contains(&TAINT.to_owned()));

    // The registry back: the kubelet's next pull warms the node; the condition, the taint and the workload follow.
    drop(outage);
    let (mut cache_ready_seen, mut condition_true_seen) = (None, None);
    let cache_pod = loop {
        let now = Instant::now();
        let list = pods
            .list(&kube::api::ListParams::default().labels(&kubernetes_image_puller::health::pod_selector("warm")))
            .await
            .unwrap();
        let cache = list.items.into_iter().next();
        let ready = cache
            .as_ref()
            .and_then(|p| ready_since(p.status.as_ref().and_then(|s| s.conditions.as_ref())));
        if ready.is_some() && cache_ready_seen.is_none() {
            cache_ready_seen = Some(now);
        }
        let node = nodes.get(REAL_NODE).await.unwrap();
        if condition_of(&node).is_some_and(|(s, _)| s == "True") && condition_true_seen.is_none() {
            condition_true_seen = Some(now);
        }
        let w = pods.get("workload").await.unwrap();
        let scheduled = w.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        assert!(
            !scheduled || ready.is_some(),
            "the workload was scheduled before the cache pod was Ready"
        );
        if cache_ready_seen.is_some() && condition_true_seen.is_some() && scheduled {
            break cache.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not warm within 120 s: cache ready {cache_ready_seen:?}, condition {condition_true_seen:?}:\n{}",
            controller.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lag = condition_true_seen
        .unwrap()
        .saturating_duration_since(cache_ready_seen.unwrap());
    println!("condition True {lag:?} after the cache pod was seen Ready");
    assert!(
        lag <= Duration::from_secs(2),
        "condition True {lag:?} after the cache pod's Ready"
    );
    assert!(!taint_keys(&nodes.get(REAL_NODE).await.unwrap()).contains(&TAINT.to_owned()));

    // The workload starts from the image the cache pulled: kubelet says so, and no pull of it by containerd.
    let pulls_before = containerd_pulls(repo, &tag);
    let waited = Instant::now();
    loop {
        let w = pods.get("workload").await.unwrap();
        let running = w
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| c.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())));
        if running {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "workload not running: {:?}",
            w.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    let pulled: Vec<String> = events
        .list(&kube::api::ListParams::default().fields("involvedObject.name=workload"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Pulled"))
        .map(|e| e.message.unwrap_or_default())
        .collect();
    println!("workload: {pulled:?}");
    assert!(
        pulled.iter().any(|m| m.contains("already present on machine")),
        "{pulled:?}"
    );
    assert_eq!(
        containerd_pulls(repo, &tag),
        pulls_before,
        "the workload's start asked the registry"
    );

    // Time to warm: the histogram's sample is the cache pod's Ready minus the node's Ready transition.
    let node = nodes.get(REAL_NODE).await.unwrap();
    let node_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap();
    let pod_ready = ready_since(cache_pod.status.as_ref().and_then(|s| s.conditions.as_ref())).unwrap();
    let measured = pod_ready.duration_since(node_ready).as_secs_f64();
    let metrics = controller.metrics().await;
    let sum = harness::sample(&metrics, "kip_node_warm_seconds_sum{set=\"warm\"}");
    let count = harness::sample(&metrics, "kip_node_warm_seconds_count{set=\"warm\"}");
    println!("time to warm: histogram sum {sum:?} (count {count:?}), measured {measured:.1} s");
    assert_eq!(count, Some(1.0), "{metrics}");
    assert!(
        (sum.unwrap() - measured).abs() <= 1.0,
        "histogram {sum:?} vs measured {measured}"
    );
    let status = controller.terminate();
    assert!(status.success(), "controller exit {status}:\n{}", controller.output());

    // The timeout: a node that just turned Ready, tainted, the set's new image unpullable (registry away).
    let tag2 = format!("timeout-{nonce}");
    push_own_tag(repo, &tag2, &format!("{nonce}-timeout"));
    // A set of its own (the "warm" set is pruned): no Ready pod of it on the node, as on a new node.
    write_config("cold", &format!("t = \"{}:{tag2}\"", image("busybox")), "10s");
    let outage = RegistryStopped::new();
    drop(tainted);
    let tainted = RealNodeTainted::new(&client).await;
    mark_real_node_ready_now(&client).await;
    let marked = Instant::now();
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);
    loop {
        let node = nodes.get(REAL_NODE).await.unwrap();
        if !taint_keys(&node).contains(&TAINT.to_owned()) {
            break;
        }
        assert!(
            marked.elapsed() < Duration::from_secs(40),
            "taint not removed at the timeout:\n{}",
            controller.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let freed = marked.elapsed();
    println!("registry away, node cold: startup taint removed {freed:?} after the node's Ready (timeout 10 s)");
    assert!(freed >= Duration::from_secs(9), "removed before the timeout: {freed:?}");
    let node = nodes.get(REAL_NODE).await.unwrap();
    assert_eq!(
        condition_of(&node).map(|(s, _)| s),
        Some("False".to_owned()),
        "still cold"
    );
    let notes = warnings(&client, &ns.name, "WarmGateTimeout").await;
    assert!(
        notes.iter().any(|n| n.starts_with(&format!("node {REAL_NODE}: "))),
        "{notes:?}"
    );
    let metrics = controller.metrics().await;
    assert_eq!(
        harness::sample(&metrics, "kip_warm_gate_timeouts_total{set=\"cold\"}"),
        Some(1.0),
        "{metrics}"
    );
    drop(outage);
    let status = controller.terminate();
    assert!(status.success(), "controller exit {status}:\n{}", controller.output());
    drop(tainted);
    forget_condition(&client).await;
    drop(ns);
}

/// Manifest requests by containerd (the kubelet's pulls) for `repo:tag` in the registry's access log.
fn containerd_pulls(repo: &str, tag: &str) -> usize {
    let dir = std::env::var("KIP_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/kip-cluster".into());
    let log = std::fs::read_to_string(format!("{dir}/logs/registry.log")).unwrap_or_default();
    let path = format!("/v2/{repo}/manifests/{tag} HTTP");
    log.lines()
        .filter(|l| l.contains(&path) && l.contains("containerd"))
        .count()
}
