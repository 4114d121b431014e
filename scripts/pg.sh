# Finds a PostgreSQL that answers, or starts a throwaway one, and exports DATABASE_URL.
#
# Sourced by scripts/test.sh, scripts/demo.sh and scripts/bench.sh. In order:
#   1. DATABASE_URL, if it answers;
#   2. libpq's PG* variables (PGHOST, PGPORT, PGUSER, ...), if they answer;
#   3. 127.0.0.1:5432 as user postgres (or you);
#   4. a cluster of our own in .pgdata/ on a free port, installing PostgreSQL with apt first
#      when initdb is missing. It is stopped by pg_stop_if_ours (the scripts call it on exit).
# Set APITAP_PG_OWN=1 to skip 1-3 and always use the project's own cluster.

APITAP_ROOT=${APITAP_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
APITAP_PG_STARTED=0

pg_log() { echo "pg.sh: $*" >&2; }

pg_answers() {
  command -v psql >/dev/null 2>&1 || return 1
  PGCONNECT_TIMEOUT=3 psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

# Makes sure the database named in the URL exists, creating it through the postgres db.
pg_ensure_database() {
  local base=$1 db=$2
  if ! pg_answers "$base/$db"; then
    psql "$base/postgres" -qc "CREATE DATABASE \"$db\"" >/dev/null 2>&1 || true
  fi
  pg_answers "$base/$db"
}

pg_install_server() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return 0; fi
  pg_log "PostgreSQL is not installed; installing it with apt"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql postgresql-client >&2
}

# A port on 127.0.0.1 that nothing listens on (a refused connection means free).
pg_free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Waits until something listens on 127.0.0.1:$1.
wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

pg_start_own() {
  pg_install_server || { pg_log "could not install PostgreSQL"; return 1; }
  local bin data port run_as=()
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  data="$APITAP_ROOT/.pgdata"
  # initdb and postgres refuse to run as root; run them as the postgres user the package made.
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ ${#run_as[@]} -eq 0 ] || chown postgres "$data"
    "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null \
      || { pg_log "initdb failed"; return 1; }
  fi
  port=$(pg_free_port)
  "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null \
    || { pg_log "the server did not start; see $data/server.log"; return 1; }
  APITAP_PG_STARTED=1
  APITAP_PG_BIN=$bin
  pg_log "started a throwaway PostgreSQL in $data on port $port"
  pg_ensure_database "postgres://postgres@127.0.0.1:$port" apitap
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/apitap"
}

pg_stop_if_ours() {
  if [ "$APITAP_PG_STARTED" = 1 ]; then
    local run_as=()
    if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
    "${run_as[@]}" "$APITAP_PG_BIN/pg_ctl" -D "$APITAP_ROOT/.pgdata" -m fast stop >/dev/null 2>&1 || true
    APITAP_PG_STARTED=0
  fi
}

pg_find() {
  if [ "${APITAP_PG_OWN:-0}" != 1 ]; then
    if [ -n "${DATABASE_URL:-}" ] && pg_answers "$DATABASE_URL"; then
      return 0
    fi
    if [ -n "${PGHOST:-}${PGPORT:-}${PGUSER:-}${PGDATABASE:-}" ] && pg_answers ""; then
      local host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432} user=${PGUSER:-$(id -un)}
      export DATABASE_URL="postgres://$user@$host:$port/${PGDATABASE:-$user}"
      return 0
    fi
    local user
    for user in postgres "$(id -un)"; do
      if pg_answers "postgres://$user@127.0.0.1:5432/postgres"; then
        if pg_ensure_database "postgres://$user@127.0.0.1:5432" apitap; then
          export DATABASE_URL="postgres://$user@127.0.0.1:5432/apitap"
        else
          export DATABASE_URL="postgres://$user@127.0.0.1:5432/postgres"
        fi
        return 0
      fi
    done
  fi
  pg_start_own
}

pg_find || { pg_log "no PostgreSQL found and none could be started"; return 1 2>/dev/null || exit 1; }
echo "pg.sh: using ${DATABASE_URL%%\?*}" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' >&2
