//! A bench binary (`harness = false`): the release binary against the real control plane of `e2e/cluster`
//! (kube-apiserver, controller-manager, scheduler, kwok) with 3, 500 and 1,000 simulated nodes, configured by
//! the upstream environment variables. Per size it prints the process's peak and steady RSS, start → the first
//! DaemonSet visible in the API, and a deleted DaemonSet → its replacement visible (median of 3).
//!
//! Side by side with the upstream Go puller when `KIP_UPSTREAM_BIN` names a build of it (same env, same
//! cluster), with the ratios. The Go module proxy refuses `github.com/che-incubator/kubernetes-image-puller`
//! here (403 "This module version is not available"), so on this machine only this project's column is
//! filled. Prints figures; never fails on them. Without a cluster it says why and exits 0 (1 with
//! `KIP_E2E_REQUIRE_CLUSTER=1`).
//!
//! Then the warm gate (issue 20): 500 simulated nodes carrying the startup taint join at once under a running
//! controller (a TOML config with `[warm_gate]`). It prints the time until every node has the `ImagesCached`
//! condition True and no taint, the controller's node writes per node as the bench saw them through a watch
//! (a change of our condition or of the taints) and as the controller counted them, and its peak RSS.
//!
//! Run: `KUBECONFIG=... KIP_E2E_BIN=<release binary> cargo test --test real_cluster_bench`
//! (`KIP_BENCH_ONLY=warm` runs only the warm gate join).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

const NS: &str = "kip-bench";
const SET: &str = "kip-bench";
const NODE_LABEL: &str = "kip-bench";
const SIZES: [usize; 3] = [3, 500, 1000];
const REPAIRS: usize = 3;
const IMAGES: &str = "web=registry.example.com/shop/web:2.14.1;api=registry.example.com/shop/api:2.14.1;\
worker=registry.example.com/shop/worker:2.14.1;cache=registry.example.com/library/redis:7.4;\
db=registry.example.com/library/postgres@sha256:4d89c904835259bc58876520e56267ca07a4ebd6a027f7814bbbf91b50d685be";
const MIB: f64 = 1024.0;

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    peak_mib: f64,
    steady_mib: f64,
    first: Duration,
    restore: Duration,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let required = std::env::var("KIP_E2E_REQUIRE_CLUSTER").is_ok_and(|v| v == "1");
    let client = match runtime.block_on(cluster()) {
        Ok(c) => c,
        Err(why) => {
            println!("real_cluster bench skipped: {why}");
            std::process::exit(i32::from(required));
        }
    };
    let ours = std::env::var_os("KIP_E2E_BIN").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/release/kubernetes-image-puller"
            ))
        },
        PathBuf::from,
    );
    assert!(ours.exists(), "{} missing: set KIP_E2E_BIN", ours.display());
    let upstream = std::env::var_os("KIP_UPSTREAM_BIN").map(PathBuf::from);
    println!("real_cluster bench: {} against the e2e cluster", ours.display());
    let only_warm = std::env::var("KIP_BENCH_ONLY").is_ok_and(|v| v == "warm");
    let mut rows = Vec::new();
    for nodes in SIZES.into_iter().filter(|_| !only_warm) {
        runtime.block_on(ensure_nodes(&client, nodes));
        let mine = runtime.block_on(one_size(&client, &ours, nodes));
        let theirs = upstream
            .as_ref()
            .map(|bin| runtime.block_on(one_size(&client, bin, nodes)));
        rows.push((nodes, mine, theirs));
    }
    runtime.block_on(ensure_nodes(&client, 0));
    runtime.block_on(warm_join(&client, &ours, WARM_NODES, true));
    // The same join without the gate: the controller's memory for it alone, to compare.
    runtime.block_on(warm_join(&client, &ours, WARM_NODES, false));
    if only_warm {
        return;
    }

    println!();
    println!(
        "{:>6} | {:>9} {:>10} {:>12} {:>12} | upstream (RSS, first, restore) | ratios (upstream / ours)",
        "nodes", "peak RSS", "steady RSS", "first DS", "DS restored"
    );
    for (nodes, m, u) in rows {
        let theirs = match u {
            Some(u) => format!(
                "{:.1} MiB, {:?}, {:?} | RSS x{:.1}, first x{:.1}, restore x{:.1}",
                u.peak_mib,
                u.first,
                u.restore,
                u.peak_mib / m.peak_mib,
                u.first.as_secs_f64() / m.first.as_secs_f64(),
                u.restore.as_secs_f64() / m.restore.as_secs_f64()
            ),
            None => "not measured: no KIP_UPSTREAM_BIN (the module proxy refuses the upstream module here)".into(),
        };
        println!(
            "{nodes:>6} | {:>5.1} MiB {:>6.1} MiB {:>12.1?} {:>12.1?} | {theirs}",
            m.peak_mib, m.steady_mib, m.first, m.restore
        );
    }
}

