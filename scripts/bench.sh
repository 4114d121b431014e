#!/usr/bin/env bash
# Loads the same ROWS demo rows (default 1,000,000) into the same kind of table four ways,
# three alternating runs each, and prints medians, rows/s and apitap's ratio to the ceiling:
#   binary  psql \copy ... FROM a pre-made binary COPY file   (the ceiling: server-bound)
#   csv     psql \copy ... FROM a pre-made CSV file
#   file    apitap load FILE.ndjson
#   http    apitap load http://.../rows.ndjson from the bundled demo API
#   pages   apitap load from the demo API in pages of 10,000 rows ({"data": [...]})
#   merge   apitap load FILE.ndjson --mode merge --key id, into the table with a primary key
#   pkappend apitap load FILE.ndjson, appending into the same table with a primary key (what
#           merge is fairly compared with: both maintain the key's index)
#   remerge apitap load FILE.ndjson --mode merge --key id into a table already holding the
#           rows (every record matches its row and changes nothing: the rerun of a window)
#   changed the same merge into a table whose every row differs from its record in one value
#           (every record an update)
#   inserts psql running pre-made multi-row INSERT statements of 5,000 rows (pg_dump --inserts)
#   insert  apitap load FILE.ndjson --method insert (5,000-row unnest INSERTs)
#   threads apitap load FILE.ndjson --decode-threads $THREADS (default 2): decoding spread
#           over worker threads (on a 2-core machine they compete with the server)
#   streams apitap load FILE.ndjson --copy-streams $STREAMS (default 2): parallel COPY into
#           a staging table, published by one INSERT … SELECT
#   new     apitap load FILE.ndjson into a table the load creates (one COPY, FREEZE)
#   newstreams the same with --copy-streams $STREAMS: the streams fill a table that takes the
#           new table's place, with no second pass
#   swap    apitap load FILE.ndjson --mode replace (by swap) over a table already holding the
#           rows, with a primary key and an index on a text column
#   swapstreams the same replace with --copy-streams $STREAMS: the streams fill the new table
#   delete  the same with --replace-with delete (DELETE, then COPY into the same table)
#   module  apitap run: a SQL module `SELECT * FROM {{ use_source("rows") }}` over the demo
#           API's NDJSON (compare with http: the cost of the DataFusion transform)
# Usage: scripts/bench.sh [ROWS] [RUNS]; METHODS="binary file" runs only some of them.
# DATA=tweets loads nested, tweet-shaped records (`apitap demo-api --dump-tweets`) instead of the
# flat demo rows, and NESTED=keep|flatten|tables says how apitap reads them (the template every
# psql method copies from is loaded the same way, so both sides write the same rows into the same
# table): DATA=tweets NESTED=flatten METHODS="binary file" scripts/bench.sh. With NESTED=tables
# (linked by --key id) every table of the family is pre-made empty for each run, and the psql
# methods copy each table's file in turn, so their time is the sum over the tables.
# DISTRIBUTE_BY=id makes every target a Citus table distributed by that column (run against a
# coordinator: DATABASE_URL=$(source .citus/env; echo $APITAP_TEST_CITUS_URL), scripts/citus.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${2:-3}
source scripts/pg.sh

source scripts/demo-api.sh
work=.bench
mkdir -p "$work"

psql() { command psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }

data=${DATA:-rows}
nested=(--nested "${NESTED:-keep}")
[ "${NESTED:-keep}" = tables ] && nested+=(--key id)
case $data in
  rows) dump=--dump ;;
  tweets) dump=--dump-tweets ;;
  *) echo "bench: DATA must be rows or tweets" >&2; exit 2 ;;
esac
echo "bench: preparing $ROWS $data" >&2
if [ ! -s "$work/$data-$ROWS.ndjson" ]; then
  "$apitap" demo-api "$dump" "$ROWS" > "$work/$data-$ROWS.ndjson"
