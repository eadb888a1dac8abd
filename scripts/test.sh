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
