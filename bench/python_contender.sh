#!/usr/bin/env bash
# Installs the earlier Python tool (codex-api-proxy 0.1.1 from PyPI) into a venv under target/ and prints
# the path of its `codex-api-proxy` script. Nothing of it is committed; it is fetched at benchmark time.
# Usage: bench/python_contender.sh   (prints the script path on stdout; progress goes to stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-python-venv
version="${PY_CONTENDER_VERSION:-0.1.1}"
if [ ! -x "$venv/bin/codex-api-proxy" ] || ! "$venv/bin/pip" show codex-api-proxy 2>/dev/null | grep -qx "Version: $version"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "codex-api-proxy==$version" >&2
fi
echo "$PWD/$venv/bin/codex-api-proxy"