fi
psql -c 'DROP SCHEMA IF EXISTS apitap_bench CASCADE; CREATE SCHEMA apitap_bench'
"$apitap" load "$work/$data-$ROWS.ndjson" --table apitap_bench.template --progress never -q "${nested[@]}"
# The family's child tables (NESTED=tables): each name after the root's, as `__…`.
mapfile -t children < <(psql -c "SELECT substr(tablename, length('template') + 1) FROM pg_tables
  WHERE schemaname = 'apitap_bench' AND tablename LIKE 'template\_\_%' ORDER BY tablename")
for t in "" "${children[@]}"; do
  psql -c "\\copy apitap_bench.template$t TO '$work/rows$t.bin' (FORMAT binary)"
  psql -c "\\copy apitap_bench.template$t TO '$work/rows$t.csv' (FORMAT csv)"
done
if [[ " ${METHODS:-} " == *" inserts "* ]]; then
  pg_dump "$DATABASE_URL" --data-only --inserts --rows-per-insert=5000 -t apitap_bench.template \
    | sed -e 's/INSERT INTO apitap_bench.template /INSERT INTO apitap_bench.target /' \
    > "$work/rows.inserts.sql"
fi
mkdir -p "$work/modules"
cat > "$work/pipelines.yaml" <<YAML
sources:
  - name: rows
    url: http://127.0.0.1:$port/rows.ndjson?rows=$ROWS
targets:
  - name: pg
    type: postgres
    url_env: DATABASE_URL
YAML
echo '{{ sink(table="apitap_bench.target", mode="append") }} SELECT * FROM {{ use_source("rows") }}' \
  > "$work/modules/rows.sql"
ndjson_mb=$(( $(stat -c %s "$work/$data-$ROWS.ndjson") / 1048576 ))
echo "bench: NDJSON ${ndjson_mb} MiB; PostgreSQL $(psql -c 'SHOW server_version')" >&2

now() { date +%s.%N; }
# Each load goes into a fresh, empty table of the same shape, so no run pays for another's.
fresh_target() {
  if [ "$1" = new ] || [ "$1" = newstreams ]; then
    psql -c 'DROP TABLE IF EXISTS apitap_bench.target' -c 'CHECKPOINT'
    return
  fi
  psql -c 'DROP TABLE IF EXISTS apitap_bench.target; CREATE TABLE apitap_bench.target (LIKE apitap_bench.template)'
  for t in "${children[@]}"; do
    psql -c "DROP TABLE IF EXISTS apitap_bench.target$t; CREATE TABLE apitap_bench.target$t (LIKE apitap_bench.template$t)"
  done
  if [ "$1" = merge ] || [ "$1" = pkappend ]; then psql -c 'ALTER TABLE apitap_bench.target ADD PRIMARY KEY (id)'; fi
  if [ "$1" = remerge ]; then
    psql -c 'ALTER TABLE apitap_bench.target ADD PRIMARY KEY (id);
             INSERT INTO apitap_bench.target SELECT * FROM apitap_bench.template' \
         -c 'VACUUM ANALYZE apitap_bench.target'
  fi
  if [ "$1" = changed ]; then
    # The rows as loaded, each with its quantity one higher than its record says.
    local columns
    columns=$(psql -c "SELECT string_agg(CASE column_name WHEN 'quantity' THEN 'quantity + 1'
                       ELSE quote_ident(column_name) END, ', ' ORDER BY ordinal_position)
                       FROM information_schema.columns
                       WHERE table_schema = 'apitap_bench' AND table_name = 'template'")
    psql -c "ALTER TABLE apitap_bench.target ADD PRIMARY KEY (id);
             INSERT INTO apitap_bench.target SELECT $columns FROM apitap_bench.template" \
         -c 'VACUUM ANALYZE apitap_bench.target'
  fi
  if [ -n "${DISTRIBUTE_BY:-}" ]; then
    psql -c "SELECT create_distributed_table('apitap_bench.target', '$DISTRIBUTE_BY')" > /dev/null
  fi
  if [ "$1" = swap ] || [ "$1" = swapstreams ] || [ "$1" = delete ]; then
    psql -c 'ALTER TABLE apitap_bench.target ADD PRIMARY KEY (id);
             CREATE INDEX ON apitap_bench.target (uuid);
             INSERT INTO apitap_bench.target SELECT * FROM apitap_bench.template' \
         -c 'VACUUM ANALYZE apitap_bench.target'
  fi
  psql -c 'CHECKPOINT' 2>/dev/null || true
}

declare -A times cpus
peak_rss=0
# One load by `method`; its client's CPU time (user + system of the psql or apitap process)
# is measured by bash's `time` around it.
load_with() {
  local method=$1 summary
  case $method in
    binary | csv)
      local copies=() format=$method t
      for t in "" "${children[@]}"; do
        copies+=(-c "\\copy apitap_bench.target$t FROM '$work/rows$t.$([ "$format" = binary ] && echo bin || echo csv)' (FORMAT $format)")
      done
      psql "${copies[@]}"
      ;;
    inserts) psql -f "$work/rows.inserts.sql" > /dev/null ;;
    module)
      summary=$("$apitap" run -m "$work/modules" -y "$work/pipelines.yaml" --progress never -q --summary-json -)
      local rss
      rss=$(echo "$summary" | sed -E 's/.*"peak_rss_bytes":([0-9]+).*/\1/')
      if [ "$rss" -gt "$peak_rss" ]; then peak_rss=$rss; fi
      ;;
    file | http | pages | merge | remerge | changed | pkappend | insert | threads | streams | new | newstreams | swap | swapstreams | delete)
      local src="$work/$data-$ROWS.ndjson" paging=("${nested[@]}")
      case $method in merge | remerge | changed) paging+=(--mode merge --key id) ;; esac
      [ "$method" = insert ] && paging+=(--method insert)
      if [ "$method" = streams ] || [ "$method" = newstreams ]; then paging+=(--copy-streams "${STREAMS:-2}"); fi
      [ "$method" = threads ] && paging+=(--decode-threads "${THREADS:-2}")
      [ "$method" = swap ] && paging+=(--mode replace --replace-with swap)
      [ "$method" = swapstreams ] && paging+=(--mode replace --replace-with swap --copy-streams "${STREAMS:-2}")
      [ "$method" = delete ] && paging+=(--mode replace --replace-with delete)
      [ "$method" = http ] && src="http://127.0.0.1:$port/$data.ndjson?rows=$ROWS"
      if [ "$method" = pages ]; then
        src="http://127.0.0.1:$port/rows?rows=$ROWS"
        paging=(--records-path /data --pagination '{kind: page_number, page_size: 10000}')
      fi
      summary=$("$apitap" load "$src" "${paging[@]}" --table apitap_bench.target --progress never -q --summary-json -)
      local rss
      rss=$(echo "$summary" | sed -E 's/.*"peak_rss_bytes":([0-9]+).*/\1/')
      if [ "$rss" -gt "$peak_rss" ]; then peak_rss=$rss; fi
      ;;
  esac
}

