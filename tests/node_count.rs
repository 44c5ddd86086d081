//! Counting the nodes a new set will run on (for its quota check): small pages, only labels and taints
//! read, node selectors and tolerations applied as the scheduler does.

mod support;

use kubernetes_image_puller::k8s::{Cluster, NODE_PAGE};
use kubernetes_image_puller::status::matching_nodes;
use serde_json::json;
use support::fake_api::FakeApi;
use support::{NS, load};

/// A node with a pool label, maybe a GPU taint, and a long cached-images list the count never needs.
fn node(n: usize) -> serde_json::Value {
    let taints = if n.is_multiple_of(4) {
        json!([{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}])
    } else {
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])
    };
    let images: Vec<_> = (0..50)
        .map(|i| json!({"names": [format!("registry.example.com/team/image-{i}:v{n}")], "sizeBytes": 1000 + i}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node-{n}"), "labels": {"pool": format!("pool-{}", n % 3)},
                        "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
           "spec": {"taints": taints},
           "status": {"images": images}})
}

#[tokio::test]
async fn counts_matching_nodes_in_small_pages() {
    let (api, client) = FakeApi::start();
    let total = 2 * NODE_PAGE as usize + 7;
    api.add_node_objects((0..total).map(node));
    let config = load(&format!(
        "namespace = \"{NS}\"\nkip_image = \"quay.io/kip/kip:1\"\n\n\
         [[sets]]\nname = \"all\"\nimages = {{ a = \"quay.io/x/a:1\" }}\n\
         tolerations = [{{ key = \"nvidia.com/gpu\", operator = \"Exists\" }}]\n\n\
         [[sets]]\nname = \"plain\"\nimages = {{ a = \"quay.io/x/a:1\" }}\n\n\
         [[sets]]\nname = \"pool0\"\nimages = {{ a = \"quay.io/x/a:1\" }}\nnode_selector = {{ pool = \"pool-0\" }}\n"
    ));
    let cluster = Cluster::new(client, NS);
    let counts = matching_nodes(&cluster, &config).await.unwrap();

    let gpu = (0..total).filter(|n| n % 4 == 0).count() as u64;
    let pool0_plain = (0..total).filter(|n| n % 3 == 0 && n % 4 != 0).count() as u64;
    assert_eq!(
        counts,
        [total as u64, total as u64 - gpu, pool0_plain],
        "all: tolerates the GPU taint (condition taints are tolerated by every DaemonSet pod); \
         plain: not on GPU nodes; pool0: selected and untainted"
    );
    let pages: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/nodes")
        .collect();
    assert_eq!(pages.len(), total.div_ceil(NODE_PAGE as usize));
    assert!(
        pages
            .iter()
            .all(|r| r.query.get("limit") == Some(&NODE_PAGE.to_string()))
    );
}
