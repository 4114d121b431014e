# Two throwaway PostgreSQL servers with TLS, for the connection tests (tests/it/pgtls.rs).
# Sourced by scripts/test.sh after scripts/pg.sh; made fresh in .pgtls/ on every run, with
# certificates made by openssl there (installed with apt when missing):
#   ca/     a test CA, the server's certificate from it (names: DNS localhost only, so a
#           connection to 127.0.0.1 fails verify-full), a client certificate for the role
#           certuser, and a second CA that signed nothing of the server's;
#   servers "ca" (that certificate; hostssl only) and "odd" (an expired, self-signed X.509
#           version 1 certificate, as Citus makes one).
# Both trust local socket connections, which the tests use to look at what landed. Roles:
# certuser (logs in by client certificate), pwuser (password pw-secret-7d1e, by SCRAM).
# Exports APITAP_TLS_DIR, APITAP_TLS_PORT and APITAP_TLS_ODD_PORT; pgtls_stop stops both.

APITAP_TLS_DIR=$APITAP_ROOT/.pgtls
APITAP_TLS_PIDS=()

pgtls_log() { echo "pg-tls.sh: $*" >&2; }

pgtls_openssl() {
  command -v openssl >/dev/null 2>&1 && return 0
  pgtls_log "openssl is not installed; installing it with apt"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssl >&2
}

pgtls_certs() {
  local d=$APITAP_TLS_DIR/certs
  mkdir -p "$d" && cd "$d" || return 1
  {
    openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=apitap test CA"
    openssl req -x509 -new -nodes -newkey rsa:2048 -keyout other-ca.key -out other-ca.crt \
      -days 3650 -subj "/CN=apitap other CA"
    openssl req -new -nodes -newkey rsa:2048 -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt
    openssl req -new -nodes -newkey rsa:2048 -keyout client.key -out client.csr -subj "/CN=certuser"
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > client.ext
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.crt
    # Expired and X.509 v1 (no extensions), self-signed: what libpq's prefer/require accept.
    mkdir -p old/newcerts && : > old/index.txt && echo 01 > old/serial
    printf '[ca]\ndefault_ca=old\n[old]\ndir=./old\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/newcerts\nserial=$dir/serial\ndefault_md=sha256\npolicy=any\n[any]\ncommonName=supplied\n' > old.cnf
    openssl req -new -nodes -newkey rsa:2048 -keyout odd.key -out odd.csr -subj "/CN=localhost"
    openssl ca -batch -config old.cnf -selfsign -keyfile odd.key -in odd.csr \
      -startdate 20200101000000Z -enddate 20210101000000Z -out odd.crt
  } >/dev/null 2>&1
  local status=$?
  chmod 600 ./*.key
  cd - >/dev/null || return 1
  return $status
}

# pgtls_server NAME CERT KEY: initdb, TLS on, started on a free port; prints the port.
pgtls_server() {
  local name=$1 cert=$2 key=$3 data=$APITAP_TLS_DIR/$1 run_as=() port
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  mkdir -p "$data"
  cp "$APITAP_TLS_DIR/certs/$cert" "$data/server.crt"
  cp "$APITAP_TLS_DIR/certs/$key" "$data/server.key"
  cp "$APITAP_TLS_DIR/certs/ca.crt" "$data/ca.crt"
  chmod 600 "$data/server.key"
  [ ${#run_as[@]} -eq 0 ] || chown -R postgres "$data"
  "${run_as[@]}" "$APITAP_PG_BIN/initdb" -D "$data/db" -U postgres --auth=trust -E UTF8 >/dev/null || return 1
  cat >> "$data/db/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$data/server.crt'
ssl_key_file = '$data/server.key'
ssl_ca_file = '$data/ca.crt'
password_encryption = 'scram-sha-256'
CONF
  cat > "$data/db/pg_hba.conf" <<HBA
local   all all                  trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all certuser ::1/128      cert
hostssl all pwuser   127.0.0.1/32 scram-sha-256
hostssl all pwuser   ::1/128      scram-sha-256
hostssl all all      127.0.0.1/32 trust
hostssl all all      ::1/128      trust
HBA
  port=$(pg_free_port)
  "${run_as[@]}" "$APITAP_PG_BIN/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
    -o "-p $port -k $data -c listen_addresses=localhost" start >/dev/null || return 1
  psql -h "$data" -p "$port" -U postgres -d postgres -qAtc \
    "CREATE ROLE certuser LOGIN; CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret-7d1e';
     GRANT CREATE ON SCHEMA public TO certuser, pwuser" >/dev/null || return 1
  echo "$port"
}

pgtls_start() {
  pg_install_server || return 1
  pgtls_openssl || return 1
  APITAP_PG_BIN=${APITAP_PG_BIN:-$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")}
  pgtls_stop
  rm -rf "$APITAP_TLS_DIR"
  mkdir -p "$APITAP_TLS_DIR"
  [ "$(id -u)" -ne 0 ] || chown postgres "$APITAP_TLS_DIR"
  pgtls_certs || { pgtls_log "openssl could not make the test certificates"; return 1; }
  APITAP_TLS_PORT=$(pgtls_server ca server.crt server.key) \
    || { pgtls_log "the TLS server did not start; see $APITAP_TLS_DIR/ca/server.log"; return 1; }
  APITAP_TLS_ODD_PORT=$(pgtls_server odd odd.crt odd.key) \
    || { pgtls_log "the v1-certificate server did not start; see $APITAP_TLS_DIR/odd/server.log"; return 1; }
  export APITAP_TLS_DIR APITAP_TLS_PORT APITAP_TLS_ODD_PORT
  pgtls_log "TLS servers on ports $APITAP_TLS_PORT (CA-signed) and $APITAP_TLS_ODD_PORT (expired X.509 v1)"
}

pgtls_stop() {
  local run_as=() name
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  for name in ca odd; do
    if [ -f "$APITAP_TLS_DIR/$name/db/postmaster.pid" ]; then
      "${run_as[@]}" "${APITAP_PG_BIN:-}/pg_ctl" -D "$APITAP_TLS_DIR/$name/db" -m immediate stop >/dev/null 2>&1 || true
    fi
  done
}
