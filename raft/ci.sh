#!/usr/bin/env bash
# CI for mapkv-raft: openraft's storage suite, the unit tests and the three-node
# cluster tests (3 randomized leader kills; MAPKV_RAFT_KILLS=100 for the heavy mode),
# in release mode, in the workspace's default target folder; then the loopback TCP example.
set -euo pipefail
cd "$(dirname "$0")/.."
unset CARGO_TARGET_DIR
# Library and integration tests (the crate has no doc tests, whose empty run would
# close the log with "0 passed").
cargo test -p mapkv-raft --release --lib --tests
# The loopback TCP example: three node processes, the leader killed and restarted;
# it exits non-zero unless every acknowledged write survives and the replicas agree.
timeout 120 cargo run --release -p mapkv-raft --example raft_kv
