#!/usr/bin/env bash
# Builds the chip-gate-mock binary and prints its path (the contract check and the benchmark both
# need it). Usage: bash crates/chip-gate-mock/scripts/build-bin.sh [--release]
# Compiler diagnostics go to stderr; stdout is only the path.
set -euo pipefail
cargo build --quiet "$@" -p chip-gate-mock --bin chip-gate-mock --message-format=json-render-diagnostics \
  | python3 -c 'import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "chip-gate-mock":
        print(msg["executable"])'
