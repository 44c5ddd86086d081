#!/usr/bin/env bash
# The e2e suite against the real-cluster harness: starts it (e2e/cluster/up.sh --real-node: control plane,
# simulated nodes, a real kubelet with containerd, the loopback registry with this project's image built
# from the Dockerfile's final stage), then runs `cargo test --test e2e` one test at a time against it, and the
# real-cluster bench (e2e/bench.rs).
#
# Usage: e2e/run-e2e.sh [--down]     --down: stop the harness at the end (also on failure)
#
# In CI (CI=true) a harness that cannot start, or a skipped test, is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

down=0
for arg in "$@"; do
  case "$arg" in
    --down) down=1 ;;
    -h | --help)
      sed -n '2,8p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (allowed: --down)" >&2
      exit 2
      ;;
  esac
done

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    dir="${KIP_CLUSTER_DIR:-/tmp/kip-cluster}"
    echo "--- e2e failed (exit $rc); harness logs in $dir/logs; last kubelet and apiserver lines:" >&2
    tail -n 20 "$dir/logs/kubelet.log" "$dir/logs/kube-apiserver.log" >&2 2>/dev/null || true
  fi
  if ((down)); then
    bash e2e/cluster/down.sh || true
  fi
}
trap cleanup EXIT

echo "--- harness: e2e/cluster/up.sh --real-node"
kubeconfig_line="$(bash e2e/cluster/up.sh --real-node | tail -n 1)"
export "${kubeconfig_line?}"
registry="${KIP_REGISTRY:-127.0.0.1:5000}"
target="$(rustc -vV | awk '/^host:/ {print $2}')"

export KIP_E2E_REGISTRY="$registry"
export KIP_E2E_IMAGE="$registry/kip-e2e/kubernetes-image-puller:e2e"
export KIP_E2E_BIN="$PWD/target/$target/release/kubernetes-image-puller"
export KIP_E2E_REQUIRE_CLUSTER=${KIP_E2E_REQUIRE_CLUSTER:-$([[ ${CI:-} == true ]] && echo 1 || echo 0)}
echo "--- cargo test --test e2e (KUBECONFIG=$KUBECONFIG, image $KIP_E2E_IMAGE)"
cargo test --test e2e -- --test-threads=1 --nocapture
echo "--- bench: the release binary on the real control plane at 3, 500 and 1,000 simulated nodes"
cargo test --test real_cluster_bench
