# Builds apitap (release) and starts the bundled demo API on a free port, for scripts that
# load from it. Sets $apitap and $port; stops the API (and a throwaway PostgreSQL started by
# pg.sh) when the sourcing script exits. Source it after scripts/pg.sh.

cargo build --release --locked --quiet
apitap=${CARGO_TARGET_DIR:-target}/release/apitap
port=$(pg_free_port)
"$apitap" demo-api --listen "127.0.0.1:$port" 2>/dev/null &
demo_api_pid=$!
demo_api_cleanup() { kill "$demo_api_pid" 2>/dev/null || true; pg_stop_if_ours; }
trap demo_api_cleanup EXIT
wait_for_port "$port"
