//! Controller figures against the in-process fake API server (tests/support/fake_api.rs): a real kube
//! client, watcher and config file, no cluster. Prints, does not assert.
//!
//! 1. reload-to-applied latency: config file written → DaemonSet carries the new spec (default debounce);
//!    the file swap → first apply request, and a DaemonSet delete event → the create request restoring it
//!    (goal: <= 20 ms each: the first event acts at once, only a burst after it is debounced);
//! 2. API calls per pass at steady state (watch events trigger passes; writes must be 0);
//! 3. scale: for 1, 10 and 100 sets and 10 to 1000 simulated nodes (pods in the fake), the first pass
//!    (creates), a steady-state pass and a health check (paged pod scan): time, API calls, and the
//!    controller's extra heap at its peak during the health check (flat as nodes grow: pods are read one
//!    page at a time and only a bounded summary is kept);
//! 4. nodes: the first pass with 3, 500 and 1000 realistic Nodes (50 cached images each): when the first
//!    create goes out and the peak extra heap (goal: flat, <= +1 MiB from 3 to 1000 nodes);
//! 5. ConfigMap edit → DaemonSet create: `--config-map`, an edit adding a set accepted by the API → the
//!    create (apply) request of its DaemonSet (no debounce: one watch event per edit);
//! 6. resident memory of this process;
//! 7. the warm gate: one step's survey (every node and cache pod read page by page into compact records)
//!    with 3 sets on 3, 500 and 1000 realistic Nodes and their realistic cache pods: time, requests, the
//!    peak extra heap (the answer pages dominate: flat beyond one page) and what the step holds after the
//!    reads (its compact records and verdicts: about 0.4 KB per node).
//!
//! Run: `cargo bench --bench controller` (`KIP_BENCH_ONLY=warm` runs only the warm gate's figures).

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kubernetes_image_puller::controller::{Controller, Settings};
use kubernetes_image_puller::k8s::Cluster;
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::reconcile::spec_hash_of;
use serde_json::json;
use support::fake_api::{FakeApi, realistic_node, realistic_pod};
use support::{NS, config_toml, rendered, set_toml};

