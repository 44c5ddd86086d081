#!/usr/bin/env bash
# End-to-end test on a kind cluster:
#   build the image, create the kind cluster "kip-e2e", load the image, install
#   the Helm chart into namespace k8s-image-puller (Pod Security "restricted"
#   enforced), wait for the Deployment, then run `cargo test --test e2e` with KIP_E2E_IMAGE set to the loaded image.
#
# Usage: e2e/run-e2e.sh [--rm]
#   --rm   delete the kind cluster at the end (also on failure)
#
# Environment: IMAGE (default localhost/kubernetes-image-puller:e2e),
#   KIND_CLUSTER (default kip-e2e), KIND_NODE_IMAGE (optional kindest/node image),
#   HELM (default: helm on PATH, else the one ci/deploy-checks.sh caches).
#
# Where kind or a working Docker engine is missing, prints why and exits 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

REMOVE=0
for arg in "$@"; do
  case "$arg" in
    --rm) REMOVE=1 ;;
    -h | --help)
      sed -n '2,15p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

CLUSTER=${KIND_CLUSTER:-kip-e2e}
IMAGE=${IMAGE:-localhost/kubernetes-image-puller:e2e}
NS=k8s-image-puller
RELEASE=kubernetes-image-puller
CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}

if ! command -v kind >/dev/null 2>&1; then
  echo "e2e skipped: kind is not installed (https://kind.sigs.k8s.io)"
  exit 0
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "e2e skipped: docker is not installed"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e skipped: the Docker engine is not reachable ($(docker info 2>&1 | tail -n1))"
  exit 0
fi

HELM=${HELM:-$(command -v helm || true)}
if [[ -z $HELM && -x $CACHE_DIR/bin/helm ]]; then
  HELM=$CACHE_DIR/bin/helm
fi
if [[ -z $HELM ]]; then
  echo "helm not found: install it or run ci/deploy-checks.sh once (it caches helm in $CACHE_DIR/bin)" >&2
  exit 1
fi
KUBECTL=$(command -v kubectl || true)
if [[ -z $KUBECTL && -x $CACHE_DIR/bin/kubectl ]]; then
  KUBECTL=$CACHE_DIR/bin/kubectl
fi
if [[ -z $KUBECTL ]]; then
  echo "kubectl not found: install it or run ci/deploy-checks.sh once" >&2
  exit 1
fi

KUBECONFIG_FILE=$(mktemp "${TMPDIR:-/tmp}/kip-e2e-kubeconfig.XXXXXX")
export KUBECONFIG=$KUBECONFIG_FILE

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "--- e2e failed (exit $rc); controller state:" >&2
    "$KUBECTL" -n "$NS" get deploy,ds,pods -o wide >&2 || true
    "$KUBECTL" -n "$NS" logs "deploy/$RELEASE" --tail=100 >&2 || true
  fi
  if [[ $REMOVE -eq 1 ]]; then
    kind delete cluster --name "$CLUSTER" || true
  else
    echo "cluster $CLUSTER kept; delete it with: kind delete cluster --name $CLUSTER"
  fi
  rm -f "$KUBECONFIG_FILE"
}
trap cleanup EXIT

echo "--- building $IMAGE"
DOCKER_BUILDKIT=1 docker build -t "$IMAGE" -f Dockerfile .

echo "--- kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing existing cluster"
else
  kind create cluster --name "$CLUSTER" --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "--- namespace $NS (Pod Security restricted enforced)"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" label namespace "$NS" --overwrite \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted

echo "--- helm install"
"$HELM" upgrade --install "$RELEASE" "$ROOT/deploy/helm" -n "$NS" \
  --set image.repository="${IMAGE%:*}" \
  --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --wait --timeout 180s
"$KUBECTL" -n "$NS" rollout status "deploy/$RELEASE" --timeout=180s

echo "--- cargo test --test e2e"
E2E_NAMESPACE=$NS E2E_IMAGE=$IMAGE E2E_RELEASE=$RELEASE \
  KIP_E2E_IMAGE="$IMAGE" cargo test --test e2e -- --nocapture
echo "--- e2e passed"