run_one() {
  local method=$1 start end
  fresh_target "$method"
  start=$(now)
  local TIMEFORMAT='%U %S'
  { time load_with "$method" 2>&3; } 3>&2 2> "$work/cpu.txt"
  end=$(now)
  cpus[$method]+="$(awk '{ printf "%.3f", $1 + $2 }' "$work/cpu.txt") "
  local n
  n=$(psql -c 'SELECT count(*) FROM apitap_bench.target')
  if [ "$n" != "$ROWS" ]; then
    echo "bench: $method loaded $n rows, expected $ROWS" >&2
    exit 1
  fi
  times[$method]+="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }') "
}

read -r -a methods <<< "${METHODS:-binary csv file http pages}"
for run in $(seq "$RUNS"); do
  # Rotate the order so no method always runs first (warm caches) or last.
  for k in "${!methods[@]}"; do
    m=${methods[$(( (k + run - 1) % ${#methods[@]} ))]}
    run_one "$m"
    echo "bench: run $run $m: $(echo "${times[$m]}" | awk '{ print $NF }') s" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ceiling=$(echo "${times[binary]:-${times[${methods[0]}]}}" | median)
printf '\n%-8s %10s %12s %10s %14s   %s\n' method median_s rows_per_s vs_binary cpu_s_per_1M runs_s
for m in "${methods[@]}"; do
  med=$(echo "${times[$m]}" | median)
  cpu=$(echo "${cpus[$m]}" | median)
  awk -v m="$m" -v t="$med" -v c="$ceiling" -v n="$ROWS" -v cpu="$cpu" -v all="${times[$m]}" \
    'BEGIN { printf "%-8s %10.3f %12.0f %9.2fx %14.2f   %s\n", m, t, n / t, c / t, cpu * 1000000 / n, all }'
done
echo
echo "apitap peak RSS: $(( peak_rss / 1048576 )) MiB ($ROWS rows, NDJSON ${ndjson_mb} MiB)"
echo "(vs_binary = binary median / method median: 1.00x means as fast as psql's binary COPY;"
echo " without a binary run, the first method is the baseline; cpu_s_per_1M = median user + system"
echo " CPU seconds of the client process, psql's or apitap's, per million rows)"
