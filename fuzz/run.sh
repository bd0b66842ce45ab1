#!/usr/bin/env bash
# Runs one fuzz target for a while: fuzz/run.sh TARGET SECONDS [libFuzzer options...]
# Targets: ops, open_corrupt, page_decode, crash. The checked-in seeds (fuzz/corpus/TARGET)
# are read; what the run discovers goes to fuzz/work/TARGET (not checked in), crashing
# inputs to fuzz/artifacts/TARGET. Stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]}
shift 2
export RUSTC_BOOTSTRAP=1
. ./options.sh
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "work/$target" "corpus/$target" "artifacts/$target"
exec cargo fuzz run "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=3072 -malloc_limit_mb=1024 -print_final_stats=1 $(target_options "$target") "$@"
