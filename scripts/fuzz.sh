#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang and
# run each from its seed corpus with a fixed seed for FUZZ_RUNS inputs (default
# 100000; at most FUZZ_SECONDS, default 20) — deterministic, so CI repeats
# exactly what passed here; set FUZZ_SEED=0 for a random exploration run
# (tests/fuzz/corpus/<name>, or the corpus whose name starts the harness name).
# New inputs go to a temporary directory, so the seeds stay as committed.
# Any crash, leak or sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-20}"
runs="${FUZZ_RUNS:-100000}"
seed="${FUZZ_SEED:-1}"
echo "fuzz: building the harnesses with clang + ASan/UBSan in build-fuzz/ (about 20 s the first time)"
cmake -S . -B build-fuzz -G Ninja -DFB_FUZZ=ON -DFB_WERROR=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-fuzz $(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//') >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
for src in tests/fuzz/fuzz_*.c; do
    h=$(basename "$src" .c)
    name=${h#fuzz_}
    corpus=""
    for d in tests/fuzz/corpus/*/; do
        d=${d%/}
        b=$(basename "$d")
        if [ "$b" = "$name" ] || [ "${name#"$b"}" != "$name" ]; then corpus=$d; fi
    done
    mkdir -p "$work/$h"
    echo "fuzz: $h, $runs inputs (seed $seed, at most ${secs}s; corpus: ${corpus:-none})"
    if ! ./build-fuzz/"$h" "$work/$h" $corpus -seed="$seed" -runs="$runs" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work/" >"$work/$h.log" 2>&1; then
        echo "fuzz: $h FAILED"; tail -40 "$work/$h.log"; rc=1
    else
        grep -E "stat::number_of_executed_units" "$work/$h.log" | sed "s/^/  /"
    fi
done
exit $rc
