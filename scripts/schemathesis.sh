#!/usr/bin/env bash
# Fuzzes the live REST API with schemathesis against the committed
# api/openapi.yaml: a `kuma-cp run` (embedded SQLite store, temp work dir,
# free ports) is started, schemathesis runs its default checks plus response
# schema conformance, and the script exits non-zero on any 5xx, schema
# violation or other failed check.
#
#   scripts/schemathesis.sh                 # bounded run (a few minutes)
#   MAX_EXAMPLES=50 scripts/schemathesis.sh # more examples per operation
#
# Requests come from 127.0.0.1 with a loopback Host, so the control plane
# treats them as the local admin (as `kumactl` on the same host would be).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}" # works with Python 3.11
MAX_EXAMPLES="${MAX_EXAMPLES:-10}"
SEED="${SEED:-20240601}"
PYTHON="${PYTHON:-python3}"
CHECKS="${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"

if ! "$PYTHON" -m schemathesis.cli --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cd "$ROOT"
if [[ -n "${KUMA_TEST_BIN_DIR:-}" && -x "$KUMA_TEST_BIN_DIR/kuma-cp" ]]; then
    # Built by scripts/test.sh's `cargo test`: a `cargo build` here would
    # resolve features without the dev-dependencies' and compile the whole
    # workspace a second time (minutes, and some 1.5 GB of target/).
    KUMA_CP="$KUMA_TEST_BIN_DIR/kuma-cp"
else
    cargo build --quiet -p kuma-cp-bin
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    KUMA_CP="$TARGET_DIR/debug/kuma-cp"
fi

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

WORK_DIR="$(mktemp -d)"
API_PORT="$(free_port)"
CP_PID=""
cleanup() {
    if [[ -n "$CP_PID" ]]; then
        kill "$CP_PID" 2>/dev/null || true
        wait "$CP_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT

KUMA_GENERAL_WORK_DIR="$WORK_DIR" \
KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1 \
KUMA_API_SERVER_HTTP_PORT="$API_PORT" \
KUMA_DIAGNOSTICS_SERVER_PORT="$(free_port)" \
KUMA_DP_SERVER_PORT="$(free_port)" \
KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT="$(free_port)" \
    "$KUMA_CP" run >"$WORK_DIR/kuma-cp.log" 2>&1 &
CP_PID=$!

BASE="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do
    if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$CP_PID" 2>/dev/null; then
        echo "kuma-cp exited before serving:" >&2
        cat "$WORK_DIR/kuma-cp.log" >&2
        exit 1
    fi
    sleep 0.2
done

# Seed the control plane with every valid model fixture (all kinds, all 16
# policies), so list and get responses carry real resources whose shape the
# response-schema check then validates.
"$PYTHON" - "$BASE" "$ROOT/crates/model/tests/fixtures/valid" <<'PY'
import glob, json, os, sys, urllib.request, yaml
base, root = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(base + "/_resources") as r:
    kinds = {k["name"]: k for k in json.load(r)["resources"]}
docs = [yaml.safe_load(open(f)) for f in sorted(glob.glob(os.path.join(root, "*.yaml")))]
# Meshes first: everything else lives in one.
docs.sort(key=lambda d: d["type"] != "Mesh")
for doc in docs:
    k = kinds[doc["type"]]
    path = f"/meshes/{doc['mesh']}/{k['path']}/{doc['name']}" if k["scope"] == "Mesh" else f"/{k['path']}/{doc['name']}"
    req = urllib.request.Request(base + path, data=json.dumps(doc).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        sys.exit(f"seeding {path} failed: {e.code} {e.read().decode()}")
print(f"seeded {len(docs)} resources", file=sys.stderr)
PY

status=0
# One worker: hypothesis' lambda-source cache is not thread-safe on
# Python 3.11 ("AST constructor recursion depth mismatch").
"$PYTHON" -m schemathesis.cli run "$ROOT/api/openapi.yaml" \
    --url "$BASE" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --generation-database none \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    --warnings off \
    || status=$?

if ! kill -0 "$CP_PID" 2>/dev/null; then
    echo "kuma-cp died during the run:" >&2
    tail -50 "$WORK_DIR/kuma-cp.log" >&2
    status=1
fi
if grep -q "panicked" "$WORK_DIR/kuma-cp.log"; then
    echo "kuma-cp panicked during the run:" >&2
    grep -A5 "panicked" "$WORK_DIR/kuma-cp.log" >&2
    status=1
fi
exit "$status"
