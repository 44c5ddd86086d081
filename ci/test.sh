#!/usr/bin/env bash
# The project's test command (README, and .ci/run on a clean checkout). Installs what it needs by package name:
# cargo fetches the crates; e2e/cluster/up.sh builds Kubernetes, etcd and kwok from their Go modules (once per
# machine, cached) and installs its Debian packages; ci/deploy-checks.sh installs helm, kubectl,
# kubernetes-validate and checkov; ci/cargo-deny.sh cargo-deny.
#
# KIP_SKIP_E2E=1 leaves out the real-cluster harness and the e2e suite (for a machine that cannot run them;
# CI never sets it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The registry resolver's tests run against real registries on loopback (Debian's docker-registry, htpasswd).
if [[ ${KIP_SKIP_E2E:-0} != 1 ]] && { ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null; }; then
  echo "== installing docker-registry and apache2-utils (registry tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry apache2-utils >/dev/null
fi

# CI builds every target once, from scratch: incremental caches would only add gigabytes to a small disk.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=0; fi
df -h . | awk 'NR == 2 {print "== disk: " $4 " free on " $6}'

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test (unit, mock, fake API, real registries on loopback; the e2e target skips here: no KUBECONFIG)"
env -u KUBECONFIG KIP_E2E_REQUIRE_CLUSTER=0 cargo test
echo "== supply chain: cargo deny (licences, bans, sources; offline)"
bash ci/cargo-deny.sh

if [[ ${KIP_SKIP_E2E:-0} == 1 ]]; then
  echo "== e2e left out (KIP_SKIP_E2E=1)"
  bash ci/deploy-checks.sh
  bash ci/monitoring-checks.sh
  bash ci/release-checks.sh
  exit 0
fi

echo "== real-cluster harness: e2e/cluster/up.sh --real-node"
# CI starts from a clean cluster directory: whatever an earlier run left (etcd data, node state) goes first.
if [[ ${CI:-} == true ]]; then bash e2e/cluster/down.sh --purge; fi
trap 'bash e2e/cluster/down.sh' EXIT
bash e2e/cluster/up.sh --real-node
# The harness built the static release binaries (for the image); the deploy checks reuse them, and install helm,
# which the e2e suite uses.
target="$(rustc -vV | awk '/^host:/ {print $2}')"
echo "== deployment checks"
KIP_BIN="target/$target/release/kubernetes-image-puller" bash ci/deploy-checks.sh
echo "== monitoring: promtool check/test rules on the chart's PrometheusRule, the dashboard's queries"
bash ci/monitoring-checks.sh
echo "== release: actionlint, hadolint, checkov on the workflows and Dockerfile; the chart as an OCI artifact"
bash ci/release-checks.sh
echo "== e2e against the harness (control plane, simulated nodes, a real kubelet node, registry)"
bash e2e/run-e2e.sh
