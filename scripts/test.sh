#!/usr/bin/env bash
# The whole test suite. It installs what the tests drive, then runs every Rust test (unit, end-to-end
# against the real Codex CLI and the mock model, the client-library tests), and closes with one line
# totalling the tests of every target. Installed first:
# - the pinned Codex CLI, OpenAI Node SDK and playwright-core (package-lock.json), with npm;
# - the pinned Python client libraries (tests/python/requirements.txt) into the venv target/py;
# - Debian's chromium (the dashboard test) and nginx (the scale-out test), with apt-get, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required to install the pinned Codex CLI (install Node.js 20+ and npm first)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/codex --version

if [ ! -x target/py/bin/python ]; then
  python3 -m venv target/py || {
    echo "creating target/py failed: install Python 3.10+ with venv (apt-get install python3-venv)" >&2
    exit 1
  }
fi
target/py/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-liberation)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    echo "could not install ${missing[*]}: run \`apt-get install ${missing[*]}\` as root, then run this again" >&2
    exit 1
  }
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "Summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
