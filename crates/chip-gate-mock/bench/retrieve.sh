#!/usr/bin/env bash
# Throughput of GET /webhooks/{id}/ on the release chip-gate-mock binary, measured with wrk.
# Usage: bash crates/chip-gate-mock/bench/retrieve.sh [CONNECTIONS] [SECONDS]
# Needs wrk (Debian/Ubuntu: apt-get install -y wrk) and curl.
set -euo pipefail
CONNECTIONS="${1:-32}"
SECONDS_RUN="${2:-10}"
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$ROOT"
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }

BIN="$(bash crates/chip-gate-mock/scripts/build-bin.sh --release)"

WORK="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

RUST_LOG=warn "$BIN" --port 0 >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!
for _ in $(seq 1 100); do grep -q '^CHIP_API_KEY=' "$WORK/stdout" && break; sleep 0.1; done
BASE_URL="$(sed -n 's/^CHIP_BASE_URL=//p' "$WORK/stdout")"
KEY="$(sed -n 's/^CHIP_API_KEY=//p' "$WORK/stdout")"
ID="$(curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"title":"load","callback":"https://example.test/hook","all_events":true,"events":["purchase.paid"]}' \
  "$BASE_URL/webhooks/" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
echo "bench: $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency \
  -H "Authorization: Bearer $KEY" "$BASE_URL/webhooks/$ID/"
