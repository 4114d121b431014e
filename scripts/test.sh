#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit tests and the integration tests, which
# load into a real PostgreSQL (found or started by scripts/pg.sh) from real HTTP servers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
trap pg_stop_if_ours EXIT

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not installed; install Rust from https://rustup.rs first" >&2
  exit 1
fi

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo clippy and build, without the sql feature (apitap load only, no DataFusion)" >&2
cargo clippy --all-targets --locked --no-default-features -- -D warnings
cargo build --locked --no-default-features --bin apitap
echo "== cargo test" >&2
cargo test --all-targets --locked --no-fail-fast
