#!/usr/bin/env bash
# Builds the cluster's binaries once per go.sum: Kubernetes (this module), etcd and kwok (their own small modules),
# into the user's cache. Prints the bin directory. A cold build takes 20-30 min on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOFLAGS=-mod=mod
sum="$(cat "$here/go.mod" "$here/go.sum" "$here"/tools/*/go.mod "$here"/tools/*/go.sum 2>/dev/null | sha256sum | cut -c1-16)"
bin="${KIP_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubernetes-image-puller/cluster}/bin-$sum"
if [[ -f "$bin/.complete" ]]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
# The version the binaries report (kubectl version, the Node's kubeletVersion): the module's, not "v0.0.0-master".
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  if [[ ! -x "$bin/$cmd" ]]; then
    echo "building $cmd $k8s_version" >&2
    (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  fi
done
for tool in etcd kwok; do
  if [[ ! -x "$bin/$tool" ]]; then
    echo "building $tool" >&2
    pkg="$(awk '$1 == "tool" {print $2}' "$here/tools/$tool/go.mod")"
    (cd "$here/tools/$tool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/$tool.tmp" "$pkg")
    mv "$bin/$tool.tmp" "$bin/$tool"
  fi
done
# kwok's own Stage definitions (node-initialize, node-heartbeat, pod-ready, pod-complete, pod-delete): without
# them kwok neither marks nodes Ready nor pods Running.
kwok_dir="$(cd "$here/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for stage in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-complete \
  pod/fast/pod-delete; do
  echo "---"
  cat "$kwok_dir/kustomize/stage/$stage.yaml"
done >"$bin/kwok-stages.yaml"
touch "$bin/.complete"
# CI's disk is small and shared: the Go build cache (about 4 GB after this build) is worth nothing once the
# binaries are cached, so a CI run drops it. A developer's machine keeps it for the next go.sum change.
if [[ ${CI:-} == true ]]; then go clean -cache; fi
echo "$bin"
