//! The warm gate against the fake API server: 500 nodes join carrying the startup taint; each gets the
//! `kubernetes-image-puller/ImagesCached` condition (False while its cache pods pull, True once they are
//! Ready), its taint goes once warm, with at most two status writes and one taint write per node; a node
//! cold past the timeout loses its taint anyway with a Warning Event; a node no set selects any more loses the
//! condition; and without the node permissions the gate is off with one warning per missing permission while
//! everything else works.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use kubernetes_image_puller::labels;
use kubernetes_image_puller::warmth::CONDITION_TYPE;
use serde_json::{Value, json};

use support::fake_api::FakeApi;
use support::logs::{LOGGING, Logs};
use support::{NS, Vars};

const TAINT: &str = "kubernetes-image-puller/cold";
const NODES: usize = 500;

fn config(timeout: &str) -> String {
    format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n\
         [warm_gate]\ntaint = \"{TAINT}\"\ntimeout = \"{timeout}\"\n\n\
         [[sets]]\nname = \"general\"\nimages = {{ java = \"quay.io/x/java:1\", go = \"quay.io/x/go:1\" }}\n\n\
         [[sets]]\nname = \"gpu\"\nnode_selector = {{ gpu = \"true\" }}\nimages = {{ cuda = \"quay.io/x/cuda:1\" }}\n"
    )
}

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn name(n: usize) -> String {
    format!("node-{n:04}")
}

/// A node that just joined: Ready, carrying the startup taint (and the kubelet's other conditions).
fn node(n: usize, ready_since: jiff::Timestamp) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name(n)});
    if n.is_multiple_of(5) {
        labels["gpu"] = json!("true");
    }
    let at = stamp(ready_since);
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name(n), "labels": labels, "creationTimestamp": at},
        "spec": {"taints": [{"key": TAINT, "effect": "NoSchedule"}]},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "lastTransitionTime": at, "reason": "KubeletHasSufficientMemory"},
            {"type": "Ready", "status": "True", "lastTransitionTime": at, "reason": "KubeletReady"}]}})
}

/// A cache pod of `set` on node `n`: pulling (containers waiting), or Ready since `ready`.
fn pod(set: &str, n: usize, images: &[&str], ready: Option<jiff::Timestamp>) -> Value {
    let scheduled = stamp(jiff::Timestamp::now());
    let statuses: Vec<Value> = images
        .iter()
        .map(|c| match ready {
            Some(_) => json!({"name": c, "image": c, "ready": true, "state": {"running": {}}}),
            None => json!({"name": c, "image": c, "ready": false, "state": {"waiting": {"reason": "PodInitializing"}}}),
        })
        .collect();
    let ready_condition = match ready {
        Some(at) => json!({"type": "Ready", "status": "True", "lastTransitionTime": stamp(at)}),
        None => json!({"type": "Ready", "status": "False", "lastTransitionTime": scheduled}),
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{set}-{}", name(n)), "namespace": NS,
                     "labels": {labels::NAME: labels::CACHE_NAME, labels::SET: set}},
        "spec": {"nodeName": name(n)},
        "status": {"phase": if ready.is_some() { "Running" } else { "Pending" },
                   "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}, ready_condition],
                   "containerStatuses": statuses}})
}

fn pods(n: usize, ready: Option<jiff::Timestamp>) -> Vec<Value> {
    let mut out = vec![pod("general", n, &["go", "java"], ready)];
    if n.is_multiple_of(5) {
        out.push(pod("gpu", n, &["cuda"], ready));
    }
    out
}

fn condition(node: &Value) -> Option<&Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == CONDITION_TYPE)
}

fn has_taint(node: &Value) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|l| l.iter().any(|t| t["key"] == TAINT))
}

