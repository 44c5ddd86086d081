//! Objects as a real cluster holds them, for benches that must weigh what the controller reads: a Node
//! with its cached images, a DaemonSet pod with its container statuses and managedFields.

use serde_json::{Value, json};

/// A Node as a real kubelet reports it: labels, conditions, addresses, managedFields and 50 cached images
/// with ~100-byte names (about 12 KB of JSON).
pub fn realistic_node(n: usize) -> Value {
    let images: Vec<Value> = (0..50)
        .map(|i| {
            json!({"names": [
                format!("registry.example.com/platform-team/service-{i:02}@sha256:{:064x}", n * 100 + i),
                format!("registry.example.com/platform-team/service-{i:02}:v1.{i}.{n}-build-000000000000"),
            ], "sizeBytes": 123_456_789 + i})
        })
        .collect();
    let conditions: Vec<Value> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        .iter()
        .map(|t| {
            json!({"type": t, "status": "False", "lastHeartbeatTime": "2026-11-26T10:00:00Z",
                        "lastTransitionTime": "2026-11-01T10:00:00Z", "reason": format!("Kubelet{t}"),
                        "message": "kubelet has sufficient resources available on this node"})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": node_name(n), "uid": format!("00000000-0000-4000-8000-{n:012}"),
            "labels": {"kubernetes.io/hostname": node_name(n), "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m6i.2xlarge",
                       "topology.kubernetes.io/zone": format!("eu-west-1{}", ["a", "b", "c"][n % 3]),
                       "pool": format!("pool-{}", n % 7)},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-26T10:00:00Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:images": {}, "f:conditions": {}, "f:nodeInfo": {}}}}]
        },
        "spec": {"podCIDR": format!("10.{}.{}.0/24", n / 256, n % 256), "providerID": format!("aws:///eu-west-1a/i-{n:017x}"),
                 "taints": if n.is_multiple_of(10) { json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]) } else { json!([]) }},
        "status": {
            "capacity": {"cpu": "8", "memory": "32000000Ki", "pods": "110"},
            "allocatable": {"cpu": "7910m", "memory": "31000000Ki", "pods": "110"},
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", n / 256, n % 256)},
                          {"type": "Hostname", "address": node_name(n)}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2.0.0",
                         "osImage": "Bottlerocket OS 1.30", "kernelVersion": "6.1.0", "architecture": "amd64",
                         "operatingSystem": "linux", "machineID": "0", "systemUUID": "0", "bootID": "0",
                         "kubeProxyVersion": "v1.33.0"},
            "images": images
        }
    })
}

pub fn node_name(n: usize) -> String {
    format!("node-{n:05}")
}

/// A running pod of the DaemonSet `set` (labels as rendered) on node `n`, one cache container per
/// `(name, image)`: spec, the DaemonSet controller's tolerations and affinity, container statuses and
/// managedFields as a real API server returns them (about 1.5 KB per container).
pub fn realistic_pod(namespace: &str, set: &str, n: usize, images: &[(&str, &str)]) -> Value {
    let resources = json!({"requests": {"cpu": "50m", "memory": "10Mi"}, "limits": {"cpu": "200m", "memory": "20Mi"}});
    let security = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "privileged": false,
                          "readOnlyRootFilesystem": true, "runAsNonRoot": true});
    let containers: Vec<Value> = images
        .iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "command": ["/kip/sleep"], "args": ["720h"],
                   "imagePullPolicy": "Always", "resources": resources, "securityContext": security,
                   "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                   "volumeMounts": [{"name": "kip", "mountPath": "/kip", "readOnly": true},
                                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]})
        })
        .collect();
    let status = |name: &str, image: &str| {
        json!({"name": name, "image": image, "imageID": format!("{image}@sha256:{:064x}", n),
               "containerID": format!("containerd://{:064x}", n * 1000 + name.len()),
               "ready": true, "restartCount": 0, "started": true,
               "state": {"running": {"startedAt": "2026-11-26T10:00:05Z"}}, "lastState": {}})
    };
    let statuses: Vec<Value> = images.iter().map(|(name, image)| status(name, image)).collect();
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-11-26T10:00:06Z"}))
    .collect();
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{set}-{n:05x}"), "namespace": namespace, "uid": format!("10000000-0000-4000-8000-{n:012}"),
            "generateName": format!("{set}-"), "resourceVersion": format!("{}", 1000 + n),
            "creationTimestamp": "2026-11-26T10:00:00Z",
            "labels": {"app.kubernetes.io/name": "kip-cache", "kubernetes-image-puller/set": set,
                       "app.kubernetes.io/managed-by": "kubernetes-image-puller", "app.kubernetes.io/part-of": "kubernetes-image-puller",
                       "controller-revision-hash": "6d9f8b7c5d", "pod-template-generation": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": set,
                                 "uid": "20000000-0000-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-11-26T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {}, "f:affinity": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-26T10:00:06Z", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}}}}]
        },
        "spec": {
            "nodeName": node_name(n),
            "initContainers": [{"name": "kip-install", "image": "quay.io/example/kubernetes-image-puller:1.0.0",
                                "command": ["/bin/cp", "/bin/sleep", "/kip/sleep"], "resources": resources, "securityContext": security}],
            "containers": containers,
            "volumes": [{"name": "kip", "emptyDir": {"sizeLimit": "16Mi"}},
                        {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name(n)]}]}]}}},
            "tolerations": [toleration("node.kubernetes.io/not-ready"), toleration("node.kubernetes.io/unreachable"),
                            toleration("node.kubernetes.io/disk-pressure"), toleration("node.kubernetes.io/memory-pressure"),
                            toleration("node.kubernetes.io/pid-pressure"), toleration("node.kubernetes.io/unschedulable")],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 5, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "schedulerName": "default-scheduler", "priority": 0,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}}
        },
        "status": {
            "phase": "Running", "hostIP": format!("10.0.{}.{}", n / 256, n % 256), "podIP": format!("10.1.{}.{}", n / 256, n % 256),
            "startTime": "2026-11-26T10:00:00Z", "qosClass": "Burstable",
            "conditions": conditions,
            "initContainerStatuses": [{"name": "kip-install", "image": "quay.io/example/kubernetes-image-puller:1.0.0",
                                       "ready": true, "restartCount": 0, "started": false,
                                       "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": statuses
        }
    })
}
