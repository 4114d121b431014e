#!/usr/bin/env bash
# The main job end to end on bundled data: starts the demo API, loads ROWS rows (default
# 1,000,000) into demo.items with a progress bar, then runs the example pipelines
# (examples/config/pipelines.yaml and the SQL modules in examples/sql) and shows what landed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-${ROWS:-1000000}}
source scripts/pg.sh
source scripts/demo-api.sh

set -x
"$apitap" load "http://127.0.0.1:$port/rows.ndjson?rows=$ROWS" --table demo.items --mode replace --progress always
set +x
psql "$DATABASE_URL" -c '\d demo.items' \
  -c 'SELECT count(*) AS rows, count(amount) AS with_amount, min(created_at), max(created_at) FROM demo.items' \
  -c 'SELECT id, amount, status, created_at, due_date, metadata FROM demo.items ORDER BY id LIMIT 5'

# The pipelines: paged orders and the customers they refer to, filtered, cast and joined.
export DEMO_API="http://127.0.0.1:$port" DEMO_ROWS=${DEMO_ROWS:-100000}
set -x
"$apitap" check -m examples/sql -y examples/config/pipelines.yaml --preview 2 --module paid_orders
"$apitap" run -m examples/sql -y examples/config/pipelines.yaml --jobs 2 --progress always
set +x
psql "$DATABASE_URL" \
  -c 'SELECT * FROM demo.paid_orders ORDER BY id LIMIT 3' \
  -c 'SELECT * FROM demo.customer_totals ORDER BY total_amount DESC NULLS LAST LIMIT 5'
