#!/usr/bin/env bash
# Runs every test: installs missing test dependencies, then the Rust workspace
# tests (unit, store conformance on memory/SQLite/PostgreSQL, REST, e2e with
# real Envoy) and schemathesis against a live kuma-cp.
set -euo pipefail
cd "$(dirname "$0")/.."

# A cold run is a one-shot build; incremental caches would add some 3 GB to
# target/ (set CARGO_INCREMENTAL=1 to keep them when iterating).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A cold run fills target/ with some 3 GB (measured: 2.9 GB at the end of
# .ci/run); say so up front rather than fail in the linker.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target_dir"
free_kb="$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')"
if [ -n "$free_kb" ] && [ "$free_kb" -lt 4000000 ]; then
    echo "warning: $((free_kb / 1024)) MB free for $target_dir; a cold build needs about 3 GB" >&2
fi

scripts/install-test-deps.sh
if [ -x e2e/install-deps.sh ]; then e2e/install-deps.sh; fi

# Every test target and the binaries the end-to-end suites run as processes,
# built once by cargo test itself; the suites take kuma-cp and kuma-dp from
# KUMA_TEST_BIN_DIR instead of running cargo build (which resolves features
# differently and would link both binaries again).
cargo test --workspace --all-targets --no-run
export KUMA_TEST_BIN_DIR="$target_dir/debug"
cargo test --workspace --all-targets

scripts/schemathesis.sh