async fn cluster() -> Result<Client, String> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Err("no KUBECONFIG (start e2e/cluster/up.sh)".into());
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

/// Exactly `count` simulated nodes labelled `type=kip-bench`, all Ready (kwok marks them).
async fn ensure_nodes(client: &Client, count: usize) {
    let api: Api<Node> = Api::all(client.clone());
    let selector = format!("type={NODE_LABEL}");
    let existing: Vec<String> = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let wanted: Vec<String> = (0..count).map(|i| format!("kip-bench-{i:04}")).collect();
    let create = wanted.iter().filter(|n| !existing.contains(n)).cloned();
    futures::stream::iter(create.map(|name| {
        let api = api.clone();
        async move {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"type": NODE_LABEL, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}
                }
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.map(|_| ())
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await
    .unwrap();
    let delete = existing.iter().filter(|n| !wanted.contains(n)).cloned();
    futures::stream::iter(delete.map(|name| {
        let api = api.clone();
        async move { api.delete(&name, &DeleteParams::default()).await.map(|_| ()) }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let ready = api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{ready} of {count} bench nodes Ready after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A fresh namespace, the binary started with the upstream env, then its figures; the namespace deleted.
async fn one_size(client: &Client, bin: &PathBuf, nodes: usize) -> Figures {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
    while namespaces.get_opt(NS).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);

    let started = Instant::now();
    let mut child = start(bin);
    let first = wait(&api, None, started).await;
    let mut restores = Vec::new();
    for _ in 0..REPAIRS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let uid = api.get(SET).await.unwrap().uid();
        api.delete(SET, &DeleteParams::default()).await.unwrap();
        let deleted = Instant::now();
        restores.push(wait(&api, uid, deleted).await);
    }
    restores.sort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (peak, steady) = (kib(child.id(), "VmHWM:"), kib(child.id(), "VmRSS:"));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
    let figures = Figures {
        peak_mib: peak / MIB,
        steady_mib: steady / MIB,
        first,
        restore: restores[REPAIRS / 2],
    };
    println!("{nodes} nodes, {}: {figures:?}", bin.display());
    figures
}

fn start(bin: &PathBuf) -> Child {
    Command::new(bin)
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", std::env::var_os("KUBECONFIG").unwrap())
        .env("IMAGES", IMAGES)
        .env("DAEMONSET_NAME", SET)
        .env("NAMESPACE", NS)
        .env("NODE_SELECTOR", format!("{{\"type\":\"{NODE_LABEL}\"}}"))
        .env("CACHING_INTERVAL_HOURS", "1")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// Polls every 5 ms until the DaemonSet exists with another uid than `old`; the time since `since`.
async fn wait(api: &Api<DaemonSet>, old: Option<String>, since: Instant) -> Duration {
    loop {
        if let Some(ds) = api.get_opt(SET).await.unwrap()
            && ds.metadata.uid != old
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no DaemonSet {SET} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `/proc/PID/status` field in KiB.
fn kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const WARM_NS: &str = "kip-bench-warm";
const WARM_LABEL: &str = "kip-bench-warm";
const WARM_NODES: usize = 500;
const WARM_TAINT: &str = "kubernetes-image-puller/cold";
const CONDITION: &str = "kubernetes-image-puller/ImagesCached";

/// Our condition as the bench sees it: status, reason, last transition.
type Seen = Option<(String, Option<String>, Option<String>)>;
/// Per node: the changes seen (of our condition or the taint), and the last facts.
type SeenNodes = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (usize, (Seen, bool))>>>;

/// What the bench sees of a node: our condition and whether it carries the startup taint.
fn warm_facts(node: &Node) -> (Seen, bool) {
    let condition = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CONDITION))
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone(),
                c.last_transition_time.as_ref().map(|t| t.0.to_string()),
            )
        });
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == WARM_TAINT));
    (condition, tainted)
}

