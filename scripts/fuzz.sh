#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang and
# run each for FUZZ_SECONDS (default 10) from its seed corpus
# (tests/fuzz/corpus/<name>, or the corpus whose name starts the harness name).
# New inputs go to a temporary directory, so the seeds stay as committed.
# Any crash, leak or sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-10}"
cmake -S . -B build-fuzz -G Ninja -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
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
    echo "fuzz: $h for ${secs}s (seeds: ${corpus:-none})"
    if ! ./build-fuzz/"$h" "$work/$h" $corpus -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work/" >"$work/$h.log" 2>&1; then
        echo "fuzz: $h FAILED"; tail -40 "$work/$h.log"; rc=1
    else
        grep -E "stat::number_of_executed_units" "$work/$h.log" | sed "s/^/  /"
    fi
done
exit $rc
