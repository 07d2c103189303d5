#!/usr/bin/env bash
# One setup step, quiet when it works and loud when it does not:
#   scripts/step.sh "what it does" LOGFILE command [args...]
# Prints one line on success. On failure prints the command's last lines (the cause is
# almost always there), where the whole log is, and a hint for the failures we know.
set -uo pipefail
what=$1 log=$2
shift 2
mkdir -p "$(dirname "$log")"
start=$SECONDS
rc=0
"$@" >"$log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "setup: $what ... ok ($((SECONDS - start)) s)"
  exit 0
fi
echo "setup: $what ... FAILED (exit $rc): $*" >&2
if grep -q "can only install packages when your package.json and package-lock.json" "$log"; then
  missing=$(grep -m1 -o "Missing: .*" "$log" || grep -m1 -o "Invalid: .*" "$log" || true)
  echo "setup: package-lock.json no longer matches what the registry serves for package.json${missing:+ ($missing)};" \
    "run 'npm install --package-lock-only --no-audit --no-fund' and commit package-lock.json" >&2
else
  echo "---- last lines of $log ----" >&2
  tail -n 25 "$log" >&2
  echo "----" >&2
fi
exit "$rc"
