#!/usr/bin/env bash
# CI smoke run of the fuzz targets: lint them, build them all, replay each checked-in
# corpus and the regression inputs, then fuzz each target for FUZZ_SECONDS (default 30).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
# The binaries are looked up under fuzz/target, where cargo fuzz builds by default.
unset CARGO_TARGET_DIR
. ./options.sh
seconds=${FUZZ_SECONDS:-30}
echo "== fuzz: clippy"
# Its own workspace, so the root's clippy never sees it (under a minute on two cores).
cargo clippy --all-targets -- -D warnings
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build
bin=target/x86_64-unknown-linux-gnu/release
for target in $(cargo fuzz list); do
    echo "== fuzz $target: replay the corpus and the regression inputs"
    replay=("corpus/$target")
    if [ -d "regressions/$target" ]; then replay+=("regressions/$target"); fi
    mkdir -p "work/$target" "artifacts/$target"
    if ! "$bin/$target" -runs=0 "${replay[@]}" >"work/$target.replay.log" 2>&1; then
        tail -n 80 "work/$target.replay.log"
        echo "fuzz target $target failed on a checked-in input"
        exit 1
    fi
    echo "== fuzz $target: ${seconds}s"
    if ! "$bin/$target" "work/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=1024 \
        -print_final_stats=1 $(target_options "$target") >"work/$target.log" 2>&1; then
        tail -n 80 "work/$target.log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE' "work/$target.log" || true
done
