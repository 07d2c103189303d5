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
"$BASH" "${0%/*}/apt-install.sh" chromium chromium "install a Chromium build at \
$CHROMIUM by hand"
if [ ! -x "$CHROMIUM" ]; then
  echo "chromium: apt-get installed the package but $CHROMIUM is still missing" >&2
  exit 1
fi
"$CHROMIUM" --version
