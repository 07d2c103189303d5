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
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "wrk: not on PATH and this user cannot install packages (not root, no passwordless" \
    "sudo); run as root: apt-get update && apt-get install -y --no-install-recommends wrk" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "wrk: not on PATH and there is no apt-get (not Debian/Ubuntu); install wrk" \
    "(https://github.com/wg/wrk) by hand, or run the API benchmark alone with" \
    "python -m bench.api_load --tool python (its ratio is then not comparable)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends wrk
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk: apt-get installed the package but wrk is still not on PATH" >&2
  exit 1
fi
wrk --version 2>&1 | head -n 1 || true
