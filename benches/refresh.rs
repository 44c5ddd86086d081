//! The digest check at steady state: 500 simulated nodes x 10 moving tags, nothing pushed. The controller's
//! own code (registry resolver, paged pod tally, refresh plan) against the in-process fake API server
//! (tests/support/fake_api.rs) and a registry on loopback that counts what it is asked. Prints, per check
//! interval: manifest requests at the registry, pods created and deleted at the API (refresh pods and
//! replaced cache pods: each a container restart on a node), other API calls, time, and the controller's
//! peak extra heap. Goal: 10 HEADs and 0 restarts per interval. Then one tag pushed anew: the refresh
//! plan's first step (refresh pods created, at most 10 per set at once).
//!
//! Run: `cargo bench --bench refresh`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use kubernetes_image_puller::controller::Controller;
use kubernetes_image_puller::k8s::Cluster;
use kubernetes_image_puller::metrics::Metrics;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use support::NS;
use support::fake_api::FakeApi;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: usize = 500;
const IMAGES: usize = 10;

static HEADS: AtomicUsize = AtomicUsize::new(0);
static GETS: AtomicUsize = AtomicUsize::new(0);
/// Bumped to "push" new content: every tag's digest changes.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// The digest the counting registry serves for a manifest path now.
fn digest_of(path: &str) -> String {
    let g = GENERATION.load(Ordering::Relaxed);
    let sum = Sha256::digest(format!("{path}#{g}").as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

async fn registry(req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if !path.contains("/manifests/") {
        return Response::builder().status(StatusCode::OK).body(Body::empty()).unwrap();
    }
    match *req.method() {
        Method::HEAD => HEADS.fetch_add(1, Ordering::Relaxed),
        _ => GETS.fetch_add(1, Ordering::Relaxed),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("Docker-Content-Digest", digest_of(&path))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .header("Content-Length", "2")
        .body(Body::from("{}"))
        .unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(registry);
        axum::serve(listener, app).await.unwrap();
    });

    let (api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let images: Vec<String> = (0..IMAGES)
        .map(|i| format!("img{i} = \"{host}/bench/img{i}:latest\""))
        .collect();
    std::fs::write(
        &path,
        format!(
            "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n[[sets]]\nname = \"bench\"\nimages = {{ {} }}\n",
            images.join(", ")
        ),
    )
    .unwrap();
    let mut settings = support::settings(Some(&path));
    settings.plain_http_registries = vec![host.clone()];
    let mut controller = Controller::new(
        client.clone(),
        settings,
        Box::new(support::Vars::default()),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    );
    controller.reload().await;
    let cluster = Cluster::new(client, NS);
    let first = controller.pass(&cluster, &[]).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let owned = first.live;

    // Every node's cache pod runs the registry's digest of each image.
    let pods = (0..NODES).map(|n| {
        let statuses: Vec<serde_json::Value> = (0..IMAGES)
            .map(|i| {
                let reference = format!("{host}/bench/img{i}:latest");
                let digest = digest_of(&format!("/v2/bench/img{i}/manifests/latest"));
                json!({"name": format!("img{i}"), "image": reference, "ready": true, "restartCount": 0,
                       "imageID": format!("{host}/bench/img{i}@{digest}"), "state": {"running": {}}})
            })
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("bench-{n}"), "namespace": NS,
                         "labels": {"app.kubernetes.io/name": "kip-cache", "kubernetes-image-puller/set": "bench",
                                    "app.kubernetes.io/managed-by": "kubernetes-image-puller"}},
            "spec": {"nodeName": format!("node-{n}"), "containers": []},
            "status": {"phase": "Running", "containerStatuses": statuses}
        })
    });
    api.add_pods(NS, pods);

    println!("digest check, {NODES} nodes x {IMAGES} moving tags, nothing pushed (one check per interval):");
    println!(
        "{:>9} {:>14} {:>10} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "interval", "manifest HEAD", "GET", "pods created", "pods deleted", "other API", "time", "peak heap"
    );
    for interval in 1..=3 {
        let (h0, g0, r0) = (
            HEADS.load(Ordering::Relaxed),
            GETS.load(Ordering::Relaxed),
            api.requests().len(),
        );
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let going = controller.digest_check(&cluster, &owned, true).await;
        let took = t.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let requests: Vec<_> = api.requests().into_iter().skip(r0).collect();
        let created = requests
            .iter()
            .filter(|r| r.method == http::Method::POST && r.path.ends_with("/pods"))
            .count();
        let deleted = requests
            .iter()
            .filter(|r| r.method == http::Method::DELETE && r.path.contains("/pods/"))
            .count();
        assert!(!going, "nothing pushed, yet refreshes are going");
        println!(
            "{interval:>9} {:>14} {:>10} {created:>12} {deleted:>12} {:>14} {took:>12.1?} {:>9.2} MiB",
            HEADS.load(Ordering::Relaxed) - h0,
            GETS.load(Ordering::Relaxed) - g0,
            requests.len() - created - deleted,
            peak as f64 / 1_048_576.0
        );
    }

    GENERATION.fetch_add(1, Ordering::Relaxed);
    let (h0, r0) = (HEADS.load(Ordering::Relaxed), api.requests().len());
    let t = Instant::now();
    let going = controller.digest_check(&cluster, &owned, true).await;
    let requests: Vec<_> = api.requests().into_iter().skip(r0).collect();
    let created = requests
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path.ends_with("/pods"))
        .count();
    println!(
        "every tag pushed anew: {} manifest HEAD, {created} refresh pods created in the first step (at most 10 per set at once), refreshes going: {going}, {:.1?}",
        HEADS.load(Ordering::Relaxed) - h0,
        t.elapsed()
    );
}
