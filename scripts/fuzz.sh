#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang,
# instrumented together with the library they test (fbcore-fuzz: coverage,
# ASan, UBSan on every source; see CMakeLists.txt), then for each harness:
#   1. coverage floor: replay the committed corpus (-runs=0) and compare the
#      `cov:` of libFuzzer's INITED line with tests/fuzz/coverage-floor.txt.
#      A harness below its floor fails the run: it catches a fuzz build that
#      stopped instrumenting the code under test, a harness that rejects its
#      inputs early, or a corpus that lost its seeds.
#      FUZZ_RECORD_FLOOR=1 rewrites the file at 90 % of what is measured now
#      (the margin absorbs clang version drift; an uninstrumented library
#      drops coverage 3-17x).
#   2. a deterministic run from the corpus with a fixed seed for FUZZ_RUNS
#      inputs (default 100000; at most FUZZ_SECONDS, default 20), so CI
#      repeats exactly what passed here; FUZZ_SEED=0 explores at random.
# Corpus: tests/fuzz/corpus/<name>, or the corpus whose name starts the
# harness name.  New inputs go to a temporary directory, so the seeds stay as
# committed.  Any crash, leak, sanitizer report or coverage below the floor
# fails the run.  Harnesses run FUZZ_JOBS at a time (default nproc).
# FUZZ_ONLY=name limits the run to one harness; FUZZ_BUILD=dir
# builds elsewhere than build-fuzz/ (a shared machine: one build dir each).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-20}"
runs="${FUZZ_RUNS:-100000}"
seed="${FUZZ_SEED:-1}"
floors=tests/fuzz/coverage-floor.txt
bd="${FUZZ_BUILD:-build-fuzz}"
echo "fuzz: building the harnesses with clang + ASan/UBSan in $bd/ (about 20 s the first time)"
cmake -S . -B "$bd" -G Ninja -DFB_FUZZ=ON -DFB_WERROR=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$bd" $(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//') >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
record="${FUZZ_RECORD_FLOOR:-0}"
[ "$record" = 1 ] && printf '# harness  minimum libFuzzer cov: on the committed corpus (scripts/fuzz.sh; FUZZ_RECORD_FLOOR=1 rewrites)\n' >"$work/floors"
# One harness: both steps; its report in $work/$h.out, 1 in $work/$h.rc on failure.
one() {
    local h=$1 name=${1#fuzz_} corpus="" d b cov floor rc=0
    for d in tests/fuzz/corpus/*/; do
        d=${d%/}
        b=$(basename "$d")
        if [ "$b" = "$name" ] || [ "${name#"$b"}" != "$name" ]; then corpus=$d; fi
    done
    # 1. coverage of the committed corpus
    if ! "$bd/$h" -runs=0 $corpus >"$work/$h.cov.log" 2>&1; then
        echo "fuzz: $h FAILED on its committed corpus"; tail -40 "$work/$h.cov.log"; echo 1 >"$work/$h.rc"; return
    fi
    cov=$(sed -n 's/.*INITED cov: \([0-9]*\).*/\1/p' "$work/$h.cov.log" | head -1)
    if [ -z "$cov" ]; then
        echo "fuzz: $h: no INITED cov: line"; tail -20 "$work/$h.cov.log"; echo 1 >"$work/$h.rc"; return
    fi
    if [ "$record" = 1 ]; then
        printf '%s %d\n' "$h" $((cov * 9 / 10)) >"$work/$h.floor"
        echo "fuzz: $h corpus coverage $cov (floor recorded: $((cov * 9 / 10)))"
    else
        floor=$(awk -v h="$h" '$1 == h {print $2}' "$floors" 2>/dev/null || true)
        if [ -z "$floor" ]; then
            echo "fuzz: $h has no coverage floor in $floors (run with FUZZ_RECORD_FLOOR=1)"; rc=1
        elif [ "$cov" -lt "$floor" ]; then
            echo "fuzz: $h corpus coverage $cov is below its floor $floor (is the library instrumented?)"; rc=1
        else
            echo "fuzz: $h corpus coverage $cov (floor $floor)"
        fi
    fi
    # 2. the deterministic run
    mkdir -p "$work/$h"
    echo "fuzz: $h, $runs inputs (seed $seed, at most ${secs}s; corpus: ${corpus:-none})"
    if ! "$bd/$h" "$work/$h" $corpus -seed="$seed" -runs="$runs" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work/$h-" >"$work/$h.log" 2>&1; then
        echo "fuzz: $h FAILED"; tail -40 "$work/$h.log"; rc=1
    else
        grep -E "stat::number_of_executed_units" "$work/$h.log" | sed "s/^/  /"
    fi
    echo $rc >"$work/$h.rc"
}

# Harnesses run FUZZ_JOBS at a time (default: one per CPU; each is one
# process on one core, so the fixed-seed runs stay what they are), their
# reports printed in order.
jobs_max="${FUZZ_JOBS:-$(nproc)}"
hs=()
for src in tests/fuzz/fuzz_*.c; do
    h=$(basename "$src" .c)
    [ -n "${FUZZ_ONLY:-}" ] && [ "$FUZZ_ONLY" != "${h#fuzz_}" ] && [ "$FUZZ_ONLY" != "$h" ] && continue
    hs+=("$h")
done
running=0
for h in "${hs[@]}"; do
    if [ "$running" -ge "$jobs_max" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    one "$h" >"$work/$h.out" 2>&1 &
    running=$((running + 1))
done
wait || true
for h in "${hs[@]}"; do
    cat "$work/$h.out"
    [ "$(cat "$work/$h.rc" 2>/dev/null || echo 1)" = 0 ] || rc=1
    [ "$record" = 1 ] && cat "$work/$h.floor" >>"$work/floors" 2>/dev/null
done
if [ "$record" = 1 ]; then
    if [ -n "${FUZZ_ONLY:-}" ]; then
        echo "fuzz: FUZZ_RECORD_FLOOR=1 needs every harness (unset FUZZ_ONLY)"; exit 1
    fi
    cp "$work/floors" "$floors"
    echo "fuzz: floors written to $floors"
fi
exit $rc
