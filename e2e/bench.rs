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
//! Run: `KUBECONFIG=... KIP_E2E_BIN=<release binary> cargo test --test real_cluster_bench`.

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
    let mut rows = Vec::new();
    for nodes in SIZES {
        runtime.block_on(ensure_nodes(&client, nodes));
        let mine = runtime.block_on(one_size(&client, &ours, nodes));
        let theirs = upstream
            .as_ref()
            .map(|bin| runtime.block_on(one_size(&client, bin, nodes)));
        rows.push((nodes, mine, theirs));
    }
    runtime.block_on(ensure_nodes(&client, 0));

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
