#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit tests and the integration tests, which
# load into a real PostgreSQL (found or started by scripts/pg.sh) from real HTTP servers, and
# connect to throwaway TLS servers (scripts/pg-tls.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
source scripts/pg-tls.sh
trap 'pgtls_stop; pg_stop_if_ours' EXIT
# Two more servers with TLS (CA-signed, and an expired X.509 v1 certificate) for the
# connection tests; PostgreSQL's binaries and openssl are installed with apt when missing.
pgtls_start || { echo "test.sh: could not start the TLS test servers" >&2; exit 1; }

# The progress tests run apitap in a real terminal, a tmux pane, and read its screen; the
# metrics tests have a real Prometheus server scrape apitap and a node_exporter read its
# metrics file; the connection tests compare apitap with psql, libpq's own client.
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} with apt" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

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
