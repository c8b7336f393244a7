#!/usr/bin/env bash
# Where a PUT's cost goes: the PUT load of run.sh against a release kuma-cp on a
# throwaway PostgreSQL with pg_stat_statements, printing kuma-cp's CPU per PUT
# and the statements PostgreSQL ran. PERF=1 also records `perf` to /tmp/perf.data.
# Usage: docs/benchmarks/rest/profile-put.sh   (after `cargo build --release --bin kuma-cp`)
set -euo pipefail
cd "$(dirname "$0")/../../.."
TMP=$(mktemp -d)
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
BIN=$PWD/target/release/kuma-cp
CP=""
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  [ -n "$CP" ] && kill "$CP" 2>/dev/null || true
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
PGPORT=$(fp)
mkdir -p "$TMP/pg" && chown postgres "$TMP" "$TMP/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/log" -w start \
  -o "-p $PGPORT -k $TMP/pg -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements" >/dev/null
psql() { command psql -h 127.0.0.1 -p "$PGPORT" -U postgres "$@"; }
psql -qc "CREATE USER kuma PASSWORD 'kuma'" >/dev/null
psql -qc "CREATE DATABASE kuma OWNER kuma" >/dev/null
psql -d kuma -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
PGENV=(KUMA_STORE_POSTGRES_HOST=127.0.0.1 KUMA_STORE_POSTGRES_PORT=$PGPORT KUMA_STORE_POSTGRES_USER=kuma
       KUMA_STORE_POSTGRES_PASSWORD=kuma KUMA_STORE_POSTGRES_DB_NAME=kuma KUMA_STORE_TYPE=postgres)
env "${PGENV[@]}" "$BIN" migrate up --log-level warn
api=$(fp); diag=$(fp); dp=$(fp)
env "${PGENV[@]}" KUMA_GENERAL_WORK_DIR="$TMP/work" KUMA_API_SERVER_HTTP_PORT=$api \
  KUMA_DIAGNOSTICS_SERVER_PORT=$diag KUMA_DP_SERVER_PORT=$dp "$BIN" run --log-level warn >"$TMP/cp.log" 2>&1 &
CP=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$diag/ready" >/dev/null && break; sleep 0.1; done
python3 docs/benchmarks/rest/seed.py "$api" 1000
psql -d kuma -qc "SELECT pg_stat_statements_reset()" >/dev/null
ticks() { awk '{print $14 + $15}' "/proc/$CP/stat"; }
T0=$(ticks)
PERF_PID=""
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -p "$CP" -o /tmp/perf.data -- sleep 8 >/dev/null 2>&1 &
  PERF_PID=$!
fi
OUT=$(BENCH_RESOURCES=1000 wrk -t2 -c32 -d10s -s docs/benchmarks/rest/put.lua "http://127.0.0.1:$api")
T1=$(ticks)
echo "$OUT" | grep -E "Latency|Requests/sec"
PUTS=$(psql -d kuma -Atc "SELECT coalesce(sum(rows), 0) FROM pg_stat_statements WHERE query LIKE 'UPDATE resources%'")
echo "kuma-cp CPU: $(( (T1 - T0) * 10 )) ms for $PUTS updates = $(( (T1 - T0) * 10000000 / (PUTS > 0 ? PUTS : 1) / 1000 )) µs per PUT"
[ -n "$PERF_PID" ] && wait "$PERF_PID"
psql -d kuma -c "SELECT calls, rows, round(mean_exec_time::numeric, 3) AS mean_ms, left(query, 60) AS query
                 FROM pg_stat_statements ORDER BY calls DESC LIMIT 6"