/// Node writes per node: (status patches, other patches).
fn node_writes(api: &FakeApi) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in api.requests().iter().filter(|r| r.method == Method::PATCH) {
        let Some(rest) = r.path.strip_prefix("/api/v1/nodes/") else {
            continue;
        };
        let entry = out.entry(rest.trim_end_matches("/status").to_owned()).or_default();
        if rest.ends_with("/status") {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    out
}

/// The DaemonSet controller's view of the cluster: each set's status counts (a watch event of ours).
fn daemonset_status(api: &FakeApi, ready: bool) {
    let gpu = NODES.div_ceil(5) as i32;
    let all = NODES as i32;
    api.set_daemonset_status(NS, "general", all, all, if ready { all } else { 0 });
    api.set_daemonset_status(NS, "gpu", gpu, gpu, if ready { gpu } else { 0 });
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (tmp, path)
}

#[tokio::test]
async fn five_hundred_nodes_join_each_gets_its_condition_and_loses_its_taint_once_warm() {
    let (api, client) = FakeApi::start();
    let status_client = client.clone();
    let (_tmp, path) = write_config(&config("15m"));
    let ctl = support::boot_with(client, support::settings(Some(&path)), Vars::none(), |c| {
        c.with_warm_write_rate(5000, 5000)
    });
    support::wait_for(&api, "both DaemonSets", Duration::from_secs(5), || {
        api.daemonset(NS, "general").is_some() && api.daemonset(NS, "gpu").is_some()
    })
    .await;
    let tolerations = api
        .daemonset(NS, "gpu")
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .tolerations;
    assert!(
        tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some(TAINT) && t.effect.as_deref() == Some("NoSchedule")),
        "the cache pods tolerate the startup taint: {tolerations:?}"
    );

    // 500 nodes join; their cache pods are pulling.
    let joined = jiff::Timestamp::now();
    api.add_node_objects((0..NODES).map(|n| node(n, joined)));
    api.add_pods(NS, (0..NODES).flat_map(|n| pods(n, None)));
    daemonset_status(&api, false);
    support::wait_for(&api, "a False condition on every node", Duration::from_secs(20), || {
        api.nodes()
            .iter()
            .all(|n| condition(n).is_some_and(|c| c["status"] == "False"))
    })
    .await;
    let nodes = api.nodes();
    let first = condition(&nodes[0]).unwrap();
    assert_eq!(first["reason"], "ImagesMissing");
    let message = first["message"].as_str().unwrap();
    assert!(
        message.starts_with("general: go (pulling ") && message.contains("; gpu: cuda (pulling "),
        "{message}"
    );
    assert!(first["lastTransitionTime"].is_string());
    assert!(nodes.iter().all(has_taint), "cold nodes keep the startup taint");
    assert!(
        nodes
            .iter()
            .all(|n| n["status"]["conditions"].as_array().unwrap().len() == 3),
        "the kubelet's conditions stay (merged by type)"
    );
    assert_eq!(
        ctl.metrics.cold_nodes.get_or_create(&set("general")).get(),
        NODES as i64
    );
    // `status` stays compact: cold nodes listed up to a bound, the rest counted.
    let report = kubernetes_image_puller::controller::status(status_client, Some(&path), &Vars::none())
        .await
        .unwrap();
    let text = kubernetes_image_puller::commands::status::table(&report);
    assert!(
        text.contains(&format!("warm gate: 0 node(s) warm, {NODES} cold\n")),
        "{text}"
    );
    assert!(text.contains("cold: node-0000 since "), "{text}");
    assert!(text.contains("cold: and 450 more node(s)"), "{text}");

    // The images arrive: the cache pods turn Ready 30 s after the nodes did.
    let warm_at = joined + jiff::SignedDuration::from_secs(30);
    api.remove_pods(NS, |_| true);
    api.add_pods(NS, (0..NODES).flat_map(|n| pods(n, Some(warm_at))));
    daemonset_status(&api, true);
    support::wait_for(&api, "every node warm and untainted", Duration::from_secs(20), || {
        api.nodes()
            .iter()
            .all(|n| condition(n).is_some_and(|c| c["status"] == "True") && !has_taint(n))
    })
    .await;
    let nodes = api.nodes();
    assert_eq!(condition(&nodes[0]).unwrap()["message"], "general: ok; gpu: ok");
    assert!(
        nodes
            .iter()
            .all(|n| n["spec"]["taints"].as_array().is_some_and(Vec::is_empty)),
        "only the startup taint was there, and it went"
    );

    // A few more steps: nothing more is written.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let writes = node_writes(&api);
    assert_eq!(writes.len(), NODES, "every node written");
    let worst = writes.values().fold((0, 0), |a, w| (a.0.max(w.0), a.1.max(w.1)));
    assert_eq!(
        worst,
        (2, 1),
        "at most two status patches (False, True) and one taint patch per node"
    );
    let text = ctl.metrics.encode();
    assert!(
        text.contains(&format!("kip_node_warm_seconds_count{{set=\"general\"}} {NODES}")),
        "time to warm observed once per node: {}",
        text.lines()
            .filter(|l| l.contains("warm"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text.contains("kip_node_warm_seconds_sum{set=\"general\"} 15000.0"),
        "30 s each"
    );
    assert_eq!(ctl.metrics.cold_nodes.get_or_create(&set("general")).get(), 0);
    ctl.stop().await;
}

fn set(name: &str) -> kubernetes_image_puller::metrics::SetLabel {
    kubernetes_image_puller::metrics::SetLabel { set: name.into() }
}

#[tokio::test]
async fn a_node_cold_past_the_timeout_loses_its_taint_with_a_warning_event() {
    let (api, client) = FakeApi::start();
    let (_tmp, path) = write_config(&config("10m"));
    let ctl = support::boot(client, support::settings(Some(&path)), Vars::none());
    support::wait_for(&api, "the DaemonSets", Duration::from_secs(5), || {
        api.daemonset(NS, "general").is_some()
    })
    .await;
    // Ready 11 minutes ago, its images still pulling; another taint stays.
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(11);
    let mut n = node(1, long_ago);
    n["spec"]["taints"].as_array_mut().unwrap().insert(
        0,
        json!({"key": "dedicated", "value": "ci", "effect": "PreferNoSchedule"}),
    );
    api.add_node_objects([n]);
    api.add_pods(NS, pods(1, None));
    api.set_daemonset_status(NS, "general", 1, 1, 0);
    support::wait_for(&api, "the startup taint gone", Duration::from_secs(10), || {
        !has_taint(&api.nodes()[0])
    })
    .await;
    let node = &api.nodes()[0];
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "dedicated", "value": "ci", "effect": "PreferNoSchedule"}]),
        "only the startup taint removed"
    );
    assert_eq!(
        condition(node).unwrap()["status"],
        "False",
        "still cold: the condition says so"
    );
    support::wait_for(&api, "the Warning Event on the node", Duration::from_secs(5), || {
        api.events().iter().any(|e| e["reason"] == "WarmGateTimeout")
    })
    .await;
    let event = api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "WarmGateTimeout")
        .unwrap();
    assert_eq!(event["type"], "Warning");
    // On the set's DaemonSet, naming the node: the real API server refuses an Event about a node outside the
    // default namespace.
    assert_eq!(event["regarding"]["kind"], "DaemonSet");
    assert_eq!(event["regarding"]["name"], "general");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .starts_with(&format!("node {}: ", name(1))),
        "{event}"
    );
    assert!(
        event["note"].as_str().unwrap().contains("general: go (pulling"),
        "{event}"
    );
    assert_eq!(ctl.metrics.warm_timeouts.get_or_create(&set("general")).get(), 1);
    ctl.stop().await;
}

