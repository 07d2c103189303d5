#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/integration/ui/) when
# /usr/bin/chromium is missing: scripts/step.sh runs it from `make setup`.
# Needs root (the CI machine runs as root) or passwordless sudo; otherwise it fails
# saying what to run by hand. Playwright drives this system browser: its own browser
# download (`playwright install`) is never used.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  "$CHROMIUM" --version
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "chromium: $CHROMIUM is missing and this user cannot install packages (not root, no" \
    "passwordless sudo); run as root: apt-get update && apt-get install -y" \
    "--no-install-recommends chromium" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: $CHROMIUM is missing and there is no apt-get (not Debian/Ubuntu); install" \
    "a Chromium build at $CHROMIUM by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends chromium
if [ ! -x "$CHROMIUM" ]; then
  echo "chromium: apt-get installed the package but $CHROMIUM is still missing" >&2
  exit 1
fi
"$CHROMIUM" --version
