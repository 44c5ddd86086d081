//! The controller as a real process: the release binary `kubernetes-image-puller run`, configured by the
//! upstream environment variables, as a child process against the fake API server on a loopback socket
//! (tests/support/fake_api.rs), with 3, 500 and 1,000 realistic Nodes (labels, taints, 50 cached images,
//! conditions: about 12 KB each). Unlike the heap counters of the in-process benches, these figures are the
//! child's own, as the kernel counts them; the fake server's copies are in this process, not in the child.
//!
//! Per size it prints:
//! - the child's peak RSS (VmHWM from /proc/PID/status) and steady RSS (VmRSS once the first pass, the
//!   node count and the repairs are over), goal <= 12 MiB and <= +1 MiB from 3 to 1,000 nodes;
//! - start → the first DaemonSet create request (process start, kubeconfig, discovery included);
//! - a DaemonSet delete event → the create request restoring it (median of 5), goal <= 0.5 s at 500 nodes;
//! - `status` of the set with a running pod on each node (up to 800 pods, about 9 KB each): its peak RSS
//!   (VmHWM sampled every millisecond until it exits) and its run time.
//!
//! `KIP_BENCH_WORKERS=N` passes TOKIO_WORKER_THREADS=N to the child (a node with N cores; the binary now
//! sets 2 workers itself, so it only mattered before; the threads column shows it); MIMALLOC_* and
//! GLIBC_TUNABLES are passed through, for allocator trials. Prints, does not assert. Run: `cargo bench --bench process`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::fake_api::{FakeApi, realistic_node, realistic_pod};
use tokio::time::Instant;

const PULLER: &str = env!("CARGO_BIN_EXE_kubernetes-image-puller");
const NS: &str = "kip-bench";
const SET: &str = "kip-bench";
const DEPLOYMENT: &str = "kip-bench-puller";
const IMAGES: &[(&str, &str)] = &[
    ("web", "registry.example.com/shop/web:2.14.1"),
    ("api", "registry.example.com/shop/api:2.14.1"),
    ("worker", "registry.example.com/shop/worker:2.14.1"),
    (
        "db",
        "docker.io/library/postgres@sha256:4d89c904835259bc58876520e56267ca07a4ebd6a027f7814bbbf91b50d685be",
    ),
    ("cache", "docker.io/library/redis:7.4"),
];
const MAX_PODS: usize = 800;
const REPAIRS: usize = 5;
const MIB: f64 = 1024.0 * 1024.0;
const GOAL_RSS: f64 = 12.0;
const GOAL_GROWTH: f64 = 1.0;
const GOAL_REPAIR: Duration = Duration::from_millis(500);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The child with the upstream variables (the env fallback: no config file).
fn puller(command: &str, kubeconfig: &Path) -> Child {
    let images: String = IMAGES.iter().map(|(n, i)| format!("{n}={i};")).collect();
    let mut cmd = Command::new(PULLER);
    cmd.arg(command)
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn")
        .env("IMAGES", images)
        .env("DAEMONSET_NAME", SET)
        .env("DEPLOYMENT_NAME", DEPLOYMENT)
        .env("NAMESPACE", NS)
        .env("CACHING_INTERVAL_HOURS", "1")
        .env("CACHING_MEMORY_REQUEST", "10Mi")
        .env("CACHING_MEMORY_LIMIT", "20Mi")
        .env("CACHING_CPU_REQUEST", ".05")
        .env("CACHING_CPU_LIMIT", ".2")
        .env("NODE_SELECTOR", "{}")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(n) = std::env::var("KIP_BENCH_WORKERS") {
        cmd.env("TOKIO_WORKER_THREADS", n);
    }
    // Allocator settings under trial (MIMALLOC_PURGE_DELAY=0, GLIBC_TUNABLES=...) reach the child.
    for (name, value) in std::env::vars().filter(|(n, _)| n.starts_with("MIMALLOC_") || n == "GLIBC_TUNABLES") {
        cmd.env(name, value);
    }
    cmd.spawn().expect("the release binary starts")
}

/// VmRSS of a live process, in bytes.
fn rss(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS:") * 1024.0
}

/// VmHWM (peak RSS) of a live process, in bytes. Read from /proc, not from wait4's ru_maxrss: that one
/// also holds the parent's RSS at the moment of the fork before exec (this process, with the fake server's
/// copies), so it is not the child's own.
fn hwm(pid: u32) -> f64 {
    proc_status_kib(pid, "VmHWM:") * 1024.0
}