/// Counts live heap bytes and their peak, to see what one operation holds at most.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; this one only forwards to System and counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// A controller with no environment variables and its own metrics, not started.
fn controller(client: kube::Client, settings: Settings) -> Controller {
    Controller::new(
        client,
        settings,
        Box::new(support::Vars::default()),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
}

fn settings(path: &std::path::Path, debounce: Duration) -> Settings {
    Settings {
        config_path: Some(path.to_path_buf()),
        reload_debounce: debounce,
        resync: Duration::from_secs(3600),
        leader_elect: false,
        pod_name: Some("kip-0".into()),
        pod_namespace: Some(NS.into()),
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    }
}

fn sets_config(sets: usize, images: usize, tag: usize) -> String {
    let sets: Vec<String> = (0..sets)
        .map(|s| {
            let images: Vec<(String, String)> = (0..images)
                .map(|i| (format!("img{i}"), format!("quay.io/kip/s{s}-i{i}:{tag}")))
                .collect();
            let refs: Vec<(&str, &str)> = images.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            set_toml(&format!("set{s}"), &refs)
        })
        .collect();
    config_toml(&sets)
}

fn write(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn reload_latency() {
    let (api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write(&path, &sets_config(3, 5, 0));
    let debounce = Duration::from_millis(200);
    let controller = controller(client, settings(&path, debounce));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller.run(rx));
    let wait_for = |tag: usize| {
        let want = rendered(&sets_config(3, 5, tag));
        let api = api.clone();
        async move {
            let t0 = Instant::now();
            loop {
                let done = want.iter().all(|d| {
                    api.daemonset(NS, d.metadata.name.as_deref().unwrap())
                        .as_ref()
                        .and_then(spec_hash_of)
                        .map(str::to_owned)
                        == spec_hash_of(d).map(str::to_owned)
                });
                if done || t0.elapsed() > Duration::from_secs(10) {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    assert!(wait_for(0).await, "initial config not applied");
    let mut samples = Vec::new();
    // The file swap (the rename, as the kubelet's `..data` swap) to the first DaemonSet write request.
    let mut swap_to_apply = Vec::new();
    for tag in 1..=20 {
        let aside = path.with_extension("tmp");
        std::fs::write(&aside, sets_config(3, 5, tag)).unwrap();
        let t0 = Instant::now();
        let swapped = tokio::time::Instant::now();
        std::fs::rename(&aside, &path).unwrap();
        if wait_for(tag).await {
            samples.push(t0.elapsed());
        }
        if let Some(first) = api.daemonset_writes_since(swapped).first() {
            swap_to_apply.push(first.at - swapped);
        }
        // Past the debounce window, so each edit is a first one (a burst is measured below).
        tokio::time::sleep(debounce + Duration::from_millis(50)).await;
    }
    swap_to_apply.sort();
    println!(
        "swap-to-apply-request (file rename -> first DaemonSet write, {} edits): median {:?}, max {:?}; goal <= 20 ms: {}",
        swap_to_apply.len(),
        percentile(&swap_to_apply, 0.5),
        swap_to_apply.last().unwrap(),
        met(*swap_to_apply.last().unwrap() <= Duration::from_millis(20))
    );

    // A DaemonSet deleted by someone else: the DELETED watch event to the create request restoring it.
    let mut delete_to_create = Vec::new();
    for _ in 0..20 {
        let deleted = tokio::time::Instant::now();
        assert!(api.delete(NS, "set0"));
        let t0 = Instant::now();
        while api.daemonset_writes_since(deleted).is_empty() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(first) = api.daemonset_writes_since(deleted).first() {
            delete_to_create.push(first.at - deleted);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    delete_to_create.sort();
    println!(
        "delete-to-create-request (DaemonSet deleted -> create request, {} repairs): median {:?}, max {:?}; goal <= 20 ms: {}",
        delete_to_create.len(),
        percentile(&delete_to_create, 0.5),
        delete_to_create.last().unwrap(),
        met(*delete_to_create.last().unwrap() <= Duration::from_millis(20))
    );
    samples.sort();
    println!(
        "reload-to-applied (3 sets x 5 images, debounce {debounce:?}, {} edits): median {:?}, p90 {:?}, max {:?}; target < 1 s + debounce: {}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples.last().unwrap(),
        if *samples.last().unwrap() < Duration::from_secs(1) + debounce {
            "MET"
        } else {
            "MISSED"
        }
    );

    // Steady state: status-only changes (as a rollout makes) trigger passes; count what they send.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = tokio::time::Instant::now();
    let metrics_before = api.requests().len();
    for i in 0..20 {
        api.edit(NS, "set0", |ds| {
            ds["status"] = json!({"numberReady": i, "desiredNumberScheduled": 20})
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let requests = api.requests_since(from);
    let writes = api.daemonset_writes_since(from).len();
    let non_watch = requests.iter().filter(|r| !r.is_watch()).count();
    println!(
        "steady state: 20 status changes -> {} API requests other than the open watch ({} total incl. watch), {writes} writes",
        non_watch,
        api.requests().len() - metrics_before
    );
    let _ = stop.send(true);
    let _ = task.await;
}

/// `--config-map`: each edit adds one set; time from the API accepting the edit to the create (apply)
/// request of the new set's DaemonSet reaching the server.
async fn config_map_latency() {
    const CM: &str = "k8s-image-puller";
    let (api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write(&path, &sets_config(1, 5, 0));
    api.put_configmap(NS, CM, &[("config.toml", &sets_config(1, 5, 0))]);
    let controller = controller(client, settings(&path, Duration::from_millis(200))).with_config_map(Some(CM.into()));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller.run(rx));
    let t0 = Instant::now();
    while api.daemonset(NS, "set0").is_none() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut samples = Vec::new();
    for sets in 2..=21 {
        let name = format!("set{}", sets - 1);
        let accepted = tokio::time::Instant::now();
        api.put_configmap(NS, CM, &[("config.toml", &sets_config(sets, 5, 0))]);
        let t0 = Instant::now();
        let create = loop {
            let found = api
                .daemonset_writes_since(accepted)
                .into_iter()
                .find(|r| r.path.ends_with(&format!("/daemonsets/{name}")));
            if found.is_some() || t0.elapsed() > Duration::from_secs(5) {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(r) = create {
            samples.push(r.at - accepted);
        }
        while api.daemonset(NS, &name).is_none() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    samples.sort();
    println!(
        "ConfigMap edit accepted -> DaemonSet create request ({} edits, each adding a set of 5 images): median {:?}, p90 {:?}, max {:?}; goal <= 100 ms: {}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples.last().unwrap(),
        if samples.len() == 20 && *samples.last().unwrap() <= Duration::from_millis(100) {
            "MET"
        } else {
            "MISSED"
        }
    );
    let _ = stop.send(true);
    let _ = task.await;
}

fn pods(sets: usize, nodes: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::with_capacity(sets * nodes);
    for s in 0..sets {
        for n in 0..nodes {
            // One node in 50 cannot pull one image.
            let waiting = (n % 50 == 0).then(|| {
                json!([{"name": "img0", "image": format!("quay.io/kip/s{s}-i0:0"), "ready": false, "restartCount": 0,
                        "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}}}])
            });
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("set{s}-{n}"), "namespace": NS,
                             "labels": {"app.kubernetes.io/name": "kip-cache", "kubernetes-image-puller/set": format!("set{s}")}},
                "spec": {"nodeName": format!("node-{n}"), "containers": []},
                "status": {"containerStatuses": waiting.unwrap_or(json!([]))}
            }));
        }
    }
    out
}

async fn scale() {
    println!(
        "{:>5} {:>6} {:>14} {:>10} {:>14} {:>10} {:>14} {:>10} {:>16}",
        "sets",
        "nodes",
        "first pass",
        "requests",
        "steady pass",
        "requests",
        "health check",
        "requests",
        "peak extra heap"
    );
    // 1 set up to 10000 nodes shows the bound: past one page (500 pods) the peak stays flat.
    let cases = [
        (1usize, 10usize),
        (1, 100),
        (1, 1000),
        (1, 10000),
        (10, 10),
        (10, 100),
        (10, 1000),
        (100, 10),
        (100, 100),
        (100, 1000),
    ];
    for (sets, nodes) in cases {
        {
            let (api, client) = FakeApi::start();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            write(&path, &sets_config(sets, 5, 0));
            let mut controller = controller(client.clone(), settings(&path, Duration::from_millis(10)));
            controller.reload().await;
            let cluster = Cluster::new(client, NS);

            let r0 = api.requests().len();
            let t0 = Instant::now();
            let first = controller.pass(&cluster, &[]).await;
            let first_time = t0.elapsed();
            let first_requests = api.requests().len() - r0;
            assert!(first.errors.is_empty(), "{:?}", first.errors);

            let owned = first.live;
            let r1 = api.requests().len();
            let t1 = Instant::now();
            let steady = controller.pass(&cluster, &owned).await;
            let steady_time = t1.elapsed();
            let steady_requests = api.requests().len() - r1;
            assert_eq!(steady.writes, 0);

            api.add_pods(NS, pods(sets, nodes));
            // Let the previous case's tasks finish freeing, so the baseline is quiet.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let r2 = api.requests().len();
            // The fake server runs in this process too; its own allocations are bounded by a page as well.
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let t2 = Instant::now();
            let healths = controller.health_check(&cluster, &owned, false).await;
            let health_time = t2.elapsed();
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            let health_requests = api.requests().len() - r2;
            let failing: usize = healths.iter().flat_map(|h| &h.failing).map(|f| f.node_count).sum();
            assert_eq!(failing, sets * nodes.div_ceil(50), "every failing pod counted");
            println!(
                "{sets:>5} {nodes:>6} {:>14?} {first_requests:>10} {:>14?} {steady_requests:>10} {:>14?} {health_requests:>10} {:>13.2}MiB",
                first_time,
                steady_time,
                health_time,
                mib(peak)
            );
        }
    }
}

/// The first pass of 3 new sets with realistic nodes in the cluster: when the first create request goes
/// out, and the controller's extra heap at its peak (the node count for the quota check included; the
/// fake server's answer pages are counted too).
async fn node_scale() {
    println!(
        "{:>6} {:>12} {:>22} {:>12} {:>11} {:>16}",
        "nodes", "node JSON", "first create request", "whole pass", "node pages", "peak extra heap"
    );
    let mut peaks = Vec::new();
    for nodes in [3usize, 500, 1000] {
        let (api, client) = FakeApi::start();
        let objects: Vec<serde_json::Value> = (0..nodes).map(realistic_node).collect();
        let json_size: usize = objects.iter().map(|n| serde_json::to_vec(n).unwrap().len()).sum();
        api.add_node_objects(objects);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write(&path, &sets_config(3, 5, 0));
        let mut controller = controller(client.clone(), settings(&path, Duration::from_millis(10)));
        controller.reload().await;
        let cluster = Cluster::new(client, NS);
        // Let the startup tasks settle, so the baseline is quiet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t0 = tokio::time::Instant::now();
        let report = controller.pass(&cluster, &[]).await;
        let whole = t0.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.created.len(), 3);
        let first_create = api.daemonset_writes_since(t0).first().map(|r| r.at - t0).unwrap();
        let pages = api
            .requests_since(t0)
            .iter()
            .filter(|r| r.path.ends_with("/nodes"))
            .count();
        assert!(pages >= 1, "the new sets' nodes are counted");
        println!(
            "{nodes:>6} {:>10.1}MB {:>22?} {:>12?} {pages:>11} {:>13.2}MiB",
            json_size as f64 / 1e6,
            first_create,
            whole,
            mib(peak)
        );
        peaks.push(peak);
    }
    let growth = peaks[2].saturating_sub(peaks[0]);
    // Not the controller's own figure: this process also holds the fake server's answer pages. The goal
    // (<= +1 MiB) is judged on the release binary alone by `cargo bench --bench process`.
    println!(
        "peak extra heap from 3 to 1000 nodes: +{:.2} MiB, fake server included (the controller alone: cargo bench --bench process)",
        mib(growth),
    );
}

/// A set on 1,000 nodes whose DaemonSet status flaps between ready and not (a pod crash-looping, a flaky
/// node) every 2 s for a minute, with the default settling delay: the looks at its pods (the first page of
/// each paged pod list) and the pod pages read, per minute. Goal: at most one look per settling delay.
async fn flapping_set_looks() {
    let (api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write(&path, &config_toml(&[set_toml("web", &[("web", "nginx:1.25")])]));
    let settle = kubernetes_image_puller::controller::FAILURE_SETTLE;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller(client, settings(&path, Duration::from_millis(50))).run(rx));
    while api.daemonset(NS, "web").is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pods = (0..1000).map(|i| {
        let failing = i % 200 == 3;
        let state = if failing {
            json!({"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}})
        } else {
            json!({"running": {}})
        };
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": NS, "labels": {
                kubernetes_image_puller::labels::NAME: kubernetes_image_puller::labels::CACHE_NAME,
                kubernetes_image_puller::labels::SET: "web"}},
            "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "web", "image": "nginx:1.25"}]},
            "status": {"containerStatuses": [{"name": "web", "image": "nginx:1.25", "imageID": "",
                "ready": !failing, "restartCount": 0, "state": state}]}})
    });
    api.add_pods(NS, pods);
    let window = Duration::from_secs(60);
    let start = tokio::time::Instant::now();
    let mut flips = 0u32;
    while start.elapsed() < window {
        let ready = if flips.is_multiple_of(2) { 995 } else { 1000 };
        api.set_daemonset_status(NS, "web", 1000, 1000, ready);
        flips += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let lists: Vec<_> = api
        .requests_since(start)
        .into_iter()
        .filter(|r| r.method == http::Method::GET && r.path.ends_with("/pods") && !r.is_watch())
        .collect();
    let looks = lists.iter().filter(|r| !r.query.contains_key("continue")).count();
    let bound = (window.as_secs() / settle.as_secs()) as usize;
    println!(
        "flapping set, 1,000 nodes, {flips} status changes in {window:?}, settle {settle:?}: {looks} looks per minute \
         ({} pod pages per minute); goal <= {bound} looks: {}",
        lists.len(),
        met(looks <= bound)
    );
    let _ = stop.send(true);
    let _ = task.await;
}

/// The warm gate's survey with 3 sets (one selecting every node, two a pool each) on realistic nodes with
/// realistic cache pods (every node warm).
async fn warm_survey_scale() {
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>12} {:>16} {:>14}",
        "nodes", "JSON read", "survey", "requests", "warm nodes", "peak extra heap", "held after"
    );
    let mut peaks = Vec::new();
    for nodes in [3usize, 500, 1000] {
        let (api, client) = FakeApi::start();
        let objects: Vec<serde_json::Value> = (0..nodes).map(realistic_node).collect();
        let mut json_size: usize = objects.iter().map(|n| serde_json::to_vec(n).unwrap().len()).sum();
        api.add_node_objects(objects);
        let images = [("img0", "quay.io/kip/img0:1"), ("img1", "quay.io/kip/img1:1")];
        let mut pods = Vec::new();
        for n in 0..nodes {
            pods.push(realistic_pod(NS, "all", n, &images));
            if n % 7 < 2 {
                pods.push(realistic_pod(NS, &format!("pool{}", n % 7), n, &images));
            }
        }
        json_size += pods.iter().map(|p| serde_json::to_vec(p).unwrap().len()).sum::<usize>();
        api.add_pods(NS, pods);
        let text = format!(
            "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n[warm_gate]\ntaint = \"kip/cold\"\n\
             [[sets]]\nname = \"all\"\nimages = {{ img0 = \"quay.io/kip/img0:1\", img1 = \"quay.io/kip/img1:1\" }}\n\
             tolerations = [{{ key = \"dedicated\", operator = \"Exists\" }}]\n\
             [[sets]]\nname = \"pool0\"\nnode_selector = {{ pool = \"pool-0\" }}\nimages = {{ img0 = \"quay.io/kip/img0:1\" }}\n\
             [[sets]]\nname = \"pool1\"\nnode_selector = {{ pool = \"pool-1\" }}\nimages = {{ img0 = \"quay.io/kip/img0:1\" }}\n"
        );
        let config = support::load(&text);
        let gate = config.warm_gate.clone().unwrap();
        let cluster = Cluster::new(client, NS);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t0 = tokio::time::Instant::now();
        let verdicts =
            kubernetes_image_puller::controller::survey(&cluster, &config, &[], &gate, jiff::Timestamp::now())
                .await
                .unwrap()
                .verdicts;
        let took = t0.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        // What the step keeps while it writes: the compact records and the verdicts.
        let held = LIVE.load(Ordering::Relaxed).saturating_sub(base);
        let requests = api.requests_since(t0).len();
        let warm = verdicts.iter().filter(|v| v.warm).count();
        assert_eq!(verdicts.len(), nodes, "every node selected by `all`");
        println!(
            "{nodes:>6} {:>10.1}MB {:>10?} {requests:>10} {warm:>12} {:>13.2}MiB {:>11.2}MiB",
            json_size as f64 / 1e6,
            took,
            mib(peak),
            mib(held)
        );
        peaks.push(peak);
    }
    println!(
        "warm gate survey, peak extra heap: +{:.2} MiB from 3 to 1000 nodes (3 nodes fill no page), +{:.2} MiB from 500 to 1000 (fake server's answer pages included)",
        mib(peaks[2].saturating_sub(peaks[0])),
        mib(peaks[2].saturating_sub(peaks[1]))
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("resident memory at start: {:.1} MiB", rss_mib());
        if std::env::var("KIP_BENCH_ONLY").as_deref() == Ok("warm") {
            warm_survey_scale().await;
            return;
        }
        reload_latency().await;
        config_map_latency().await;
        node_scale().await;
        flapping_set_looks().await;
        scale().await;
        warm_survey_scale().await;
        println!(
            "resident memory at the end (includes the fake server and its pods): {:.1} MiB",
            rss_mib()
        );
    });
}
