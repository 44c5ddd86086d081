#!/usr/bin/env bash
# checkov (PyPI, pinned) over Kubernetes manifests, offline.
#
#   ci/checkov.sh MANIFEST...     scan the files together; exit 0 when no check failed and every skipped
#                                 check carries a reason on its object; 1 otherwise (findings listed)
#   ci/checkov.sh --install       only install checkov (idempotent)
#
# The files are scanned as one graph: a NetworkPolicy in one file covers the pods of another (the chart's
# deny-all policy and the DaemonSets that `render` prints). By-design findings are skipped on the object
# itself, `checkov.io/skipN: CHECK=reason`; a skip without a reason counts as a failure. Settings:
# .checkov.yaml.
#
# Environment: KIP_CI_CACHE (tool cache, default ${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci),
#   KIP_CI_CHECKOV_VERSION (default below).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
CHECKOV_VERSION=${KIP_CI_CHECKOV_VERSION:-3.3.30}
VENV=$CACHE_DIR/venv-checkov-$CHECKOV_VERSION
CHECKOV=$VENV/bin/checkov

install_checkov() {
  if [[ -x $CHECKOV ]] && [[ "$("$CHECKOV" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]; then
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1
    fi
    python3 -m venv "$VENV" || return 1
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" || return 1
  [[ "$("$CHECKOV" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]
}

if ! install_checkov; then
  echo "cannot install checkov==$CHECKOV_VERSION from PyPI into $VENV" >&2
  exit 2
fi
if [[ ${1:-} == --install ]]; then
  echo "checkov $CHECKOV_VERSION in $VENV"
  exit 0
fi
if [[ $# -eq 0 ]]; then
  echo "usage: ci/checkov.sh MANIFEST... | --install" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kip-checkov.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/in"
for f in "$@"; do
  [[ -f $f ]] || { echo "no such file: $f" >&2; exit 2; }
  cp "$f" "$WORK/in/$(basename "$f")"
done

# Network use is off (skip-download); stderr keeps checkov's own warnings for a failed run.
(cd "$WORK/in" && "$CHECKOV" --config-file "$ROOT/.checkov.yaml" -d . >"$WORK/result.json" 2>"$WORK/stderr")
rc=$?
if [[ $rc -ne 0 ]] || ! [[ -s $WORK/result.json ]]; then
  echo "checkov exited $rc" >&2
  tail -n 30 "$WORK/stderr" >&2
  exit 2
fi

"$VENV/bin/python" - "$WORK/result.json" <<'PY'
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
    print("checkov found no Kubernetes resources to check")
    sys.exit(1)

def where(c):
    return f"{c['resource']} ({c['file_path'].lstrip('/')})"

# A skip counts only with a reason; checkov records "No comment provided" for `checkov.io/skipN: CHECK`.
unexplained = [c for c in skipped
               if (c.get("check_result") or {}).get("suppress_comment", "").strip() in ("", "No comment provided")]
for c in failed:
    print(f"FAILED {c['check_id']} {c['check_name']}: {where(c)}")
for c in unexplained:
    print(f"SKIPPED WITHOUT A REASON {c['check_id']} {c['check_name']}: {where(c)}")
reasons = {}
for c in skipped:
    if c in unexplained:
        continue
    key = (c["check_id"], c["check_result"]["suppress_comment"])
    reasons.setdefault(key, []).append(c["resource"])
for (check, reason), resources in sorted(reasons.items()):
    print(f"skipped {check} on {len(resources)} object(s): {reason}")
print(f"checkov: {len(passed)} passed, {len(skipped) - len(unexplained)} skipped with a reason, "
      f"{len(failed)} failed, {len(unexplained)} skipped without a reason")
sys.exit(1 if failed or unexplained else 0)
PY