fn proc_status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Waits for a child that ends by itself, sampling its VmHWM every millisecond (the kernel's high-water
/// mark only grows, so the last sample misses at most what the process adds in its last millisecond).
async fn peak_until_exit(mut child: Child) -> f64 {
    let pid = child.id();
    let mut peak = 0.0_f64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(hwm(pid));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    peak
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Figures {
    nodes: usize,
    first_create: Duration,
    repair_median: Duration,
    repair_max: Duration,
    steady: f64,
    /// Heap and stacks; the rest of the steady RSS is the binary's pages.
    steady_anon: f64,
    threads: f64,
    peak: f64,
    node_pages: usize,
    pods: usize,
    status_peak: f64,
    status_time: Duration,
}

async fn one_size(nodes: usize) -> Figures {
    let (api, _client, addr) = FakeApi::start_http().await;
    api.add_node_objects((0..nodes).map(realistic_node));
    api.add_deployment(NS, DEPLOYMENT);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig(dir.path(), &format!("http://{addr}"));

    let t0 = Instant::now();
    let mut child = puller("run", &kubeconfig);
    let first_create = wait_for("the first create", Duration::from_secs(30), || {
        api.daemonset_writes_since(t0).first().map(|r| r.at - t0)
    })
    .await;
    // The pass ends with the node count (after the writes); let it finish and the process settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node_pages = api
        .requests_since(t0)
        .iter()
        .filter(|r| r.path == "/api/v1/nodes")
        .count();

    let mut repairs = Vec::new();
    for _ in 0..REPAIRS {
        let t = Instant::now();
        assert!(api.delete(NS, SET), "the DaemonSet exists before the delete");
        let restored = wait_for("the repair", Duration::from_secs(10), || {
            api.daemonset_writes_since(t).first().map(|r| r.at - t)
        })
        .await;
        wait_for("the restored DaemonSet", Duration::from_secs(10), || {
            api.daemonset(NS, SET)
        })
        .await;
        repairs.push(restored);
        // Past the debounce window, so each delete is a first event, as a lone delete in a cluster is.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    repairs.sort();
    let steady = rss(child.id());
    let steady_anon = proc_status_kib(child.id(), "RssAnon:") * 1024.0;
    let threads = proc_status_kib(child.id(), "Threads:");
    let peak = hwm(child.id());
    assert!(child.try_wait().unwrap().is_none(), "the controller is still running");
    child.kill().unwrap();
    child.wait().unwrap();

    // `status` of the set with a running pod on each node (up to MAX_PODS).
    let pods = nodes.min(MAX_PODS);
    api.add_pods(NS, (0..pods).map(|n| realistic_pod(NS, SET, n, IMAGES)));
    let count = i32::try_from(nodes).unwrap();
    let ready = i32::try_from(pods).unwrap();
    assert!(api.set_daemonset_status(NS, SET, count, ready, ready));
    let t = Instant::now();
    let status = puller("status", &kubeconfig);
    let status_peak = peak_until_exit(status).await;
    let status_time = t.elapsed();
    let pod_pages = api
        .requests_since(t)
        .iter()
        .filter(|r| r.path.ends_with("/pods"))
        .count();
    assert!(pod_pages >= 1, "status reads the pods");

    Figures {
        nodes,
        first_create,
        repair_median: repairs[REPAIRS / 2],
        repair_max: repairs[REPAIRS - 1],
        steady,
        steady_anon,
        threads,
        peak,
        node_pages,
        pods,
        status_peak,
        status_time,
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() {
    // `cargo test --benches` builds this in debug and runs it without `--bench`: only check it starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bench process: skipped outside `cargo bench`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let workers = std::env::var("KIP_BENCH_WORKERS").unwrap_or_else(|_| "default".to_owned());
    println!(
        "the release binary as a child process (TOKIO_WORKER_THREADS: {workers}); upstream env vars, {} images",
        IMAGES.len()
    );
    println!(
        "{:>6} {:>11} {:>11} {:>9} {:>8} {:>13} {:>15} {:>11} {:>6} {:>12} {:>10}",
        "nodes",
        "peak RSS",
        "steady RSS",
        "anon",
        "threads",
        "first create",
        "repair med/max",
        "node pages",
        "pods",
        "status peak",
        "status"
    );
    let all: Vec<Figures> = [3usize, 500, 1000]
        .into_iter()
        .map(|nodes| {
            let f = runtime.block_on(one_size(nodes));
            println!(
                "{:>6} {:>8.2}MiB {:>8.2}MiB {:>6.2}MiB {:>8} {:>13.1?} {:>7.1?}/{:<7.1?} {:>11} {:>6} {:>9.2}MiB {:>10.1?}",
                f.nodes,
                f.peak / MIB,
                f.steady / MIB,
                f.steady_anon / MIB,
                f.threads,
                f.first_create,
                f.repair_median,
                f.repair_max,
                f.node_pages,
                f.pods,
                f.status_peak / MIB,
                f.status_time
            );
            f
        })
        .collect();
    let (small, mid, large) = (&all[0], &all[1], &all[2]);
    let worst = all.iter().map(|f| f.peak).fold(0.0, f64::max) / MIB;
    let growth = (large.peak - small.peak) / MIB;
    let status_worst = all.iter().map(|f| f.status_peak).fold(0.0, f64::max) / MIB;
    let status_growth = (large.status_peak - small.status_peak) / MIB;
    println!(
        "run: peak RSS at most {worst:.2} MiB (goal <= {GOAL_RSS} MiB): {}",
        met(worst <= GOAL_RSS)
    );
    println!(
        "run: peak RSS from 3 to 1,000 nodes {growth:+.2} MiB (goal <= +{GOAL_GROWTH} MiB): {}",
        met(growth <= GOAL_GROWTH)
    );
    println!(
        "run: repair at 500 nodes {:.1?} median, {:.1?} max (goal <= {GOAL_REPAIR:?}): {}",
        mid.repair_median,
        mid.repair_max,
        met(mid.repair_max <= GOAL_REPAIR)
    );
    println!(
        "run: first create at 500 nodes {:.1?} after the process starts (upstream 0.25 s on a real cluster at 503)",
        mid.first_create
    );
    println!(
        "status: peak RSS at most {status_worst:.2} MiB (goal <= {GOAL_RSS} MiB): {}; from {} to {} pods {status_growth:+.2} MiB (goal <= +{GOAL_GROWTH} MiB): {}",
        met(status_worst <= GOAL_RSS),
        small.pods,
        large.pods,
        met(status_growth <= GOAL_GROWTH)
    );
}
