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
