#!/usr/bin/env bash
# Exec engine latency: N sequential requests through the release proxy next to N direct native
# `codex exec --json` runs against the same mock model (p50/p90, and the ratios).
# Usage: bench/exec_latency.sh [N]   (default 30; needs `npm ci` for the pinned Codex CLI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e node_modules/.bin/codex ] && [ -z "${CODEX_BIN:-}" ]; then
  echo "the Codex CLI is not installed: run \`npm ci\` in the repository root (or set CODEX_BIN)" >&2
  exit 1
fi
cargo build --release --quiet --bin codex-api-proxy --example bench_exec
exec cargo run --release --quiet --example bench_exec -- "${1:-30}"
