//! Which image fails, and why, within the settling delay of a DaemonSet status showing unready pods, against
//! the stateful fake API server running the real loop: the failing image's metric, log line and Event appear
//! without waiting for the health check, clear when the set recovers, and a flapping set on 1,000 nodes is
//! looked at no more than once per settling delay.

mod support;

use std::time::Duration;

use http::Method;
use kubernetes_image_puller::labels;
use serde_json::{Value, json};
use support::fake_api::FakeApi;
use support::{NS, Vars, config_toml, set_toml};
use tokio::time::Instant;

const IMAGE: &str = "nginx:1.25";
const SERIES: &str = "kip_image_failing_nodes{set=\"web\",image=\"nginx:1.25\"}";

/// Set `web`'s pod on node `i`: running, or waiting in ImagePullBackOff as the kubelet reports it.
fn pod(i: usize, failing: bool) -> Value {
    let state = if failing {
        json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nginx:1.25\": manifest unknown"}})
    } else {
        json!({"running": {}})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i}"), "namespace": NS,
                     "labels": {labels::NAME: labels::CACHE_NAME, labels::SET: "web"}},
        "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "web", "image": IMAGE}]},
        "status": {"containerStatuses": [{"name": "web", "image": IMAGE, "imageID": "",
                   "ready": !failing, "restartCount": 0, "state": state}]},
    })
}

/// The controller on set `web` with a short settling delay, its DaemonSet created; the config's tempdir.
async fn started(api: &FakeApi, client: kube::Client, settle: Duration) -> (support::Booted, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_toml(&[set_toml("web", &[("web", IMAGE)])])).unwrap();
    let settings = kubernetes_image_puller::controller::Settings {
        failure_settle: settle,
        plain_http_registries: Vec::new(),
        ..support::settings(Some(&path))
    };
    let booted = support::boot(client, settings, Vars::default());
    support::wait_for(api, "web created", Duration::from_secs(5), || {
        api.daemonset(NS, "web").is_some()
    })
    .await;
    (booted, dir)
}

/// Starts of a pod list (its first page), since `t`: one per look.
fn pod_lists_since(api: &FakeApi, t: Instant) -> (usize, usize) {
    let lists: Vec<_> = api
        .requests_since(t)
        .into_iter()
        .filter(|r| r.method == Method::GET && r.path.ends_with("/pods") && !r.is_watch())
        .collect();
    let looks = lists.iter().filter(|r| !r.query.contains_key("continue")).count();
    (looks, lists.len())
}

#[tokio::test]
async fn an_unready_set_names_its_failing_image_after_the_settling_delay_and_clears_when_ready() {
    let (api, client) = FakeApi::start();
    let settle = Duration::from_millis(300);
    let (booted, _dir) = started(&api, client, settle).await;
    api.add_pods(NS, (0..3).map(|i| pod(i, i == 1)));

    // The DaemonSet controller's status: 3 nodes, one pod not ready.
    let unready = Instant::now();
    assert!(api.set_daemonset_status(NS, "web", 3, 3, 2));
    let metric = format!("{SERIES} 1");
    support::wait_for(&api, "the failing image's metric", Duration::from_secs(5), || {
        booted.metrics.encode().contains(&metric)
    })
    .await;
    let took = unready.elapsed();
    assert!(took >= settle, "looked before the settling delay: {took:?}");
    println!("unready status -> failing image in the metrics: {took:?} (settle {settle:?})");
    let notes: Vec<String> = api
        .events()
        .iter()
        .filter(|e| e["reason"] == "ImageNotCached")
        .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("image nginx:1.25 (web): ImagePullBackOff on 1 node(s): node-1"),
        "{notes:?}"
    );

    // Recovered: the pod replaced and Ready, the status says so; the series goes at once.
    api.remove_pods(NS, |p| p["metadata"]["name"] == "web-1");
    api.add_pods(NS, [pod(1, false)]);
    let ready = Instant::now();
    assert!(api.set_daemonset_status(NS, "web", 3, 3, 3));
    support::wait_for(&api, "the failing image cleared", Duration::from_secs(5), || {
        !booted.metrics.encode().contains(SERIES)
    })
    .await;
    println!("ready status -> failing image cleared: {:?}", ready.elapsed());
    booted.stop().await;
}

#[tokio::test]
async fn a_set_still_unready_is_looked_at_again_with_backoff() {
    let (api, client) = FakeApi::start();
    let settle = Duration::from_millis(200);
    let (booted, _dir) = started(&api, client, settle).await;
    api.add_pods(NS, (0..2).map(|i| pod(i, i == 0)));
    let t = Instant::now();
    assert!(api.set_daemonset_status(NS, "web", 2, 2, 1));
    // Looks at about 0.2 s, then 0.2 + 0.4 = 0.6 s, then 0.6 + 0.8 = 1.4 s; none more before 3 s.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (looks, _) = pod_lists_since(&api, t);
    assert_eq!(looks, 3, "looks at 0.2, 0.6 and 1.4 s");
    assert!(booted.metrics.encode().contains(&format!("{SERIES} 1")));
    booted.stop().await;
}

#[tokio::test]
async fn a_flapping_set_on_1000_nodes_is_looked_at_once_per_settling_delay_at_most() {
    let (api, client) = FakeApi::start();
    let settle = Duration::from_millis(200);
    let (booted, _dir) = started(&api, client, settle).await;
    api.add_pods(NS, (0..1000).map(|i| pod(i, i % 200 == 3)));
    let window = Duration::from_secs(2);
    let t = Instant::now();
    let mut flips = 0;
    while t.elapsed() < window {
        let ready = if flips % 2 == 0 { 995 } else { 1000 };
        assert!(api.set_daemonset_status(NS, "web", 1000, 1000, ready));
        flips += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (looks, pages) = pod_lists_since(&api, t);
    let bound = (window.as_millis() / settle.as_millis()) as usize;
    println!("flapping set on 1,000 nodes: {flips} status changes in {window:?}, {looks} looks ({pages} pod pages)");
    assert!(looks >= 1, "the flapping set was never looked at");
    assert!(
        looks <= bound,
        "{looks} looks in {window:?}: more than one per {settle:?}"
    );
    booted.stop().await;
}
