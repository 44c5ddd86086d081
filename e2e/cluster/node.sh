# The real node of the e2e cluster: a registry on loopback, containerd and a kubelet (sourced by up.sh).
# shellcheck shell=bash

# Facts of this kind of VM a real node must handle:
# - nobody, root included, may lower a process's OOM score: containerd's and kubelet's defaults make every pod
#   fail with "runc create failed: ... can't get final child's PID from pipe: EOF", so both keep score 0;
# - cgroup v1 hybrid without systemd: cgroupfs driver, and kubelet told not to refuse cgroup v1;
# - kubelet sets these sysctls at start; down.sh puts the saved values back.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)

start_registry() {
  mkdir -p "$DIR/registry"
  cat >"$DIR/registry.yml" <<EOF
version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: $DIR/registry}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: $REGISTRY
EOF
  start registry docker-registry serve "$DIR/registry.yml"
  LOG_HINT=registry wait_for registry 30 curl -sf "http://$REGISTRY/v2/"
}

start_containerd() {
  mkdir -p "$DIR/containerd/certs.d/$REGISTRY" "$DIR/containerd/certs.d/_default" "$DIR/cni/net.d"
  # Every other registry host resolves to the loopback registry too: a reference to a public registry fails
  # there (not found) and never leaves the machine.
  cat >"$DIR/containerd/certs.d/_default/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$DIR/containerd/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF
  # No default route: cache pods need no network, and nothing from a pod can leave the machine.
  cat >"$DIR/cni/net.d/10-kip-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kip-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "kip0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
oom_score = 0
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/kip-e2e/pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/containerd/certs.d"
EOF
  start containerd containerd --config "$DIR/containerd/config.toml"
  LOG_HINT=containerd wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

# Only pods that tolerate it run on the real node: a test's pod meant for the simulated nodes never pulls there.
REAL_NODE_TAINT="kubernetes-image-puller.io/real-node=true:NoSchedule"

start_kubelet() {
  local taints="$REAL_NODE_TAINT${KIP_REAL_NODE_TAINTS:+,$KIP_REAL_NODE_TAINTS}"
  mkdir -p "$DIR/kubelet"
  if [[ ! -f $DIR/sysctl.orig ]]; then
    for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$DIR/sysctl.orig"
  fi
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
evictionPressureTransitionPeriod: 10s
EOF
  start kubelet "$BIN/kubelet" \
    --config "$DIR/kubelet.yaml" \
    --kubeconfig "$DIR/node-$REAL_NODE.kubeconfig" \
    --root-dir "$DIR/kubelet" \
    --hostname-override "$REAL_NODE" --node-ip 127.0.0.1 \
    --node-labels kubernetes-image-puller.io/node=real --register-with-taints "$taints"
  LOG_HINT=kubelet wait_for "node $REAL_NODE Ready" 120 \
    kubectl_admin wait --for=condition=Ready "node/$REAL_NODE" --timeout=1s
}

restore_sysctls() {
  [[ -f $DIR/sysctl.orig ]] || return 0
  while IFS= read -r line; do sysctl -q -w "$line" >/dev/null || true; done <"$DIR/sysctl.orig"
  rm -f "$DIR/sysctl.orig"
}