#[tokio::test]
async fn without_the_node_permissions_the_gate_is_off_with_one_warning_and_the_rest_works() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    let role: Value = serde_saphyr::from_str(&support::read_repo_file("tests/fixtures/rbac/chart-role.yaml")).unwrap();
    // The chart's Role, no ClusterRole: no nodes at all.
    api.authorize(role["rules"].as_array().unwrap().clone(), vec![], NS, "kip");
    api.add_node_objects((0..5).map(|n| node(n, jiff::Timestamp::now())));
    api.add_pods(NS, (0..5).flat_map(|n| pods(n, None)));
    let (_tmp, path) = write_config(&config("15m"));
    let ctl = support::boot(client, support::settings(Some(&path)), Vars::none());
    support::wait_for(&api, "both DaemonSets", Duration::from_secs(5), || {
        api.daemonset(NS, "general").is_some() && api.daemonset(NS, "gpu").is_some()
    })
    .await;
    api.set_daemonset_status(NS, "general", 5, 5, 0);
    // Past a warm step or two (settle, then tick).
    tokio::time::sleep(Duration::from_secs(4)).await;
    api.set_daemonset_status(NS, "general", 5, 5, 5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = logs.text();
    for (verb, resource) in [("patch", "nodes/status"), ("patch", "nodes"), ("list", "nodes")] {
        let needle = format!("permission missing: cannot {verb} {resource} (core)");
        assert_eq!(logs.count(&needle), 1, "one warning for {verb} {resource}:\n{text}");
    }
    assert!(
        api.requests().iter().all(|r| !r.path.starts_with("/api/v1/nodes")),
        "the gate is off: not one node request"
    );
    assert!(api.forbidden_requests().is_empty(), "nothing tried and refused");
    assert!(api.nodes().iter().all(|n| condition(n).is_none() && has_taint(n)));
    assert!(
        ctl.ready.load(std::sync::atomic::Ordering::Relaxed),
        "ready: the rest works"
    );
    let text = ctl.metrics.encode();
    assert!(
        text.contains("kip_permission_denied{verb=\"patch\",resource=\"nodes/status\"} 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("permission"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ctl.stop().await;
}

#[tokio::test]
async fn a_node_no_set_selects_any_more_loses_the_condition_and_keeps_the_kubelets() {
    let (api, client) = FakeApi::start();
    let text = format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n[warm_gate]\n\n\
         [[sets]]\nname = \"gpu\"\nnode_selector = {{ gpu = \"true\" }}\nimages = {{ cuda = \"quay.io/x/cuda:1\" }}\n"
    );
    let (_tmp, path) = write_config(&text);
    // Node 0 is a gpu node; node 1 is not, but carries the condition an earlier config (or label) left.
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
    let stale = json!({"type": CONDITION_TYPE, "status": "True", "reason": "ImagesCached", "message": "general: ok",
                       "lastTransitionTime": stamp(long_ago)});
    let (mut n0, mut n1) = (node(0, long_ago), node(1, long_ago));
    n1["status"]["conditions"].as_array_mut().unwrap().push(stale);
    // No startup taint here (the gate has none configured).
    n0["spec"] = json!({});
    n1["spec"] = json!({});
    api.add_node_objects([n0, n1]);
    api.add_pods(NS, vec![pod("gpu", 0, &["cuda"], Some(long_ago))]);
    let ctl = support::boot(client, support::settings(Some(&path)), Vars::none());
    support::wait_for(&api, "the stale condition removed", Duration::from_secs(10), || {
        let nodes = api.nodes();
        condition(&nodes[1]).is_none() && condition(&nodes[0]).is_some_and(|c| c["status"] == "True")
    })
    .await;
    let nodes = api.nodes();
    let kept: Vec<&Value> = nodes[1]["status"]["conditions"].as_array().unwrap().iter().collect();
    assert_eq!(kept.len(), 2, "the kubelet's conditions stay: {kept:?}");
    // Then node 0 loses its gpu label: its condition goes too.
    api.edit_node(&name(0), |n| {
        n["metadata"]["labels"].as_object_mut().unwrap().remove("gpu");
    });
    api.set_daemonset_status(NS, "gpu", 0, 0, 0);
    support::wait_for(&api, "node 0's condition removed", Duration::from_secs(15), || {
        condition(&api.nodes()[0]).is_none()
    })
    .await;
    let writes = node_writes(&api);
    assert_eq!(writes.get(&name(1)), Some(&(1, 0)), "one removal: {writes:?}");
    ctl.stop().await;
}
