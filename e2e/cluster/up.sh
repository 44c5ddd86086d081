#!/usr/bin/env bash
# Starts the e2e cluster, idempotently: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
# (simulated nodes), all on loopback. With --real-node also a registry on 127.0.0.1:5000, containerd and a real
# kubelet (node "kip-real", labelled kubernetes-image-puller.io/node=real), and the project's image and the test
# images built FROM scratch and pushed to the registry. Prints KUBECONFIG=<path> (cluster admin) last.
#
#   e2e/cluster/up.sh [--real-node] [--fake-nodes N]
#   e2e/cluster/down.sh [--purge]
#
# State lives in $KIP_CLUSTER_DIR (default /tmp/kip-cluster); binaries are built once per go.sum (build.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HERE/pki.sh"
source "$HERE/control-plane.sh"
source "$HERE/node.sh"

real_node=0
fake_nodes=2
while (($#)); do
  case "$1" in
    --real-node) real_node=1 ;;
    --fake-nodes)
      fake_nodes="$2"
      shift
      ;;
    -h | --help)
      sed -n '2,10p' "$0"
      exit 0
      ;;
    *) die "unknown argument: $1 (allowed: --real-node, --fake-nodes N)" ;;
  esac
  shift
done
[[ $(id -u) -eq 0 ]] || die "run as root: the real node needs containerd, cgroups and network namespaces"

# Debian packages, installed only when one is missing.
packages=(openssl curl)
commands=(openssl curl)
if ((real_node)); then
  packages+=(containerd runc containernetworking-plugins docker-registry buildah busybox-static iptables iproute2)
  commands+=(containerd runc /usr/lib/cni/bridge docker-registry buildah /bin/busybox iptables ip)
fi
missing=0
for c in "${commands[@]}"; do command -v "$c" >/dev/null 2>&1 || [[ -x $c ]] || missing=1; done
if ((missing)); then
  log "installing Debian packages: ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

BIN="$("$HERE/build.sh")"
# Nothing addressed to the Service range or to kwok's simulated pod IPs may leave the machine (the API server
# would dial a Service's endpoints for a webhook): both are routed nowhere.
for cidr in "$SERVICE_CIDR" "$KWOK_POD_CIDR"; do
  ip route replace blackhole "$cidr" 2>/dev/null || log "cannot add a blackhole route for $cidr"
done
mkdir -p "$DIR"/{logs,pids,etcd}
make_pki

start_etcd
start_kube_apiserver
start_kube_controller_manager
start_kube_scheduler
start_kwok
LOG_HINT=kube-controller-manager wait_for "the default ServiceAccount" 60 kubectl_admin -n default get serviceaccount default

for i in $(seq 0 $((fake_nodes - 1))); do
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kip-fake-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kip-fake-$i, kubernetes.io/os: linux, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
done
if ((fake_nodes > 0)); then
  LOG_HINT=kwok wait_for "simulated nodes Ready" 60 \
    kubectl_admin wait --for=condition=Ready node -l type=kwok --timeout=1s
fi

if ((real_node)); then
  start_registry
  start_containerd
  "$HERE/images.sh"
  start_kubelet
fi

log "cluster up: $(kubectl_admin get nodes --no-headers | awk '{print $1"="$2}' | tr '\n' ' ')"
echo "KUBECONFIG=$DIR/admin.kubeconfig"
