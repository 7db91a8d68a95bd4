#!/bin/sh
# The queue benchmark (benches/queues): intake against verify-only, a naive handler and a minimal
# group commit on SQLite and PostgreSQL (and, on SQLite, that group commit storing the inbox's row
# into the inbox's table); processing against awa and graphile_worker on PostgreSQL.
# Its own Cargo workspace, so `cargo test --workspace` never compiles awa and graphile_worker (CI
# only type-checks it, with `cargo check`).
#
#   scripts/bench-queues.sh [intake|processing|all] [rounds]
#
# BENCH_POSTGRES_URL: a role that may create databases (default: the local chip_inbox role);
# BENCH_INTAKE_DELIVERIES (4000), BENCH_JOBS (20000). CARGO_TARGET_DIR as usual (default
# benches/queues/target). A cold release build takes about 10 minutes on 2 cores.
set -eu
cd "$(dirname "$0")/../benches/queues"
cargo build --release --locked
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/chip-gate-queue-bench" "$@"
