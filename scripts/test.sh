#!/usr/bin/env bash
# The whole test suite: installs the pinned Codex CLI and OpenAI SDK (package-lock.json), then runs every
# Rust test (unit, end-to-end against the real Codex CLI and the mock model, the SDK client test), and
# closes with one line totalling the tests of every target.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required to install the pinned Codex CLI (install Node.js 20+ and npm first)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/codex --version

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "Summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
