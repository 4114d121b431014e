# Builds apitap and starts the bundled demo API on a free port, for scripts that load from
# it. Sets $apitap and $port; stops the API (and a throwaway PostgreSQL started by pg.sh)
# when the sourcing script exits. Source it after scripts/pg.sh.
# APITAP_PROFILE picks the cargo profile (default release; scripts/profile.sh uses profiling);
# APITAP_NO_SQL=1 builds without DataFusion (minutes instead of a quarter hour; `apitap load`
# is the same code either way, but `apitap run` is then missing).

profile=${APITAP_PROFILE:-release}
features=()
[ "${APITAP_NO_SQL:-}" = 1 ] && features=(--no-default-features)
cargo build --profile "$profile" --locked --quiet "${features[@]}"
# Wherever cargo puts its builds: CARGO_TARGET_DIR, a build.target-dir setting, or target/.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
  | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')
apitap=$target_dir/$profile/apitap
port=$(pg_free_port)
"$apitap" demo-api --listen "127.0.0.1:$port" 2>/dev/null &
demo_api_pid=$!
demo_api_cleanup() { kill "$demo_api_pid" 2>/dev/null || true; pg_stop_if_ours; }
trap demo_api_cleanup EXIT
wait_for_port "$port"
