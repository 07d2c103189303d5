#!/usr/bin/env bash
# apt-install.sh NAME PACKAGE NO_APT_HINT: installs Debian's PACKAGE for a tool the
# project needs (scripts/install-chromium.sh, scripts/install-wrk.sh), as root or with
# passwordless sudo. Without either, or without apt-get, it fails naming NAME and what
# to do by hand (NO_APT_HINT when there is no apt-get).
set -euo pipefail
name=$1 package=$2 no_apt_hint=$3
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "$name: missing and this user cannot install packages (not root, no passwordless" \
    "sudo); run as root: apt-get update && apt-get install -y --no-install-recommends" \
    "$package" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: missing and there is no apt-get (not Debian/Ubuntu); $no_apt_hint" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "$package"
