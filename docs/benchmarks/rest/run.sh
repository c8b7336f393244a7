#!/usr/bin/env bash
# REST benchmark: GET one, LIST a page of 100, PUT (update), against a release
# kuma-cp on SQLite and on PostgreSQL, with pgbench's single-row upsert rate on
# the same PostgreSQL as the ceiling for PUT. Load comes from wrk on loopback.
# Usage: docs/benchmarks/rest/run.sh [seconds-per-run]   (writes results.md beside it)
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
N=1000
CONNS=32
OUT=docs/benchmarks/rest/results.md
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
scripts/install-test-deps.sh
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release --bin kuma-cp
BIN=$PWD/target/release/kuma-cp
TMP=$(mktemp -d)
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
CP_PID=""
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup() {
  [ -n "$CP_PID" ] && kill "$CP_PID" 2>/dev/null || true
  [ -d "$TMP/pg" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rate() { awk '/Requests\/sec/ {print int($2)}'; }
p99() { awk '/ 99%/ {print $2}'; }

run_cp() { # store-type extra-env...
  local api diag dp
  api=$(free_port); diag=$(free_port); dp=$(free_port)
  env KUMA_GENERAL_WORK_DIR="$TMP/work-$1" KUMA_STORE_TYPE="$1" KUMA_API_SERVER_HTTP_PORT=$api \
      KUMA_DIAGNOSTICS_SERVER_PORT=$diag KUMA_DP_SERVER_PORT=$dp "${@:2}" \
      "$BIN" run --log-level warn >"$TMP/cp-$1.log" 2>&1 &
  CP_PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$diag/ready" >/dev/null && break; sleep 0.1; done
  PORT=$api
}

bench_store() { # store-type label
  python3 docs/benchmarks/rest/seed.py "$PORT" "$N"
  local base="http://127.0.0.1:$PORT"
  local g l p
  g=$(wrk -t2 -c$CONNS -d${DUR}s --latency "$base/meshes/default/meshtimeouts/mt-7")
  l=$(wrk -t2 -c$CONNS -d${DUR}s --latency "$base/meshes/default/meshtimeouts?size=100")
  p=$(BENCH_RESOURCES=$N wrk -t2 -c$CONNS -d${DUR}s --latency -s docs/benchmarks/rest/put.lua "$base")
  echo "| $2 | $(echo "$g" | rate) | $(echo "$g" | p99) | $(echo "$l" | rate) | $(echo "$l" | p99) | $(echo "$p" | rate) | $(echo "$p" | p99) |" >>"$TMP/rows"
  PUT_RATE=$(echo "$p" | rate)
  kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true; CP_PID=""
}

: >"$TMP/rows"
run_cp sqlite
bench_store sqlite "SQLite (embedded)"
SQLITE_PUT=$PUT_RATE

# Throwaway PostgreSQL.
PGPORT=$(free_port)
mkdir -p "$TMP/pg" && chown postgres "$TMP" "$TMP/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg" -o "-p $PGPORT -k $TMP/pg -c listen_addresses=127.0.0.1" -l "$TMP/pg/log" -w start >/dev/null
for sql in "CREATE USER kuma PASSWORD 'kuma'" "CREATE DATABASE kuma OWNER kuma" "CREATE DATABASE pgbench"; do
  psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "$sql" >/dev/null
done
PGENV=(KUMA_STORE_POSTGRES_HOST=127.0.0.1 KUMA_STORE_POSTGRES_PORT=$PGPORT KUMA_STORE_POSTGRES_USER=kuma KUMA_STORE_POSTGRES_PASSWORD=kuma KUMA_STORE_POSTGRES_DB_NAME=kuma)
env "${PGENV[@]}" KUMA_STORE_TYPE=postgres "$BIN" migrate up --log-level warn
run_cp postgres "${PGENV[@]}"
bench_store postgres "PostgreSQL 15"
PG_PUT=$PUT_RATE

# Ceiling: pgbench single-row upsert of a JSON document, same database server, same connection count.
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d pgbench -qc "CREATE TABLE r (id int PRIMARY KEY, version bigint NOT NULL, spec jsonb NOT NULL); INSERT INTO r SELECT g, 1, '{}' FROM generate_series(1, $N) g;" >/dev/null
cat >"$TMP/upsert.sql" <<SQL
\set id random(1, $N)
INSERT INTO r (id, version, spec) VALUES (:id, 1, '{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"10s"}}]}')
  ON CONFLICT (id) DO UPDATE SET version = r.version + 1, spec = EXCLUDED.spec;
SQL
PGB=$(pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -n -c $CONNS -j 2 -T "$DUR" -f "$TMP/upsert.sql" pgbench 2>/dev/null)
PGB_TPS=$(echo "$PGB" | awk '/^tps/ {print int($3)}')

{
  echo "# REST benchmark"
  echo
  echo "Command: \`docs/benchmarks/rest/run.sh $DUR\` (release build; wrk -t2 -c$CONNS, ${DUR}s per run, $N MeshTimeouts in the mesh)."
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load generator on the same machine."
  echo "Run at: $(date -u +%FT%TZ). Load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)$(echo "$LOAD_START" | awk '$1 > 1.5 {print " (above 1.5 at start: something else shared the machine)"}') (the end figure includes the benchmark's own wrk, kuma-cp and PostgreSQL)."
  echo
  echo "| store | GET one req/s | GET p99 | LIST 100 req/s | LIST p99 | PUT req/s | PUT p99 |"
  echo "|---|---|---|---|---|---|---|"
  cat "$TMP/rows"
  echo
  echo "Ceiling: \`pgbench -c $CONNS -j 2\` single-row upsert of the same JSON document on the same PostgreSQL: **$PGB_TPS tps**."
  echo "PUT through kuma-cp on PostgreSQL: $PG_PUT req/s = **$(( PG_PUT * 100 / (PGB_TPS > 0 ? PGB_TPS : 1) ))%** of the pgbench rate (target ≥ 50%)."
  echo "PUT on SQLite: $SQLITE_PUT req/s."
} >"$OUT"
cat "$OUT"
