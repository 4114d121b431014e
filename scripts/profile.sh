#!/usr/bin/env bash
# Profiles one load, the one command for "where does the time go":
#   scripts/profile.sh [ROWS] [SOURCE]      SOURCE: http (default) or file
# Builds the release code with function names and line tables (cargo profile `profiling`:
# the installed release build carries neither), loads ROWS demo rows (default 1,000,000) into
# apitap_profile.rows under `perf record`, and prints the hottest functions, then the hottest
# source lines. .profile/perf.data stays for `perf report -i .profile/perf.data` or a
# flamegraph (`perf script -i .profile/perf.data | inferno-collapse-perf | inferno-flamegraph`).
# Samples the cpu-clock software event, which virtual machines without hardware counters have.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
SOURCE=${2:-http}

if ! command -v perf >/dev/null 2>&1; then
  echo "profile: perf is not installed; installing it with apt" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  # Debian ships perf as linux-perf; Ubuntu as linux-tools for the running kernel.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf >&2 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "linux-tools-$(uname -r)" >&2
fi

source scripts/pg.sh
APITAP_PROFILE=profiling
source scripts/demo-api.sh

work=.profile
mkdir -p "$work"
src="http://127.0.0.1:$port/rows.ndjson?rows=$ROWS"
if [ "$SOURCE" = file ]; then
  [ -s "$work/rows-$ROWS.ndjson" ] || "$apitap" demo-api --dump "$ROWS" > "$work/rows-$ROWS.ndjson"
  src=$work/rows-$ROWS.ndjson
fi
psql "$DATABASE_URL" -qc 'DROP SCHEMA IF EXISTS apitap_profile CASCADE'

# DWARF stacks: a release build keeps no frame pointers, so -g alone would lose the callers.
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$work/perf.data" -- \
  "$apitap" load "$src" --table apitap_profile.rows --progress never -q
echo
echo "profile: hottest functions (self time)"
# `head` closes the pipe early; perf's SIGPIPE then is no failure.
{ perf report -i "$work/perf.data" --no-children --sort symbol --stdio -q -g none 2>/dev/null \
  | grep -v '^$' | head -25; } || true
echo
echo "profile: hottest source lines"
# (Resolving source lines takes perf a minute or two.)
{ perf report -i "$work/perf.data" --no-children --sort srcline --stdio -q -g none 2>/dev/null \
  | grep -v '^$' | head -25; } || true
