#!/usr/bin/env bash
# Installs Debian's wrk for the API load benchmark (bench/api_load.py) when it is not on
# PATH: `make bench` runs it (the `bench-tools` prerequisite). The benchmark's ratio is
# only comparable between machines when wrk generates the load: the Python client
# spends the same CPU as the server and compresses the ratio, so `make bench` fails
# here rather than measure with it. Needs root (the CI machine runs as root) or
# passwordless sudo; otherwise it fails saying what to run by hand.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  wrk --version 2>&1 | head -n 1 || true
  exit 0
fi
"$BASH" "${0%/*}/apt-install.sh" wrk wrk "install wrk (https://github.com/wg/wrk) by \
hand, or run the API benchmark alone with python -m bench.api_load --tool python (its \
ratio is then not comparable)"
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk: apt-get installed the package but wrk is still not on PATH" >&2
  exit 1
fi
wrk --version 2>&1 | head -n 1 || true
