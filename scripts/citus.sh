#!/usr/bin/env bash
# A throwaway Citus cluster for apitap's Citus tests: a coordinator and two workers on
# 127.0.0.1, in .citus/, from the Citus installed into this machine's PostgreSQL.
#   scripts/citus.sh start   start it; prints APITAP_TEST_CITUS_URL=… (also in .citus/env)
#   scripts/citus.sh stop    stop it
#   scripts/citus.sh test    start it, run the Citus tests (tests/it/citus.rs), stop it
# The Citus tests are skipped, saying so, whenever APITAP_TEST_CITUS_URL is not set, as in
# scripts/test.sh and CI. Citus has no Debian package: when it is not installed, this says
# how to build it and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
APITAP_ROOT=$(pwd)
DIR=$APITAP_ROOT/.citus

log() { echo "citus.sh: $*" >&2; }

bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")
if [ ! -x "$bin/pg_config" ] || [ ! -f "$("$bin/pg_config" --pkglibdir)/citus.so" ]; then
  cat >&2 <<'HOW'
citus.sh: Citus is not installed in this machine's PostgreSQL, and it has no Debian package.
Build it from its source for your PostgreSQL (15 shown; Citus 13.2 supports 15 to 17):
  apt-get install postgresql-server-dev-15 libkrb5-dev liblz4-dev libzstd-dev libcurl4-openssl-dev
  git clone --branch v13.2.2 https://github.com/citusdata/citus && cd citus
  ./configure PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config && make -j"$(nproc)" && sudo make install
(With PostgreSQL 15.20 or later, Citus 13.2's src/include/pg_version_compat.h defines
have_createdb_privilege() again: wrap that definition in #if PG_VERSION_NUM < 150020.)
HOW
  exit 1
fi

run_as=()
if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi

free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

node_sql() { psql -h "$DIR/$1" -p "$2" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAtc "$3"; }

stop() {
  for node in coordinator worker1 worker2; do
    if [ -f "$DIR/$node/db/postmaster.pid" ]; then
      "${run_as[@]}" "$bin/pg_ctl" -D "$DIR/$node/db" -m immediate stop >/dev/null 2>&1 || true
    fi
  done
}

start() {
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ ${#run_as[@]} -eq 0 ] || chown postgres "$DIR"
  declare -A ports
  for node in coordinator worker1 worker2; do
    local data=$DIR/$node port
    port=$(free_port)
    ports[$node]=$port
    mkdir -p "$data"
    [ ${#run_as[@]} -eq 0 ] || chown postgres "$data"
    "${run_as[@]}" "$bin/initdb" -D "$data/db" -U postgres --auth=trust -E UTF8 >/dev/null
    printf "shared_preload_libraries = 'citus'\nmax_connections = 200\n" >> "$data/db/postgresql.conf"
    "${run_as[@]}" "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null \
      || { log "$node did not start; see $data/server.log"; exit 1; }
    node_sql "$node" "$port" "CREATE EXTENSION citus"
  done
  local c=${ports[coordinator]}
  node_sql coordinator "$c" "SELECT citus_set_coordinator_host('127.0.0.1', $c)" >/dev/null
  node_sql coordinator "$c" "SELECT citus_add_node('127.0.0.1', ${ports[worker1]})" >/dev/null
  node_sql coordinator "$c" "SELECT citus_add_node('127.0.0.1', ${ports[worker2]})" >/dev/null
  local version
  version=$(node_sql coordinator "$c" "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
  echo "APITAP_TEST_CITUS_URL=postgres://postgres@127.0.0.1:$c/postgres" > "$DIR/env"
  log "Citus $version: coordinator on 127.0.0.1:$c, workers on ${ports[worker1]} and ${ports[worker2]}"
  cat "$DIR/env"
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  test)
    start >/dev/null
    trap stop EXIT
    # shellcheck disable=SC1091
    source "$DIR/env"
    export APITAP_TEST_CITUS_URL
    source scripts/pg.sh
    cargo test --locked --test it -- citus:: --test-threads 1
    ;;
  *) log "usage: scripts/citus.sh start|stop|test"; exit 2 ;;
esac
