#!/usr/bin/env bash
# Contract check: schemathesis fuzzes the running chip-gate-mock binary with
# openapi/chip-collect-webhooks.yaml and fails on any server error or any response whose status,
# content type, headers or body the spec does not allow; it also checks that schema-invalid
# requests are refused and that auth is enforced.
#
# Usage: bash crates/chip-gate-mock/contract/run.sh
# Environment: CONTRACT_MAX_EXAMPLES (default 100 per operation and phase), CONTRACT_SEED (default
# 20261127), CARGO_TARGET_DIR (honoured when building the binary).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-100}"
SEED="${CONTRACT_SEED:-20261127}"
API_KEY="test_contract_key_$RANDOM$RANDOM"

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$ROOT"
SPEC="$ROOT/openapi/chip-collect-webhooks.yaml"

echo "contract: installing schemathesis==$SCHEMATHESIS_VERSION"
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
  python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"

echo "contract: building chip-gate-mock"
BIN="$(bash crates/chip-gate-mock/scripts/build-bin.sh)"
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "contract: could not find the chip-gate-mock binary" >&2
  exit 1
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Small pages so pagination is exercised; pooled keys reused so hundreds of creates stay fast; a
# webhook cap far above what a run creates, so no valid create meets the cap's 400.
RUST_LOG=warn "$BIN" --port 0 --api-key "$API_KEY" --page-size 3 --reuse-keys --max-webhooks 1000000 \
  >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!

BASE_URL=""
for _ in $(seq 1 100); do
  BASE_URL="$(sed -n 's/^CHIP_BASE_URL=//p' "$WORK/stdout")"
  [ -n "$BASE_URL" ] && break
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "contract: chip-gate-mock exited early:" >&2
    cat "$WORK/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$BASE_URL" ]; then
  echo "contract: chip-gate-mock did not print its base URL" >&2
  exit 1
fi
echo "contract: mock at $BASE_URL"

# Checks: all of schemathesis's checks, none excluded: no 5xx; status, content type, headers and
# body as the spec says; schema-invalid requests refused; schema-valid requests accepted
# (positive_data_acceptance: the mock enforces exactly the spec's request constraints, which follow
# CHIP's published schema, so a valid body is never refused with 400; a 404 for an id or page that
# does not exist is schemathesis's default allowance and is what the spec declares); auth
# enforced; unsupported methods answered 405; deleted resources gone; created ones retrievable.
CHECKS="${CONTRACT_CHECKS:-all}"
EXCLUDE_ARGS=()
if [ -n "${CONTRACT_EXCLUDE_CHECKS:-}" ]; then
  EXCLUDE_ARGS=(--exclude-checks "$CONTRACT_EXCLUDE_CHECKS")
fi

# One worker: with two, hypothesis (under CPython 3.11.7 here) intermittently fails in ast.parse
# with "AST constructor recursion depth mismatch", a CPython threading bug, not an API problem.
status=0
python3 -m schemathesis.cli run "$SPEC" \
  --url "$BASE_URL" \
  --header "Authorization: Bearer $API_KEY" \
  --checks "$CHECKS" \
  "${EXCLUDE_ARGS[@]}" \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --generation-database none \
  --request-timeout 10 \
  --no-color \
  --output-sanitize true \
  || status=$?

if ! kill -0 "$PID" 2>/dev/null; then
  echo "contract: chip-gate-mock died during the run:" >&2
  cat "$WORK/stderr" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "contract: FAILED (schemathesis exit $status)" >&2
  exit "$status"
fi
echo "contract: passed"
