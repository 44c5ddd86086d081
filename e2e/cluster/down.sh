#!/usr/bin/env bash
# Stops everything up.sh started: the real node first (its containers, kubelet, containerd, the registry), then
# kwok and the control plane. Puts back the sysctls kubelet changed. --purge also deletes the cluster directory
# (PKI, etcd data, images); the built binaries stay in the cache.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HERE/node.sh"

purge=0
[[ ${1:-} == --purge ]] && purge=1

stop kubelet
if running_pid containerd >/dev/null; then
  # Containers outlive kubelet and containerd (their shims are separate processes): end them first.
  for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 1
fi
stop containerd
pkill -KILL -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null || true
stop registry
stop kwok
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
restore_sysctls

# Mounts left by kubelet (volumes) and containerd (rootfs, shm, netns), deepest first.
if [[ -d $DIR ]]; then
  awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
fi
ip link delete kip0 2>/dev/null || true
for cidr in "$SERVICE_CIDR" "$KWOK_POD_CIDR"; do ip route del blackhole "$cidr" 2>/dev/null || true; done

if ((purge)); then
  log "deleting $DIR"
  rm -rf "$DIR"
fi
log "cluster down"