/// `count` kwok nodes carrying the startup taint join at once while the controller runs; prints the time to
/// all warm and untainted, node writes per node (seen by a watch; counted by the controller) and peak RSS.
/// Without `gate`: the same join (no taint, no `[warm_gate]`), until every cache pod is Ready.
async fn warm_join(client: &Client, bin: &PathBuf, count: usize, gate: bool) {
    use kube::runtime::watcher;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("type={WARM_LABEL}");
    let _ = nodes
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await;
    let _ = namespaces.delete(WARM_NS, &DeleteParams::default()).await;
    while namespaces.get_opt(WARM_NS).await.unwrap().is_some()
        || !nodes
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": WARM_NS}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();

    let dir = std::env::temp_dir().join(format!("kip-bench-warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "namespace = \"{WARM_NS}\"\n\n{}[[sets]]\nname = \"warm\"\nrefresh = \"never\"\nnode_selector = {{ type = \"{WARM_LABEL}\" }}\n\
             images = {{ web = \"registry.example.com/shop/web:2.14.1\", api = \"registry.example.com/shop/api:2.14.1\", \
             cache = \"registry.example.com/library/redis:7.4\" }}\n",
            if gate {
                format!("[warm_gate]\ntaint = \"{WARM_TAINT}\"\ntimeout = \"15m\"\n\n")
            } else {
                String::new()
            }
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(bin)
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", std::env::var_os("KUBECONFIG").unwrap())
        .env("CONFIG_FILE", &config)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), WARM_NS);
    let started = Instant::now();
    while daemonsets.get_opt("warm").await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "no DaemonSet after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = node_writes(port).await;

    // Every change of our condition or of the startup taint, per node, as a watch delivers them.
    let seen: SeenNodes = Default::default();
    let watch = {
        let seen = seen.clone();
        let stream = watcher::watcher(nodes.clone(), watcher::Config::default().labels(&selector));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                let node = match event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => n,
                    _ => continue,
                };
                let facts = warm_facts(&node);
                let mut seen = seen.lock().unwrap();
                let entry = seen.entry(node.name_any()).or_insert((0, (None, gate)));
                if entry.1 != facts {
                    // Counted from the node as the bench creates it (tainted when gated, no condition).
                    if entry.1.0 != facts.0 {
                        entry.0 += 1;
                    }
                    if entry.1.1 != facts.1 {
                        entry.0 += 1;
                    }
                    entry.1 = facts;
                }
            }
        })
    };

    let joining = Instant::now();
    futures::stream::iter((0..count).map(|i| {
        let api = nodes.clone();
        async move {
            let name = format!("kip-bench-warm-{i:04}");
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"type": WARM_LABEL, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
                },
                "spec": if gate { serde_json::json!({"taints": [{"key": WARM_TAINT, "effect": "NoSchedule"}]}) } else { serde_json::json!({}) },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}
                }
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.map(|_| ())
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<()>>()
    .await
    .unwrap();
    let created = joining.elapsed();

    let mut warm = 0;
    while joining.elapsed() < Duration::from_secs(300) {
        warm = if gate {
            let list = nodes.list(&ListParams::default().labels(&selector)).await.unwrap();
            list.items
                .iter()
                .filter(|n| matches!(warm_facts(n), (Some((ref s, _, _)), false) if s == "True"))
                .count()
        } else {
            let ds = daemonsets.get("warm").await.unwrap();
            ds.status.map_or(0, |s| s.number_ready as usize)
        };
        if warm == count {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let all_warm = joining.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = node_writes(port).await;
    let peak = kib(child.id(), "VmHWM:");
    let steady = kib(child.id(), "VmRSS:");
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let per_node: Vec<usize> = seen.values().map(|(n, _)| *n).collect();
    let total: usize = per_node.iter().sum();
    let with_condition = seen.values().filter(|(_, (c, _))| c.is_some()).count();
    let mut histogram = std::collections::BTreeMap::<usize, usize>::new();
    for n in &per_node {
        *histogram.entry(*n).or_default() += 1;
    }
    // Pods the node lifecycle controller marked not ready (Ready False, ContainersReady True) when a
    // simulated node's heartbeat lagged: kwok does not set them Ready again.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), WARM_NS);
    let marked = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            let is = |kind: &str, value: &str| {
                conditions.is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == value))
            };
            is("Ready", "False") && is("ContainersReady", "True")
        })
        .count();
    let what = if gate { "warm gate join" } else { "same join, no gate" };
    println!(
        "{what}: {count} kwok nodes created in {created:.1?}; {warm} of {count} {} after {all_warm:.1?}; \
         {with_condition} carry the condition; {marked} cache pods marked not ready with their containers ready",
        if gate {
            "warm and untainted"
        } else {
            "with their cache pod Ready"
        }
    );
    println!(
        "{what}: node writes seen by a watch: {total} in all, nodes by writes {histogram:?}; \
         counted by the controller: {} condition patches, {} taint patches; peak RSS {:.1} MiB, steady {:.1} MiB",
        after.0 - before.0,
        after.1 - before.1,
        peak / MIB,
        steady / MIB
    );
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = nodes
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await;
    let _ = namespaces.delete(WARM_NS, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// The controller's node writes from its /metrics: (condition patches, taint patches).
async fn node_writes(port: u16) -> (u64, u64) {
    let text = http_get(port, "/metrics").await;
    let count = |verb: &str| {
        text.lines()
            .filter(|l| l.starts_with("kip_api_writes_total") && l.contains(&format!("verb=\"{verb}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (count("patch-node-status"), count("patch-node"))
}

/// A plain HTTP GET on loopback (the controller's metrics endpoint).
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..50 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut out = String::new();
                let _ = stream.read_to_string(&mut out).await;
                return out;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}
