# Shared by up.sh, down.sh and images.sh: where the cluster lives and how its processes are started and stopped.
# shellcheck shell=bash

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# Everything the cluster writes: PKI, kubeconfigs, etcd data, containerd and kubelet state, logs, pid files.
DIR="${KIP_CLUSTER_DIR:-/tmp/kip-cluster}"
API_PORT="${KIP_API_PORT:-6443}"
ETCD_PORT="${KIP_ETCD_PORT:-2379}"
REGISTRY="${KIP_REGISTRY:-127.0.0.1:5000}"
REAL_NODE="kip-real"
CONTAINERD_SOCK="$DIR/containerd/containerd.sock"
# Service IPs are never routed anywhere: no kube-proxy runs, and the pods' network has no default route.
SERVICE_CIDR="10.96.0.0/16"
POD_SUBNET="10.88.0.0/16"
# The pod IPs kwok gives pods on simulated nodes: never a real host.
KWOK_POD_CIDR="10.0.0.0/16"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
  printf '[cluster] error: %s\n' "$*" >&2
  exit 1
}

# The pid of a process this harness started, if it still runs.
running_pid() {
  local pid_file="$DIR/pids/$1.pid" pid
  [[ -f $pid_file ]] || return 1
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# start NAME CMD...: runs CMD in its own session, output to logs/NAME.log, unless NAME already runs.
start() {
  local name="$1"
  shift
  if running_pid "$name" >/dev/null; then
    log "$name already running"
    return 0
  fi
  mkdir -p "$DIR/logs" "$DIR/pids"
  log "starting $name"
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name.pid"
}

# stop NAME: SIGTERM, then SIGKILL after 10 s.
stop() {
  local name="$1" pid i
  pid="$(running_pid "$name")" || {
    rm -f "$DIR/pids/$name.pid"
    return 0
  }
  log "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.2 s; on time-out shows the log named by LOG_HINT and fails.
wait_for() {
  local what="$1" seconds="$2" deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what not ready after ${seconds}s"
      if [[ -n ${LOG_HINT:-} && -f $DIR/logs/$LOG_HINT.log ]]; then
        tail -n 30 "$DIR/logs/$LOG_HINT.log" >&2
      fi
      return 1
    fi
    sleep 0.2
  done
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
