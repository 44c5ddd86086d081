#!/usr/bin/env bash
# Stops or starts one component of a running e2e cluster, for tests of outages:
#   e2e/cluster/ctl.sh stop|start|restart kube-apiserver|kube-controller-manager|kube-scheduler|kwok|registry|kubelet|etcd
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HERE/control-plane.sh"
source "$HERE/node.sh"

action="${1:-}" component="${2:-}"
case "$component" in
  etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok | registry | kubelet) ;;
  *) die "unknown component '$component' (allowed: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, registry, kubelet)" ;;
esac
BIN="$("$HERE/build.sh")"
start_component() { "start_${component//-/_}"; }
case "$action" in
  stop) stop "$component" ;;
  start) start_component ;;
  restart)
    stop "$component"
    start_component
    ;;
  *) die "unknown action '$action' (allowed: stop, start, restart)" ;;
esac
