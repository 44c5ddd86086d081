#!/usr/bin/env bash
# The project's test command (README, and .ci/run on a clean checkout). Installs nothing by hand:
# cargo fetches the crates; ci/deploy-checks.sh installs helm, kubectl, kubernetes-validate and checkov itself,
# ci/cargo-deny.sh cargo-deny.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test
echo "== supply chain: cargo deny (licences, bans, sources; offline)"
bash ci/cargo-deny.sh
echo "== e2e (against the current kube context, if any)"
cargo test --test e2e -- --nocapture
echo "== deployment checks"
bash ci/deploy-checks.sh
