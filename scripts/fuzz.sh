#!/usr/bin/env bash
# Bounded fuzzing of plan loading (YAML, TOML) and of the one-line languages (threshold
# expressions, durations, jitter), then minimisation of the corpus.
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags,
# and `-s none` skips the sanitizer (planrun has no unsafe code; libFuzzer's coverage guidance,
# panic detection, -timeout and -rss_limit_mb still apply).
#
# Requires: cargo install cargo-fuzz
# Usage:    scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 120)
#
# A crash, hang or out-of-memory leaves its input in fuzz/artifacts/TARGET/. Copy it to
# fuzz/regressions/TARGET/<what-it-does>, fix the bug, and `cargo test --test fuzz_regressions`
# replays it (and the whole committed corpus) from then on.
set -euo pipefail

SECS="${1:-120}"
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
export RUSTC_BOOTSTRAP=1

status=0
for target in threshold_expr plan_yaml plan_toml; do
    max_len=4096
    [ "$target" = threshold_expr ] && max_len=256
    mkdir -p "corpus/$target"
    echo "== $target: ${SECS}s"
    if ! cargo fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1; then
        echo "!! $target found a problem: see fuzz/artifacts/$target/" >&2
        status=1
        continue
    fi
    # Keep the committed corpus small: only inputs that add coverage.
    cargo fuzz cmin -s none "$target" "corpus/$target" -- -use_counters=0 >/dev/null 2>&1 ||
        echo "(cmin of $target failed; corpus left as is)" >&2
done
exit "$status"
