#!/usr/bin/env bash
# Runs every test: installs missing test dependencies, then the Rust workspace
# tests (unit, store conformance on memory/SQLite/PostgreSQL, REST, e2e with
# real Envoy) and schemathesis against a live kuma-cp.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
if [ -x e2e/install-deps.sh ]; then e2e/install-deps.sh; fi

# The binaries the end-to-end suites run, built once with the selection they
# all use (a different selection would resolve features differently and rebuild).
cargo build -p kuma-cp-bin -p kuma-dp-bin
cargo test --workspace --all-targets

if [ -x scripts/schemathesis.sh ]; then scripts/schemathesis.sh; fi
